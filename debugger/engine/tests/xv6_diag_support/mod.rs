//! The xv6-shaped C fixture kernel (`LOCKSCOPE_XV6_FIXTURE`, default kernel/xv6-fixture) built
//! with a bug switch and run under a real lockscope [`Session`]: real QEMU 7.2, its virtio
//! disk, shared RAM, the gdb stub, the session's probe, gdb and engine threads, the xv6 source.
//!
//! Typing at the fixture's `$ ` prompt: the session has no console input yet (the xv6live
//! branch adds it), so the line is put in the console's input buffer through the shared RAM
//! file, found by DWARF (`cons.buf`, `cons.w`, `cons.e`), and the shell, asleep on `&cons.r`,
//! is made runnable: what the UART interrupt handler would have done.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockscope_engine::monitor::View;
use lockscope_engine::qemu::QemuConfig;
use lockscope_engine::symbols::types::Types;
use lockscope_engine::symbols::Symbols;
use lockscope_engine::{Session, SessionOptions, Target};

#[path = "../xv6_fixture_tree.rs"]
mod fixture_tree;
use fixture_tree::copy_tree;
pub use fixture_tree::fixture_source;

/// Harts the fixture boots with (the Makefile's default).
pub const CPUS: u32 = 3;
/// From boot to the first prompt: other builds and QEMUs share the 2 cores.
pub const BOOT: Duration = Duration::from_secs(90);
/// A whole test command.
pub const COMMAND: Duration = Duration::from_secs(240);

/// One QEMU at a time per test binary: the machine has two cores.
static QEMU_LOCK: Mutex<()> = Mutex::new(());

/// A private build of the fixture with some make variables (`BUG=refcnt-leak`).
pub struct Built {
    pub dir: tempfile::TempDir,
    pub kernel: PathBuf,
    pub disk: PathBuf,
    pub cpus: u32,
}

impl Built {
    pub fn new(vars: &[&str]) -> Built {
        let dir = tempfile::Builder::new()
            .prefix("lockscope-xv6-diag-")
            .tempdir()
            .unwrap();
        copy_tree(&fixture_source(), dir.path());
        let out = Command::new("make")
            .current_dir(dir.path())
            .args(["-s", "-j2"])
            .args(vars)
            .env_remove("MAKEFLAGS")
            .output()
            .expect("run make");
        assert!(
            out.status.success(),
            "make {vars:?} failed (is gcc-riscv64-unknown-elf installed?):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cpus = vars
            .iter()
            .find_map(|v| v.strip_prefix("CPUS="))
            .map_or(CPUS, |n| n.parse().unwrap());
        Built {
            kernel: dir.path().join("kernel/kernel"),
            disk: dir.path().join("fs.img"),
            dir,
            cpus,
        }
    }

    /// The line where `text` starts in a kernel source file (the first match; `text` may span
    /// lines), for checking lines.
    pub fn line_of(&self, file: &str, text: &str) -> u32 {
        let src = std::fs::read_to_string(self.dir.path().join("kernel").join(file)).unwrap();
        let at = src
            .find(text)
            .unwrap_or_else(|| panic!("no `{text}` in {file}"));
        src[..at].matches('\n').count() as u32 + 1
    }
}

/// The fixture under a live session.
pub struct Run {
    pub session: Option<Session>,
    pub symbols: Arc<Symbols>,
    pub types: Types,
    ram_file: PathBuf,
    _lock: std::sync::MutexGuard<'static, ()>,
    pub started: Instant,
}

impl Run {
    pub fn start(b: &Built) -> Run {
        let lock = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut symbols = Symbols::load(&b.kernel).unwrap();
        // Paths as a student sees them in their tree: kernel/bio.c.
        symbols.set_source_root(b.dir.path());
        let symbols = Arc::new(symbols);
        let types = Types::load(&symbols).unwrap();
        let config = QemuConfig::new(&b.kernel).smp(b.cpus).disk(&b.disk);
        let mut options = SessionOptions::new(Target::Run(config));
        options.console_log = Some(b.dir.path().join("console.log"));
        let session = Session::start(options, symbols.clone()).expect("start the session");
        let cmd = session.qemu_command.clone().unwrap();
        let ram_file = cmd
            .split("mem-path=")
            .nth(1)
            .and_then(|r| r.split([' ', ',']).next())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no shared RAM in {cmd}"));
        Run {
            session: Some(session),
            symbols,
            types,
            ram_file,
            _lock: lock,
            started: Instant::now(),
        }
    }

    pub fn view(&self) -> Arc<View> {
        self.session.as_ref().unwrap().view()
    }

