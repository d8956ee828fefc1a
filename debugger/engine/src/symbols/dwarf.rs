//! DWARF: source locations and inlined frames for a pc, through `addr2line`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use object::{Object, ObjectSection};

use super::elf::{lock, Symbols};
use super::SymbolsError;

/// Owns its section data (`EndianArcSlice`, gimli's `endian-reader` feature), so the context
/// lives as long as `Symbols` without borrowing the file bytes.
type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;
pub(super) type Dwarf = addr2line::Context<Reader>;

/// Entries kept per memo table before it is reset.
pub(super) const CACHE_CAP: usize = 1 << 16;

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

/// One frame at a pc. A pc in code inlined from elsewhere has several, innermost first; all but
/// the last are `inlined` into the next one, and the last is the real (out-of-line) function.
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

/// Which frames [`Symbols::lock_site`] skips: the lock implementation itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteFilter {
    /// A frame whose function path has one of these modules (`spinlock` matches
    /// `lockscope_kernel::spinlock::SpinLock<T>::lock`) is skipped.
    pub modules: Vec<String>,
    /// A frame whose file name is one of these (`spinlock.rs`) is skipped.
    pub files: Vec<String>,
    /// A frame whose function starts with one of these is skipped: a guard's release runs
    /// through an inlined `core::ptr::drop_in_place`.
    pub function_prefixes: Vec<String>,
}

impl Default for SiteFilter {
    fn default() -> Self {
        SiteFilter {
            modules: vec!["spinlock".into()],
            files: vec!["spinlock.rs".into()],
            function_prefixes: vec!["core::ptr::drop_in_place".into(), "core::mem::drop".into()],
        }
    }
}

impl SiteFilter {
    /// True when the frame belongs to the lock implementation.
    pub fn skips(&self, frame: &SourceFrame) -> bool {
        let in_module = frame.function.as_deref().is_some_and(|f| {
            // Every path segment but the function's own name, including those of a trait
            // impl's self type: `<lockscope_kernel::spinlock::Guard<T> as Drop>::drop`.
            let mut segments: Vec<&str> = f
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|s| !s.is_empty())
                .collect();
            segments.pop();
            segments.iter().any(|s| self.modules.iter().any(|m| m == s))
        });
        let in_file = frame.location.as_ref().is_some_and(|l| {
            let name = l.file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            self.files.iter().any(|f| f == name)
        });
        let in_glue = frame.function.as_deref().is_some_and(|f| {
            self.function_prefixes
                .iter()
                .any(|p| f.starts_with(p.as_str()))
        });
        in_module || in_file || in_glue
    }
}

type Memo<K, V> = Mutex<HashMap<K, Arc<V>>>;

#[derive(Default)]
pub(super) struct Caches {
    pub(super) frames: Memo<u64, [SourceFrame]>,
    sites: Memo<u64, SourceFrame>,
    files: Memo<Arc<str>, (PathBuf, String)>,
    /// Per function start: (instruction address, frame set before it runs).
    pub(super) frame_setup: Memo<u64, [(u64, bool)]>,
}

/// Builds the `addr2line` context, or `None` when the ELF has no `.debug_info`.
pub(super) fn load(file: &object::File<'_>, path: &Path) -> Result<Option<Dwarf>, SymbolsError> {
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
    let endian = gimli::RunTimeEndian::Little;
    let dwarf = gimli::Dwarf::load(|id: gimli::SectionId| -> Result<Reader, SymbolsError> {
        let data: Arc<[u8]> = match file.section_by_name(id.name()) {
            Some(s) => Arc::from(s.uncompressed_data().map_err(malformed)?.as_ref()),
            None => Arc::from(&[][..]),
        };
        Ok(gimli::EndianArcSlice::new(data, endian))
    })?;
    let ctx = addr2line::Context::from_dwarf(dwarf).map_err(|source| SymbolsError::Dwarf {
        path: path.to_owned(),
        source,
    })?;
    Ok(Some(ctx))
}

/// The repository the ELF sits in (nearest ancestor with `.git`), else the directory holding
/// its `target/`, else none. Source paths are shown relative to it.
pub(super) fn default_source_root(elf: &Path) -> Option<PathBuf> {
    let elf = std::fs::canonicalize(elf).unwrap_or_else(|_| elf.to_owned());
    if let Some(repo) = elf.ancestors().skip(1).find(|d| d.join(".git").exists()) {
        return Some(repo.to_owned());
    }
    elf.ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .map(Path::to_owned)
}

impl Symbols {
    /// The directory source paths are shown relative to, and looked up under when the DWARF
    /// paths point elsewhere (the ELF was built in another checkout).
    pub fn source_root(&self) -> Option<&Path> {
        self.source_root.as_deref()
    }

