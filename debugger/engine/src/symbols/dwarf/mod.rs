//! DWARF of the kernel ELF, on its own: it knows nothing of the symbol table or of [`Symbols`]
//! (which uses it).
//!
//! - `sections`: the ELF's DWARF sections as gimli reads them, for any DWARF reader (the line
//!   tables here; a type reader can load its own from the same bytes).
//! - `lines`: line tables and inlined frames at a pc, through `addr2line`.
//! - `paths`: where the DWARF's source paths are on this machine, and how to show them.
//! - `site`: which frames belong to the lock implementation, to name the code that took a lock.
//!
//! [`Symbols`]: super::Symbols

mod lines;
mod paths;
mod sections;
mod site;

pub use lines::{demangle, Location, SourceFrame};
pub use site::SiteFilter;

pub(crate) use lines::LineTables;
pub(crate) use paths::SourcePaths;
pub(crate) use sections::{load_sections, DwarfReader};
