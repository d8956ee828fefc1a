//! A live session: threads that read the target and one that feeds the monitor.
//!
//! - The **probe** thread (shared RAM only) drains the rings at `drain_hz` and reads a snapshot
//!   at `snapshot_hz`, without ever pausing the guest. It also notices QEMU exiting, and then
//!   reads the final state from the RAM file, which outlives QEMU.
//! - The **gdb** thread owns the stub connection: it waits for the panic breakpoint, stops and
//!   resumes on request, and captures every hart's registers and stack at a stop. When there is
//!   no shared RAM (attach), it also polls: interrupt, read at most 64 KiB, continue.
//! - The **engine** thread applies every [`Feed`] to the [`Monitor`], records them when asked,
//!   and publishes a [`View`] through the [`SessionHandle`] when something changed.
//! - The **console** thread forwards QEMU's serial output and appends it to the console log.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lockscope_abi as abi;

use super::handle::{Command, SessionHandle};
use super::launch::Qemu;
use super::SessionError;
use crate::feed::{Ending, Feed, HartStop, StopInfo, StopReason};
use crate::gdb::{GdbClient, GdbError, Stop, StopCause};
use crate::memory::{GuestMemory, SharedRam};
use crate::model::{FrameKind, HartRegs, StackFrame};
use crate::monitor::{Monitor, MonitorConfig, SourceKind, TargetState, View};
use crate::qemu::{QemuConfig, RAM_BASE};
use crate::reader::{AbiError, AbiReader, Layout};
use crate::symbols::{RawFrameKind, Symbols, UnwindLimits};
use crate::trace::{TraceHeader, TraceWriter};

/// Where the target is.
#[derive(Clone, Debug)]
pub enum Target {
    /// Boot this QEMU configuration (gdb stub, shared RAM and console are added).
    Run(QemuConfig),
    /// Attach to the gdb stub of a QEMU that already runs (`HOST:PORT`).
    Attach(String),
}

/// How to run a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub target: Target,
    /// Read guest RAM through a shared file (run only). Otherwise poll through the gdb stub.
    pub shared_ram: bool,
    /// Ring drains per second from shared RAM.
    pub drain_hz: f64,
    /// Snapshots per second from shared RAM.
    pub snapshot_hz: f64,
    /// gdb polls per second when there is no shared RAM.
    pub poll_hz: f64,
    /// Bytes of events read per gdb poll at most.
    pub poll_budget: usize,
    /// Views published per second at most.
    pub view_hz: f64,
    /// Stop the guest and capture registers when a deadlock or stall is confirmed.
    pub capture_faults: bool,
    /// Also set a breakpoint on the kernel's panic-halt function. Off by default: on QEMU 7.2
    /// any inserted breakpoint makes TCG run the guest about 3.8 times slower, and the panic
    /// record (watched in shared RAM, or at every gdb poll) catches a panic anyway.
    pub panic_breakpoint: bool,
    /// Write the feed to this trace file.
    pub record: Option<PathBuf>,
    /// Append the guest console here (run only).
    pub console_log: Option<PathBuf>,
    pub monitor: MonitorConfig,
}

impl SessionOptions {
    pub fn new(target: Target) -> Self {
        let shared_ram = matches!(target, Target::Run(_));
        Self {
            target,
            shared_ram,
            drain_hz: 200.0,
            snapshot_hz: 10.0,
            poll_hz: 10.0,
            // The snapshot tables take ~12 KiB more; QEMU's stub reads ~20 MB/s, so a poll stays
            // near 1.5 ms and 10 Hz polling costs the guest ~1.5% (64 KiB would cost ~4%).
            poll_budget: 16 << 10,
            view_hz: 10.0,
            capture_faults: true,
            panic_breakpoint: false,
            record: None,
            console_log: None,
            monitor: MonitorConfig::default(),
        }
    }
}

