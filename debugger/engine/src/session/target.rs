//! Reaching the target: boot QEMU (retrying when another process takes its gdb port), or attach
//! to one that runs.

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
/// Boots tried when QEMU loses its gdb port to another process.
const PORT_ATTEMPTS: u32 = 3;

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
    let (qemu, console, client) = start_with_port_retry(config, shared_ram)?;
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

/// The free port is picked before QEMU binds it, so another process can take it in between;
/// QEMU then exits at once, and a new port is tried.
fn start_with_port_retry(
    config: &QemuConfig,
    shared_ram: bool,
) -> Result<(Qemu, Box<dyn Read + Send>, GdbClient), SessionError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (qemu, console) = Qemu::start(config, shared_ram)?;
        match qemu.connect_gdb(START_TIMEOUT) {
            Ok(client) => return Ok((qemu, console, client)),
            Err(SessionError::QemuDied { ref stderr, .. })
                if attempt < PORT_ATTEMPTS && stderr.contains("Address already in use") => {}
            Err(e) => return Err(e),
        }
    }
}

/// Connects to the gdb stub of a QEMU that runs (`HOST:PORT`); connecting stops the guest.
pub(super) fn attach(addr: &str) -> Result<Reached, SessionError> {
    let client = GdbClient::connect(addr, GdbConfig::default())?;
    Ok(Reached {
        client,
        booted: None,
    })
}
