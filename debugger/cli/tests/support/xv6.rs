//! The xv6-shaped C fixture kernel (our own code, kernel/xv6-fixture), copied into a scratch
//! tree so that its Makefile builds there and the fixture itself is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One QEMU of these tests at a time: the machine has two cores, and a starved guest makes
/// every deadline longer.
pub static QEMU_LOCK: Mutex<()> = Mutex::new(());

/// Takes [`QEMU_LOCK`], whatever a failed test left behind.
pub fn one_qemu() -> std::sync::MutexGuard<'static, ()> {
    QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The fixture's sources: `LOCKSCOPE_XV6_FIXTURE`, else the workspace's kernel/xv6-fixture.
pub fn fixture() -> PathBuf {
    let dir = std::env::var_os("LOCKSCOPE_XV6_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::workspace().join("kernel/xv6-fixture"));
    assert!(
        dir.join("Makefile").is_file(),
        "the xv6 fixture kernel is not at {}: set LOCKSCOPE_XV6_FIXTURE to its directory",
        dir.display()
    );
    dir
}

/// Copies the fixture's sources (not its build outputs) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let n = name.to_string_lossy();
        let output = n.ends_with(".o")
            || n.ends_with(".d")
            || [
                "fs.img",
                ".gdbinit",
                "config.h",
                "config.h.tmp",
                "kernel.asm",
            ]
            .contains(&&*n);
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else if !(output || n == "kernel" || n == "mkimg") {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A scratch copy of the fixture tree, removed on drop.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::Builder::new()
            .prefix("xv6-tree-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        copy_tree(&fixture(), dir.path());
        Tree { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs make in the tree with `args`; panics with its output when it fails.
    pub fn make(&self, args: &[&str]) -> String {
        let out = Command::new("make")
            .current_dir(self.path())
            .args(args)
            .output()
            .expect("run make");
        assert!(
            out.status.success(),
            "make {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kernel(&self) -> PathBuf {
        self.path().join("kernel/kernel")
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `gdb-multiarch` in batch mode on `kernel`, connected to 127.0.0.1:`port`, running `cmds`;
/// its output. Retries while nothing listens yet.
pub fn gdb(kernel: &Path, port: u16, cmds: &[&str]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut c = Command::new("gdb-multiarch");
        c.args(["-q", "-batch", "-nx"])
            .args(["-ex", "set confirm off"])
            .args(["-ex", "set architecture riscv:rv64"])
            .arg("-ex")
            .arg(format!("file {}", kernel.display()))
            .arg("-ex")
            .arg(format!("target remote 127.0.0.1:{port}"));
        for cmd in cmds {
            c.args(["-ex", cmd]);
        }
        let out = c
            .output()
            .expect("gdb-multiarch is needed (apt-get install gdb-multiarch)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !text.contains("Connection refused") {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listened on the gdb port {port}:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
