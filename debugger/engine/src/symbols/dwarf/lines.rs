//! Line tables and inlined frames at a pc, through `addr2line`.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::sections::{load_sections, DwarfReader};
use crate::symbols::SymbolsError;

/// Inlining depth is small in practice; the bound guards against a cyclic DIE tree.
const MAX_INLINE_DEPTH: usize = 64;

/// A source position. `file` is the full path as the DWARF says (or as found under the source
/// root), `short` the path relative to the workspace for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// `kernel/src/bio.rs`; `core/src/...` for the standard library; the full path otherwise.
    pub short: String,
    /// `None` for code the compiler attributes to no line (DWARF line 0), such as one call
    /// instruction shared by several call sites. gdb shows the previous row's line there,
    /// which is then often wrong; like llvm-symbolizer, we show none.
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl fmt::Display for Location {
    /// `kernel/src/bio.rs:88`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.short),
            None => f.write_str(&self.short),
        }
    }
}

/// One source-level frame at a pc: a function and where in its source. A pc in code inlined
/// from elsewhere has several, innermost first; all but the last are `inlined` into the next
/// one, and the last is the real (out-of-line) function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFrame {
    /// Demangled, without hash: `lockscope_kernel::bio::bget`.
    pub function: Option<String>,
    pub location: Option<Location>,
    pub inlined: bool,
}

impl fmt::Display for SourceFrame {
    /// `lockscope_kernel::bio::bget at kernel/src/bio.rs:88 [inlined]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function.as_deref().unwrap_or("??"))?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        if self.inlined {
            f.write_str(" [inlined]")?;
        }
        Ok(())
    }
}

/// The line tables and inlining information of one ELF.
pub(crate) struct LineTables {
    /// `addr2line` parses units lazily through `&self` with interior cells that are not `Sync`.
    ctx: Mutex<addr2line::Context<DwarfReader>>,
    path: PathBuf,
}

impl LineTables {
    /// Builds the tables of `file`, or `None` when it has no DWARF. `path` names it in errors.
    pub(crate) fn load(file: &object::File<'_>, path: &Path) -> Result<Option<Self>, SymbolsError> {
        let Some(dwarf) = load_sections(file, path)? else {
            return Ok(None);
        };
        let ctx = addr2line::Context::from_dwarf(dwarf).map_err(|source| SymbolsError::Dwarf {
            path: path.to_owned(),
            source,
        })?;
        Ok(Some(LineTables {
            ctx: Mutex::new(ctx),
            path: path.to_owned(),
        }))
    }

    /// The frames the DWARF has at `pc`, innermost first, all marked inlined (the caller knows
    /// which is the real function: the last). Locations carry the DWARF's own file path in
    /// `short` and an empty `file`, for the caller to resolve. Empty for code the DWARF does not
    /// cover (assembly).
    pub(crate) fn frames_at(&self, pc: u64) -> Result<Vec<SourceFrame>, SymbolsError> {
        let ctx = self.ctx.lock().unwrap_or_else(|e| e.into_inner());
        let bad = |source| SymbolsError::Dwarf {
            path: self.path.clone(),
            source,
        };
        let mut out = Vec::new();
        let mut iter = ctx.find_frames(pc).skip_all_loads().map_err(bad)?;
        while let Some(frame) = iter.next().map_err(bad)? {
            if out.len() >= MAX_INLINE_DEPTH {
                break;
            }
            let function = match &frame.function {
                Some(name) => Some(name.demangle().map_err(bad)?.into_owned()),
                None => None,
            };
            let location = frame.location.as_ref().and_then(|l| {
                Some(Location {
                    file: PathBuf::new(),
                    short: l.file?.to_owned(),
                    line: l.line,
                    column: l.column,
                })
            });
            out.push(SourceFrame {
                function,
                location,
                inlined: true,
            });
        }
        Ok(out)
    }
}

/// Demangles a raw symbol name the way frames are shown (no hash).
pub fn demangle(raw: &str) -> String {
    addr2line::demangle_auto(Cow::Borrowed(raw), None).into_owned()
}
