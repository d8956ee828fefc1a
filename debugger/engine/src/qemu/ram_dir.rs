//! Where a session keeps guest RAM in a shared file: a directory private to the user (0700:
//! the file is the guest's whole memory), on a file system with room for all of it.
//!
//! QEMU maps the file and dies of SIGBUS when the file system runs out of space under it
//! (Docker's default /dev/shm is 64 MB). So the file is reserved whole before QEMU starts
//! (`posix_fallocate`), in the first of these with room: `LOCKSCOPE_RAM_DIR`, /dev/shm,
//! `$XDG_RUNTIME_DIR`, the temporary directory. Each holds a `lockscope-uid<uid>` directory; runs
//! of processes that died are swept from the user's own directory only.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// Environment variable naming the directory to try first.
pub const RAM_DIR_ENV: &str = "LOCKSCOPE_RAM_DIR";

static RUNS: AtomicU64 = AtomicU64::new(0);

/// Why no directory could hold the guest's RAM.
#[derive(Debug, Error)]
pub enum RamDirError {
    #[error("no directory has room for the guest's {} MiB of RAM in a shared file: {tried}; free some space, or point {RAM_DIR_ENV} at a directory with room", size >> 20)]
    NoRoom { size: u64, tried: String },
}

/// The real user id.
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// `base/lockscope-uid<uid>`, created 0700 if missing. (Not `lockscope-<uid>`: lockscopes
/// before this one swept `lockscope-<number>-...` run directories of dead pids from /dev/shm,
/// and would take a uid for a dead pid.) An existing one must be a directory
/// owned by this user (its mode is tightened to 0700 if it was looser); one owned by
/// someone else is refused: it could be read, or replaced, by them.
pub fn private_dir(base: &Path) -> io::Result<PathBuf> {
    let dir = base.join(format!("lockscope-uid{}", uid()));
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a directory of user {}: lockscope will not keep guest RAM there",
                dir.display(),
                uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}

/// Free bytes for an unprivileged writer in the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `s` is a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // c_ulong and fsblkcnt_t differ on other targets
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// The directories tried, in order.
pub fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os(RAM_DIR_ENV).filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d));
    }
    v.push(PathBuf::from("/dev/shm"));
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d));
    }
    v.push(std::env::temp_dir());
    v.dedup();
    v
}

/// A run directory holding a reserved RAM file, removed when dropped.
#[derive(Debug)]
pub struct RamFile {
    /// `<private dir>/run-<pid>-<n>`.
    pub run_dir: PathBuf,
    /// `run_dir/ram`, `size` bytes, reserved.
    pub path: PathBuf,
    pub size: u64,
    /// Why it is not in the first candidate, when it is not: "/dev/shm has 60 MiB free, ...".
    pub note: Option<String>,
}

impl RamFile {
    /// Reserves `size` bytes in the first candidate directory with room.
    pub fn create(size: u64) -> Result<RamFile, RamDirError> {
        Self::create_in(&candidates(), size)
    }

    /// Reserves `size` bytes in the first of `dirs` with room.
    pub fn create_in(dirs: &[PathBuf], size: u64) -> Result<RamFile, RamDirError> {
        let mut skipped: Vec<String> = Vec::new();
        for base in dirs {
            match Self::try_in(base, size) {
                Ok(mut f) => {
                    if !skipped.is_empty() {
                        f.note = Some(format!(
                            "guest RAM is shared through {} ({})",
                            f.path.display(),
                            skipped.join("; ")
                        ));
                    }
                    return Ok(f);
                }
                Err(why) => skipped.push(why),
            }
        }
        Err(RamDirError::NoRoom {
            size,
            tried: skipped.join("; "),
        })
    }