    /// Overrides the source root (default: the repository the ELF is in). Clears memoized
    /// lookups.
    pub fn set_source_root(&mut self, root: impl Into<PathBuf>) {
        let root = root.into();
        self.source_root = Some(std::fs::canonicalize(&root).unwrap_or(root));
        self.caches = Caches::default();
    }

    /// Which frames [`Symbols::lock_site`] treats as the lock implementation.
    pub fn set_site_filter(&mut self, filter: SiteFilter) {
        self.site_filter = filter;
        self.caches = Caches::default();
    }

    /// The frames at `pc`, innermost first (see [`SourceFrame`]). Without DWARF, or for code the
    /// DWARF does not cover (assembly), the one frame comes from the symbol table and has no
    /// location. Memoized per pc.
    pub fn frames(&self, pc: u64) -> Result<Arc<[SourceFrame]>, SymbolsError> {
        if !self.is_text(pc) {
            return Err(self.not_text(pc));
        }
        if let Some(f) = lock(&self.caches.frames).get(&pc) {
            return Ok(f.clone());
        }
        let frames: Arc<[SourceFrame]> = self.compute_frames(pc)?.into();
        Ok(Self::cached_arc(&self.caches.frames, pc, || frames))
    }

    /// The frames of the call that a return address `ra` returns from: looks up `ra - 1`, which
    /// is inside the call instruction, so the line is the call's, not the next statement's.
    pub fn return_frames(&self, ra: u64) -> Result<Arc<[SourceFrame]>, SymbolsError> {
        self.frames(ra.checked_sub(1).ok_or_else(|| self.not_text(ra))?)
    }

    /// The code that took a lock, from the return address the kernel recorded (a return into
    /// the caller of `lock()`/`acquire()`): the innermost frame at `ra - 1` outside the lock
    /// implementation (see [`SiteFilter`]); the outermost frame if all are inside it.
    /// Memoized per return address.
    pub fn lock_site(&self, ra: u64) -> Result<Arc<SourceFrame>, SymbolsError> {
        if let Some(f) = lock(&self.caches.sites).get(&ra) {
            return Ok(f.clone());
        }
        let frames = self.return_frames(ra)?;
        let frame = frames
            .iter()
            .find(|f| !self.site_filter.skips(f))
            .or(frames.last())
            .cloned()
            // `frames` always returns at least one frame for a text address.
            .ok_or_else(|| self.not_text(ra))?;
        Ok(Self::cached_arc(&self.caches.sites, ra, || Arc::new(frame)))
    }

    /// The source line of `pc` (of its innermost frame). Fails with
    /// [`SymbolsError::NoDebugInfo`] when the ELF has no DWARF; `None` when the DWARF has no
    /// line for this pc (assembly).
    pub fn location(&self, pc: u64) -> Result<Option<Location>, SymbolsError> {
        if self.dwarf.is_none() {
            return Err(SymbolsError::NoDebugInfo {
                path: self.path.clone(),
            });
        }
        Ok(self.frames(pc)?.first().and_then(|f| f.location.clone()))
    }

