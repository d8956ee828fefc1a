//! Building and driving the xv6-shaped C fixture kernel the way a student drives a lab kernel:
//! a copy of its tree, its own Makefile, `make qemu`, typing at the `$ ` prompt on QEMU's stdio
//! serial. QEMU's monitor (multiplexed on the same stdio by `-nographic`, reached with `C-a c`)
//! gives every hart's registers when the guest hangs.

use object::{Object, ObjectSymbol, SymbolKind};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Harts the tests boot (the Makefile's default, like the lab's).
pub const CPUS: usize = 3;
/// From `make qemu` to the first prompt. Generous: other builds and QEMUs share the 2 cores.
pub const BOOT: Duration = Duration::from_secs(90);
/// A whole test command (bcachetest takes 3-8 s here when the host is idle).
pub const COMMAND: Duration = Duration::from_secs(240);

/// The fixture's sources in this repository.
pub fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../xv6-fixture")
}

/// Build outputs an in-tree `make` leaves behind: not part of a student's checkout.
fn is_build_output(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let s = rel.to_string_lossy();
    name.ends_with(".o")
        || name.ends_with(".d")
        || name.ends_with(".tmp")
        || matches!(
            s.as_ref(),
            "kernel/kernel"
                | "kernel/kernel.asm"
                | "kernel/config.h"
                | "mkimg/mkimg"
                | "fs.img"
                | ".gdbinit"
        )
}

fn copy_tree(from: &Path, to: &Path, rel: &Path) {
    let dir = from.join(rel);
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
    {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        if is_build_output(&rel) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(to.join(&rel)).unwrap();
            copy_tree(from, to, &rel);
        } else {
            std::fs::copy(from.join(&rel), to.join(&rel)).unwrap();
        }
    }
}

/// A private copy of the fixture's tree, built with some make variables (`BUG=prev-head`).
pub struct Tree {
    dir: tempfile::TempDir,
    vars: Vec<String>,
}

impl Tree {
    /// Copies the tree and runs `make` in it; panics with make's output if the build fails.
    pub fn build(vars: &[&str]) -> Tree {
        let dir = tempfile::Builder::new()
            .prefix("lockscope-xv6-fixture-test-")
            .tempdir()
            .expect("a temporary directory");
        copy_tree(&source_tree(), dir.path(), Path::new(""));
        let tree = Tree {
            dir,
            vars: vars.iter().map(|v| v.to_string()).collect(),
        };
        let out = tree.make(&[]);
        assert!(
            out.status.success(),
            "make {} failed (is gcc-riscv64-unknown-elf installed?):\n{}{}",
            tree.vars.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        tree
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The kernel ELF, where lab trees have it.
    pub fn kernel(&self) -> PathBuf {
        self.path().join("kernel/kernel")
    }

    /// `make ARGS VARS` in the tree.
    pub fn make(&self, args: &[&str]) -> Output {
        Command::new("make")
            .current_dir(self.path())
            .args(args)
            .args(&self.vars)
            .env_remove("MAKEFLAGS")
            .output()
            .expect("running make")
    }

    /// `make qemu`: the Makefile's own QEMU command line.
    pub fn boot(&self) -> Qemu {
        let mut cmd = Command::new("make");
        cmd.current_dir(self.path())
            .args(["-s", "qemu"])
            .args(&self.vars)
            .env_remove("MAKEFLAGS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the test can end make and QEMU together.
            .process_group(0);
        Qemu::spawn(cmd, &format!("make qemu {}", self.vars.join(" ")))
    }

    /// A QEMU command line of our own, run in the tree.
    pub fn boot_command(&self, cmdline: &str) -> Qemu {
        let mut cmd = Command::new("sh");
        cmd.current_dir(self.path())
            .args(["-c", &format!("exec {cmdline}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        Qemu::spawn(cmd, cmdline)
    }

    pub fn symbols(&self) -> Symbols {
        Symbols::load(&self.kernel())
    }
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    closed: bool,
}

/// A running `make qemu`: its console (stdout and stderr, as they arrive) and its stdin.
pub struct Qemu {
    child: Child,
    stdin: ChildStdin,
    out: Arc<(Mutex<Captured>, Condvar)>,
    what: String,
    in_monitor: bool,
}

fn pump(mut from: impl Read + Send + 'static, to: Arc<(Mutex<Captured>, Condvar)>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            let n = from.read(&mut chunk).unwrap_or(0);
            let (lock, cvar) = &*to;
            let mut c = lock.lock().unwrap();
            if n == 0 {
                c.closed = true;
                cvar.notify_all();
                return;
            }
            c.bytes.extend_from_slice(&chunk[..n]);
            cvar.notify_all();
        }
    });
}

impl Qemu {
    fn spawn(mut cmd: Command, what: &str) -> Qemu {
        let mut child = cmd.spawn().expect("running make qemu");
        let out = Arc::new((Mutex::new(Captured::default()), Condvar::new()));
        pump(child.stdout.take().unwrap(), out.clone());
        pump(child.stderr.take().unwrap(), out.clone());
        let stdin = child.stdin.take().unwrap();
        Qemu {
            child,
            stdin,
            out,
            what: what.to_string(),
            in_monitor: false,
        }
    }

    /// Everything printed so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&self.out.0.lock().unwrap().bytes).into_owned()
    }

    pub fn len(&self) -> usize {
        self.out.0.lock().unwrap().bytes.len()
    }

    /// Waits until `pred` holds for the output after byte `from`, or `timeout` passes, or
    /// QEMU's output ends. Returns the output after `from` when `pred` held.
    pub fn wait(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.out;
        let mut c = lock.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&c.bytes[from.min(c.bytes.len())..]).into_owned();
            if pred(&text) {
                return Some(text);
            }
            let now = Instant::now();
            if c.closed || now >= deadline {
                return None;
            }
            c = cvar.wait_timeout(c, deadline - now).unwrap().0;
        }
    }

