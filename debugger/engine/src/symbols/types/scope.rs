//! Variables in scope at a pc, and where they are.
//!
//! A stopped hart's pc lies in one function, possibly inside inlined calls and lexical blocks.
//! [`Scopes::scope_at`] finds them in the DWARF and lists their variables and parameters with
//! the location expression valid at that pc (a single expression, or the entry of a location
//! list covering the pc: `.debug_loc` in DWARF 2-4, `.debug_loclists` in DWARF 5). [`evaluate`]
//! runs such an expression against a hart's registers and memory.

use std::collections::HashMap;

use gimli::{AttributeValue, Reader as _};

use super::units::{die_name, DieRef, Units, MAX_EXPR_STEPS, R};
use super::{TypeId, Types, TypesError};

/// Functions nest inlined calls a few levels deep; more is malformed.
const MAX_FRAMES: usize = 64;
/// Entries of one location list examined before giving up.
const MAX_LIST_ENTRIES: usize = 1 << 16;
/// Address ranges of one unit kept for the pc lookup.
const MAX_UNIT_RANGES: usize = 1 << 20;

/// Where a variable is at one pc, before evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarLocation {
    /// A DWARF location expression.
    Expr {
        bytes: Vec<u8>,
        encoding: gimli::Encoding,
    },
    /// The variable's value itself (`DW_AT_const_value`), little-endian.
    Const(Vec<u8>),
    /// Optimized out here: no location, or no entry of its location list covers the pc.
    Unavailable,
}

/// A variable or parameter in scope at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedVariable {
    pub name: String,
    pub ty: Option<TypeId>,
    pub parameter: bool,
    pub location: VarLocation,
}

/// One function at the pc: the out-of-line function, or a call inlined into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeFrame {
    pub function: Option<String>,
    pub inlined: bool,
    /// Innermost lexical block's variables first.
    pub variables: Vec<ScopedVariable>,
}

/// Everything in scope at a pc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub pc: u64,
    /// Innermost first: inlined calls, then the out-of-line function last.
    pub frames: Vec<ScopeFrame>,
    /// `DW_AT_frame_base` of the out-of-line function, needed to evaluate `DW_OP_fbreg`.
    pub frame_base: Option<VarLocation>,
}

impl Scope {
    /// The innermost variable of this name.
    pub fn variable(&self, name: &str) -> Option<&ScopedVariable> {
        self.frames
            .iter()
            .flat_map(|f| &f.variables)
            .find(|v| v.name == name)
    }
}

/// A hart's state for evaluating locations. DWARF register numbers on RISC-V: x0-x31 are 0-31.
pub trait FrameContext {
    fn register(&mut self, dwarf_reg: u16) -> Option<u64>;
    /// The canonical frame address (the caller's `sp` at the call): with frame pointers, the
    /// `s0` of a function past its prologue.
    fn cfa(&mut self) -> Option<u64>;
    /// Reads `size` (1 to 8) bytes little-endian.
    fn read_memory(&mut self, addr: u64, size: u8) -> Option<u64>;
}

