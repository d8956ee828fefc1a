//! Naming the access a trap faulted on: "load of `refcnt` (offset 72 in struct buf) through a
//! NULL `struct buf *` b at bio.c:163".
//!
//! The faulting instruction (`sepc`) is decoded with capstone for its base register and
//! displacement; `stval` is the address it touched, so the base register's value was
//! `stval - displacement` whatever the registers say now. DWARF says which variable was in that
//! register at that pc ([`Types::scope_at`]) and so its type, and the type says which member
//! sits at the offset. When gcc folded a NULL it knew about into an absolute address
//! (`ld a5,88(zero)`) the base register names nothing: the pointer variables live at the pc
//! whose pointee has a member at that offset are offered as candidates, never as a verdict.

use super::regs::{FrameRegs, RegContext};
use crate::memory::GuestMemory;
use crate::model::{AccessDiagnosis, AccessKind, AccessName};
use crate::symbols::types::{Place, ScopedVariable, TypeId, TypeKind, Types, VarLocation};
use crate::symbols::{register_number, MemoryUse, Symbols};

/// Nesting followed when naming a member (structs in arrays in structs...).
const MAX_MEMBER_DEPTH: usize = 8;
/// Candidates offered at most.
const MAX_CANDIDATES: usize = 8;

/// The trap to explain.
#[derive(Clone, Copy, Debug)]
pub struct Trap {
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
}

/// A pointer variable in scope at the faulting pc: its function, value and register.
struct Var<'a> {
    function: Option<String>,
    var: &'a ScopedVariable,
    value: Option<u64>,
    reg: Option<u16>,
}

/// Names the access at `trap.sepc`. `regs` are the registers of the interrupted code, when
/// they could be read back from the trap frame; without them only variables DWARF keeps in
/// memory or as constants can be evaluated, and the base register is still known.
pub fn name_access(
    symbols: &Symbols,
    types: &Types,
    trap: Trap,
    regs: Option<&FrameRegs>,
    mem: &mut dyn GuestMemory,
) -> AccessDiagnosis {
    let kind = match trap.scause & !(1 << 63) {
        0 | 1 | 12 => AccessKind::Fetch,
        4 | 5 | 13 => AccessKind::Load,
        _ => AccessKind::Store,
    };
    let mut d = AccessDiagnosis {
        pc: trap.sepc,
        instruction: String::new(),
        kind,
        size: None,
        base_register: None,
        base_value: None,
        offset: 0,
        address: trap.stval,
        named: None,
        candidates: Vec::new(),
        note: None,
    };
    if kind == AccessKind::Fetch {
        d.note = Some(format!(
            "the fetch of the instruction at {:#x} itself faulted: a jump or return to a bad address",
            trap.stval
        ));
        return d;
    }
    let insn = match symbols.instruction_at(trap.sepc) {
        Ok(i) => i,
        Err(e) => {
            d.note = Some(format!(
                "the faulting pc is not an instruction of the kernel: {e}"
            ));
            return d;
        }
    };
    d.instruction = insn.text.clone();
    let Some((used, base, disp, size)) = insn.memory() else {
        d.note = Some(format!(
            "`{}` does not access memory through a register: nothing to name",
            insn.text
        ));
        return d;
    };
    if used == MemoryUse::Atomic {
        d.kind = AccessKind::Atomic;
    }
    d.size = size;
    d.offset = disp;
    // The address is base + displacement, and the trap gave the address.
    let base_value = trap.stval.wrapping_add_signed(disp.wrapping_neg());
    d.base_value = Some(if base == "zero" { 0 } else { base_value });
    d.base_register = Some(base.clone());
    let base_reg = register_number(&base);

    let scope = match types.scope_at(trap.sepc) {
        Ok(s) => s,
        Err(e) => {
            d.note = Some(format!("DWARF has no scope at the pc: {e}"));
            return d;
        }
    };
    let empty = FrameRegs {
        x: [0; 32],
        known: 1,
        cfa: None,
    };
    let regs = regs.unwrap_or(&empty);
    let mut vars: Vec<Var<'_>> = Vec::new();
    for f in &scope.frames {
        for v in &f.variables {
            let Some(ty) = v.ty else { continue };
            if types.pointee(ty).is_none() {
                continue;
            }
            let (value, reg) = pointer_value(types, v, scope.frame_base.as_ref(), regs, mem);
            vars.push(Var {
                function: f.function.clone(),
                var: v,
                value,
                reg,
            });
        }
    }

    let offset_in_pointee = if base == "zero" {
        trap.stval
    } else {
        disp as u64
    };
    // The verdict: the variable DWARF puts in the base register at this pc.
    if base != "zero" {
        if let Some(x) = vars
            .iter()
            .find(|x| x.reg.is_some_and(|r| Some(r as usize) == base_reg))
        {
            d.named = Some(access_name(
                types,
                &x.function,
                x.var,
                offset_in_pointee,
                x.value.or(d.base_value),
            ));
            return d;
        }
    }
    // Otherwise: pointers that could have been the base, by value (a copy in another
    // register, or a NULL gcc folded), and whose pointee has a member at the offset.
    let want_null = d.base_value == Some(0);
    let mut cands: Vec<(bool, AccessName)> = vars
        .iter()
        .filter_map(|x| {
            let (func, v, value) = (&x.function, x.var, &x.value);
            let ty = v.ty?;
            let pointee = types.pointee(ty)??;
            let size = types.size_of(pointee)?;
            if offset_in_pointee >= size {
                return None;
            }
            let member = member_path(types, pointee, offset_in_pointee, 0)?;
            if member.contains('+') {
                return None;
            }
            let same_value = value.is_some() && *value == d.base_value;
            Some((
                same_value,
                access_name(types, func, v, offset_in_pointee, *value),
            ))
        })
        .collect();
    // Pointers holding the base's value first (for a folded NULL: the ones that are NULL).
    cands.sort_by_key(|(same, _)| !*same);
    d.candidates = cands
        .into_iter()
        .map(|(_, n)| n)
        .take(MAX_CANDIDATES)
        .collect();
    d.note = Some(if base == "zero" {
        if d.candidates.is_empty() {
            format!(
                "the address is absolute ({} with base `zero`): gcc folded a pointer it knew was NULL, and no pointer variable live here has a member at offset {offset_in_pointee}",
                insn.text
            )
        } else {
            format!(
                "the address is absolute ({} with base `zero`): gcc folded a pointer it knew was NULL; the candidates are pointers live here whose pointee has a member at offset {offset_in_pointee}",
                insn.text
            )
        }
    } else if want_null && d.candidates.is_empty() {
        format!("no variable DWARF knows is in `{base}` here, and no pointer live here has a member at offset {offset_in_pointee}")
    } else if d.candidates.is_empty() {
        format!("no variable DWARF knows is in `{base}` here")
    } else {
        format!("no variable DWARF knows is in `{base}` here; the candidates are pointers live here whose pointee has a member at offset {offset_in_pointee}")
    });
    d
}

