//! The second pass over the DIEs: raw offsets become [`TypeId`]s, multi-dimensional arrays
//! become nested ones, array sizes and bit-field positions are computed, and globals get the
//! name and type their declaration gives.

use std::collections::HashMap;

use gimli::AttributeValue;

use super::units::{DieRef, Units};
use super::{
    BaseKind, BitField, Composite, Global, Member, Qualifier, Type, TypeId, TypeKind, MAX_CHAIN,
};

pub(super) enum RawKind {
    Void,
    Base(BaseKind),
    Pointer(Option<DieRef>),
    Composite {
        union: bool,
        members: Vec<RawMember>,
        declaration: bool,
    },
    Array {
        element: Option<DieRef>,
        dims: Vec<Option<u64>>,
    },
    Enum(Vec<(String, i64)>),
    Typedef(Option<DieRef>),
    Qualified(Qualifier, Option<DieRef>),
    Function,
}

pub(super) struct RawType {
    pub(super) name: Option<String>,
    pub(super) size: Option<u64>,
    pub(super) kind: RawKind,
}

pub(super) enum RawBits {
    /// DWARF 4+: bits from the start of the struct.
    DataBitOffset(u64),
    /// DWARF 2/3: `bit_offset` counts from the most significant bit of a storage unit of
    /// `byte_size` bytes (the member type's size when absent) at the member's offset.
    BitOffset {
        bit_offset: u64,
        bit_size: u64,
        byte_size: Option<u64>,
    },
}

pub(super) struct RawMember {
    pub(super) name: Option<String>,
    pub(super) ty: Option<DieRef>,
    pub(super) offset: u64,
    pub(super) bits: Option<(RawBits, u64)>,
}

pub(super) struct RawGlobal {
    pub(super) name: Option<String>,
    pub(super) ty: Option<DieRef>,
    pub(super) address: u64,
    pub(super) external: bool,
    pub(super) function: Option<String>,
    pub(super) unit: u32,
    /// `DW_AT_specification` or `DW_AT_abstract_origin`: where name and type are when the
    /// definition leaves them out.
    pub(super) origin: Option<DieRef>,
}

pub(super) fn resolve_types(raw: Vec<RawType>, ids: &HashMap<DieRef, TypeId>) -> Vec<Type> {
    let void = TypeId(0);
    let get = |r: Option<DieRef>| r.and_then(|r| ids.get(&r).copied());
    let mut types: Vec<Type> = Vec::with_capacity(raw.len());
    let mut extra: Vec<Type> = Vec::new();
    let mut pending_bits: Vec<(usize, usize, RawBits)> = Vec::new();
    let n = raw.len();
    for t in raw {
        let kind = match t.kind {
            RawKind::Void => TypeKind::Void,
            RawKind::Base(b) => TypeKind::Base(b),
            RawKind::Pointer(p) => TypeKind::Pointer(get(p)),
            RawKind::Typedef(p) => TypeKind::Typedef(get(p)),
            RawKind::Qualified(q, p) => TypeKind::Qualified(q, get(p)),
            RawKind::Function => TypeKind::Function,
            RawKind::Enum(v) => TypeKind::Enum(v),
            RawKind::Composite {
                union,
                members,
                declaration,
            } => {
                let mut out = Vec::with_capacity(members.len());
                for (j, m) in members.into_iter().enumerate() {
                    let bits = m.bits.map(|(raw_bits, size)| {
                        // Positioned below, once member type sizes are known.
                        pending_bits.push((types.len(), j, raw_bits));
                        BitField {
                            shift: 0,
                            size: size.min(u32::MAX as u64) as u32,
                        }
                    });
                    out.push(Member {
                        name: m.name,
                        ty: get(m.ty).unwrap_or(void),
                        offset: m.offset,
                        bits,
                    });
                }
                let members = out;
                let c = Composite {
                    members,
                    declaration: declaration && t.size.is_none(),
                };
                if union {
                    TypeKind::Union(c)
                } else {
                    TypeKind::Struct(c)
                }
            }
            RawKind::Array { element, dims } => {
                let element = get(element).unwrap_or(void);
                // `T a[2][3]`: the DIE is the outer array; each inner dimension gets its own
                // (synthesized) array type so that every array has one element type.
                let mut inner = element;
                let dims = if dims.is_empty() { vec![None] } else { dims };
                for &count in dims[1..].iter().rev() {
                    extra.push(Type {
                        name: None,
                        size: None,
                        kind: TypeKind::Array {
                            element: inner,
                            count,
                        },
                    });
                    inner = TypeId((n + extra.len() - 1) as u32);
                }
                TypeKind::Array {
                    element: inner,
                    count: dims[0],
                }
            }
        };
        types.push(Type {
            name: t.name,
            size: t.size,
            kind,
        });
    }
    types.extend(extra);
    compute_array_sizes(&mut types);
    for (t, j, raw_bits) in pending_bits {
        place_bits(&mut types, t, j, raw_bits);
    }
    types
}

