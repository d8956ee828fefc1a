//! Version-1 traces (`trace.rs`, `LSTRACE1`) rewritten as version 2.

use std::path::Path;

use super::writer::{RecordingWriter, WriterOptions, WriterStats};
use super::{RecordingError, RecordingHeader};

/// A version-1 trace rewritten as version 2.
#[derive(Clone, Debug)]
pub struct Converted {
    pub stats: WriterStats,
    /// Set when the v1 trace ended early or was damaged: what came before it was converted.
    pub problem: Option<String>,
}

/// Rewrites a version-1 trace as a version-2 recording. The v1 header's kernel path is reduced
/// to its file name. A cut or damaged v1 trace is converted up to the damage, which is reported
/// in [`Converted::problem`].
pub fn convert_v1(
    from: &Path,
    to: &Path,
    options: WriterOptions,
) -> Result<Converted, RecordingError> {
    let v1 = |source| RecordingError::V1 {
        path: from.to_owned(),
        source,
    };
    let mut r = crate::trace::TraceReader::open(from).map_err(v1)?;
    let h = r.header().clone();
    let mut header = RecordingHeader::new(h.smp, &h.bootargs, &h.source);
    header.abi_version = h.abi_version;
    header.kernel_name = h
        .kernel
        .as_ref()
        .and_then(|k| k.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    header.kernel_fingerprint = h.kernel_fingerprint.clone();
    let mut w = RecordingWriter::create(to, &header, options)?;
    let mut problem = None;
    loop {
        match r.next_feed() {
            Ok(Some(feed)) => w.write(&feed)?,
            Ok(None) => break,
            Err(e) => {
                problem = Some(e.to_string());
                break;
            }
        }
    }
    Ok(Converted {
        stats: w.finish()?,
        problem,
    })
}
