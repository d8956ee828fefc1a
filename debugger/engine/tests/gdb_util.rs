//! Support for the gdb client tests: a real QEMU with a guard, a tiny guest program written
//! through the stub, a recording TCP proxy, the transcript format of tests/fixtures/gdb, and a
//! scripted stub that replays a transcript. Included by the `gdb_*` tests with `#[path]`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockscope_engine::gdb::{Config, GdbClient, StopCause};
use lockscope_engine::qemu::{Console, QemuConfig, QemuProcess, WithGdb};

pub const QEMU: &str = lockscope_engine::qemu::QEMU_BINARY;

/// Where the guest program goes; QEMU's reset code jumps here with a0 = hart id.
pub const PROGRAM: u64 = 0x8000_0000;
/// `counter[hart]`, one u64 each.
pub const COUNTERS: u64 = 0x8000_1000;
/// The loop head: `ld t2, 0(t0)`.
pub const LOOP: u64 = 0x8000_0014;
/// The loop's `addi t2, t2, 1`.
pub const LOOP_ADDI: u64 = 0x8000_0018;
/// Where a bounded program parks: `j .`.
pub const DONE: u64 = 0x8000_0024;

/// QEMU tests run one at a time: they share 2 cores with everything else, and interrupt
/// latency is what some of them look at.
static QEMU_LOCK: Mutex<()> = Mutex::new(());

/// A QEMU `virt` machine with no kernel, paused at reset (`-S`), with its gdb stub on a free
/// port: the engine's QEMU harness. Killed on drop.
pub struct Qemu {
    q: QemuProcess,
    pub port: u16,
    _lock: MutexGuard<'static, ()>,
}

