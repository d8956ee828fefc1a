//! The DWARF units of an ELF and references to their DIEs: what loading types, resolving
//! them and reading scopes share.

use gimli::{AttributeValue, Reader as _};

pub(super) type R = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// Expression evaluations (member offsets, addresses) are a handful of operations.
pub(super) const MAX_EXPR_STEPS: u32 = 256;

/// A reference to a DIE: unit index and offset inside the unit.
pub(super) type DieRef = (u32, u64);

pub(super) struct Units {
    pub dwarf: gimli::Dwarf<R>,
    pub units: Vec<gimli::Unit<R>>,
    /// `.debug_info` offset range of each unit, for `DW_FORM_ref_addr` references.
    pub starts: Vec<(u64, u64)>,
}

impl Units {
    /// Resolves a type or origin reference to (unit, offset).
    pub fn resolve(&self, unit: u32, value: AttributeValue<R>) -> Option<DieRef> {
        match value {
            AttributeValue::UnitRef(off) => Some((unit, off.0 as u64)),
            AttributeValue::DebugInfoRef(off) => {
                let off = off.0 as u64;
                let i = self.starts.partition_point(|&(s, _)| s <= off);
                let (start, end) = *self.starts.get(i.checked_sub(1)?)?;
                (off < end).then_some(((i - 1) as u32, off - start))
            }
            _ => None,
        }
    }

    pub fn unit(&self, i: u32) -> Option<&gimli::Unit<R>> {
        self.units.get(i as usize)
    }

    /// A string attribute (`DW_AT_name`) as UTF-8, lossily.
    pub fn string(&self, unit: &gimli::Unit<R>, value: AttributeValue<R>) -> Option<String> {
        let s = self.dwarf.attr_string(unit, value).ok()?;
        Some(s.to_string_lossy().ok()?.into_owned())
    }

    pub fn name_of(
        &self,
        unit: &gimli::Unit<R>,
        entry: &gimli::DebuggingInformationEntry<R>,
    ) -> Option<String> {
        self.string(unit, entry.attr_value(gimli::DW_AT_name)?)
    }
}

/// The name of the DIE at (unit, offset), if it has one.
pub(super) fn die_name(units: &Units, u: u32, off: u64) -> Option<String> {
    let unit = units.unit(u)?;
    let entry = unit
        .entry(gimli::UnitOffset(usize::try_from(off).ok()?))
        .ok()?;
    units.name_of(unit, &entry)
}
