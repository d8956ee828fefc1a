//! Where the DWARF's source paths are on this machine, and how to show them.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::symbols::memo::{lock, Memo, CACHE_CAP};

/// Resolves DWARF file paths against a source root, memoized per path.
pub(crate) struct SourcePaths {
    root: Option<PathBuf>,
    memo: Memo<Arc<str>, (PathBuf, String)>,
}

impl SourcePaths {
    /// Paths of the ELF at `elf`, shown relative to the repository it sits in.
    pub(crate) fn for_elf(elf: &Path) -> Self {
        SourcePaths {
            root: default_source_root(elf),
            memo: Mutex::default(),
        }
    }

    /// The directory source paths are shown relative to.
    pub(crate) fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Shows paths relative to `root` from now on.
    pub(crate) fn set_root(&mut self, root: PathBuf) {
        self.root = Some(std::fs::canonicalize(&root).unwrap_or(root));
        self.memo = Mutex::default();
    }

    /// Maps a DWARF file path to (path to open, short display path).
    pub(crate) fn resolve(&self, dwarf_path: &str) -> (PathBuf, String) {
        if let Some(hit) = lock(&self.memo).get(dwarf_path) {
            return (hit.0.clone(), hit.1.clone());
        }
        let resolved = resolve_path(Path::new(dwarf_path), self.root.as_deref());
        let mut memo = lock(&self.memo);
        if memo.len() >= CACHE_CAP {
            memo.clear();
        }
        memo.insert(Arc::from(dwarf_path), Arc::new(resolved.clone()));
        resolved
    }
}

/// The repository the ELF sits in (nearest ancestor with `.git`), else the directory holding
/// its `target/`, else none. Source paths are shown relative to it.
fn default_source_root(elf: &Path) -> Option<PathBuf> {
    let elf = std::fs::canonicalize(elf).unwrap_or_else(|_| elf.to_owned());
    if let Some(repo) = elf.ancestors().skip(1).find(|d| d.join(".git").exists()) {
        return Some(repo.to_owned());
    }
    elf.ancestors()
        .find(|d| d.file_name().is_some_and(|n| n == "target"))
        .and_then(Path::parent)
        .map(Path::to_owned)
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
}
