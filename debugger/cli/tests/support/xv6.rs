//! The xv6-shaped C fixture kernel (our own code, kernel/xv6-fixture), copied into a scratch
//! tree so that its Makefile builds there and the fixture itself is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

#[path = "../../../engine/tests/xv6_fixture_tree.rs"]
mod fixture_tree;
use fixture_tree::copy_tree;
pub use fixture_tree::fixture_source as fixture;

/// One QEMU of these tests at a time: the machine has two cores, and a starved guest makes
/// every deadline longer.
pub static QEMU_LOCK: Mutex<()> = Mutex::new(());

/// Takes [`QEMU_LOCK`], whatever a failed test left behind.
pub fn one_qemu() -> std::sync::MutexGuard<'static, ()> {
    QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner())
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