/// Messages to the engine thread.
enum Msg {
    Feed(Feed),
    Command(Command),
    /// The probe thread read its last.
    ProbeDone,
    /// QEMU exited with this status (code, or None for a signal) and what it printed.
    QemuExited {
        code: Option<i32>,
        stderr: String,
    },
    /// The gdb connection failed.
    GdbLost(String),
    /// The ABI could not be read: a corrupt value or a mismatched kernel.
    AbiFailed(String),
}

/// Requests to the gdb thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GdbRequest {
    Interrupt,
    Resume,
    /// Stop and capture, leaving the guest stopped: a panic was recorded, or a deadlock or
    /// stall was confirmed.
    Capture(StopReason),
    Quit,
}

/// Target time while lockscope runs the session: QEMU's virtual clock advances with the host's
/// while the guest runs and stands still while it is stopped.
#[derive(Debug)]
struct GuestClock {
    base_ns: u64,
    running_since: Option<Instant>,
}

impl GuestClock {
    fn now_ns(&self) -> u64 {
        self.base_ns
            + self
                .running_since
                .map_or(0, |t| t.elapsed().as_nanos() as u64)
    }

    fn stopped(&mut self) {
        self.base_ns = self.now_ns();
        self.running_since = None;
    }

    fn running(&mut self) {
        if self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
    }
}

type Clock = Arc<Mutex<GuestClock>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running session. Drop or [`Session::finish`] ends it.
pub struct Session {
    handle: Arc<SessionHandle>,
    tx: Sender<Msg>,
    engine: Option<JoinHandle<Monitor>>,
    others: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    qemu: Option<Arc<Qemu>>,
    /// The console log, when the session boots QEMU.
    pub console_log: Option<PathBuf>,
    /// The QEMU command line, when the session boots QEMU.
    pub qemu_command: Option<String>,
}