    fn try_in(base: &Path, size: u64) -> Result<RamFile, String> {
        if !base.is_dir() {
            return Err(format!("{} does not exist", base.display()));
        }
        let mib = |b: u64| b >> 20;
        match free_bytes(base) {
            Some(free) if free < size => {
                return Err(format!(
                    "{} has {} MiB free, the guest needs {} MiB",
                    base.display(),
                    mib(free),
                    mib(size)
                ))
            }
            None => return Err(format!("cannot read the free space of {}", base.display())),
            Some(_) => {}
        }
        let private = private_dir(base).map_err(|e| format!("{}: {e}", base.display()))?;
        sweep_stale_runs(&private);
        sweep_legacy_runs(base);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let run_dir = private.join(format!("run-{}-{n}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&run_dir)
            .map_err(|e| format!("{}: {e}", run_dir.display()))?;
        let path = run_dir.join("ram");
        let reserved = File::create(&path)
            .and_then(|f| {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                reserve(&f, size)
            })
            .map_err(|e| format!("{}: cannot reserve {} MiB: {e}", path.display(), mib(size)));
        if let Err(e) = reserved {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(e);
        }
        Ok(RamFile {
            run_dir,
            path,
            size,
            note: None,
        })
    }
}

impl Drop for RamFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// Gives the file all its blocks now, so running out of space is an error here and not a
/// SIGBUS in QEMU later.
pub(crate) fn reserve(f: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: a valid open descriptor; posix_fallocate returns an errno value.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Creates (or truncates) `path` readable by this user only: for files others must not read,
/// such as a console log QEMU then appends to.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// True when process `pid` exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes run directories (`run-<pid>-<n>`) whose process is gone from the user's private
/// directory `dir`: a lockscope that was killed cannot remove its own, and each holds a whole
/// guest RAM.
pub fn sweep_stale_runs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes this user's run directories of dead processes that older lockscopes left directly
/// in `base` (`lockscope-<pid>-<n>`, before runs were kept in a private directory).
fn sweep_legacy_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let mut parts = name
            .to_str()
            .and_then(|n| n.strip_prefix("lockscope-"))
            .map(|rest| rest.split('-'))
            .into_iter()
            .flatten();
        let (Some(pid), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(pid), true) = (pid.parse::<u32>(), n.parse::<u64>().is_ok()) else {
            continue;
        };
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid());
        if ours && pid != std::process::id() && !alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_directory_is_0700_and_owned_by_the_user() {
        let base = tempfile::tempdir().unwrap();
        let d = private_dir(base.path()).unwrap();
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!(m.mode() & 0o777, 0o700);
        assert_eq!(m.uid(), uid());
        // A looser one (made by an older lockscope) is tightened.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(base.path()).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_private_directory_owned_by_another_user_is_refused() {
        if uid() != 0 {
            return; // only root can give a directory away
        }
        let base = tempfile::tempdir().unwrap();
        let d = base.path().join(format!("lockscope-uid{}", uid()));
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        let e = private_dir(base.path()).unwrap_err();
        assert!(e.to_string().contains("will not keep guest RAM"), "{e}");
    }

    #[test]
    fn ram_files_are_reserved_private_and_removed() {
        let base = tempfile::tempdir().unwrap();
        let f = RamFile::create_in(&[base.path().to_path_buf()], 1 << 20).unwrap();
        assert!(f.note.is_none());
        let m = std::fs::metadata(&f.path).unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert_eq!(m.mode() & 0o777, 0o600);
        assert!(m.blocks() * 512 >= 1 << 20, "reserved, not sparse");
        assert_eq!(std::fs::metadata(&f.run_dir).unwrap().mode() & 0o777, 0o700);
        let run = f.run_dir.clone();
        drop(f);
        assert!(!run.exists());
    }

    #[test]
    fn a_directory_without_room_is_skipped_and_the_note_says_why() {
        let base = tempfile::tempdir().unwrap();
        let free = free_bytes(base.path()).unwrap();
        let missing = PathBuf::from("/nonexistent/lockscope-test");
        let f = RamFile::create_in(&[missing, base.path().to_path_buf()], 1 << 20).unwrap();
        let note = f.note.clone().unwrap();
        assert!(
            note.contains("/nonexistent/lockscope-test does not exist"),
            "{note}"
        );
        // More than there is: every candidate is refused, each with its reason.
        let e = RamFile::create_in(&[base.path().to_path_buf()], free + (1 << 40)).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("MiB free, the guest needs"), "{e}");
        assert!(e.contains(RAM_DIR_ENV), "{e}");
    }

    #[test]
    fn legacy_runs_of_dead_processes_are_swept_and_nothing_else() {
        let base = tempfile::tempdir().unwrap();
        let dead = base.path().join("lockscope-4999999-0");
        let alive = base
            .path()
            .join(format!("lockscope-{}-3", std::process::id()));
        let private = base.path().join(format!("lockscope-uid{}", uid()));
        for d in [&dead, &alive, &private] {
            std::fs::create_dir(d).unwrap();
        }
        sweep_legacy_runs(base.path());
        assert!(!dead.exists());
        assert!(alive.exists() && private.exists());
    }

    #[test]
    fn stale_runs_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22 on Linux: this pid cannot be alive.
        let dead = dir.path().join("run-4999999-0");
        let alive = dir.path().join(format!("run-{}-7", std::process::id()));
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
