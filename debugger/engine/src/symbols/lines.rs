//! Source lines and inlined frames of the kernel ELF: the DWARF's frames at a pc, completed from
//! the symbol table, with paths resolved, memoized per pc.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dwarf::{Location, SiteFilter, SourceFrame};
use super::elf::Symbols;
use super::error::SymbolsError;
use super::memo::try_cached;

impl Symbols {
    /// True when the ELF has DWARF, so lines and inlined frames are available.
    pub fn has_debug_info(&self) -> bool {
        self.dwarf.is_some()
    }

    /// The directory source paths are shown relative to, and looked up under when the DWARF
    /// paths point elsewhere (the ELF was built in another checkout).
    pub fn source_root(&self) -> Option<&Path> {
        self.paths.root()
    }

    /// Overrides the source root (default: the repository the ELF is in). Clears memoized
    /// lookups.
    pub fn set_source_root(&mut self, root: impl Into<PathBuf>) {
        self.paths.set_root(root.into());
        self.clear_memos();
    }

    /// Which frames [`Symbols::lock_site`] treats as the lock implementation.
    pub fn set_site_filter(&mut self, filter: SiteFilter) {
        self.site_filter = filter;
        self.clear_memos();
    }

    fn clear_memos(&mut self) {
        self.frames = Default::default();
        self.sites = Default::default();
    }

    /// The frames at `pc`, innermost first (see [`SourceFrame`]). Without DWARF, or for code
    /// the DWARF does not cover (assembly), the one frame comes from the symbol table and has no
    /// location. Memoized per pc.
    pub fn frames(&self, pc: u64) -> Result<Arc<[SourceFrame]>, SymbolsError> {
        if !self.is_text(pc) {
            return Err(self.not_text(pc));
        }
        try_cached(&self.frames, pc, || Ok(self.compute_frames(pc)?.into()))
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
        try_cached(&self.sites, ra, || {
            let frames = self.return_frames(ra)?;
            frames
                .iter()
                .find(|f| !self.site_filter.skips(f))
                .or(frames.last())
                .cloned()
                .map(Arc::new)
                // `frames` always returns at least one frame for a text address.
                .ok_or_else(|| self.not_text(ra))
        })
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
        let mut out = match &self.dwarf {
            Some(d) => d.frames_at(pc)?,
            None => Vec::new(),
        };
        let function_here = || self.function_at(pc).map(|h| h.symbol.name.clone());
        match out.last_mut() {
            Some(last) => {
                last.inlined = false;
                if last.function.is_none() {
                    last.function = function_here();
                }
            }
            None => out.push(SourceFrame {
                function: function_here(),
                location: None,
                inlined: false,
            }),
        }
        for frame in &mut out {
            if let Some(loc) = &mut frame.location {
                let (file, short) = self.paths.resolve(&loc.short);
                loc.file = file;
                loc.short = short;
            }
        }
        Ok(out)
    }
}
