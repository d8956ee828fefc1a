//! The ELF's DWARF sections, loaded for gimli.

use std::path::Path;
use std::sync::Arc;

use object::{Object, ObjectSection};

use crate::symbols::SymbolsError;

/// Owns its section data (`EndianArcSlice`, gimli's `endian-reader` feature), so what is built
/// on it lives as long as [`crate::symbols::Symbols`] without borrowing the file's bytes.
pub(crate) type DwarfReader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// The DWARF sections of `file` (decompressed), or `None` when it has no `.debug_info`.
/// `path` names the file in errors.
pub(crate) fn load_sections(
    file: &object::File<'_>,
    path: &Path,
) -> Result<Option<gimli::Dwarf<DwarfReader>>, SymbolsError> {
    let has_info = file
        .section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0);
    if !has_info {
        return Ok(None);
    }
    let malformed = |e: object::Error| SymbolsError::Malformed {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = gimli::Dwarf::load(
        |id: gimli::SectionId| -> Result<DwarfReader, SymbolsError> {
            let data: Arc<[u8]> = match file.section_by_name(id.name()) {
                Some(s) => Arc::from(s.uncompressed_data().map_err(malformed)?.as_ref()),
                None => Arc::from(&[][..]),
            };
            Ok(gimli::EndianArcSlice::new(data, endian))
        },
    )?;
    Ok(Some(dwarf))
}
