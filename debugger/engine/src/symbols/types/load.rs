//! Reading every unit's DIEs into the type arena and the list of globals.
//!
//! Two passes: the first walks each unit's DIE tree once (an explicit parent stack, never
//! recursion, so a deep or cyclic tree cannot overflow the stack) and records types with their
//! references as raw DIE offsets; the second resolves those offsets to [`TypeId`]s, splits
//! multi-dimensional arrays into nested ones and computes array sizes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use gimli::{AttributeValue, DwTag};
use object::{Object, ObjectSection};

use super::resolve::{
    resolve_globals, resolve_types, RawBits, RawGlobal, RawKind, RawMember, RawType,
};
use super::scope::Scopes;
use super::units::{die_name, DieRef, Units, MAX_EXPR_STEPS, R};
use super::{BaseKind, Global, Qualifier, Type, TypeId, TypesError};

/// DIE trees nest a few levels in C (unit, function, block, ...); deeper is malformed.
const MAX_DIE_DEPTH: usize = 256;
pub(super) struct Loaded {
    pub types: Vec<Type>,
    pub globals: Vec<Global>,
    pub scopes: Scopes,
}

enum Parent {
    Type(usize),
    Subprogram(Option<String>),
    Other,
}

pub(super) fn load(path: &Path, elf: &[u8]) -> Result<Loaded, TypesError> {
    let malformed = |reason: String| TypesError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let file = object::File::parse(elf).map_err(|e| malformed(e.to_string()))?;
    if file
        .section_by_name(".debug_info")
        .is_none_or(|s| s.size() == 0)
    {
        return Err(TypesError::NoDebugInfo {
            path: path.to_owned(),
        });
    }
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = gimli::Dwarf::load(|id: gimli::SectionId| -> Result<R, TypesError> {
        let data: Arc<[u8]> = match file.section_by_name(id.name()) {
            Some(s) => Arc::from(
                s.uncompressed_data()
                    .map_err(|e| malformed(format!("section {}: {e}", id.name())))?
                    .as_ref(),
            ),
            None => Arc::from(&[][..]),
        };
        Ok(gimli::EndianArcSlice::new(data, endian))
    })?;
    let bad = |source| TypesError::Dwarf {
        path: path.to_owned(),
        source,
    };

    let mut units = Vec::new();
    let mut starts = Vec::new();
    let mut headers = dwarf.units();
    while let Some(header) = headers.next().map_err(bad)? {
        let Some(start) = header.debug_info_offset() else {
            continue;
        };
        let start = start.0 as u64;
        let end = start.saturating_add(header.length_including_self() as u64);
        let unit = dwarf.unit(header).map_err(bad)?;
        units.push(unit);
        starts.push((start, end));
    }
    let units = Units {
        dwarf,
        units,
        starts,
    };

    let mut pass = FirstPass {
        path,
        units: &units,
        raw: vec![RawType {
            name: None,
            size: None,
            kind: RawKind::Void,
        }],
        ids: HashMap::new(),
        globals: Vec::new(),
        unit_names: Vec::new(),
    };
    for i in 0..units.units.len() {
        pass.unit(i as u32)?;
    }
    let FirstPass {
        raw,
        ids,
        globals,
        unit_names,
        ..
    } = pass;
    let types = resolve_types(raw, &ids);
    let globals = resolve_globals(&units, globals, &ids, &unit_names);
    let scopes = Scopes::new(units, ids).map_err(bad)?;
    Ok(Loaded {
        types,
        globals,
        scopes,
    })
}

struct FirstPass<'a> {
    path: &'a Path,
    units: &'a Units,
    raw: Vec<RawType>,
    ids: HashMap<DieRef, TypeId>,
    globals: Vec<RawGlobal>,
    unit_names: Vec<String>,
}

