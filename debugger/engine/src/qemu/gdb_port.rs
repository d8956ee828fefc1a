//! QEMU with its gdb stub on a free loopback port, held at reset until a debugger continues it.
//!
//! The port is picked before QEMU binds it, so another process can take it in between; QEMU then
//! exits at once saying so, and a new port is tried.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use super::config::QemuConfig;
use super::error::QemuError;
use super::process::QemuProcess;

/// Boots tried when QEMU loses its gdb port to another process.
const PORT_ATTEMPTS: u32 = 3;

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// A QEMU whose gdb stub listens.
pub struct WithGdb {
    pub process: QemuProcess,
    pub addr: SocketAddr,
}

impl QemuConfig {
    /// Starts QEMU with its gdb stub on a free loopback port and the harts held at reset
    /// (`-S`), and waits until the stub listens, without connecting to it (a connection is a
    /// gdb client to QEMU).
    pub fn spawn_with_gdb(&self, timeout: Duration) -> Result<WithGdb, QemuError> {
        spawn_listening(timeout, |port| {
            self.clone().gdb_port(port).wait_for_gdb(true).spawn()
        })
    }
}

/// Starts a QEMU with `spawn(port)` (which must put QEMU's gdb stub on 127.0.0.1:`port`) on a
/// free port, and waits until the stub listens; tries new ports while QEMU exits because
/// another process took its port first.
pub fn spawn_listening(
    timeout: Duration,
    mut spawn: impl FnMut(u16) -> Result<QemuProcess, QemuError>,
) -> Result<WithGdb, QemuError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port().map_err(|source| QemuError::Port { source })?;
        let process = spawn(port)?;
        match wait_listening(&process, port, Instant::now() + timeout) {
            Ok(()) => {
                return Ok(WithGdb {
                    process,
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                })
            }
            Err(QemuError::Exited { ref stderr, .. })
                if attempt < PORT_ATTEMPTS && stderr.contains("Address already in use") => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits until a socket listens on 127.0.0.1:`port` (Linux's `/proc/net/tcp`), or QEMU exits.
fn wait_listening(q: &QemuProcess, port: u16, deadline: Instant) -> Result<(), QemuError> {
    loop {
        if listening(port) {
            return Ok(());
        }
        if let Some(status) = q.try_wait() {
            return Err(QemuError::Exited {
                status: status.to_string(),
                stderr: q.stderr_after_exit(),
                command: q.command_line.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(QemuError::NoStub {
                port,
                command: q.command_line.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when `/proc/net/tcp` has a listening socket on local port `port`.
fn listening(port: u16) -> bool {
    let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // `sl local_address rem_address st ...`: local `0100007F:1F90`, state 0A is LISTEN.
    let want = format!(":{port:04X}");
    tcp.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_seen_and_a_closed_one_is_not() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening(port));
        drop(l);
        assert!(!listening(port));
    }
}