impl Qemu {
    pub fn start(harts: u32) -> Self {
        let lock = QEMU_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let WithGdb { process, addr } = QemuConfig::bare()
            .smp(harts)
            .console(Console::None)
            .spawn_with_gdb(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!("{e} (`cargo xtask` installs missing tools; on Debian: apt-get install qemu-system-misc)")
            });
        Self {
            q: process,
            port: addr.port(),
            _lock: lock,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn addr_str(&self) -> String {
        self.addr().to_string()
    }

    pub fn connect(&self) -> GdbClient {
        GdbClient::connect(&self.addr_str(), Config::default()).expect("connect to QEMU's stub")
    }

    /// Kills QEMU now, as a crash would.
    pub fn kill(&mut self) {
        self.q.kill();
    }

    pub fn is_alive(&mut self) -> bool {
        self.q.is_alive()
    }
}

/// How long a test waits for the guest to get somewhere before failing: generous, for a
/// loaded machine; a poll ends as soon as the guest is there.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Lets the guest run until `done` holds, checked with the guest stopped (it is interrupted
/// to look), and returns with the guest stopped. Fails after [`PATIENCE`].
pub fn run_until(c: &mut GdbClient, what: &str, mut done: impl FnMut(&mut GdbClient) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if c.is_running() {
            c.interrupt().unwrap();
        }
        if done(c) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        if let Some(stop) = c.resume().unwrap() {
            panic!("the guest stopped ({stop:?}) while waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it gives a value. Fails after [`PATIENCE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- the guest program ----

const T0: u32 = 5;
const T1: u32 = 6;
const T2: u32 = 7;
const T3: u32 = 28;
const S1: u32 = 9;
const A0: u32 = 10;

fn i_type(op: u32, rd: u32, f3: u32, rs1: u32, imm: i32) -> u32 {
    op | rd << 7 | f3 << 12 | rs1 << 15 | ((imm as u32) & 0xfff) << 20
}
fn s_type(f3: u32, rs1: u32, rs2: u32, imm: i32) -> u32 {
    let imm = imm as u32 & 0xfff;
    0x23 | (imm & 0x1f) << 7 | f3 << 12 | rs1 << 15 | rs2 << 20 | (imm >> 5) << 25
}
fn b_type(f3: u32, rs1: u32, rs2: u32, off: i32) -> u32 {
    let o = off as u32 & 0x1fff;
    0x63 | ((o >> 11) & 1) << 7
        | ((o >> 1) & 0xf) << 8
        | f3 << 12
        | rs1 << 15
        | rs2 << 20
        | ((o >> 5) & 0x3f) << 25
        | ((o >> 12) & 1) << 31
}
fn j_type(rd: u32, off: i32) -> u32 {
    let o = off as u32 & 0x1f_ffff;
    0x6f | rd << 7
        | ((o >> 12) & 0xff) << 12
        | ((o >> 11) & 1) << 20
        | ((o >> 1) & 0x3ff) << 21
        | ((o >> 20) & 1) << 31
}

/// Each hart counts in `COUNTERS[hartid]`: forever with `limit` None, else up to `limit`, then
/// parks at [`DONE`]. Also sets s1 = 0x100 + hartid so harts differ in more than a0.
pub fn program(limit: Option<u16>) -> Vec<u8> {
    let limit = limit.map_or(0, |l| i32::from(l.min(2047)));
    let words = [
        0x17 | T0 << 7 | 1 << 12,             // auipc t0, 1
        i_type(0x13, T1, 1, A0, 3),           // slli t1, a0, 3
        0x33 | T0 << 7 | T0 << 15 | T1 << 20, // add t0, t0, t1
        i_type(0x13, S1, 0, A0, 0x100),       // addi s1, a0, 0x100
        i_type(0x13, T3, 0, 0, limit),        // li t3, limit
        i_type(0x03, T2, 3, T0, 0),           // loop: ld t2, 0(t0)
        i_type(0x13, T2, 0, T2, 1),           // addi t2, t2, 1
        s_type(3, T0, T2, 0),                 // sd t2, 0(t0)
        if limit > 0 {
            b_type(4, T2, T3, -12)
        } else {
            j_type(0, -12)
        }, // blt t2, t3, loop / j loop
        j_type(0, 0),                         // done: j done
    ];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Writes the program and zeroes the counters.
pub fn load_program(c: &mut GdbClient, limit: Option<u16>) {
    c.write_memory(PROGRAM, &program(limit))
        .expect("write the program");
    c.write_memory(COUNTERS, &[0u8; 64])
        .expect("zero the counters");
}

pub fn read_counters(c: &mut GdbClient, harts: usize) -> Vec<u64> {
    let mut b = vec![0u8; harts * 8];
    c.read_memory(COUNTERS, &mut b).expect("read the counters");
    b.chunks_exact(8)
        .map(|x| u64::from_le_bytes(x.try_into().unwrap()))
        .collect()
}

// ---- transcripts ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to stub.
    C,
    /// Stub to client.
    S,
}

/// Both directions of one connection, in order, without timing: consecutive chunks in one
/// direction are merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    pub chunks: Vec<(Dir, Vec<u8>)>,
}

impl Transcript {
    pub fn push(&mut self, dir: Dir, bytes: &[u8]) {
        match self.chunks.last_mut() {
            Some((d, b)) if *d == dir => b.extend_from_slice(bytes),
            _ => self.chunks.push((dir, bytes.to_vec())),
        }
    }

    pub fn bytes(&self, dir: Dir) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|(d, _)| *d == dir)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    /// One line per chunk: `c ` or `s `, then the bytes with `\\` and `\xNN` escapes.
    pub fn to_text(&self, header: &str) -> String {
        let mut out = String::new();
        for l in header.lines() {
            writeln!(out, "# {l}").unwrap();
        }
        for (dir, bytes) in &self.chunks {
            out.push_str(if *dir == Dir::C { "c " } else { "s " });
            for &b in bytes {
                match b {
                    b'\\' => out.push_str("\\\\"),
                    b' '..=b'~' => out.push(char::from(b)),
                    _ => write!(out, "\\x{b:02x}").unwrap(),
                }
            }
            out.push('\n');
        }
        out
    }

    pub fn parse(text: &str) -> Self {
        let mut t = Self::default();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (dir, rest) = match line.split_at(2) {
                ("c ", r) => (Dir::C, r),
                ("s ", r) => (Dir::S, r),
                _ => panic!("bad transcript line {line:?}"),
            };
            let mut bytes = Vec::new();
            let mut it = rest.bytes();
            while let Some(b) = it.next() {
                if b != b'\\' {
                    bytes.push(b);
                    continue;
                }
                match it.next() {
                    Some(b'\\') => bytes.push(b'\\'),
                    Some(b'x') => {
                        let h: Vec<u8> = it.by_ref().take(2).collect();
                        let s = std::str::from_utf8(&h).unwrap();
                        bytes.push(u8::from_str_radix(s, 16).unwrap());
                    }
                    other => panic!("bad escape {other:?} in {line:?}"),
                }
            }
            t.chunks.push((dir, bytes));
        }
        t
    }
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gdb")
}

pub fn load_transcript(name: &str) -> Transcript {
    let path = fixtures().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Transcript::parse(&text)
}

/// A TCP proxy in front of a stub that records one connection.
pub struct Recorder {
    pub port: u16,
    log: Arc<Mutex<Transcript>>,
    handle: JoinHandle<()>,
}

impl Recorder {
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Transcript::default()));
        let log2 = log.clone();
        let handle = std::thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let server = TcpStream::connect(upstream).unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let pump =
                |mut from: TcpStream, mut to: TcpStream, dir: Dir, log: Arc<Mutex<Transcript>>| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 8192];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Log before forwarding, so the order in the log is causal.
                            log.lock().unwrap().push(dir, &buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    })
                };
            let a = pump(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                Dir::C,
                log2.clone(),
            );
            let b = pump(server, client, Dir::S, log2);
            a.join().unwrap();
            b.join().unwrap();
        });
        Self { port, log, handle }
    }

    pub fn addr_str(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits for both sides to close and returns the transcript.
    pub fn finish(self) -> Transcript {
        self.handle.join().unwrap();
        let t = self.log.lock().unwrap().clone();
        t
    }
}