impl FirstPass<'_> {
    fn unit(&mut self, ui: u32) -> Result<(), TypesError> {
        let units = self.units;
        let unit = &units.units[ui as usize];
        let mut entries = unit.entries();
        let mut stack: Vec<(isize, Parent)> = Vec::new();
        let mut unit_name = None;
        let path = self.path;
        let bad = |source| TypesError::Dwarf {
            path: path.to_owned(),
            source,
        };
        while let Some(entry) = entries.next_dfs().map_err(bad)? {
            let depth = entry.depth();
            while stack.last().is_some_and(|(d, _)| *d >= depth) {
                stack.pop();
            }
            if stack.len() >= MAX_DIE_DEPTH {
                return Err(TypesError::Malformed {
                    path: path.to_owned(),
                    reason: format!(
                        "DIEs nested more than {MAX_DIE_DEPTH} deep at offset {:#x} of unit {ui}",
                        entry.offset().0
                    ),
                });
            }
            let off = entry.offset().0 as u64;
            let tag = entry.tag();
            let parent = stack.last().map(|(_, p)| p);
            let mut pushed = Parent::Other;
            if tag == gimli::DW_TAG_compile_unit || tag == gimli::DW_TAG_partial_unit {
                unit_name = units.name_of(unit, entry);
            } else if let Some(kind) = self.type_kind(ui, unit, entry, tag) {
                let idx = self.raw.len();
                self.raw.push(RawType {
                    name: units.name_of(unit, entry),
                    size: entry
                        .attr(gimli::DW_AT_byte_size)
                        .and_then(|a| a.udata_value()),
                    kind,
                });
                self.ids.insert((ui, off), TypeId(idx as u32));
                pushed = Parent::Type(idx);
            } else {
                match (tag, parent) {
                    (gimli::DW_TAG_member, Some(Parent::Type(p))) => {
                        let m = self.member(ui, unit, entry);
                        if let (Some(m), RawKind::Composite { members, .. }) =
                            (m, &mut self.raw[*p].kind)
                        {
                            members.push(m);
                        }
                    }
                    (gimli::DW_TAG_subrange_type, Some(Parent::Type(p))) => {
                        let count = subrange_count(entry);
                        if let RawKind::Array { dims, .. } = &mut self.raw[*p].kind {
                            dims.push(count);
                        }
                    }
                    (gimli::DW_TAG_enumerator, Some(Parent::Type(p))) => {
                        let name = units.name_of(unit, entry);
                        let value =
                            entry
                                .attr(gimli::DW_AT_const_value)
                                .and_then(|a| match a.value() {
                                    AttributeValue::Sdata(v) => Some(v),
                                    _ => a.udata_value().map(|v| v as i64),
                                });
                        if let (Some(n), Some(v), RawKind::Enum(values)) =
                            (name, value, &mut self.raw[*p].kind)
                        {
                            values.push((n, v));
                        }
                    }
                    (gimli::DW_TAG_subprogram, _) => {
                        pushed = Parent::Subprogram(self.subprogram_name(ui, unit, entry));
                    }
                    (gimli::DW_TAG_variable, _) => {
                        let function = stack.iter().rev().find_map(|(_, p)| match p {
                            Parent::Subprogram(n) => Some(n.clone().unwrap_or_else(|| "?".into())),
                            _ => None,
                        });
                        self.global(ui, unit, entry, function);
                    }
                    _ => {}
                }
            }
            if entry.has_children() {
                stack.push((depth, pushed));
            }
        }
        self.unit_names
            .push(unit_name.unwrap_or_else(|| format!("unit {ui}")));
        Ok(())
    }

    fn type_ref(
        &self,
        ui: u32,
        entry: &gimli::DebuggingInformationEntry<R>,
        at: gimli::DwAt,
    ) -> Option<DieRef> {
        self.units.resolve(ui, entry.attr_value(at)?)
    }

    fn type_kind(
        &self,
        ui: u32,
        _unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
        tag: DwTag,
    ) -> Option<RawKind> {
        let target = || self.type_ref(ui, entry, gimli::DW_AT_type);
        let declaration = matches!(
            entry.attr_value(gimli::DW_AT_declaration),
            Some(AttributeValue::Flag(true))
        );
        Some(match tag {
            gimli::DW_TAG_base_type => {
                let enc = match entry.attr_value(gimli::DW_AT_encoding) {
                    Some(AttributeValue::Encoding(e)) => e,
                    _ => gimli::DwAte(0),
                };
                RawKind::Base(match enc {
                    gimli::DW_ATE_signed => BaseKind::Signed,
                    gimli::DW_ATE_unsigned => BaseKind::Unsigned,
                    gimli::DW_ATE_signed_char => BaseKind::SignedChar,
                    gimli::DW_ATE_unsigned_char | gimli::DW_ATE_UTF => BaseKind::UnsignedChar,
                    gimli::DW_ATE_boolean => BaseKind::Bool,
                    gimli::DW_ATE_float => BaseKind::Float,
                    _ => BaseKind::Other,
                })
            }
            gimli::DW_TAG_unspecified_type => RawKind::Void,
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => RawKind::Pointer(target()),
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type => RawKind::Composite {
                union: false,
                members: Vec::new(),
                declaration,
            },
            gimli::DW_TAG_union_type => RawKind::Composite {
                union: true,
                members: Vec::new(),
                declaration,
            },
            gimli::DW_TAG_array_type => RawKind::Array {
                element: target(),
                dims: Vec::new(),
            },
            gimli::DW_TAG_enumeration_type => RawKind::Enum(Vec::new()),
            gimli::DW_TAG_typedef => RawKind::Typedef(target()),
            gimli::DW_TAG_const_type => RawKind::Qualified(Qualifier::Const, target()),
            gimli::DW_TAG_volatile_type => RawKind::Qualified(Qualifier::Volatile, target()),
            gimli::DW_TAG_restrict_type => RawKind::Qualified(Qualifier::Restrict, target()),
            gimli::DW_TAG_atomic_type => RawKind::Qualified(Qualifier::Atomic, target()),
            gimli::DW_TAG_subroutine_type => RawKind::Function,
            _ => return None,
        })
    }

    fn member(
        &self,
        ui: u32,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
    ) -> Option<RawMember> {
        let udata = |at| entry.attr(at).and_then(|a| a.udata_value());
        let data_bit_offset = udata(gimli::DW_AT_data_bit_offset);
        let offset = match entry.attr_value(gimli::DW_AT_data_member_location) {
            // A union member, or a DWARF 4+ bit field located by DW_AT_data_bit_offset.
            None => data_bit_offset.map_or(0, |b| b / 8),
            Some(v) => constant_or_expr(v, unit.encoding())?,
        };
        let bits = match (udata(gimli::DW_AT_bit_size), data_bit_offset) {
            (Some(size), Some(dbo)) => Some((RawBits::DataBitOffset(dbo), size)),
            (Some(size), None) => match udata(gimli::DW_AT_bit_offset) {
                Some(bit_offset) => Some((
                    RawBits::BitOffset {
                        bit_offset,
                        bit_size: size,
                        byte_size: udata(gimli::DW_AT_byte_size),
                    },
                    size,
                )),
                // DWARF 4 with only a bit size: the bits start at the member's offset.
                None => Some((RawBits::DataBitOffset(offset.checked_mul(8)?), size)),
            },
            _ => None,
        };
        Some(RawMember {
            name: self.units.name_of(unit, entry),
            ty: self.type_ref(ui, entry, gimli::DW_AT_type),
            offset,
            bits,
        })
    }

    fn subprogram_name(
        &self,
        ui: u32,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
    ) -> Option<String> {
        if let Some(n) = self.units.name_of(unit, entry) {
            return Some(n);
        }
        let origin = entry
            .attr_value(gimli::DW_AT_abstract_origin)
            .or_else(|| entry.attr_value(gimli::DW_AT_specification))?;
        let (u, off) = self.units.resolve(ui, origin)?;
        die_name(self.units, u, off)
    }

    fn global(
        &mut self,
        ui: u32,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
        function: Option<String>,
    ) {
        let Some(loc) = entry
            .attr(gimli::DW_AT_location)
            .and_then(|a| a.exprloc_value())
        else {
            return;
        };
        let Some(address) = static_address(&self.units.dwarf, unit, loc) else {
            return;
        };
        let origin = entry
            .attr_value(gimli::DW_AT_specification)
            .or_else(|| entry.attr_value(gimli::DW_AT_abstract_origin))
            .and_then(|v| self.units.resolve(ui, v));
        self.globals.push(RawGlobal {
            name: self.units.name_of(unit, entry),
            ty: self.type_ref(ui, entry, gimli::DW_AT_type),
            address,
            external: matches!(
                entry.attr_value(gimli::DW_AT_external),
                Some(AttributeValue::Flag(true))
            ),
            function,
            unit: ui,
            origin,
        });
    }
}

