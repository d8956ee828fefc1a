//! The kernel's core structures, found by their shape in the DWARF types: `struct spinlock`,
//! `struct cpu` and `cpus[]`, `struct proc` and `proc[]`, `struct sleeplock`, the lab's
//! `locks[]` registry, and the few globals every xv6 has (`ticks`, `panicked`,
//! `kernel_pagetable`). Member offsets, sizes and array bounds all come from DWARF.

use crate::symbols::types::{BitField, TypeId, Types};

use super::error::Xv6Error;

/// A scalar member, with what it takes to decode it from the struct's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Field {
    pub offset: u64,
    pub size: u8,
    pub signed: bool,
    pub bits: Option<BitField>,
}

impl Field {
    /// Member `name` of struct `ty`, if it is an integer, enum, bool or pointer of 1-8 bytes.
    pub fn of(types: &Types, ty: TypeId, name: &str) -> Option<Field> {
        let m = types.member(ty, name)?;
        Self::scalar(types, m.ty, m.offset, m.bits)
    }

    pub fn scalar(types: &Types, ty: TypeId, offset: u64, bits: Option<BitField>) -> Option<Field> {
        let signed = match types.pointee(ty) {
            Some(_) => false,
            None => types.integer(ty)?,
        };
        let size = types.size_of(ty)?;
        (1..=8).contains(&size).then_some(Field {
            offset,
            size: size as u8,
            signed,
            bits,
        })
    }

    /// The value in the struct bytes `b`; `None` when `b` is too short.
    pub fn get(&self, b: &[u8]) -> Option<i64> {
        let start = usize::try_from(self.offset).ok()?;
        let (width, shift, len) = match self.bits {
            None => (self.size as u32 * 8, 0, self.size as usize),
            Some(bf) if bf.size > 0 && bf.shift + bf.size <= 64 => {
                (bf.size, bf.shift, (bf.shift + bf.size).div_ceil(8) as usize)
            }
            Some(_) => return None,
        };
        let raw = b.get(start..start.checked_add(len)?)?;
        let mut w = [0u8; 8];
        w[..len].copy_from_slice(raw);
        let mut v = u64::from_le_bytes(w) >> shift;
        if width < 64 {
            v &= (1 << width) - 1;
            if self.signed && (v >> (width - 1)) & 1 == 1 {
                v |= !0 << width;
            }
        }
        Some(v as i64)
    }

    /// The value as an unsigned word (pointers).
    pub fn word(&self, b: &[u8]) -> Option<u64> {
        self.get(b).map(|v| v as u64)
    }

    /// One past the last byte this field reads.
    pub fn end(&self) -> u64 {
        self.offset + self.size as u64
    }
}

/// A global array: where it is, how many elements, how far apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ArrayVar {
    pub path: String,
    pub addr: u64,
    pub count: u64,
    pub stride: u64,
}

impl ArrayVar {
    pub fn len_bytes(&self) -> u64 {
        self.count.saturating_mul(self.stride)
    }

    pub fn element(&self, i: u64) -> u64 {
        self.addr + i * self.stride
    }

    /// The index of the element starting exactly at `addr`.
    pub fn index_of(&self, addr: u64) -> Option<u64> {
        let off = addr.checked_sub(self.addr)?;
        (self.stride > 0 && off % self.stride == 0 && off / self.stride < self.count)
            .then(|| off / self.stride)
    }
}

pub(super) struct SpinlockLayout {
    pub ty: TypeId,
    pub size: u64,
    pub locked: Field,
    pub name: Field,
    pub cpu: Field,
    /// The lab's counters; upstream xv6 has neither.
    pub nts: Option<Field>,
    pub n: Option<Field>,
}

pub(super) struct CpuLayout {
    pub proc: Field,
    pub noff: Option<Field>,
    pub intena: Option<Field>,
    pub cpus: ArrayVar,
}

pub(super) struct ContextFields {
    pub ra: Field,
    pub sp: Field,
    pub fp: Field,
}

pub(super) struct ProcLayout {
    pub state: Field,
    pub state_ty: TypeId,
    pub pid: Field,
    /// Offset and length of `char name[N]`.
    pub name: Option<(u64, u64)>,
    pub chan: Option<Field>,
    pub killed: Option<Field>,
    pub kstack: Option<Field>,
    pub lock: Option<u64>,
    pub context: Option<ContextFields>,
    pub table: ArrayVar,
}