/// Where a variable is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Address(u64),
    /// In a register (DWARF number).
    Register(u16),
    /// Not in memory; this is its value.
    Value(u64),
    Bytes(Vec<u8>),
    Unavailable,
    /// Split over several places (`DW_OP_piece`).
    Pieces(Vec<PlacePiece>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacePiece {
    pub size_bits: Option<u64>,
    pub place: Place,
}

pub(super) struct Scopes {
    units: Units,
    ids: HashMap<DieRef, TypeId>,
    /// (start, end, unit), sorted by start.
    ranges: Vec<(u64, u64, u32)>,
}

impl Scopes {
    pub(super) fn new(units: Units, ids: HashMap<DieRef, TypeId>) -> gimli::Result<Scopes> {
        let mut ranges = Vec::new();
        for (i, unit) in units.units.iter().enumerate() {
            let mut it = units.dwarf.unit_ranges(unit)?;
            let mut n = 0;
            while let Some(r) = it.next()? {
                n += 1;
                if n > MAX_UNIT_RANGES {
                    break;
                }
                if r.begin < r.end {
                    ranges.push((r.begin, r.end, i as u32));
                }
            }
        }
        ranges.sort_unstable();
        Ok(Scopes { units, ids, ranges })
    }

    fn unit_at(&self, pc: u64) -> Option<u32> {
        let i = self.ranges.partition_point(|r| r.0 <= pc);
        // Ranges of different units do not overlap in a linked kernel, but a unit may have
        // many; look back over the few that start below the pc.
        self.ranges[..i]
            .iter()
            .rev()
            .take(64)
            .find(|r| pc < r.1)
            .map(|r| r.2)
    }

    pub(super) fn scope_at(&self, types: &Types, pc: u64) -> Result<Scope, TypesError> {
        let mut scope = Scope {
            pc,
            frames: Vec::new(),
            frame_base: None,
        };
        let Some(ui) = self.unit_at(pc) else {
            return Ok(scope);
        };
        let units = &self.units;
        let Some(unit) = units.unit(ui) else {
            return Ok(scope);
        };
        let bad = |e| types.error(e);
        let mut entries = unit.entries();
        // Enclosing scopes that contain the pc: (depth, frame index).
        let mut stack: Vec<(isize, usize)> = Vec::new();
        // Outermost first while walking; reversed at the end.
        let mut frames: Vec<ScopeFrame> = Vec::new();
        let mut skip_deeper_than: Option<isize> = None;
        while let Some(entry) = entries.next_dfs().map_err(bad)? {
            let depth = entry.depth();
            if let Some(d) = skip_deeper_than {
                if depth > d {
                    continue;
                }
                skip_deeper_than = None;
            }
            while stack.last().is_some_and(|(d, _)| *d >= depth) {
                stack.pop();
            }
            let tag = entry.tag();
            match tag {
                gimli::DW_TAG_compile_unit | gimli::DW_TAG_partial_unit => {}
                gimli::DW_TAG_subprogram
                | gimli::DW_TAG_inlined_subroutine
                | gimli::DW_TAG_lexical_block => {
                    if !self.contains(unit, entry, pc).map_err(bad)? {
                        if entry.has_children() {
                            skip_deeper_than = Some(depth);
                        }
                        continue;
                    }
                    let frame = if tag == gimli::DW_TAG_lexical_block {
                        match stack.last() {
                            Some(&(_, f)) => f,
                            None => continue,
                        }
                    } else {
                        if frames.len() >= MAX_FRAMES {
                            return Err(TypesError::Location(format!(
                                "more than {MAX_FRAMES} nested functions at {pc:#x}"
                            )));
                        }
                        if tag == gimli::DW_TAG_subprogram {
                            // DWARF 3+ says DW_OP_call_frame_cfa; DWARF 2 has no such operator,
                            // so gcc gives a location list (sp in the prologue, then s0).
                            scope.frame_base = match entry.attr(gimli::DW_AT_frame_base) {
                                Some(a) => Some(match a.exprloc_value() {
                                    Some(e) => expr_location(e, unit.encoding()),
                                    None => self.list_location(unit, a.value(), pc).map_err(bad)?,
                                }),
                                None => None,
                            };
                        }
                        frames.push(ScopeFrame {
                            function: self.name(ui, unit, entry),
                            inlined: tag == gimli::DW_TAG_inlined_subroutine,
                            variables: Vec::new(),
                        });
                        frames.len() - 1
                    };
                    if entry.has_children() {
                        stack.push((depth, frame));
                    }
                }
                gimli::DW_TAG_variable | gimli::DW_TAG_formal_parameter => {
                    let Some(&(d, frame)) = stack.last() else {
                        continue;
                    };
                    if d + 1 != depth {
                        continue;
                    }
                    if let Some(v) = self.variable(ui, unit, entry, pc).map_err(bad)? {
                        frames[frame].variables.push(v);
                    }
                }
                _ => {
                    if entry.has_children() {
                        skip_deeper_than = Some(depth);
                    }
                }
            }
        }
        // Inner lexical blocks come later in the walk; put their variables first.
        for f in &mut frames {
            f.variables.reverse();
        }
        frames.reverse();
        scope.frames = frames;
        Ok(scope)
    }

    fn contains(
        &self,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
        pc: u64,
    ) -> gimli::Result<bool> {
        let mut ranges = self.units.dwarf.die_ranges(unit, entry)?;
        let mut n = 0;
        while let Some(r) = ranges.next()? {
            n += 1;
            if n > MAX_UNIT_RANGES {
                break;
            }
            if r.begin <= pc && pc < r.end {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The name of a DIE, from itself or from its abstract origin (inlined code, out-of-line
    /// copies of inline functions).
    fn name(
        &self,
        ui: u32,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
    ) -> Option<String> {
        if let Some(n) = self.units.name_of(unit, entry) {
            return Some(n);
        }
        let (u, off) = self.origin(ui, entry)?;
        die_name(&self.units, u, off)
    }

    fn origin(&self, ui: u32, entry: &gimli::DebuggingInformationEntry<R>) -> Option<DieRef> {
        let v = entry
            .attr_value(gimli::DW_AT_abstract_origin)
            .or_else(|| entry.attr_value(gimli::DW_AT_specification))?;
        self.units.resolve(ui, v)
    }

    fn variable(
        &self,
        ui: u32,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
        pc: u64,
    ) -> gimli::Result<Option<ScopedVariable>> {
        let Some(name) = self.name(ui, unit, entry) else {
            return Ok(None);
        };
        let ty = match entry.attr_value(gimli::DW_AT_type) {
            Some(v) => self.units.resolve(ui, v),
            None => self.origin(ui, entry).and_then(|(u, off)| {
                let unit = self.units.unit(u)?;
                let e = unit.entry(gimli::UnitOffset(off as usize)).ok()?;
                self.units.resolve(u, e.attr_value(gimli::DW_AT_type)?)
            }),
        }
        .and_then(|r| self.ids.get(&r).copied());
        let location = match entry.attr(gimli::DW_AT_location) {
            Some(attr) => match attr.value() {
                AttributeValue::Exprloc(e) => expr_location(e, unit.encoding()),
                AttributeValue::Block(b) => expr_location(gimli::Expression(b), unit.encoding()),
                v => self.list_location(unit, v, pc)?,
            },
            None => match entry.attr(gimli::DW_AT_const_value) {
                Some(a) => const_location(a.value()),
                None => VarLocation::Unavailable,
            },
        };
        Ok(Some(ScopedVariable {
            name,
            ty,
            parameter: entry.tag() == gimli::DW_TAG_formal_parameter,
            location,
        }))
    }

    fn list_location(
        &self,
        unit: &gimli::Unit<R>,
        value: AttributeValue<R>,
        pc: u64,
    ) -> gimli::Result<VarLocation> {
        let Some(mut list) = self.units.dwarf.attr_locations(unit, value)? else {
            return Ok(VarLocation::Unavailable);
        };
        let mut n = 0;
        while let Some(e) = list.next()? {
            n += 1;
            if n > MAX_LIST_ENTRIES {
                break;
            }
            if e.range.begin <= pc && pc < e.range.end {
                return Ok(expr_location(e.data, unit.encoding()));
            }
        }
        Ok(VarLocation::Unavailable)
    }
}

fn expr_location(e: gimli::Expression<R>, encoding: gimli::Encoding) -> VarLocation {
    match e.0.to_slice() {
        Ok(bytes) => VarLocation::Expr {
            bytes: bytes.into_owned(),
            encoding,
        },
        Err(_) => VarLocation::Unavailable,
    }
}

fn const_location(v: AttributeValue<R>) -> VarLocation {
    let bytes = match v {
        AttributeValue::Block(b) => b.to_slice().map(|b| b.into_owned()).unwrap_or_default(),
        AttributeValue::Sdata(n) => n.to_le_bytes().to_vec(),
        AttributeValue::Udata(n) => n.to_le_bytes().to_vec(),
        AttributeValue::Data1(n) => vec![n],
        AttributeValue::Data2(n) => n.to_le_bytes().to_vec(),
        AttributeValue::Data4(n) => n.to_le_bytes().to_vec(),
        AttributeValue::Data8(n) => n.to_le_bytes().to_vec(),
        _ => return VarLocation::Unavailable,
    };
    VarLocation::Const(bytes)
}

/// Evaluates `location` (with `frame_base` for `DW_OP_fbreg`) against a hart's state.
pub(super) fn evaluate(
    location: &VarLocation,
    frame_base: Option<&VarLocation>,
    ctx: &mut dyn FrameContext,
) -> Result<Place, TypesError> {
    match location {
        VarLocation::Unavailable => Ok(Place::Unavailable),
        VarLocation::Const(b) => Ok(Place::Bytes(b.clone())),
        VarLocation::Expr { bytes, encoding } => run(bytes, *encoding, frame_base, ctx, 0),
    }
}

fn run(
    bytes: &[u8],
    encoding: gimli::Encoding,
    frame_base: Option<&VarLocation>,
    ctx: &mut dyn FrameContext,
    depth: u32,
) -> Result<Place, TypesError> {
    let err = |what: String| TypesError::Location(what);
    let gerr = |e: gimli::Error| TypesError::Location(e.to_string());
    let reader = gimli::EndianSlice::new(bytes, gimli::LittleEndian);
    let mut eval = gimli::Expression(reader).evaluation(encoding);
    eval.set_max_iterations(MAX_EXPR_STEPS);
    let mut state = eval.evaluate().map_err(gerr)?;
    loop {
        state = match state {
            gimli::EvaluationResult::Complete => break,
            gimli::EvaluationResult::RequiresRegister { register, .. } => {
                let v = ctx
                    .register(register.0)
                    .ok_or_else(|| err(format!("register {} is not available", register.0)))?;
                eval.resume_with_register(gimli::Value::Generic(v))
                    .map_err(gerr)?
            }
            gimli::EvaluationResult::RequiresMemory { address, size, .. } => {
                let v = ctx
                    .read_memory(address, size)
                    .ok_or_else(|| err(format!("cannot read {size} bytes at {address:#x}")))?;
                eval.resume_with_memory(gimli::Value::Generic(v))
                    .map_err(gerr)?
            }
            gimli::EvaluationResult::RequiresCallFrameCfa => {
                let cfa = ctx
                    .cfa()
                    .ok_or_else(|| err("the frame's CFA is not known".into()))?;
                eval.resume_with_call_frame_cfa(cfa).map_err(gerr)?
            }
            gimli::EvaluationResult::RequiresFrameBase => {
                let base = match (frame_base, depth) {
                    (Some(VarLocation::Expr { bytes, encoding }), 0) => {
                        match run(bytes, *encoding, None, ctx, depth + 1)? {
                            Place::Address(a) | Place::Value(a) => a,
                            Place::Register(r) => ctx
                                .register(r)
                                .ok_or_else(|| err(format!("register {r} is not available")))?,
                            other => return Err(err(format!("frame base evaluates to {other:?}"))),
                        }
                    }
                    _ => return Err(err("the function has no usable frame base".into())),
                };
                eval.resume_with_frame_base(base).map_err(gerr)?
            }
            gimli::EvaluationResult::RequiresRelocatedAddress(a) => {
                eval.resume_with_relocated_address(a).map_err(gerr)?
            }
            gimli::EvaluationResult::RequiresBaseType(_) => eval
                .resume_with_base_type(gimli::ValueType::Generic)
                .map_err(gerr)?,
            // The value at function entry or in the caller: not recoverable from one stop.
            gimli::EvaluationResult::RequiresEntryValue(_)
            | gimli::EvaluationResult::RequiresParameterRef(_) => return Ok(Place::Unavailable),
            other => return Err(err(format!("unsupported DWARF expression ({other:?})"))),
        };
    }
    let pieces = eval.as_result();
    let one = |p: &gimli::Piece<gimli::EndianSlice<'_, gimli::LittleEndian>>| match &p.location {
        gimli::Location::Empty => Place::Unavailable,
        gimli::Location::Register { register } => Place::Register(register.0),
        gimli::Location::Address { address } => Place::Address(*address),
        gimli::Location::Value { value } => match value.to_u64(!0) {
            Ok(v) => Place::Value(v),
            Err(_) => Place::Unavailable,
        },
        gimli::Location::Bytes { value } => Place::Bytes(value.slice().to_vec()),
        _ => Place::Unavailable,
    };
    Ok(match pieces {
        [] => Place::Unavailable,
        [p] if p.size_in_bits.is_none() => one(p),
        many => Place::Pieces(
            many.iter()
                .map(|p| PlacePiece {
                    size_bits: p.size_in_bits,
                    place: one(p),
                })
                .collect(),
        ),
    })
}