impl Session {
    /// Starts the session: boots or attaches, sets the panic breakpoint, lets the guest run,
    /// and starts the threads. Errors here are setup errors (no QEMU, no stub, wrong ELF).
    pub fn start(options: SessionOptions, symbols: Arc<Symbols>) -> Result<Session, SessionError> {
        // The ELF must be a lockscope kernel of our ABI before anything is booted.
        let root_addr = symbols.abi_root()?.address;
        let root: abi::Root = symbols.read_static_pod(root_addr)?;
        Layout::check_identity(&root, root_addr)?;
        let halt = symbols.panic_halt()?.address;

        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Msg>();
        let clock: Clock = Arc::new(Mutex::new(GuestClock {
            base_ns: 0,
            running_since: None,
        }));
        let source = if options.shared_ram {
            SourceKind::SharedRam
        } else {
            SourceKind::GdbPoll
        };
        let mut monitor = Monitor::new(options.monitor.clone(), Some(symbols.clone()), source)
            .map_err(|e| SessionError::Config(e.to_string()))?;
        let mut others = Vec::new();
        let mut qemu_arc = None;
        let mut console_log = None;
        let mut qemu_command = None;
        let (smp, bootargs) = match &options.target {
            Target::Run(c) => (c.smp, c.bootargs.clone()),
            Target::Attach(_) => (0, String::new()),
        };

        let (mut client, shared, ram) = match &options.target {
            Target::Run(config) => {
                if !options.shared_ram && config.memory_mib == 0 {
                    return Err(SessionError::Config("memory size 0".into()));
                }
                // The free port is picked before QEMU binds it, so another process can take it
                // in between; QEMU then exits at once, and a new port is tried.
                let mut attempt = 0;
                let (qemu, stdout, client) = loop {
                    attempt += 1;
                    let (qemu, stdout) = Qemu::start(config, options.shared_ram)?;
                    match qemu.connect_gdb(Duration::from_secs(10)) {
                        Ok(client) => break (qemu, stdout, client),
                        Err(SessionError::QemuDied { ref stderr, .. })
                            if attempt < 3 && stderr.contains("Address already in use") => {}
                        Err(e) => return Err(e),
                    }
                };
                let qemu = Arc::new(qemu);
                qemu_command = Some(qemu.command_line.clone());
                let ram_size = config.memory_mib as u64 * 1024 * 1024;
                let shared = if options.shared_ram {
                    let path = qemu.wait_ram_file(ram_size, Duration::from_secs(10))?;
                    Some(path)
                } else {
                    None
                };
                let log = options.console_log.clone().unwrap_or_else(|| {
                    std::env::temp_dir()
                        .join(format!("lockscope-console-{}.log", std::process::id()))
                });
                console_log = Some(log.clone());
                others.push(spawn("console", {
                    let tx = tx.clone();
                    move || console_thread(stdout, log, tx)
                })?);
                others.push(spawn("qemu-wait", {
                    let tx = tx.clone();
                    let qemu = qemu.clone();
                    let stop = stop.clone();
                    move || wait_thread(qemu, tx, stop)
                })?);
                qemu_arc = Some(qemu);
                (client, shared, RAM_BASE..RAM_BASE + ram_size)
            }
            Target::Attach(addr) => {
                let mut client = GdbClient::connect(addr, crate::gdb::Config::default())?;
                // The kernel says how much RAM it has; bound it before trusting it.
                let r: abi::Root = crate::reader::read_root(&mut client, root_addr)?;
                let size = if r.ram_base == RAM_BASE && r.ram_size > 0 && r.ram_size <= 16 << 30 {
                    r.ram_size
                } else {
                    128 << 20
                };
                (client, None, RAM_BASE..RAM_BASE + size)
            }
        };

        if options.panic_breakpoint {
            client.insert_breakpoint(halt)?;
        }
        if let Some(path) = &options.record {
            let header = TraceHeader {
                abi_version: abi::ABI_VERSION,
                kernel: Some(symbols.path().to_path_buf()),
                kernel_fingerprint: Some(symbols.fingerprint()),
                smp,
                bootargs,
                source: if options.shared_ram {
                    "shared-ram"
                } else {
                    "gdb"
                }
                .into(),
            };
            let w = TraceWriter::create(path, &header)?;
            monitor.set_recorder(w);
        }

        let from_boot = matches!(options.target, Target::Run(_));
        let reader: Arc<Mutex<Option<AbiReader>>> = Arc::new(Mutex::new(None));
        let ctx = Ctx {
            tx: tx.clone(),
            stop: stop.clone(),
            clock: clock.clone(),
            reader: reader.clone(),
            root_addr,
            ram: ram.clone(),
            from_boot,
        };

        if let Some(path) = &shared {
            let mem = SharedRam::open(path, RAM_BASE)?;
            let ctx = ctx.clone();
            let (drain, snap) = (options.drain_hz, options.snapshot_hz);
            others.push(spawn("probe", move || probe_thread(ctx, mem, drain, snap))?);
        }

        // Let the guest run. A stop at once (an immediate panic) is the gdb thread's first job.
        let initial = client.resume()?;
        if initial.is_none() {
            lock(&clock).running();
        }
        let (gdb_tx, gdb_rx) = mpsc::channel::<GdbRequest>();
        let gdb_mem = match &shared {
            Some(p) => Some(SharedRam::open(p, RAM_BASE)?),
            None => None,
        };
        let poll = (!options.shared_ram).then_some(Poll {
            interval: Duration::from_secs_f64(1.0 / options.poll_hz.max(0.1)),
            budget: options.poll_budget,
        });
        let side = GdbSide {
            limits: UnwindLimits {
                ram: ctx.ram.clone(),
                ..UnwindLimits::default()
            },
            ctx: ctx.clone(),
            client,
            shared: gdb_mem,
            symbols: symbols.clone(),
            halt,
        };
        others.push(spawn("gdb", move || {
            gdb_thread(side, gdb_rx, poll, initial)
        })?);

        let (handle, commands) = SessionHandle::new(monitor.view());
        others.push(spawn("commands", {
            let tx = tx.clone();
            move || {
                while let Ok(c) = commands.recv() {
                    if tx.send(Msg::Command(c)).is_err() {
                        break;
                    }
                }
            }
        })?);
        let engine = spawn_engine(EngineCtx {
            monitor,
            rx,
            handle: handle.clone(),
            gdb: gdb_tx,
            stop: stop.clone(),
            view_every: Duration::from_secs_f64(1.0 / options.view_hz.max(0.5)),
            capture_faults: options.capture_faults,
            has_probe: shared.is_some(),
            qemu: qemu_arc.clone(),
        })?;
        Ok(Session {
            handle,
            tx,
            engine: Some(engine),
            others,
            stop,
            qemu: qemu_arc,
            console_log,
            qemu_command,
        })
    }

