//! Which frames belong to the lock implementation, so that a lock's site names the code that
//! took it.

use super::lines::SourceFrame;

/// Which frames [`crate::symbols::Symbols::lock_site`] skips: the lock implementation itself.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::dwarf::Location;
    use std::path::PathBuf;

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
