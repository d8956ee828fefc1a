//! Why QEMU could not be started.

use std::path::PathBuf;

use thiserror::Error;

/// Why QEMU could not be started.
#[derive(Debug, Error)]
pub enum QemuError {
    #[error(
        "{binary} was not found in PATH; install it with `sudo apt-get install qemu-system-misc` \
         (Debian/Ubuntu), or run `cargo xtask build`, which installs it when run as root"
    )]
    NotInstalled { binary: String },
    #[error("kernel ELF {path} does not exist; build it with `cargo xtask build`")]
    NoKernel { path: PathBuf },
    #[error("disk image {path} does not exist; build it with `cargo xtask build`")]
    NoDisk { path: PathBuf },
    #[error("smp must be between 1 and 8 (lockscope-abi MAX_HARTS), got {0}")]
    BadSmp(u32),
    #[error("no free loopback port for QEMU's gdb stub: {source}")]
    Port {
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited during start-up ({status}): {stderr}\n  command: {command}")]
    Exited {
        status: String,
        stderr: String,
        command: String,
    },
    #[error("QEMU's gdb stub did not start listening on port {port}; is this QEMU too old, or the machine too loaded?\n  command: {command}")]
    NoStub { port: u16, command: String },
    #[error("could not run {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
}