/// A stub that plays the `s` chunks of a transcript and checks the client sends exactly the
/// `c` chunks, then closes its side. The handle yields the first divergence.
pub fn scripted_stub(t: Transcript) -> (SocketAddr, JoinHandle<Result<(), String>>) {
    scripted_stub_with(t, true)
}

/// [`scripted_stub`], optionally staying silent at the end instead of closing.
pub fn scripted_stub_with(
    t: Transcript,
    close_at_end: bool,
) -> (SocketAddr, JoinHandle<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for (i, (dir, bytes)) in t.chunks.iter().enumerate() {
            match dir {
                Dir::S => s.write_all(bytes).map_err(|e| e.to_string())?,
                Dir::C => {
                    let mut got = vec![0u8; bytes.len()];
                    let mut n = 0;
                    while n < got.len() {
                        match s.read(&mut got[n..]) {
                            Ok(0) => {
                                return Err(format!(
                                    "chunk {i}: client closed after {:?}, expected {:?}",
                                    String::from_utf8_lossy(&got[..n]),
                                    String::from_utf8_lossy(bytes)
                                ))
                            }
                            Ok(k) => n += k,
                            Err(e) => return Err(format!("chunk {i}: {e}")),
                        }
                        if got[..n] != bytes[..n] {
                            return Err(format!(
                                "chunk {i}: client sent {:?}, transcript has {:?}",
                                String::from_utf8_lossy(&got[..n]),
                                String::from_utf8_lossy(bytes)
                            ));
                        }
                    }
                }
            }
        }
        if close_at_end {
            let _ = s.shutdown(Shutdown::Write);
        }
        // Anything more from the client is a divergence too.
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) if rest.is_empty() => Ok(()),
            Ok(_) => Err(format!(
                "client sent more than recorded: {:?}",
                String::from_utf8_lossy(&rest)
            )),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
    (addr, h)
}

// ---- a deterministic client session, recorded from QEMU and replayed ----