    fn compute_frames(&self, pc: u64) -> Result<Vec<SourceFrame>, SymbolsError> {
        let mut out = Vec::new();
        if let Some(dwarf) = &self.dwarf {
            let dwarf = lock(dwarf);
            let bad = |source| SymbolsError::Dwarf {
                path: self.path.clone(),
                source,
            };
            let mut iter = dwarf.find_frames(pc).skip_all_loads().map_err(bad)?;
            // Inlining depth is small in practice; the bound guards against a cyclic DIE tree.
            while let Some(frame) = iter.next().map_err(bad)? {
                if out.len() >= 64 {
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
        }
        if let Some(last) = out.last_mut() {
            last.inlined = false;
            if last.function.is_none() {
                last.function = self.function_at(pc).map(|h| h.symbol.name.clone());
            }
        } else {
            out.push(SourceFrame {
                function: self.function_at(pc).map(|h| h.symbol.name.clone()),
                location: None,
                inlined: false,
            });
        }
        for frame in &mut out {
            if let Some(loc) = &mut frame.location {
                let (file, short) = self.resolve_file(&loc.short);
                loc.file = file;
                loc.short = short;
            }
        }
        Ok(out)
    }

    /// Maps a DWARF file path to (path to open, short display path). Memoized per file.
    fn resolve_file(&self, dwarf_path: &str) -> (PathBuf, String) {
        if let Some(hit) = lock(&self.caches.files).get(dwarf_path) {
            return (hit.0.clone(), hit.1.clone());
        }
        let resolved = resolve_path(Path::new(dwarf_path), self.source_root.as_deref());
        let mut files = lock(&self.caches.files);
        if files.len() >= CACHE_CAP {
            files.clear();
        }
        files.insert(Arc::from(dwarf_path), Arc::new(resolved.clone()));
        resolved
    }
}

fn resolve_path(path: &Path, root: Option<&Path>) -> (PathBuf, String) {
    let shown = |p: &Path| p.to_string_lossy().into_owned();
    if let Some(root) = root {
        if let Ok(rel) = path.strip_prefix(root) {
            return (path.to_owned(), shown(rel));
        }
    }
    let parts: Vec<Component<'_>> = path.components().collect();
    // The standard library: /rustc/<commit>/library/core/src/... -> core/src/...
    if let Some(i) = parts.iter().position(|c| c.as_os_str() == "rustc") {
        if parts.get(i + 2).is_some_and(|c| c.as_os_str() == "library") {
            let rel: PathBuf = parts[i + 3..].iter().collect();
            return (path.to_owned(), shown(&rel));
        }
    }
    // A crates.io dependency: .../registry/src/<index>/<crate-version>/src/... -> <crate-version>/src/...
    if let Some(i) = parts.iter().position(|c| c.as_os_str() == "registry") {
        if parts.get(i + 1).is_some_and(|c| c.as_os_str() == "src") && parts.len() > i + 3 {
            let rel: PathBuf = parts[i + 3..].iter().collect();
            return (path.to_owned(), shown(&rel));
        }
    }
    // Built in another checkout (or the checkout moved): the longest tail of the path that
    // exists under the root, even if the original path still exists somewhere else.
    if let Some(root) = root {
        for start in 1..parts.len().saturating_sub(1) {
            let tail: PathBuf = parts[start..].iter().collect();
            if tail.is_relative() && root.join(&tail).is_file() {
                return (root.join(&tail), shown(&tail));
            }
        }
    }
    (path.to_owned(), shown(path))
}

/// Demangles a raw symbol name the way frames are shown (no hash).
pub fn demangle(raw: &str) -> String {
    addr2line::demangle_auto(Cow::Borrowed(raw), None).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_root_are_shown_relative() {
        let (file, short) = resolve_path(
            Path::new("/work/main/kernel/src/bio.rs"),
            Some(Path::new("/work/main")),
        );
        assert_eq!(
            (file, short.as_str()),
            (
                PathBuf::from("/work/main/kernel/src/bio.rs"),
                "kernel/src/bio.rs"
            )
        );
    }

    #[test]
    fn std_and_registry_paths_are_shortened() {
        let (_, short) = resolve_path(
            Path::new("/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/hint.rs"),
            None,
        );
        assert_eq!(short, "core/src/hint.rs");
        let (_, short) = resolve_path(
            Path::new(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/fdt-0.1.5/src/lib.rs",
            ),
            None,
        );
        assert_eq!(short, "fdt-0.1.5/src/lib.rs");
    }

    #[test]
    fn a_kernel_built_in_another_checkout_is_found_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("kernel/src")).unwrap();
        std::fs::write(root.path().join("kernel/src/bio.rs"), "fn bget() {}\n").unwrap();
        let (file, short) = resolve_path(
            Path::new("/home/ta/old-checkout/kernel/src/bio.rs"),
            Some(root.path()),
        );
        assert_eq!(short, "kernel/src/bio.rs");
        assert_eq!(file, root.path().join("kernel/src/bio.rs"));
        // Nothing matching under the root: the DWARF path stays as it is.
        let (file, short) = resolve_path(Path::new("/elsewhere/x/y.rs"), Some(root.path()));
        assert_eq!(
            (file.to_str().unwrap(), short.as_str()),
            ("/elsewhere/x/y.rs", "/elsewhere/x/y.rs")
        );
    }

    #[test]
    fn site_filter_matches_module_segments_not_substrings() {
        let f = SiteFilter::default();
        let frame = |name: &str, file: &str| SourceFrame {
            function: Some(name.into()),
            location: Some(Location {
                file: PathBuf::from(file),
                short: file.into(),
                line: Some(1),
                column: None,
            }),
            inlined: true,
        };
        assert!(f.skips(&frame(
            "lockscope_kernel::spinlock::SpinLock<T>::lock",
            "kernel/src/x.rs"
        )));
        assert!(f.skips(&frame(
            "<lockscope_kernel::spinlock::Guard<T> as core::ops::drop::Drop>::drop",
            "kernel/src/x.rs"
        )));
        assert!(f.skips(&frame("lockscope_kernel::x::y", "kernel/src/spinlock.rs")));
        assert!(!f.skips(&frame("lockscope_kernel::bio::bget", "kernel/src/bio.rs")));
        // A function merely named like the module is not in it.
        assert!(!f.skips(&frame(
            "lockscope_kernel::bio::spinlock",
            "kernel/src/bio.rs"
        )));
        assert!(!f.skips(&frame(
            "lockscope_kernel::spinlocks::x",
            "kernel/src/bio.rs"
        )));
    }
}
