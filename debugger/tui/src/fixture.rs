//! Views saved as JSON: the fixtures the snapshot tests and the benchmark render, and what
//! `cargo xtask fixtures` writes (through `lockscope replay --dump-view`).

use std::io::Read;
use std::path::{Path, PathBuf};

use lockscope_engine::View;
use thiserror::Error;

/// A view file larger than this is refused: real views are well under 10 MiB (2,000 recent
/// events, 128 locks), so a bigger file is not a view.
pub const MAX_VIEW_BYTES: u64 = 64 << 20;

/// Why a view file could not be read or written.
#[derive(Debug, Error)]
pub enum FixtureError {
    #[error("cannot read view file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("view file {path} is {size} bytes, more than the {MAX_VIEW_BYTES} a view can be: pass a file written by `lockscope replay --dump-view`")]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "{path} is not a lockscope view ({source}); regenerate it with `cargo xtask fixtures`"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the view cannot be written as JSON: {0}")]
    Serialize(serde_json::Error),
    #[error("cannot write view file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a view saved as JSON.
pub fn load(path: &Path) -> Result<View, FixtureError> {
    let read = |source| FixtureError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let size = file.metadata().map_err(read)?.len();
    if size > MAX_VIEW_BYTES {
        return Err(FixtureError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let mut text = Vec::with_capacity(size as usize);
    // The file may grow between the size check and the read: never read past the limit.
    file.take(MAX_VIEW_BYTES)
        .read_to_end(&mut text)
        .map_err(read)?;
    serde_json::from_slice(&text).map_err(|source| FixtureError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Writes a view as pretty JSON (diffable in review).
pub fn save(path: &Path, view: &View) -> Result<(), FixtureError> {
    let text = serde_json::to_vec_pretty(view).map_err(FixtureError::Serialize)?;
    std::fs::write(path, text).map_err(|source| FixtureError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_get_errors_that_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.view.json");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, FixtureError::Read { .. }), "{e}");
        assert!(e.to_string().contains("none.view.json"));

        let garbage = dir.path().join("garbage.view.json");
        std::fs::write(&garbage, b"{\"generation\": 1}").unwrap();
        let e = load(&garbage).unwrap_err();
        assert!(matches!(e, FixtureError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("cargo xtask fixtures"), "{e}");

        // A file claiming more than a view can be is refused before it is read.
        let huge = dir.path().join("huge.view.json");
        let f = std::fs::File::create(&huge).unwrap();
        f.set_len(MAX_VIEW_BYTES + 1).unwrap();
        let e = load(&huge).unwrap_err();
        assert!(matches!(e, FixtureError::TooLarge { .. }), "{e}");
    }
}