    /// Polls the published view until `f` says yes; panics with the console at the deadline.
    pub fn until<T>(&self, what: &str, within: Duration, f: impl Fn(&View) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            let v = self.view();
            if let Some(x) = f(&v) {
                return x;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}; state {:?}, verdict {:?}: {}\nconsole:\n{}",
                v.state,
                v.check.verdict,
                v.verdict_sentence(),
                v.console.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn console(&self) -> String {
        self.view().console.join("\n")
    }

    /// Waits for the first `$ ` prompt.
    pub fn prompt(&self) {
        self.until("prompt", BOOT, |v| {
            v.console.iter().any(|l| l.starts_with("$ ")).then_some(())
        });
    }

    /// Waits until the command typed when the console had `lines` lines is done: a new, bare
    /// `$ ` prompt (a command's output starts on its prompt's line). `None` if `stop` says stop
    /// first.
    pub fn wait_prompt_or<T>(
        &self,
        lines: usize,
        within: Duration,
        stop: impl Fn(&View) -> Option<T>,
    ) -> Option<T> {
        self.until("the prompt", within, |v| {
            if let Some(x) = stop(v) {
                return Some(Some(x));
            }
            (v.console.len() > lines && v.console.last().is_some_and(|l| l == "$ ")).then_some(None)
        })
    }

    /// Types `line` at the prompt through guest RAM (see the module docs) and waits until the
    /// shell has taken it.
    pub fn type_line(&self, line: &str) {
        let t = &self.types;
        let cons = t
            .global("cons")
            .expect("the fixture's console state `cons`");
        let field = |name: &str| {
            t.member(cons.ty, name)
                .unwrap_or_else(|| panic!("cons.{name}"))
                .offset
                + cons.address
        };
        let (buf, r, w, e) = (field("buf"), field("r"), field("w"), field("e"));
        let buf_len = t.size_of(t.member(cons.ty, "buf").unwrap().ty).unwrap();
        let procs = t.global("proc").expect("proc[]");
        let (pty, count) = t.array(procs.ty).unwrap();
        let stride = t.size_of(pty).unwrap();
        let state_off = t.member(pty, "state").unwrap().offset;
        let chan_off = t.member(pty, "chan").unwrap().offset;

        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.ram_file)
            .unwrap();
        // SAFETY: a test writes a few words of guest RAM the kernel's console owns; QEMU maps
        // the same file shared. Only volatile 4/1-byte accesses are made.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
        let base = map.as_mut_ptr();
        let at = |addr: u64| (addr - 0x8000_0000) as usize;
        // SAFETY: in-bounds accesses of the mapping (kernel globals), volatile because the
        // guest changes them concurrently.
        let rd = |a: u64| unsafe { std::ptr::read_volatile(base.add(at(a)) as *const u32) };
        let wr =
            |a: u64, v: u32| unsafe { std::ptr::write_volatile(base.add(at(a)) as *mut u32, v) };
        let wr8 = |a: u64, v: u8| unsafe { std::ptr::write_volatile(base.add(at(a)), v) };
        let start = rd(e);
        let mut end = start;
        for ch in line.bytes().chain(std::iter::once(b'\n')) {
            wr8(buf + u64::from(end) % buf_len, ch);
            end = end.wrapping_add(1);
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        wr(e, end);
        wr(w, end);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // Wake the shell if it sleeps on &cons.r, until it has read the line.
        let deadline = Instant::now() + Duration::from_secs(30);
        while rd(r) != end {
            for i in 0..count.unwrap_or(0) {
                let p = procs.address + i * stride;
                // SAFETY: as above.
                let chan =
                    unsafe { std::ptr::read_volatile(base.add(at(p + chan_off)) as *const u64) };
                if rd(p + state_off) == 2 && chan == r {
                    wr(p + state_off, 3); // SLEEPING -> RUNNABLE
                }
            }
            assert!(
                Instant::now() < deadline,
                "the shell never read `{line}` (r {} w {} e {}); state {:?}\nconsole:\n{}",
                rd(r),
                rd(w),
                rd(e),
                self.view().state,
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the session and returns what it gathered.
    pub fn finish(mut self) -> lockscope_engine::Finished {
        self.session.take().unwrap().finish()
    }
}

/// `file:line` of a symbolized location (`kernel/bio.c:163` -> `bio.c:163`).
pub fn file_line(loc: &str) -> String {
    loc.rsplit('/').next().unwrap_or(loc).to_string()
}

/// Saves the view as a TUI fixture when `LOCKSCOPE_RECORD_XV6_VIEWS` names a directory, with
/// the build's temporary directory taken out of paths (`kernel/bio.c`, as in a lab tree).
pub fn record_view(name: &str, v: &View, b: &Built) {
    if let Some(dir) = std::env::var_os("LOCKSCOPE_RECORD_XV6_VIEWS") {
        let path = Path::new(&dir).join(format!("{name}.view.json"));
        let tree = format!("{}/", b.dir.path().display());
        let json = serde_json::to_string(v).unwrap().replace(&tree, "");
        std::fs::write(&path, json).unwrap();
        eprintln!("wrote {}", path.display());
    }
}