    pub fn handle(&self) -> Arc<SessionHandle> {
        self.handle.clone()
    }

    /// The newest view.
    pub fn view(&self) -> Arc<View> {
        self.handle.view()
    }

    /// Ends the session (detaches, stops QEMU if we booted it) and returns the monitor with
    /// everything gathered.
    pub fn finish(mut self) -> Monitor {
        let _ = self.tx.send(Msg::Command(Command::Quit));
        let m = self.engine.take().and_then(|e| e.join().ok());
        self.stop.store(true, Ordering::Release);
        if let Some(q) = &self.qemu {
            q.cleanup();
        }
        for t in self.others.drain(..) {
            if !t.is_finished() {
                // The command forwarder ends when the handle's sender goes; don't wait on it.
                continue;
            }
            let _ = t.join();
        }
        m.expect("the engine thread does not panic")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Command(Command::Quit));
        self.stop.store(true, Ordering::Release);
        if let Some(e) = self.engine.take() {
            let _ = e.join();
        }
        if let Some(q) = &self.qemu {
            q.cleanup();
        }
    }
}

fn spawn<F: FnOnce() -> T + Send + 'static, T: Send + 'static>(
    name: &str,
    f: F,
) -> Result<JoinHandle<T>, SessionError> {
    std::thread::Builder::new()
        .name(format!("lockscope-{name}"))
        .spawn(f)
        .map_err(|source| SessionError::Io {
            what: format!("starting the {name} thread"),
            source,
        })
}

/// What the reading threads share.
#[derive(Clone)]
struct Ctx {
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    reader: Arc<Mutex<Option<AbiReader>>>,
    root_addr: u64,
    ram: std::ops::Range<u64>,
    /// The session saw the boot: every ring is read from its first event.
    from_boot: bool,
}

