//! Recordings in other tools' formats.
//!
//! - [`perfetto`]: Perfetto's protobuf trace format, for the Perfetto UI.

mod findings;
mod modes;
mod out;
pub mod perfetto;

pub use perfetto::{export_perfetto, ExportError, ExportStats};