pub(super) struct SleeplockLayout {
    pub ty: TypeId,
    pub locked: Field,
    pub lk: u64,
    pub name: Option<Field>,
    pub pid: Option<Field>,
}

/// The core structures. Everything but the spinlock and `cpus[]` is optional.
pub(super) struct Core {
    pub spinlock: SpinlockLayout,
    pub cpu: CpuLayout,
    pub proc: Option<ProcLayout>,
    pub sleeplock: Option<SleeplockLayout>,
    /// The lab's `locks[]`: an array of pointers to spinlocks.
    pub registry: Option<ArrayVar>,
    pub ticks: Option<(u64, Field)>,
    pub panicked: Option<(u64, Field)>,
    pub kernel_pagetable: Option<u64>,
}

/// What [`find_core`] looked for, for the error when a kernel is not xv6-shaped.
pub(super) const LOOKED_FOR: &str = "a `struct spinlock` (members `locked`, `name`, `cpu`) and a \
global array of the `struct cpu` its `cpu` points to (xv6's `cpus[NCPU]`)";

/// Finds the spinlock by its shape: `locked` (an integer), `name` (a `char *`) and `cpu` (a
/// pointer to a struct). A struct tagged `spinlock` wins over other matches.
fn find_spinlock(types: &Types) -> Option<SpinlockLayout> {
    let mut candidates: Vec<TypeId> = types
        .structs()
        .into_iter()
        .filter(|&s| {
            let name_is_str = types
                .member(s, "name")
                .and_then(|m| types.pointee(m.ty))
                .is_some_and(|p| p.is_some_and(|c| types.is_char(c)));
            let cpu_is_ptr = types
                .member(s, "cpu")
                .and_then(|m| types.pointee(m.ty))
                .is_some_and(|p| p.is_some_and(|c| types.is_struct(c)));
            name_is_str && cpu_is_ptr && Field::of(types, s, "locked").is_some()
        })
        .collect();
    candidates.sort_by_key(|&s| types.get(s).name.as_deref() != Some("spinlock"));
    let ty = *candidates.first()?;
    Some(SpinlockLayout {
        ty,
        size: types.size_of(ty)?,
        locked: Field::of(types, ty, "locked")?,
        name: Field::of(types, ty, "name")?,
        cpu: Field::of(types, ty, "cpu")?,
        nts: Field::of(types, ty, "nts"),
        n: Field::of(types, ty, "n"),
    })
}

/// The one global array whose elements are `elem` (a struct); the largest if several.
pub(super) fn global_array_of(types: &Types, elem: TypeId) -> Option<ArrayVar> {
    types
        .globals()
        .iter()
        .filter_map(|g| {
            let (e, count) = types.array(g.ty)?;
            if !types.same(e, elem) {
                return None;
            }
            let stride = types.size_of(e).filter(|&s| s > 0)?;
            Some(ArrayVar {
                path: g.name.clone(),
                addr: g.address,
                count: count?,
                stride,
            })
        })
        .max_by_key(|a| a.count)
}

fn scalar_global(types: &Types, name: &str) -> Option<(u64, Field)> {
    let g = types.global(name)?;
    Some((g.address, Field::scalar(types, g.ty, 0, None)?))
}

pub(super) fn find_core(types: &Types, path: &std::path::Path) -> Result<Core, Xv6Error> {
    let not_xv6 = || Xv6Error::NotXv6 {
        path: path.to_owned(),
        looked_for: LOOKED_FOR,
    };
    let spinlock = find_spinlock(types).ok_or_else(not_xv6)?;
    let cpu_ty = types
        .member(spinlock.ty, "cpu")
        .and_then(|m| types.pointee(m.ty).flatten())
        .ok_or_else(not_xv6)?;
    let cpus = global_array_of(types, cpu_ty).ok_or_else(not_xv6)?;
    let proc_ty = types
        .member(cpu_ty, "proc")
        .and_then(|m| types.pointee(m.ty).flatten());
    let cpu = CpuLayout {
        proc: Field::of(types, cpu_ty, "proc").ok_or_else(not_xv6)?,
        noff: Field::of(types, cpu_ty, "noff"),
        intena: Field::of(types, cpu_ty, "intena"),
        cpus,
    };
    let proc = proc_ty.and_then(|p| find_proc(types, p, spinlock.ty));
    let sleeplock = find_sleeplock(types, spinlock.ty);
    let registry = find_registry(types, spinlock.ty);
    Ok(Core {
        spinlock,
        cpu,
        proc,
        sleeplock,
        registry,
        ticks: scalar_global(types, "ticks"),
        panicked: scalar_global(types, "panicked"),
        kernel_pagetable: types
            .global("kernel_pagetable")
            .filter(|g| types.size_of(g.ty) == Some(8))
            .map(|g| g.address),
    })
}