    /// Waits for `needle` after byte `from`; panics with the console if it does not come.
    pub fn expect(&self, from: usize, needle: &str, timeout: Duration) -> String {
        self.wait(from, timeout, |t| t.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no `{needle}` within {timeout:?}; console:\n{}",
                    self.what,
                    self.console()
                )
            })
    }

    /// Waits for the first prompt.
    pub fn prompt(&self) {
        self.expect(0, "$ ", BOOT);
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stdin
            .write_all(bytes)
            .expect("writing to QEMU's stdin");
        self.stdin.flush().unwrap();
    }

    /// Types a command line, waits for the guest to echo it, and returns the offset where
    /// its output starts. Waiting matters: QEMU's mux holds input the UART cannot take yet
    /// and gives it only to the focused frontend, so a `C-a c` right behind a line would
    /// strand the rest of it.
    pub fn type_line(&mut self, line: &str) -> usize {
        assert!(
            !self.in_monitor,
            "typing at the guest while the monitor has the console"
        );
        let from = self.len();
        self.send(format!("{line}\n").as_bytes());
        let echo = format!("{line}\n");
        if self
            .wait(from, Duration::from_secs(60), |t| t.contains(&echo))
            .is_none()
        {
            panic!(
                "{}: the guest did not echo `{line}`; console:\n{}",
                self.what,
                self.console()
            );
        }
        from
    }

    /// Runs a command to its next prompt and returns what it printed.
    pub fn run(&mut self, line: &str, timeout: Duration) -> String {
        let from = self.type_line(line);
        let out = self.wait(from, timeout, |t| prompt_after_echo(t, line));
        out.unwrap_or_else(|| {
            panic!(
                "{}: `{line}` did not come back to the prompt within {timeout:?}; console:\n{}",
                self.what,
                self.console()
            )
        })
    }

    /// Ctrl-P: the kernel's process list, printed from its console interrupt.
    pub fn procdump(&mut self) -> String {
        let from = self.len();
        self.send(b"\x10");
        self.wait(from, Duration::from_secs(30), |t| t.contains(" threads\n"))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no process list after ^P; console:\n{}",
                    self.what,
                    self.console()
                )
            })
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Every hart's registers from QEMU's monitor (`info registers -a`). The first call
    /// switches the console to the monitor (`C-a c`); the guest keeps running.
    pub fn harts(&mut self) -> Vec<Hart> {
        if !self.in_monitor {
            let from = self.len();
            self.send(b"\x01c");
            self.expect(from, "(qemu)", Duration::from_secs(30));
            self.in_monitor = true;
        }
        let from = self.len();
        self.send(b"info registers -a\n");
        let last = format!("CPU#{}", CPUS - 1);
        let text = self
            .wait(from, Duration::from_secs(30), |t| {
                t.find(&last).is_some_and(|i| t[i..].contains("x31/t6"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: no register dump from the monitor; console:\n{}",
                    self.what,
                    self.console()
                )
            });
        let harts = parse_harts(&text);
        assert_eq!(harts.len(), CPUS, "register dump of {CPUS} harts:\n{text}");
        harts
    }

    /// Back from the monitor to the guest's console (`C-a c` again).
    pub fn leave_monitor(&mut self) {
        if self.in_monitor {
            self.send(b"\x01c");
            self.in_monitor = false;
        }
    }

    /// Samples the harts until `key` gives the same `Some` in two samples at least `apart`
    /// from each other, with no prompt printed after `from` meanwhile; panics at `timeout`.
    /// Returns that sample and its key. This is how a hang is told from slowness: the same
    /// stuck state, twice.
    pub fn stuck<K: PartialEq + std::fmt::Debug>(
        &mut self,
        from: usize,
        apart: Duration,
        timeout: Duration,
        key: impl Fn(&[Hart]) -> Option<K>,
    ) -> (Vec<Hart>, K) {
        let found = self.stuck_or_prompt(from, apart, timeout, key);
        found.unwrap_or_else(|| {
            panic!(
                "{}: the guest came back to the prompt: not a hang; console:\n{}",
                self.what,
                self.console()
            )
        })
    }

    /// Like `stuck`, but `None` when the guest prints a new prompt instead: the command
    /// finished, so the race behind the hang was not hit this time.
    pub fn stuck_or_prompt<K: PartialEq + std::fmt::Debug>(
        &mut self,
        from: usize,
        apart: Duration,
        timeout: Duration,
        key: impl Fn(&[Hart]) -> Option<K>,
    ) -> Option<(Vec<Hart>, K)> {
        let deadline = Instant::now() + timeout;
        let mut first: Option<(Instant, K)> = None;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            assert!(
                self.alive(),
                "{}: QEMU exited; console:\n{}",
                self.what,
                self.console()
            );
            let harts = self.harts();
            match (key(&harts), first.take()) {
                (Some(k), Some((t, k0))) if k == k0 && t.elapsed() >= apart => {
                    return Some((harts, k))
                }
                (Some(k), Some((t, k0))) if k == k0 => first = Some((t, k0)),
                (Some(k), _) => first = Some((Instant::now(), k)),
                (None, _) => {}
            }
            last = harts;
            // A new prompt means the guest was only slow.
            let text = self.console();
            if text[from.min(text.len())..].contains("\n$ ") {
                return None;
            }
            let now = self.len();
            let _ = self.wait(now, Duration::from_millis(200), |t| t.contains("\n$ "));
        }
        panic!(
            "{}: no stuck state seen twice {apart:?} apart within {timeout:?}; last sample: {last:x?}\nconsole:\n{}",
            self.what,
            self.console()
        );
    }
}

