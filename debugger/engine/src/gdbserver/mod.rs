//! gdb servers: the proxy that lets the user's gdb and lockscope share QEMU's stub, the
//! post-mortem server for a saved stop (on `gdbstub`), and ELF core files of a stop.

pub mod proxy;

pub use proxy::{GdbProxy, ProxyError, ProxyEvent, ProxyOptions};
