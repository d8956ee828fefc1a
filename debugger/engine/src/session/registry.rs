//! The per-user registry of `lockscope qemu` sessions, so that `lockscope attach` with no
//! address joins the newest one.
//!
//! Each session writes `qemu-<pid>.json` (an [`Entry`]: where guest RAM is shared, the kernel,
//! the console log, the gdb port the user's gdb connects to) and `qemu-<pid>.status` (a
//! [`Status`]: the user's gdb state, then QEMU's exit status), in
//! `$XDG_RUNTIME_DIR/lockscope-uid<uid>/` or else `<temp dir>/lockscope-uid<uid>/`, created 0700.
//! Entries of processes that died are removed by the next reader; only this user's directory
//! is ever looked at.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::qemu::ram_dir::{alive, private_dir};

/// Environment variable overriding the registry's base directory (tests).
pub const REGISTRY_ENV: &str = "LOCKSCOPE_REGISTRY_DIR";

/// Why no session could be joined.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("no `lockscope qemu` session of yours is running (looked in {}): start one with `make qemu QEMU=\"lockscope qemu --\"` in your xv6 tree, or give the gdb stub's address: `lockscope attach 127.0.0.1:PORT --kernel kernel/kernel`", dir.display())]
    None { dir: PathBuf },
    #[error("the session registry {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A running `lockscope qemu` session, as another lockscope joins it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The `lockscope qemu` process.
    pub pid: u32,
    /// QEMU's own process.
    pub qemu_pid: u32,
    /// When it started, in milliseconds since the Unix epoch: the newest is joined.
    pub started_ms: u64,
    /// The directory `make` ran QEMU in.
    pub cwd: PathBuf,
    pub kernel: PathBuf,
    /// Guest RAM, shared: the file, its first guest address and its size.
    pub ram_file: PathBuf,
    pub ram_base: u64,
    pub ram_bytes: u64,
    pub harts: u32,
    /// The guest console as QEMU logs it, when it is logged.
    pub console_log: Option<PathBuf>,
    /// Where the user's gdb connects (the Makefile's port, served by lockscope's proxy).
    pub gdb_listen: Option<String>,
    /// The recording, when the session records.
    pub record: Option<PathBuf>,
    pub qemu_command: String,
}

/// What a running session says about itself as it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The user's gdb: `stopped by gdb (hart 2, breakpoint or step)`, `gdb connected`.
    pub user_gdb: Option<String>,
    /// QEMU exited with this status.
    pub exit_status: Option<i32>,
    /// The session has ended (QEMU exited or was killed).
    pub ended: bool,
}

/// The registry directory, created if missing.
pub fn dir() -> Result<PathBuf, RegistryError> {
    let base = std::env::var_os(REGISTRY_ENV)
        .or_else(|| std::env::var_os("XDG_RUNTIME_DIR"))
        .filter(|d| !d.is_empty() && Path::new(d).is_dir())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    private_dir(&base).map_err(|source| RegistryError::Io { dir: base, source })
}

fn entry_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("qemu-{pid}.json"))
}

/// Where the session of process `pid` writes its [`Status`].
pub fn status_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("qemu-{pid}.status"))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    crate::qemu::ram_dir::create_private_file(&tmp)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes a session's status.
pub fn write_status(path: &Path, status: &Status) -> io::Result<()> {
    write_atomic(path, &serde_json::to_vec(status).unwrap_or_default())
}

/// Reads a session's status; `None` when it is missing or unreadable.
pub fn read_status(path: &Path) -> Option<Status> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A registered session; dropping it removes the entry and its status.
#[derive(Debug)]
pub struct Registration {
    pub entry_file: PathBuf,
    pub status_file: PathBuf,
}

impl Registration {
    /// Registers `entry` (its `pid` must be this process).
    pub fn register(entry: &Entry) -> Result<Registration, RegistryError> {
        let dir = dir()?;
        let io = |source| RegistryError::Io {
            dir: dir.clone(),
            source,
        };
        let entry_file = entry_path(&dir, entry.pid);
        let status_file = status_path(&dir, entry.pid);
        // The session may have said something already.
        if !status_file.exists() {
            write_status(&status_file, &Status::default()).map_err(io)?;
        }
        let json = serde_json::to_vec_pretty(entry).unwrap_or_default();
        write_atomic(&entry_file, &json).map_err(io)?;
        Ok(Registration {
            entry_file,
            status_file,
        })
    }
}

