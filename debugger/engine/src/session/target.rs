//! Reaching the target: boot QEMU (the QEMU harness retries when another process takes its gdb
//! port), attach to one that runs, or join a `lockscope qemu` session's shared RAM.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::SessionError;
use super::launch::{PluginLaunch, Qemu};
use super::options::{Joined, LineConsole, LineRun};
use crate::gdb::{Config as GdbConfig, GdbClient};
use crate::gdbserver::proxy::{parse_listen, GdbProxy, ProxyOptions, RamFile};
use crate::qemu::QemuConfig;

/// How long QEMU gets to open its gdb stub, and to size its shared RAM file.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Where QEMU `virt` harts start: a guest whose harts are all here has not run yet.
const RESET_PC: u64 = 0x1000;

/// Where the console comes from.
pub(super) enum ConsoleFeed {
    /// QEMU's stdout, piped to us: the console thread also writes the session's log.
    Pipe(Box<dyn Read + Send>),
    /// A log QEMU writes itself (its console is on the user's terminal), followed.
    Log(PathBuf),
}

/// A target the session reached.
pub(super) struct Reached {
    /// The gdb stub (stopped), unless the session only reads shared RAM.
    pub(super) client: Option<GdbClient>,
    /// The QEMU the session started.
    pub(super) qemu: Option<Arc<Qemu>>,
    /// The user's gdb's way in, for a QEMU someone else started (`attach --gdb-listen`); a
    /// QEMU the session started keeps its own in [`Qemu::proxy`].
    pub(super) proxy: Option<Arc<GdbProxy>>,
    /// Guest RAM in a file, when shared.
    pub(super) shared_ram: Option<PathBuf>,
    pub(super) console: Option<ConsoleFeed>,
    /// Attached to a guest no one has continued since reset (QEMU `-S`).
    pub(super) held_at_reset: bool,
}

/// Boots `config` held at reset, connects to its stub and waits for its shared RAM file.
pub(super) fn boot(
    config: &QemuConfig,
    shared_ram: bool,
    gdb_listen: Option<&str>,
) -> Result<Reached, SessionError> {
    if !shared_ram && config.memory_mib == 0 {
        return Err(SessionError::Config("memory size 0".into()));
    }
    let mut qemu = Qemu::start(config, shared_ram, START_TIMEOUT)?;
    if let Some(spec) = gdb_listen {
        // The user's gdb on `spec`, lockscope's own client on the proxy's private port.
        let options = ProxyOptions {
            ram: qemu.ram_file.clone().map(|path| RamFile {
                path,
                base: crate::qemu::RAM_BASE,
            }),
            ..ProxyOptions::default()
        };
        let proxy = GdbProxy::start_with(qemu.gdb_addr, parse_listen(spec)?, options)?;
        qemu.gdb_addr = proxy.private_addr();
        qemu.proxy = Some(Arc::new(proxy));
    }
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
        proxy: None,
        client: Some(client),
        qemu: Some(Arc::new(qemu)),
        shared_ram,
        console: Some(ConsoleFeed::Pipe(console)),
        held_at_reset: false,
    })
}

/// Boots a Makefile's command line with shared RAM, held at reset, and connects to its stub
/// (through the proxy when the line asked for a stub of its own). `console_log` is where a
/// console left on the terminal is logged.
pub(super) fn boot_line(
    run: &LineRun,
    console_log: &Path,
    with_plugin: Option<&PluginLaunch>,
) -> Result<Reached, SessionError> {
    let on_terminal = run.console == LineConsole::Terminal && run.line.console_on_stdio();
    if on_terminal {
        // Private, and there before QEMU appends to it.
        crate::qemu::ram_dir::create_private_file(console_log).map_err(|source| {
            SessionError::Io {
                what: format!("creating the console log {}", console_log.display()),
                source,
            }
        })?;
    }
    let qemu = Qemu::start_line(
        run,
        on_terminal.then_some(console_log),
        with_plugin,
        START_TIMEOUT,
    )?;
    let client = qemu.connect_gdb()?;
    let size = run.line.memory_bytes()?;
    let shared_ram = Some(qemu.wait_ram_file(size, START_TIMEOUT)?);
    let console = match run.console {
        LineConsole::Piped => qemu.take_console().map(ConsoleFeed::Pipe),
        LineConsole::Terminal if on_terminal => Some(ConsoleFeed::Log(console_log.to_owned())),
        LineConsole::Terminal => None,
    };
    Ok(Reached {
        proxy: None,
        client: Some(client),
        qemu: Some(Arc::new(qemu)),
        shared_ram,
        console,
        held_at_reset: false,
    })
}

/// Connects to the gdb stub of a QEMU that runs (`HOST:PORT`); connecting stops the guest.
pub(super) fn attach(addr: &str, gdb_listen: Option<&str>) -> Result<Reached, SessionError> {
    let proxy = match gdb_listen {
        Some(spec) => {
            let upstream = std::net::ToSocketAddrs::to_socket_addrs(addr)
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    SessionError::Config(format!("{addr} is not a HOST:PORT lockscope can reach"))
                })?;
            Some(Arc::new(GdbProxy::start_with(
                upstream,
                parse_listen(spec)?,
                ProxyOptions::default(),
            )?))
        }
        None => None,
    };
    let mut client = match &proxy {
        Some(p) => GdbClient::connect_addr(p.private_addr(), GdbConfig::default())?,
        None => GdbClient::connect(addr, GdbConfig::default())?,
    };
    let held_at_reset = at_reset(&mut client);
    Ok(Reached {
        client: Some(client),
        proxy,
        qemu: None,
        shared_ram: None,
        console: None,
        held_at_reset,
    })
}

/// Joins a `lockscope qemu` session: its shared RAM and console log; no stub.
pub(super) fn join(j: &Joined) -> Result<Reached, SessionError> {
    if !j.ram_file.is_file() {
        return Err(SessionError::Config(format!(
            "the lockscope qemu session's guest RAM file {} is gone: the session has probably just ended",
            j.ram_file.display()
        )));
    }
    Ok(Reached {
        proxy: None,
        client: None,
        qemu: None,
        shared_ram: Some(j.ram_file.clone()),
        // A session whose console is not logged (or whose log is gone) is read without it.
        console: j
            .console_log
            .clone()
            .filter(|p| p.is_file())
            .map(ConsoleFeed::Log),
        held_at_reset: false,
    })
}

/// True when every hart is at QEMU's reset vector: nothing has run since reset.
fn at_reset(client: &mut GdbClient) -> bool {
    let threads = client.known_threads().to_vec();
    !threads.is_empty()
        && threads.iter().all(|&t| {
            client
                .read_hart_registers(t)
                .is_ok_and(|r| crate::model::HartRegs::from(&r).pc == RESET_PC)
        })
}