/// Drives a 4-hart guest through everything the client does, and returns a log of the
/// outcomes (no timings), one line each. Deterministic for a given transcript: it never
/// polls with a zero timeout, whose result would depend on timing.
pub fn client_session(addr: &str) -> Vec<String> {
    let mut log = Vec::new();
    let mut c = GdbClient::connect(addr, Config::default()).expect("connect");
    let threads = c.threads().unwrap();
    log.push(format!(
        "threads {}",
        threads
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    log.push(format!("features {:?}", c.features()));
    log.push(format!(
        "stop {:?}",
        c.last_stop().map(|s| (s.thread, s.cause))
    ));
    for n in ["pc", "priv", "sepc", "scause", "stval", "satp", "mhartid"] {
        log.push(format!("regnum {n} {:?}", c.register_number(n)));
    }

    load_program(&mut c, None);
    let mut back = vec![0u8; 40];
    c.read_memory(PROGRAM, &mut back).unwrap();
    log.push(format!("program read back equal {}", back == program(None)));
    let mut big = vec![0u8; 5000];
    c.read_memory(0x8000_0000, &mut big).unwrap();
    log.push(format!(
        "5000 bytes read, first 40 equal {}",
        big[..40] == program(None)[..]
    ));
    let err = c.read_memory(0, &mut [0u8; 8]).unwrap_err();
    log.push(format!("read at 0: {err}"));

    for &t in &threads {
        let r = c.read_hart_registers(t).unwrap();
        let mhartid = c.read_register(t, "mhartid").unwrap();
        log.push(format!(
            "{t} pc {:#x} priv {:?} mhartid {mhartid} scause {:?} satp {:?}",
            r.pc(),
            r.privilege,
            r.scause,
            r.satp
        ));
    }

    c.insert_breakpoint(LOOP_ADDI).unwrap();
    c.insert_breakpoint(LOOP_ADDI).unwrap();
    log.push(format!(
        "breakpoints {:x?}",
        c.breakpoints().collect::<Vec<_>>()
    ));
    assert_eq!(c.resume().unwrap(), None);
    let stop = c
        .wait_stop(Duration::from_secs(5))
        .unwrap()
        .expect("breakpoint hit");
    log.push(format!(
        "stop cause {:x?} on a listed thread {}",
        stop.cause,
        stop.thread.is_some_and(|t| threads.contains(&t))
    ));
    let t = stop.thread.unwrap();
    let r = c.read_core_registers(t).unwrap();
    log.push(format!(
        "stopped hart pc {:#x} s1-a0 {:#x}",
        r.pc,
        r.x[9] - r.x[10]
    ));
    // Resuming steps the harts on the breakpoint off it first.
    assert_eq!(c.resume().unwrap(), None);
    let stop = c
        .wait_stop(Duration::from_secs(5))
        .unwrap()
        .expect("second hit");
    log.push(format!("second stop cause {:x?}", stop.cause));

    let s = c.step(threads[0]).unwrap();
    log.push(format!(
        "step cause {:?} thread {:?}",
        s.cause,
        s.thread.map(|t| t.to_string())
    ));

    c.remove_breakpoint(LOOP_ADDI).unwrap();
    log.push(format!(
        "breakpoints after removal {}",
        c.breakpoints().count()
    ));
    let e = c.remove_breakpoint(LOOP_ADDI).unwrap_err();
    log.push(format!("second removal: {e}"));
    assert_eq!(c.resume().unwrap(), None);
    let e = c.read_memory(COUNTERS, &mut [0u8; 8]).unwrap_err();
    log.push(format!("read while running: {e}"));
    std::thread::sleep(Duration::from_millis(50));
    let stop = c.interrupt().unwrap();
    log.push(format!("interrupt cause {:?}", stop.cause));
    let counters = read_counters(&mut c, 4);
    log.push(format!(
        "every hart counted {}",
        counters.iter().all(|&n| n > 0)
    ));
    c.resume().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let p = c.pause_with(|c| Ok(read_counters(c, 4))).unwrap();
    log.push(format!(
        "pause_with stop {:?}, counted {}",
        p.stop.map(|s| s.cause),
        p.value.iter().all(|&n| n > 0)
    ));
    log.push(format!("running after pause_with {}", c.is_running()));
    match c.detach() {
        Ok(()) => log.push("detached".into()),
        Err(e) => log.push(format!("detach failed: {e}")),
    }
    log
}

/// True for a stop this client reports after a breakpoint.
pub fn is_breakpoint(cause: StopCause, addr: u64) -> bool {
    cause == StopCause::Breakpoint { addr }
}

/// Runs gdb-multiarch in batch mode against `addr` with the given commands; returns stdout.
pub fn gdb_batch(port: u16, commands: &[&str]) -> String {
    let mut cmd = Command::new("gdb-multiarch");
    cmd.args([
        "-nx",
        "-batch",
        "-ex",
        "set arch riscv:rv64",
        "-ex",
        "set pagination off",
    ]);
    cmd.args(["-ex", &format!("target remote 127.0.0.1:{port}")]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run gdb-multiarch ({e}): install it (Debian: apt-get install gdb-multiarch)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gdb-multiarch failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
