//! The QEMU a session starts: guest RAM in a shared file under a run directory, the gdb stub on
//! a free loopback port, the harts held until lockscope is attached, the console piped to us.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::SessionError;
use crate::gdb::{Config as GdbConfig, GdbClient};
use crate::qemu::{Console, QemuConfig, QemuProcess, WithGdb};

/// A QEMU we started. Dropping it kills QEMU and removes its run directory (the shared RAM
/// file).
pub struct Qemu {
    process: QemuProcess,
    pub gdb_addr: SocketAddr,
    pub ram_file: Option<PathBuf>,
    run_dir: PathBuf,
    pub command_line: String,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Where shared RAM files go: tmpfs when the machine has it, so that guest RAM is not written to
/// disk.
fn shm_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Removes run directories (`lockscope-<pid>-<n>`) whose process is gone: a lockscope that was
/// killed cannot remove its own, and each holds a whole guest RAM.
fn sweep_stale_runs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lockscope-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Qemu {
    /// Starts QEMU from `config`, adding the gdb stub (harts held at reset), shared RAM when
    /// `shared_ram`, and a piped console; returns once the stub listens.
    pub fn start(
        config: &QemuConfig,
        shared_ram: bool,
        timeout: Duration,
    ) -> Result<Qemu, SessionError> {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        sweep_stale_runs(&shm_dir());
        let run_dir = shm_dir().join(format!("lockscope-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&run_dir).map_err(|source| SessionError::Io {
            what: format!("creating {}", run_dir.display()),
            source,
        })?;
        let ram_file = shared_ram.then(|| run_dir.join("ram"));
        let mut cfg = config.clone().console(Console::Stdio);
        if let Some(f) = &ram_file {
            cfg = cfg.shared_ram(f);
        }
        let WithGdb { process, addr } = match cfg.spawn_with_gdb(timeout) {
            Ok(q) => q,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(e.into());
            }
        };
        Ok(Qemu {
            command_line: process.command_line.clone(),
            process,
            gdb_addr: addr,
            ram_file,
            run_dir,
        })
    }

    /// The guest console, once.
    pub fn take_console(&self) -> Option<Box<dyn Read + Send>> {
        self.process.take_console()
    }

    /// QEMU's exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.process.try_wait()
    }

    pub fn stderr_text(&self) -> String {
        self.process.stderr_text()
    }

    fn died(&self, status: ExitStatus) -> SessionError {
        SessionError::QemuDied {
            status: status.to_string(),
            stderr: self.process.stderr_after_exit(),
            command: self.command_line.clone(),
        }
    }

    /// Connects to QEMU's gdb stub (it listens: [`Qemu::start`] waited for it).
    pub fn connect_gdb(&self) -> Result<GdbClient, SessionError> {
        match GdbClient::connect_addr(self.gdb_addr, GdbConfig::default()) {
            Ok(c) => Ok(c),
            Err(e) => match self.try_wait() {
                Some(status) => Err(self.died(status)),
                None => Err(e.into()),
            },
        }
    }

    /// Waits until the shared RAM file is as large as guest RAM (QEMU sizes it at start).
    pub fn wait_ram_file(&self, size: u64, timeout: Duration) -> Result<PathBuf, SessionError> {
        let Some(path) = &self.ram_file else {
            return Err(SessionError::NoSharedRam);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::metadata(path).is_ok_and(|m| m.len() >= size) {
                return Ok(path.clone());
            }
            if let Some(status) = self.try_wait() {
                return Err(self.died(status));
            }
            if Instant::now() >= deadline {
                return Err(SessionError::NoSharedRam);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills QEMU and removes its run directory (the shared RAM file). Safe to call more than
    /// once; a session calls it when it ends rather than wait for the last `Arc` to drop, which
    /// a thread still winding down may hold as the process exits.
    pub fn cleanup(&self) {
        self.process.kill();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_run_directories_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22 on Linux: this pid cannot be alive.
        let dead = dir.path().join("lockscope-4999999-0");
        let alive = dir
            .path()
            .join(format!("lockscope-{}-7", std::process::id()));
        let other = dir.path().join("unrelated");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("ram"), b"guest").unwrap();
        }
        sweep_stale_runs(dir.path());
        assert!(!dead.exists());
        assert!(alive.exists());
        assert!(other.exists());
    }
}
