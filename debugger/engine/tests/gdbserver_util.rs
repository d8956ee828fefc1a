//! Support for the `gdbserver_*` tests: the real kernel booted in real QEMU with its gdb stub on
//! a free port, and real gdb-multiarch driven in batch mode, with marker files so a test can
//! act at a known point of gdb's script. Included with `#[path]`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lockscope_engine::qemu::{Console, QemuConfig};

/// QEMU tests of one binary run one at a time: 2 cores are shared with everything else.
static QEMU_LOCK: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kernel ELF: `LOCKSCOPE_KERNEL`, else where `cargo xtask build` puts it.
pub fn kernel() -> PathBuf {
    let path = match std::env::var_os("LOCKSCOPE_KERNEL") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel"),
    };
    assert!(
        path.is_file(),
        "kernel ELF {} is missing: run `cargo xtask build` (or set LOCKSCOPE_KERNEL)",
        path.display()
    );
    path
}

/// The disk image: `LOCKSCOPE_DISK`, else `target/kernel/disk.img` beside the kernel's build.
pub fn disk() -> PathBuf {
    if let Some(d) = std::env::var_os("LOCKSCOPE_DISK") {
        return PathBuf::from(d);
    }
    let k = kernel();
    let d = k
        .ancestors()
        .nth(3)
        .map(|t| t.join("disk.img"))
        .unwrap_or_default();
    assert!(
        d.is_file(),
        "disk image {} is missing: run `cargo xtask build` (or set LOCKSCOPE_DISK)",
        d.display()
    );
    d
}

pub fn require_tool(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{name} is not installed; run `cargo xtask test` (it installs it) or \
         `apt-get install -y qemu-system-misc gdb-multiarch`"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn poll_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real kernel in QEMU, stopped at reset under its gdb stub (`-S`). Killed on drop.
pub struct Qemu {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Qemu {
    pub fn boot(smp: u32, bootargs: &str, with_disk: bool, shared_ram: bool) -> Self {
        require_tool("qemu-system-riscv64");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = QemuConfig::new(kernel())
            .smp(smp)
            .bootargs(bootargs)
            .gdb_port(port)
            .wait_for_gdb(true)
            .console(Console::File(dir.path().join("console")));
        if with_disk {
            cfg = cfg.disk(disk());
        }
        if shared_ram {
            cfg = cfg.shared_ram(dir.path().join("ram"));
        }
        let child = cfg
            .command()
            .expect("QEMU command")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start QEMU");
        let q = Self { child, port, dir };
        q.wait_listening();
        q
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn ram_file(&self) -> PathBuf {
        self.dir.path().join("ram")
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console")).unwrap_or_default()
    }

    /// Waits for the stub's port without connecting (a connection would be a gdb client).
    fn wait_listening(&self) {
        let needle = format!(":{:04X}", self.port);
        poll_until("QEMU's gdb stub to listen", Duration::from_secs(10), || {
            let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            tcp.lines()
                .any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&needle) && f[3] == "0A"
                })
                .then_some(())
        });
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// gdb-multiarch in batch mode, its output collected as it comes.
pub struct Gdb {
    child: Child,
    out: Arc<Mutex<String>>,
    pub dir: PathBuf,
}

impl Gdb {
    /// Runs `commands` on `elf` (after `set pagination off`, `set confirm off`).
    pub fn spawn(elf: &Path, commands: &[String], dir: &Path) -> Self {
        require_tool("gdb-multiarch");
        let mut cmd = Command::new("gdb-multiarch");
        cmd.args(["-batch", "-nx"]);
        // Rust paths parse only in Rust mode (a hart stopped in assembly would leave gdb in C).
        for c in [
            "set pagination off",
            "set confirm off",
            "set width 0",
            "set language rust",
        ] {
            cmd.args(["-ex", c]);
        }
        for c in commands {
            cmd.args(["-ex", c]);
        }
        cmd.arg(elf);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gdb-multiarch");
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Self {
            child,
            out,
            dir: dir.to_path_buf(),
        }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits for gdb to exit (killing it at the deadline) and returns everything it printed.
    pub fn finish(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "gdb did not finish in {timeout:?}; it printed:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader threads end with the pipes; give them a moment to drain.
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < Duration::from_millis(300) {
            let now = self.output();
            if now == last && !now.is_empty() {
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(30));
        }
        self.output()
    }

    /// Sends SIGINT, as Ctrl-C in gdb's terminal would.
    pub fn interrupt(&self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        assert_eq!(r, 0, "SIGINT to gdb");
    }
}

impl Drop for Gdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gdb command that creates marker `name` (the test waits for it).
pub fn mark(dir: &Path, name: &str) -> String {
    format!("shell touch {}", dir.join(name).display())
}

/// A gdb command that waits (at most 60 s) until the test creates marker `name`.
pub fn wait_for(dir: &Path, name: &str) -> String {
    format!(
        "shell i=0; while [ ! -e {f} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        f = dir.join(name).display()
    )
}

pub fn touch(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), b"").unwrap();
}

pub fn exists(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}
