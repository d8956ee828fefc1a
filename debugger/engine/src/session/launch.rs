//! Starting QEMU for a session: guest RAM in a shared file, the gdb stub on a free loopback port,
//! the harts held until lockscope is attached, the console piped to us.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::SessionError;
use crate::gdb::{Config as GdbConfig, GdbClient, GdbError};
use crate::qemu::{Console, QemuConfig, QemuError};

/// A QEMU we started. Dropping it kills QEMU and removes the shared RAM file.
pub struct Qemu {
    child: Arc<Mutex<Child>>,
    pub gdb_addr: SocketAddr,
    pub ram_file: Option<PathBuf>,
    run_dir: PathBuf,
    /// What QEMU printed on stderr (its own errors), bounded.
    pub stderr: Arc<Mutex<String>>,
    /// The thread copying stderr; it ends when QEMU exits.
    stderr_reader: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub command_line: String,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Largest amount of QEMU stderr kept.
const MAX_STDERR: usize = 16 << 10;

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

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

impl Qemu {
    /// Starts QEMU from `config`, adding the gdb stub (harts held at reset), shared RAM when
    /// `shared_ram`, and a piped console. Returns QEMU and its console's stdout.
    pub fn start(
        config: &QemuConfig,
        shared_ram: bool,
    ) -> Result<(Qemu, Box<dyn Read + Send>), SessionError> {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        sweep_stale_runs(&shm_dir());
        let run_dir = shm_dir().join(format!("lockscope-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&run_dir).map_err(|source| SessionError::Io {
            what: format!("creating {}", run_dir.display()),
            source,
        })?;
        let port = free_port().map_err(|source| SessionError::Io {
            what: "finding a free loopback port for the gdb stub".into(),
            source,
        })?;
        let ram_file = shared_ram.then(|| run_dir.join("ram"));
        let mut cfg = config
            .clone()
            .gdb_port(port)
            .wait_for_gdb(true)
            .console(Console::Stdio);
        if let Some(f) = &ram_file {
            cfg = cfg.shared_ram(f);
        }
        let mut cmd = cfg.command()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| {
            SessionError::Qemu(QemuError::Spawn {
                binary: cfg.qemu.display().to_string(),
                source,
            })
        })?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr_pipe = child.stderr.take().expect("stderr was piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::Builder::new()
            .name("qemu-stderr".into())
            .spawn(move || {
                let mut r = stderr_pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                    if s.len() < MAX_STDERR {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            })
            .map_err(|source| SessionError::Io {
                what: "starting a thread".into(),
                source,
            })?;
        Ok((
            Qemu {
                child: Arc::new(Mutex::new(child)),
                gdb_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                ram_file,
                run_dir,
                stderr,
                stderr_reader: Mutex::new(Some(stderr_reader)),
                command_line: cfg.display(),
            },
            Box::new(stdout),
        ))
    }

    /// QEMU's exit status, if it has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
            .ok()
            .flatten()
    }

    pub fn child(&self) -> Arc<Mutex<Child>> {
        self.child.clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim()
            .to_string()
    }

    fn died(&self, status: ExitStatus) -> SessionError {
        // QEMU has exited, so its stderr is at EOF: let the reader finish before quoting it.
        if let Some(reader) = self
            .stderr_reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = reader.join();
        }
        SessionError::QemuDied {
            status: status.to_string(),
            stderr: self.stderr_text(),
            command: self.command_line.clone(),
        }
    }

    /// Connects to QEMU's gdb stub, retrying while QEMU opens its port.
    pub fn connect_gdb(&self, timeout: Duration) -> Result<GdbClient, SessionError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(self.died(status));
            }
            match GdbClient::connect_addr(self.gdb_addr, GdbConfig::default()) {
                Ok(c) => return Ok(c),
                Err(GdbError::NoStub { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
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

    /// Kills QEMU if it still runs.
    pub fn kill(&self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if c.try_wait().ok().flatten().is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills QEMU and removes its run directory (the shared RAM file). Safe to call more than
    /// once; a session calls it when it ends rather than wait for the last `Arc` to drop, which
    /// a thread still winding down may hold as the process exits.
    pub fn cleanup(&self) {
        self.kill();
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
