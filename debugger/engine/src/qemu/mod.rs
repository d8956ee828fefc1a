//! QEMU for the lockscope kernel: the one command line and the one way to start it.
//!
//! - `config`: [`QemuConfig`], the `qemu-system-riscv64` invocation.
//! - `process`: [`QemuProcess`], a started QEMU (killed on drop), and [`QemuConfig::run_captured`].
//! - `gdb_port`: [`QemuConfig::spawn_with_gdb`], QEMU held at reset with its stub on a free port.
//! - `exit`: [`ExitVerdict`], how the kernel ended the run through the SiFive test device.
//! - `line`: [`QemuLine`], a command line someone else built (an xv6 Makefile's), read and
//!   extended with shared RAM and a private gdb stub.
//! - `ram_dir`: where shared guest RAM goes (private to the user, with room for it).

mod config;
mod error;
mod exit;
mod gdb_port;
pub mod line;
mod process;
pub mod ram_dir;

pub use config::{find_in_path, Console, QemuConfig, DEFAULT_MEMORY_MIB, QEMU_BINARY, RAM_BASE};
pub use error::QemuError;
pub use exit::ExitVerdict;
pub use gdb_port::{free_port, spawn_listening, WithGdb};
pub use line::{LineError, QemuLine};
pub use process::{Captured, QemuInput, QemuIo, QemuOutput, QemuProcess};