/// A member offset: a constant (DWARF 3+) or a location expression evaluated with the struct's
/// address 0 on the stack (DWARF 2's `DW_OP_plus_uconst N`).
fn constant_or_expr(v: AttributeValue<R>, encoding: gimli::Encoding) -> Option<u64> {
    match v {
        AttributeValue::Udata(n) => Some(n),
        AttributeValue::Sdata(n) => u64::try_from(n).ok(),
        AttributeValue::Data1(n) => Some(n as u64),
        AttributeValue::Data2(n) => Some(n as u64),
        AttributeValue::Data4(n) => Some(n as u64),
        AttributeValue::Data8(n) => Some(n),
        other => {
            let expr = other.exprloc_value()?;
            let mut eval = expr.evaluation(encoding);
            eval.set_initial_value(0);
            eval.set_max_iterations(MAX_EXPR_STEPS);
            if eval.evaluate().ok()? != gimli::EvaluationResult::Complete {
                return None;
            }
            match eval.as_result() {
                [gimli::Piece {
                    location: gimli::Location::Address { address },
                    ..
                }] => Some(*address),
                _ => None,
            }
        }
    }
}

/// The address of a variable whose location is exactly `DW_OP_addr A` (or `DW_OP_addrx`),
/// optionally followed by `DW_OP_plus_uconst`. Anything else (registers, frame offsets, a
/// `DW_OP_stack_value` that makes the address a value) is not a static variable.
pub(super) fn static_address(
    dwarf: &gimli::Dwarf<R>,
    unit: &gimli::Unit<R>,
    loc: gimli::Expression<R>,
) -> Option<u64> {
    let mut ops = loc.operations(unit.encoding());
    let mut address = match ops.next().ok()?? {
        gimli::Operation::Address { address } => address,
        gimli::Operation::AddressIndex { index } => dwarf.address(unit, index).ok()?,
        _ => return None,
    };
    for _ in 0..4 {
        match ops.next().ok()? {
            None => return Some(address),
            Some(gimli::Operation::PlusConstant { value }) => {
                address = address.checked_add(value)?;
            }
            Some(_) => return None,
        }
    }
    None
}

/// Element count of one array dimension: `DW_AT_count`, or `upper - lower + 1`; `None` for a
/// flexible array or a bound that is not a constant.
fn subrange_count(entry: &gimli::DebuggingInformationEntry<R>) -> Option<u64> {
    let constant = |at| {
        let a = entry.attr(at)?;
        match a.value() {
            AttributeValue::Sdata(v) => Some(v as i128),
            _ => a.udata_value().map(|v| v as i128),
        }
    };
    if let Some(c) = constant(gimli::DW_AT_count) {
        return u64::try_from(c).ok();
    }
    let upper = constant(gimli::DW_AT_upper_bound)?;
    let lower = constant(gimli::DW_AT_lower_bound).unwrap_or(0);
    // gcc writes `[0]` arrays with an upper bound of -1 (or its unsigned image).
    let upper = if upper == u64::MAX as i128 { -1 } else { upper };
    u64::try_from((upper - lower + 1).max(0)).ok()
}
