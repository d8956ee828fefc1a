//! Reaching the target: boot QEMU (the QEMU harness retries when another process takes its gdb
//! port), or attach to one that runs.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::error::SessionError;
use super::launch::Qemu;
use crate::gdb::{Config as GdbConfig, GdbClient};
use crate::qemu::QemuConfig;

/// How long QEMU gets to open its gdb stub, and to size its shared RAM file.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A target the session reached, stopped, with its gdb stub connected.
pub(super) struct Reached {
    pub(super) client: GdbClient,
    /// The QEMU the session started, and its console.
    pub(super) booted: Option<Booted>,
}

/// What a boot adds: QEMU itself, its console, and guest RAM in a file when shared.
pub(super) struct Booted {
    pub(super) qemu: Arc<Qemu>,
    pub(super) console: Box<dyn Read + Send>,
    pub(super) shared_ram: Option<PathBuf>,
}

/// Boots `config` held at reset, connects to its stub and waits for its shared RAM file.
pub(super) fn boot(config: &QemuConfig, shared_ram: bool) -> Result<Reached, SessionError> {
    if !shared_ram && config.memory_mib == 0 {
        return Err(SessionError::Config("memory size 0".into()));
    }
    let qemu = Qemu::start(config, shared_ram, START_TIMEOUT)?;
    let client = qemu.connect_gdb()?;
    let console = qemu
        .take_console()
        .expect("a session's QEMU has its console piped");
    let shared_ram = if shared_ram {
        let size = u64::from(config.memory_mib) << 20;
        Some(qemu.wait_ram_file(size, START_TIMEOUT)?)
    } else {
        None
    };
    Ok(Reached {
        client,
        booted: Some(Booted {
            qemu: Arc::new(qemu),
            console,
            shared_ram,
        }),
    })
}

/// Connects to the gdb stub of a QEMU that runs (`HOST:PORT`); connecting stops the guest.
pub(super) fn attach(addr: &str) -> Result<Reached, SessionError> {
    let client = GdbClient::connect(addr, GdbConfig::default())?;
    Ok(Reached {
        client,
        booted: None,
    })
}