/// Turns a bit field's DWARF position into a byte offset and a shift. A position that makes no
/// sense leaves a zero-sized field, which reads as nothing.
fn place_bits(types: &mut [Type], t: usize, j: usize, raw: RawBits) {
    let member = match &types[t].kind {
        TypeKind::Struct(c) | TypeKind::Union(c) => c.members.get(j).cloned(),
        _ => None,
    };
    let Some(m) = member else { return };
    let Some(bits) = m.bits else { return };
    let total = match raw {
        RawBits::DataBitOffset(b) => Some(b),
        RawBits::BitOffset {
            bit_offset,
            bit_size,
            byte_size,
        } => {
            let storage = byte_size.or_else(|| storage_size(types, m.ty));
            storage.and_then(|s| {
                m.offset
                    .checked_mul(8)?
                    .checked_add(s.checked_mul(8)?)?
                    .checked_sub(bit_offset)?
                    .checked_sub(bit_size)
            })
        }
    };
    let placed = match total {
        Some(total) if bits.size > 0 && bits.size <= 64 => (
            total / 8,
            BitField {
                shift: (total % 8) as u32,
                size: bits.size,
            },
        ),
        _ => (m.offset, BitField { shift: 0, size: 0 }),
    };
    if let TypeKind::Struct(c) | TypeKind::Union(c) = &mut types[t].kind {
        if let Some(m) = c.members.get_mut(j) {
            m.offset = placed.0;
            m.bits = Some(placed.1);
        }
    }
}

fn storage_size(types: &[Type], id: TypeId) -> Option<u64> {
    let mut id = id;
    for _ in 0..MAX_CHAIN {
        let t = types.get(id.index())?;
        match t.kind {
            TypeKind::Typedef(Some(n)) | TypeKind::Qualified(_, Some(n)) => id = n,
            _ => return t.size,
        }
    }
    None
}

/// Fills in the size of each array (count × element size) that DWARF did not give.
fn compute_array_sizes(types: &mut [Type]) {
    for i in 0..types.len() {
        if types[i].size.is_some() || !matches!(types[i].kind, TypeKind::Array { .. }) {
            continue;
        }
        types[i].size = array_size(types, TypeId(i as u32));
    }
}

fn array_size(types: &[Type], id: TypeId) -> Option<u64> {
    let mut mult: u64 = 1;
    let mut id = id;
    for _ in 0..MAX_CHAIN {
        let t = types.get(id.index())?;
        match t.kind {
            TypeKind::Array { element, count } => {
                mult = mult.checked_mul(count?)?;
                id = element;
            }
            TypeKind::Typedef(Some(n)) | TypeKind::Qualified(_, Some(n)) => id = n,
            TypeKind::Void | TypeKind::Function => return None,
            _ => return mult.checked_mul(t.size?),
        }
    }
    None
}

pub(super) fn resolve_globals(
    units: &Units,
    raw: Vec<RawGlobal>,
    ids: &HashMap<DieRef, TypeId>,
    unit_names: &[String],
) -> Vec<Global> {
    let mut out: Vec<Global> = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for g in raw {
        let (mut name, mut ty, mut external) = (g.name, g.ty, g.external);
        // The definition of `extern`-declared data names only its declaration.
        if let Some((u, off)) = g.origin {
            if let Some(unit) = units.unit(u) {
                if let Ok(e) = unit.entry(gimli::UnitOffset(off as usize)) {
                    if name.is_none() {
                        name = units.name_of(unit, &e);
                    }
                    if ty.is_none() {
                        ty = e
                            .attr_value(gimli::DW_AT_type)
                            .and_then(|v| units.resolve(u, v));
                    }
                    external |= matches!(
                        e.attr_value(gimli::DW_AT_external),
                        Some(AttributeValue::Flag(true))
                    );
                }
            }
        }
        let (Some(name), Some(ty)) = (name, ty.and_then(|t| ids.get(&t).copied())) else {
            continue;
        };
        if !seen.insert((name.clone(), g.address)) {
            continue;
        }
        out.push(Global {
            name,
            address: g.address,
            ty,
            external,
            function: g.function,
            unit: unit_names.get(g.unit as usize).cloned().unwrap_or_default(),
        });
    }
    out
}