fn access_name(
    types: &Types,
    function: &Option<String>,
    v: &ScopedVariable,
    offset: u64,
    value: Option<u64>,
) -> AccessName {
    let ty = v.ty.unwrap_or(crate::symbols::TypeId(0));
    let pointee = types.pointee(ty).flatten();
    let member = pointee.and_then(|p| member_path(types, p, offset, 0));
    AccessName {
        variable: v.name.clone(),
        function: function.clone(),
        pointer_type: types.display(ty),
        pointee: pointee.map(|p| types.display(p)),
        member: member.filter(|m| !m.is_empty()),
        member_offset: offset,
        value,
    }
}

/// A pointer variable's value and the register it is in, as far as it can be evaluated.
fn pointer_value(
    types: &Types,
    v: &ScopedVariable,
    frame_base: Option<&VarLocation>,
    regs: &FrameRegs,
    mem: &mut dyn GuestMemory,
) -> (Option<u64>, Option<u16>) {
    let mut ctx = RegContext { regs, mem };
    let Ok(place) = types.evaluate(&v.location, frame_base, &mut ctx) else {
        return (None, None);
    };
    match place {
        Place::Register(r) => (regs.get(r as usize), Some(r)),
        Place::Address(a) => {
            let mut b = [0u8; 8];
            match ctx.mem.read(a, &mut b) {
                Ok(()) => (Some(u64::from_le_bytes(b)), None),
                Err(_) => (None, None),
            }
        }
        Place::Value(v) => (Some(v), None),
        Place::Bytes(b) => {
            let mut w = [0u8; 8];
            let n = b.len().min(8);
            w[..n].copy_from_slice(&b[..n]);
            (Some(u64::from_le_bytes(w)), None)
        }
        _ => (None, None),
    }
}

/// The member of `ty` at byte `off`: `refcnt`, `lock.lk.name`, `data[24]`; `+N` for a byte
/// inside a member that is not its start; `""` for offset 0 of a scalar.
pub fn member_path(types: &Types, ty: TypeId, off: u64, depth: usize) -> Option<String> {
    if depth > MAX_MEMBER_DEPTH {
        return None;
    }
    let id = types.strip(ty);
    match &types.get(id).kind {
        TypeKind::Struct(c) | TypeKind::Union(c) => {
            let m = c.members.iter().find(|m| {
                let size = types.size_of(m.ty).unwrap_or(0);
                m.offset <= off && (off < m.offset + size || (size == 0 && off == m.offset))
            })?;
            let inner = member_path(types, m.ty, off - m.offset, depth + 1)?;
            Some(match (&m.name, inner.as_str()) {
                (None, _) => inner,
                (Some(n), "") => n.clone(),
                (Some(n), i) if i.starts_with('[') || i.starts_with('+') => format!("{n}{i}"),
                (Some(n), i) => format!("{n}.{i}"),
            })
        }
        TypeKind::Array { element, .. } => {
            let size = types.size_of(*element).filter(|&s| s > 0)?;
            let inner = member_path(types, *element, off % size, depth + 1)?;
            Some(match inner.as_str() {
                "" => format!("[{}]", off / size),
                i if i.starts_with('[') || i.starts_with('+') => format!("[{}]{i}", off / size),
                i => format!("[{}].{i}", off / size),
            })
        }
        _ if off == 0 => Some(String::new()),
        _ => Some(format!("+{off}")),
    }
}
