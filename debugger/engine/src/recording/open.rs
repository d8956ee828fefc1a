//! [`Recording::open`]: whatever the user names, a version-2 recording, the segments of an
//! unfinished `keep` recording, or a version-1 trace (converted to version 2 first).

use std::path::Path;

use super::convert::convert_v1;
use super::keep::segment_paths;
use super::reader::{file_kind, FileKind, Recording};
use super::scan::Problem;
use super::writer::WriterOptions;
use super::RecordingError;

impl Recording {
    /// Opens a version-2 recording, the segments of an unfinished `keep` recording (when `path`
    /// itself does not exist), or a version-1 trace (converted into an unnamed temporary file).
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        if !path.exists() {
            let parts = segment_paths(path)?;
            if !parts.is_empty() {
                return Self::open_files(path, &parts, 2, Vec::new());
            }
        }
        match file_kind(path)? {
            FileKind::V1 => Self::open_v1(path),
            FileKind::V2 => Self::open_files(path, &[path.to_owned()], 2, Vec::new()),
        }
    }

    fn open_v1(path: &Path) -> Result<Self, RecordingError> {
        let tmp = std::env::temp_dir().join(format!(
            "lockscope-v1-{}-{}.lsrec",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut problems = Vec::new();
        let result = convert_v1(path, &tmp, WriterOptions::default());
        let r = match result {
            Ok(p) => {
                problems.extend(p.problem.map(|problem| Problem::V1 { problem }));
                let mut r = Self::open_files(path, std::slice::from_ref(&tmp), 1, problems);
                if let Ok(rec) = &mut r {
                    rec.path = path.to_owned();
                }
                r
            }
            Err(e) => Err(e),
        };
        // The open handle keeps the converted data; the name is not needed.
        let _ = std::fs::remove_file(&tmp);
        r
    }
}
