//! gdb servers: the proxy that lets the user's gdb and lockscope share QEMU's stub, the
//! post-mortem server for a saved stop (on `gdbstub`), and ELF core files of a stop.

pub mod core;
pub mod postmortem;
pub mod proxy;
pub mod stop;
pub mod sv39;
pub mod target_xml;

pub use self::core::{write_core, CoreError, CoreSummary};
pub use postmortem::{serve_postmortem, PostMortemError, PostMortemServer};
pub use proxy::{GdbProxy, ProxyError, ProxyEvent, ProxyOptions};
pub use stop::{capture_stop, full_registers, PostMortemStop, SavedHart};
pub use target_xml::TargetXml;