impl Drop for Registration {
    /// Removes the entry at once (nobody new joins); the status stays for a while, so that
    /// a joined session reads how QEMU ended (a later reader sweeps it).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.entry_file);
    }
}

/// How long the status of an ended session stays for the sessions that joined it.
const STATUS_KEPT: std::time::Duration = std::time::Duration::from_secs(30);

/// Every live session of this user, oldest first; entries of dead processes are removed.
pub fn sessions() -> Result<Vec<Entry>, RegistryError> {
    let dir = dir()?;
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|source| RegistryError::Io {
        dir: dir.clone(),
        source,
    })?;
    for e in entries.flatten() {
        let name = e.file_name();
        // The status of a session that ended, once the sessions that joined it had time to
        // read it.
        if let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("qemu-"))
            .and_then(|n| n.strip_suffix(".status"))
            .and_then(|p| p.parse::<u32>().ok())
        {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STATUS_KEPT);
            if !alive(pid) && old {
                let _ = std::fs::remove_file(e.path());
            }
            continue;
        }
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("qemu-"))
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let parsed = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
        match parsed {
            Some(entry) if entry.pid == pid && alive(pid) => out.push(entry),
            // A killed lockscope cannot remove its own entry; a broken one helps nobody.
            _ if !alive(pid) => {
                let _ = std::fs::remove_file(e.path());
                let _ = std::fs::remove_file(status_path(&dir, pid));
            }
            _ => {}
        }
    }
    out.sort_by_key(|e| (e.started_ms, e.pid));
    Ok(out)
}

/// The newest live session of this user.
pub fn newest() -> Result<Entry, RegistryError> {
    sessions()?.pop().ok_or_else(|| RegistryError::None {
        dir: dir().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entry(pid: u32, started_ms: u64) -> Entry {
        Entry {
            pid,
            qemu_pid: pid,
            started_ms,
            cwd: "/tree".into(),
            kernel: "/tree/kernel/kernel".into(),
            ram_file: "/dev/shm/x/ram".into(),
            ram_base: 0x8000_0000,
            ram_bytes: 128 << 20,
            harts: 3,
            console_log: None,
            gdb_listen: Some("tcp::25000".into()),
            record: None,
            qemu_command: "qemu-system-riscv64 ...".into(),
        }
    }

    // One test, because the registry's directory comes from the environment.
    #[test]
    fn the_newest_live_session_is_found_and_dead_ones_are_swept() {
        let base = tempfile::tempdir().unwrap();
        std::env::set_var(REGISTRY_ENV, base.path());
        let dir = dir().unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert!(matches!(newest(), Err(RegistryError::None { .. })));

        let me = std::process::id();
        let reg = Registration::register(&entry(me, 10)).unwrap();
        assert_eq!(
            std::fs::metadata(&reg.entry_file).unwrap().mode() & 0o777,
            0o600
        );
        // A dead process's entry (newer) is swept, not joined.
        let dead = 4_999_999;
        std::fs::write(
            entry_path(&dir, dead),
            serde_json::to_vec(&entry(dead, 99)).unwrap(),
        )
        .unwrap();
        std::fs::write(status_path(&dir, dead), b"{}").unwrap();
        assert_eq!(newest().unwrap().pid, me);
        assert!(!entry_path(&dir, dead).exists());
        assert!(!status_path(&dir, dead).exists());

        write_status(
            &reg.status_file,
            &Status {
                user_gdb: Some("stopped by gdb (hart 1, breakpoint or step)".into()),
                ..Status::default()
            },
        )
        .unwrap();
        let s = read_status(&reg.status_file).unwrap();
        assert_eq!(
            s.user_gdb.as_deref(),
            Some("stopped by gdb (hart 1, breakpoint or step)")
        );

        let (entry_file, status_file) = (reg.entry_file.clone(), reg.status_file.clone());
        drop(reg);
        assert!(!entry_file.exists());
        assert!(status_file.exists(), "kept for the sessions that joined");
        let e = newest().unwrap_err().to_string();
        assert!(e.contains("make qemu QEMU=\"lockscope qemu --\""), "{e}");
        std::env::remove_var(REGISTRY_ENV);
    }
}
