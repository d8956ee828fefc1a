//! QEMU for the lockscope kernel: the one command line and the one way to start it.
//!
//! - `config`: [`QemuConfig`], the `qemu-system-riscv64` invocation.
//! - `process`: [`QemuProcess`], a started QEMU (killed on drop), and [`QemuConfig::run_captured`].
//! - `gdb_port`: [`QemuConfig::spawn_with_gdb`], QEMU held at reset with its stub on a free port.
//! - `exit`: [`ExitVerdict`], how the kernel ended the run through the SiFive test device.

mod config;
mod error;
mod exit;
mod gdb_port;
mod process;

pub use config::{find_in_path, Console, QemuConfig, DEFAULT_MEMORY_MIB, QEMU_BINARY, RAM_BASE};
pub use error::QemuError;
pub use exit::ExitVerdict;
pub use gdb_port::{free_port, WithGdb};
pub use process::{Captured, QemuProcess};