impl Ctx {
    fn send(&self, f: Feed) {
        let _ = self.tx.send(Msg::Feed(f));
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Opens the reader once the kernel has published its ABI. `Ok(false)` while it boots.
    fn ensure_reader(&self, mem: &mut dyn GuestMemory) -> Result<bool, AbiError> {
        let mut r = lock(&self.reader);
        if r.is_some() {
            return Ok(true);
        }
        match AbiReader::open(mem, self.root_addr, self.ram.clone()) {
            Ok(mut reader) => {
                if self.from_boot {
                    let harts = (0..reader.layout().nharts).collect();
                    self.send(Feed::TraceStart { harts });
                } else {
                    reader.skip_to_history(mem)?;
                }
                *r = Some(reader);
                Ok(true)
            }
            Err(AbiError::NotReady) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drains the rings and reads a snapshot (in that order, as the analysis wants), sending
    /// both. `regs` are set on the snapshot's harts (a stopped guest).
    fn read_all(
        &self,
        mem: &mut dyn GuestMemory,
        budget: usize,
        regs: &[(u32, HartRegs)],
    ) -> Result<(), AbiError> {
        if !self.ensure_reader(mem)? {
            return Ok(());
        }
        let mut guard = lock(&self.reader);
        let reader = guard.as_mut().expect("opened above");
        let mut events = Vec::new();
        let st = reader.drain(mem, budget, &mut events)?;
        let now = lock(&self.clock).now_ns();
        // The estimate must not lag the events it describes.
        let now = events.iter().map(|e| e.time_ns).max().unwrap_or(0).max(now);
        let mut snap = reader.snapshot(mem, now)?;
        drop(guard);
        for (hart, r) in regs {
            if let Some(h) = snap.harts.iter_mut().find(|h| h.hart == *hart) {
                h.regs = Some(*r);
            }
        }
        self.send_drain(events, &st.per_hart);
        self.send(Feed::Snapshot(Box::new(snap)));
        Ok(())
    }

    fn drain(&self, mem: &mut dyn GuestMemory, budget: usize) -> Result<u64, AbiError> {
        if !self.ensure_reader(mem)? {
            return Ok(0);
        }
        let mut guard = lock(&self.reader);
        let reader = guard.as_mut().expect("opened above");
        let mut events = Vec::new();
        let st = reader.drain(mem, budget, &mut events)?;
        drop(guard);
        let n = events.len() as u64;
        self.send_drain(events, &st.per_hart);
        Ok(n)
    }

    /// True once the kernel's panic record is complete.
    fn panic_recorded(&self, mem: &mut dyn GuestMemory) -> bool {
        let guard = lock(&self.reader);
        let Some(reader) = guard.as_ref() else {
            return false;
        };
        let at = reader.layout().panic;
        drop(guard);
        crate::reader::read_u32(mem, at).is_ok_and(|state| state == abi::PANIC_DONE)
    }

    fn send_drain(&self, events: Vec<crate::model::LockEvent>, per_hart: &[(u64, u64)]) {
        let lost: Vec<(u32, u64)> = per_hart
            .iter()
            .enumerate()
            .filter(|(_, (_, l))| *l > 0)
            .map(|(h, (_, l))| (h as u32, *l))
            .collect();
        if !events.is_empty() || !lost.is_empty() {
            self.send(Feed::Events { events, lost });
        }
    }
}

/// Reads shared RAM continuously; never pauses the guest.
fn probe_thread(ctx: Ctx, mut mem: SharedRam, drain_hz: f64, snapshot_hz: f64) {
    let drain_every = Duration::from_secs_f64(1.0 / drain_hz.max(1.0));
    let snap_every = Duration::from_secs_f64(1.0 / snapshot_hz.max(0.1));
    let mut next_snap = Instant::now();
    // Shared RAM can afford to take everything there is.
    let budget = usize::MAX / 2;
    // Consecutive failed reads. Harts write while we copy, so one odd value can be a torn read;
    // corruption persists.
    let mut failures = 0;
    let mut panic_seen = false;
    loop {
        let last = ctx.stopping();
        // A panic is looked for at every drain (4 bytes), so that it is caught the moment
        // the kernel records it, and a snapshot with it goes out at once.
        if !panic_seen && ctx.panic_recorded(&mut mem) {
            panic_seen = true;
            next_snap = Instant::now();
        }
        let result = if last || Instant::now() >= next_snap {
            next_snap = Instant::now() + snap_every;
            ctx.read_all(&mut mem, budget, &[])
        } else {
            ctx.drain(&mut mem, budget).map(|_| ())
        };
        match result {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= 3 {
                    let _ = ctx.tx.send(Msg::AbiFailed(e.to_string()));
                    break;
                }
                next_snap = Instant::now();
                continue;
            }
        }
        if last {
            break;
        }
        std::thread::sleep(drain_every);
    }
    let _ = ctx.tx.send(Msg::ProbeDone);
}

/// Forwards QEMU's console to the engine and to the console log.
fn console_thread(mut out: Box<dyn Read + Send>, log: PathBuf, tx: Sender<Msg>) {
    let mut file = File::options().create(true).append(true).open(&log).ok();
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(&buf[..n]);
        }
        pending.extend_from_slice(&buf[..n]);
        // Keep an incomplete UTF-8 sequence for the next read.
        let cut = match std::str::from_utf8(&pending) {
            Ok(_) => pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => pending.len(),
        };
        let text = String::from_utf8_lossy(&pending[..cut]).into_owned();
        pending.drain(..cut);
        if tx.send(Msg::Feed(Feed::Console(text))).is_err() {
            break;
        }
        // The UART sends a byte at a time; let a line gather instead of feeding each byte.
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(f) = file.as_mut() {
        let _ = f.flush();
    }
}

/// Notices QEMU exiting.
fn wait_thread(qemu: Arc<Qemu>, tx: Sender<Msg>, stop: Arc<AtomicBool>) {
    loop {
        if let Some(status) = qemu.try_wait() {
            // Let QEMU's last stderr line arrive.
            std::thread::sleep(Duration::from_millis(50));
            let _ = tx.send(Msg::QemuExited {
                code: status.code(),
                stderr: qemu.stderr_text(),
            });
            return;
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Clone, Copy)]
struct Poll {
    interval: Duration,
    budget: usize,
}

/// The gdb thread's state: the connection and what a capture needs.
struct GdbSide {
    ctx: Ctx,
    client: GdbClient,
    /// Guest RAM for unwinding stacks, when shared; otherwise the stub is read.
    shared: Option<SharedRam>,
    symbols: Arc<Symbols>,
    limits: UnwindLimits,
    halt: u64,
}

impl GdbSide {
    /// The guest stopped: note it, and capture every hart. `reason` overrides what the stop
    /// reply says (a capture requested for a panic or a deadlock).
    fn stopped(&mut self, stop: &Stop, reason: Option<StopReason>) {
        lock(&self.ctx.clock).stopped();
        let reason = reason.unwrap_or_else(|| classify(stop, self.halt));
        capture(
            &self.ctx,
            &mut self.client,
            &mut self.shared,
            &self.symbols,
            &self.limits,
            reason,
            stop,
        );
    }

    /// Handles one request; `Err` when the connection is gone.
    fn request(&mut self, r: GdbRequest) -> Result<(), GdbError> {
        match r {
            GdbRequest::Interrupt | GdbRequest::Capture(_) if self.client.is_running() => {
                let stop = self.client.interrupt()?;
                let reason = match r {
                    GdbRequest::Capture(reason) => Some(reason),
                    _ => None,
                };
                self.stopped(&stop, reason);
            }
            GdbRequest::Resume if !self.client.is_running() => match self.client.resume()? {
                None => {
                    lock(&self.ctx.clock).running();
                    self.ctx.send(Feed::Resumed);
                }
                Some(stop) => self.stopped(&stop, None),
            },
            _ => {}
        }
        Ok(())
    }
}

/// Owns the gdb connection: requests, polls (without shared RAM), and stops.
fn gdb_thread(
    mut g: GdbSide,
    requests: Receiver<GdbRequest>,
    poll: Option<Poll>,
    initial: Option<Stop>,
) {
    if let Some(stop) = initial {
        g.stopped(&stop, None);
    }
    let mut next_poll = Instant::now();
    let result: Result<(), GdbError> = (|| loop {
        // Requests first: they come from the user or the engine.
        match requests.try_recv() {
            Ok(GdbRequest::Quit) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
            Ok(r) => {
                g.request(r)?;
                continue;
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if g.ctx.stopping() {
            return Ok(());
        }
        if !g.client.is_running() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if let Some(p) = poll.filter(|_| Instant::now() >= next_poll) {
            next_poll = Instant::now() + p.interval;
            match poll_once(&g.ctx, &mut g.client, p.budget) {
                Ok(Some(stop)) => g.stopped(&stop, None),
                Ok(None) => {}
                Err(PollError::Gdb(e)) => return Err(e),
                Err(PollError::Abi(e)) => {
                    let _ = g.ctx.tx.send(Msg::AbiFailed(e.to_string()));
                }
            }
        }
        let wait = match poll {
            Some(_) => next_poll
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20)),
            None => Duration::from_millis(20),
        };
        if let Some(stop) = g.client.wait_stop(wait)? {
            g.stopped(&stop, None);
        }
    })();
    if let Err(e) = result {
        let _ = g.ctx.tx.send(Msg::GdbLost(e.to_string()));
        return;
    }
    // A session we booted ends with QEMU killed; an attached one leaves QEMU running.
    let _ = g.client.detach();
}

fn classify(stop: &Stop, halt: u64) -> StopReason {
    let at_halt = matches!(stop.cause, StopCause::Breakpoint { addr } if addr == halt)
        || stop.at_breakpoints.iter().any(|(_, a)| *a == halt);
    match (at_halt, stop.cause) {
        (true, _) => StopReason::Panic,
        (false, StopCause::Interrupted) => StopReason::Interrupted,
        _ => StopReason::Other,
    }
}

enum PollError {
    Gdb(GdbError),
    Abi(AbiError),
}

/// One look at a running guest through the stub: interrupt, drain, snapshot, continue.
fn poll_once(ctx: &Ctx, client: &mut GdbClient, budget: usize) -> Result<Option<Stop>, PollError> {
    let mut abi_err = None;
    let paused = client
        .pause_with(|c| {
            lock(&ctx.clock).stopped();
            if let Err(e) = ctx.read_all(c, budget, &[]) {
                abi_err = Some(e);
            }
            Ok(())
        })
        .map_err(PollError::Gdb)?;
    if paused.stop.is_none() {
        lock(&ctx.clock).running();
    }
    ctx.send(Feed::Pause {
        nanos: paused.pause.as_nanos() as u64,
    });
    if let Some(e) = abi_err {
        return Err(PollError::Abi(e));
    }
    Ok(paused.stop)
}

/// Registers and stacks of every hart of a stopped guest, then a consistent drain and snapshot.
#[allow(clippy::too_many_arguments)]
fn capture(
    ctx: &Ctx,
    client: &mut GdbClient,
    shared: &mut Option<SharedRam>,
    symbols: &Symbols,
    limits: &UnwindLimits,
    reason: StopReason,
    stop: &Stop,
) {
    let threads = client.known_threads().to_vec();
    let mut harts = Vec::with_capacity(threads.len());
    let mut regs_of = Vec::with_capacity(threads.len());
    for t in threads {
        let Some(hart) = t.cpu_index() else { continue };
        let Ok(r) = client.read_hart_registers(t) else {
            continue;
        };
        let regs = HartRegs::from(&r);
        let unwind = match shared.as_mut() {
            Some(mem) => symbols.unwind(&regs, mem, limits),
            None => symbols.unwind(&regs, client, limits),
        };
        let frames = unwind
            .frames
            .iter()
            .map(|f| StackFrame {
                pc: f.pc,
                kind: match f.kind {
                    RawFrameKind::Pc => FrameKind::Pc,
                    RawFrameKind::Return => FrameKind::Return,
                    RawFrameKind::Trap => FrameKind::Trap,
                },
            })
            .collect();
        regs_of.push((hart, regs));
        let full = Some(crate::gdbserver::full_registers(client, t, &r));
        harts.push(HartStop {
            hart,
            regs,
            frames,
            full,
        });
    }
    ctx.send(Feed::Stop(StopInfo {
        reason,
        hart: stop.thread.and_then(|t| t.cpu_index()),
        harts,
    }));
    let result = match shared.as_mut() {
        Some(mem) => ctx.read_all(mem, usize::MAX / 2, &regs_of),
        None => ctx.read_all(client, crate::gdb::MAX_READ_PER_PAUSE, &regs_of),
    };
    if let Err(e) = result {
        let _ = ctx.tx.send(Msg::AbiFailed(e.to_string()));
    }
}

struct EngineCtx {
    monitor: Monitor,
    rx: Receiver<Msg>,
    handle: Arc<SessionHandle>,
    gdb: Sender<GdbRequest>,
    stop: Arc<AtomicBool>,
    view_every: Duration,
    capture_faults: bool,
    has_probe: bool,
    qemu: Option<Arc<Qemu>>,
}

fn spawn_engine(e: EngineCtx) -> Result<JoinHandle<Monitor>, SessionError> {
    spawn("engine", move || engine_thread(e))
}

fn engine_thread(mut e: EngineCtx) -> Monitor {
    let mut published = e.monitor.generation();
    let mut next_view = Instant::now();
    let mut captured_fault = false;
    let mut captured_panic = false;
    let mut ending: Option<Ending> = None;
    let mut probe_done = !e.has_probe;
    loop {
        let timeout = next_view.saturating_duration_since(Instant::now());
        match e.rx.recv_timeout(timeout.max(Duration::from_millis(1))) {
            Ok(Msg::Feed(f)) => {
                let snapshot = matches!(f, Feed::Snapshot(_));
                e.monitor.apply(&f);
                if snapshot && !captured_panic && ending.is_none() {
                    let panicked = e
                        .monitor
                        .analyzer()
                        .snapshot()
                        .is_some_and(|s| s.panic.is_some());
                    if panicked {
                        captured_panic = true;
                        if e.monitor.state() == &TargetState::Running {
                            let _ = e.gdb.send(GdbRequest::Capture(StopReason::Panic));
                        }
                    }
                }
                if snapshot && e.capture_faults && !captured_fault && ending.is_none() {
                    let a = e.monitor.analyzer();
                    let fault = a.deadlocks().iter().any(|d| d.confirmed)
                        || a.stall().is_some_and(|s| !s.harts.is_empty());
                    if fault && e.monitor.state() == &TargetState::Running {
                        captured_fault = true;
                        let _ = e.gdb.send(GdbRequest::Capture(StopReason::Interrupted));
                    }
                }
            }
            Ok(Msg::Command(Command::Interrupt)) => {
                let _ = e.gdb.send(GdbRequest::Interrupt);
            }
            Ok(Msg::Command(Command::Resume)) => {
                let _ = e.gdb.send(GdbRequest::Resume);
            }
            Ok(Msg::Command(Command::Quit)) => {
                if ending.is_none() {
                    ending = Some(Ending::Detached);
                }
                break;
            }
            Ok(Msg::ProbeDone) => {
                probe_done = true;
                if ending.is_some() {
                    break;
                }
            }
            Ok(Msg::QemuExited { code, stderr }) => {
                let end = match code {
                    Some(status) => Ending::Exited { status },
                    None => Ending::Lost {
                        reason: format!(
                            "QEMU was killed by a signal{}",
                            if stderr.is_empty() {
                                String::new()
                            } else {
                                format!(": {stderr}")
                            }
                        ),
                    },
                };
                ending = Some(end);
                // The probe reads the final state from the RAM file, then reports done.
                e.stop.store(true, Ordering::Release);
                let _ = e.gdb.send(GdbRequest::Quit);
                if probe_done {
                    break;
                }
            }
            Ok(Msg::GdbLost(reason)) => match &e.qemu {
                Some(q) => {
                    // When QEMU exits the connection drops first; the exit message that
                    // follows says how it ended. Otherwise shared RAM goes on, without control.
                    let deadline = Instant::now() + Duration::from_millis(300);
                    while q.try_wait().is_none() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if q.try_wait().is_none() {
                        e.monitor.apply(&Feed::Console(format!(
                            "\n[lockscope] lost QEMU's gdb stub ({reason}); still reading shared RAM, but the guest can no longer be stopped or inspected\n"
                        )));
                    }
                }
                None => {
                    ending = Some(Ending::Lost { reason });
                    break;
                }
            },
            Ok(Msg::AbiFailed(reason)) => {
                e.monitor.apply(&Feed::Console(format!(
                    "\n[lockscope] cannot read the kernel's lockscope ABI: {reason}\n"
                )));
                if ending.is_none() && e.has_probe {
                    // The probe has stopped; without it nothing more arrives.
                    probe_done = true;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_view {
            next_view = Instant::now() + e.view_every;
            if e.monitor.generation() != published {
                published = e.monitor.generation();
                e.handle.publish(e.monitor.view());
            }
        }
    }
    e.stop.store(true, Ordering::Release);
    let _ = e.gdb.send(GdbRequest::Quit);
    // Whatever the probe still sends (its final read) is applied before the end.
    while let Ok(m) =
        e.rx.recv_timeout(Duration::from_millis(if probe_done { 0 } else { 500 }))
    {
        match m {
            Msg::Feed(f) => e.monitor.apply(&f),
            Msg::ProbeDone => break,
            _ => {}
        }
    }
    e.monitor
        .apply(&Feed::End(ending.unwrap_or(Ending::Detached)));
    e.monitor.finish_recording();
    e.handle.publish(e.monitor.view());
    e.monitor
}