fn find_proc(types: &Types, ty: TypeId, spinlock: TypeId) -> Option<ProcLayout> {
    let table = global_array_of(types, ty)?;
    let state = types.member(ty, "state")?;
    let name = types.member(ty, "name").and_then(|m| {
        let (c, n) = types.array(m.ty)?;
        types.is_char(c).then_some((m.offset, n?.min(64)))
    });
    let at = |f: Field, base: u64| Field {
        offset: base + f.offset,
        ..f
    };
    let context = types.member(ty, "context").and_then(|c| {
        Some(ContextFields {
            ra: at(Field::of(types, c.ty, "ra")?, c.offset),
            sp: at(Field::of(types, c.ty, "sp")?, c.offset),
            fp: at(Field::of(types, c.ty, "s0")?, c.offset),
        })
    });
    Some(ProcLayout {
        state: Field::scalar(types, state.ty, state.offset, state.bits)?,
        state_ty: state.ty,
        pid: Field::of(types, ty, "pid")?,
        name,
        chan: Field::of(types, ty, "chan"),
        killed: Field::of(types, ty, "killed"),
        kstack: Field::of(types, ty, "kstack"),
        lock: types
            .members(ty)
            .iter()
            .find(|m| types.same(m.ty, spinlock))
            .map(|m| m.offset),
        context,
        table,
    })
}

/// `struct sleeplock`: a `locked` word, an inner spinlock, and the holder's `pid`. A struct
/// tagged `sleeplock` wins.
fn find_sleeplock(types: &Types, spinlock: TypeId) -> Option<SleeplockLayout> {
    let mut candidates: Vec<(TypeId, u64)> = types
        .structs()
        .into_iter()
        .filter(|&s| !types.same(s, spinlock))
        .filter_map(|s| {
            let lk = types
                .members(s)
                .iter()
                .find(|m| types.same(m.ty, spinlock))?;
            (Field::of(types, s, "locked").is_some() && Field::of(types, s, "pid").is_some())
                .then_some((s, lk.offset))
        })
        .collect();
    candidates.sort_by_key(|&(s, _)| types.get(s).name.as_deref() != Some("sleeplock"));
    let &(ty, lk) = candidates.first()?;
    Some(SleeplockLayout {
        ty,
        locked: Field::of(types, ty, "locked")?,
        lk,
        name: Field::of(types, ty, "name"),
        pid: Field::of(types, ty, "pid"),
    })
}

/// The lab's registry: a global array of `struct spinlock *` (`locks` preferred).
fn find_registry(types: &Types, spinlock: TypeId) -> Option<ArrayVar> {
    types
        .globals()
        .iter()
        .filter_map(|g| {
            let (e, count) = types.array(g.ty)?;
            let target = types.pointee(e)??;
            types.same(target, spinlock).then(|| ArrayVar {
                path: g.name.clone(),
                addr: g.address,
                count: count.unwrap_or(0),
                stride: 8,
            })
        })
        .filter(|a| a.count > 0)
        .max_by_key(|a| (a.path == "locks", a.count))
}

/// True for a struct tag that reads as a reader-writer lock (`rwspinlock`, `rwlock`,
/// `rw_spinlock`).
pub(super) fn is_rwlock_tag(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("rw") && n.contains("lock")
}

/// Reader-writer lock types: a tag like `rwspinlock` and a spinlock member.
pub(super) fn rwlock_types(types: &Types, spinlock: TypeId) -> Vec<TypeId> {
    types
        .structs()
        .into_iter()
        .filter(|&s| {
            types.get(s).name.as_deref().is_some_and(is_rwlock_tag)
                && types.members(s).iter().any(|m| types.same(m.ty, spinlock))
        })
        .collect()
}