/// True once `t` (the output after typing `line`) holds the echo and a fresh prompt.
fn prompt_after_echo(t: &str, line: &str) -> bool {
    t.find(line)
        .is_some_and(|i| t[i + line.len()..].contains("\n$ "))
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // make and QEMU share the process group the child leads.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// One hart's registers, by ABI name (pc, ra, sp, s1, a0, mcause, ...).
#[derive(Debug, Clone)]
pub struct Hart {
    pub regs: Vec<(String, u64)>,
}

impl Hart {
    pub fn reg(&self, name: &str) -> u64 {
        self.regs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no register {name} in {self:x?}"))
    }

    pub fn pc(&self) -> u64 {
        self.reg("pc")
    }
}

/// The harts of the last `info registers -a` dump in `text`: per `CPU#n`, each name followed
/// by a 16-digit hex value (`x9/s1 0000000080013000` gives `s1`).
pub fn parse_harts(text: &str) -> Vec<Hart> {
    let start = text.find("CPU#0").unwrap_or(0);
    let mut harts: Vec<Hart> = Vec::new();
    let tokens: Vec<&str> = text[start..].split_whitespace().collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.starts_with("CPU#") {
            harts.push(Hart { regs: Vec::new() });
            continue;
        }
        let Some(value) = tokens.get(i + 1) else {
            continue;
        };
        if value.len() != 16 || t.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let Ok(v) = u64::from_str_radix(value, 16) else {
            continue;
        };
        let name = t.rsplit('/').next().unwrap_or(t).to_string();
        if let Some(h) = harts.last_mut() {
            h.regs.push((name, v));
        }
    }
    harts
}

/// The kernel's functions and objects, to name a pc or an address.
pub struct Symbols {
    syms: Vec<(u64, u64, String, SymbolKind)>,
}

impl Symbols {
    pub fn load(elf: &Path) -> Symbols {
        let data = std::fs::read(elf).unwrap_or_else(|e| panic!("reading {}: {e}", elf.display()));
        let file = object::File::parse(&*data).expect("an ELF file");
        let mut syms: Vec<_> = file
            .symbols()
            .filter(|s| s.size() > 0)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string(), s.kind())))
            .collect();
        syms.sort_by_key(|s| s.0);
        Symbols { syms }
    }

    /// The function containing pc.
    pub fn function(&self, pc: u64) -> Option<&str> {
        self.syms
            .iter()
            .find(|(a, s, _, k)| *k == SymbolKind::Text && pc >= *a && pc < a + s)
            .map(|(_, _, n, _)| n.as_str())
    }

    /// Address and size of a symbol.
    pub fn get(&self, name: &str) -> Option<(u64, u64)> {
        self.syms
            .iter()
            .find(|(_, _, n, _)| n == name)
            .map(|(a, s, _, _)| (*a, *s))
    }

    /// Is addr inside the object `name`?
    pub fn inside(&self, name: &str, addr: u64) -> bool {
        self.get(name)
            .is_some_and(|(a, s)| addr >= a && addr < a + s)
    }
}

/// Runs a binutils tool on the kernel and returns its stdout.
pub fn tool(name: &str, args: &[&str], elf: &Path) -> String {
    let out = Command::new(name)
        .args(args)
        .arg(elf)
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e} (install gcc-riscv64-unknown-elf)"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
