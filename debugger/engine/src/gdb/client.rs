//! A blocking gdb Remote Serial Protocol client over TCP, tuned to QEMU 7.2's stub.
//!
//! The client tracks whether the guest runs. While it runs, the only byte it ever sends is a
//! deliberate interrupt: QEMU stops the machine on any byte and drops a packet that started
//! while it ran. Every wait has a timeout. Breakpoints are tracked and removed on detach, which
//! also happens on drop, so a guest is never left paused or full of stale breakpoints.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::codec::{encode_packet, unescape, CodecError, Decoder, RspFrame, INTERRUPT, MAX_PACKET};
use super::error::GdbError;
use super::hex::{hex_decode_into, hex_encode, parse_hex_u64};
use super::stop::{SignalStop, StopReply, SIGINT, SIGTRAP};
use super::target_xml::{TargetDescription, TargetXmlError};
use super::thread::ThreadId;
use crate::memory::{GuestMemory, MemoryError};
use crate::model::HartRegs;

/// Largest `m` reply QEMU 7.2 gives: more than 2048 bytes is refused with E22.
pub const QEMU_MAX_READ: usize = 2048;
/// What a polling session should read in one pause at most, to keep the guest's stall short.
pub const MAX_READ_PER_PAUSE: usize = 64 * 1024;
/// Largest total size of the target description files.
const MAX_TARGET_XML: usize = 1024 * 1024;
/// Most threads a thread listing may hold (QEMU's `virt` has at most 512 harts).
const MAX_THREADS: usize = 1024;
/// Bytes of console output (`O` packets) kept.
const MAX_CONSOLE: usize = 64 * 1024;

/// Timeouts and limits. The defaults suit QEMU on a loaded 2-core host.
#[derive(Clone, Debug)]
pub struct Config {
    /// For the TCP connection and the stub's first answer. A stub that accepts but does not
    /// answer is serving another client.
    pub connect_timeout: Duration,
    /// For the acknowledgement and reply of each packet while the guest is stopped.
    pub reply_timeout: Duration,
    /// From the interrupt byte to the stop reply. QEMU's latency is 0.2 ms or 4-8 ms, with
    /// outliers near 100 ms under host load.
    pub interrupt_timeout: Duration,
    /// For a single step to complete (a hart waiting in `wfi` never completes one).
    pub step_timeout: Duration,
    /// Largest `m` request.
    pub max_read_chunk: usize,
    /// Removes breakpoints that an earlier client left behind (QEMU keeps them across
    /// disconnects) when connecting.
    pub clear_stale_breakpoints: bool,
    /// How often a packet is resent after the stub reports it damaged.
    pub retransmits: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            reply_timeout: Duration::from_secs(2),
            interrupt_timeout: Duration::from_secs(2),
            step_timeout: Duration::from_secs(2),
            max_read_chunk: QEMU_MAX_READ,
            clear_stale_breakpoints: true,
            retransmits: 3,
        }
    }
}

/// Whether the guest runs, as far as the client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Stopped,
    Running,
}

/// Why the guest stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// The client connected (QEMU pauses the machine for a new client).
    Attached,
    /// The client interrupted it.
    Interrupted,
    /// A hart reached a breakpoint this client inserted.
    Breakpoint { addr: u64 },
    /// A single step completed.
    Step,
    /// Any other signal, in gdb's numbering.
    Signal(u8),
}

/// A stop of the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// The hart the stub reports as stopping.
    pub thread: Option<ThreadId>,
    pub cause: StopCause,
    /// The stop reply as sent.
    pub reply: SignalStop,
    /// Every hart whose pc is on an inserted breakpoint, with that address, read at trap
    /// stops (breakpoints, steps) while breakpoints are inserted. Several harts can reach a
    /// breakpoint at once, but QEMU names only one of them in `thread`.
    pub at_breakpoints: Vec<(ThreadId, u64)>,
}

impl Stop {
    /// True when a hart is on an inserted breakpoint, whatever the reported cause.
    pub fn hit_breakpoint(&self) -> bool {
        matches!(self.cause, StopCause::Breakpoint { .. }) || !self.at_breakpoints.is_empty()
    }
}

/// What the stub said it supports (`qSupported`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Largest packet the stub accepts, in bytes.
    pub packet_size: usize,
    pub multiprocess: bool,
    pub target_xml: bool,
    pub no_ack_mode: bool,
}

/// x0-x31 and pc of one hart, as `g` returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreRegisters {
    pub x: [u64; 32],
    pub pc: u64,
}

/// The registers the engine reads from each stopped hart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HartRegisters {
    pub core: CoreRegisters,
    /// 0 U, 1 S, 3 M.
    pub privilege: Option<u8>,
    pub scause: Option<u64>,
    pub sepc: Option<u64>,
    pub stval: Option<u64>,
    pub satp: Option<u64>,
}

impl HartRegisters {
    pub fn pc(&self) -> u64 {
        self.core.pc
    }
    pub fn ra(&self) -> u64 {
        self.core.x[1]
    }
    pub fn sp(&self) -> u64 {
        self.core.x[2]
    }
    /// s0, the frame pointer.
    pub fn fp(&self) -> u64 {
        self.core.x[8]
    }
}

impl From<&HartRegisters> for HartRegs {
    fn from(r: &HartRegisters) -> Self {
        HartRegs {
            pc: r.pc(),
            ra: r.ra(),
            sp: r.sp(),
            fp: r.fp(),
            privilege: r.privilege,
            scause: r.scause,
            sepc: r.sepc,
            stval: r.stval,
        }
    }
}

/// Counters for diagnostics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Packets resent after a `-`.
    pub retransmits: u64,
    /// Damaged packets from the stub (answered with `-`).
    pub bad_packets: u64,
    pub interrupts: u64,
    /// Duration of the last interrupt, from the byte sent to the stop reply.
    pub last_interrupt: Duration,
}

/// The result of [`GdbClient::pause_with`].
#[derive(Debug)]
pub struct Paused<R> {
    pub value: R,
    /// How long the guest was stopped (zero if it was stopped already).
    pub pause: Duration,
    /// Set when the guest stopped for its own reason (a breakpoint) rather than for the
    /// interrupt: it is left stopped so the caller can look.
    pub stop: Option<Stop>,
}

/// A connection to a gdb stub.
pub struct GdbClient {
    stream: TcpStream,
    addr: SocketAddr,
    config: Config,
    decoder: Decoder,
    frames: VecDeque<Result<RspFrame, CodecError>>,
    rbuf: Box<[u8]>,
    state: RunState,
    /// Why the connection can no longer be used, once it cannot.
    broken: Option<String>,
    detached: bool,
    features: Features,
    target: Option<TargetDescription>,
    threads: Vec<ThreadId>,
    /// The thread `Hg` last selected; QEMU resets it when the guest stops.
    g_thread: Option<ThreadId>,
    breakpoints: BTreeSet<u64>,
    /// pc of each thread at the current stop, once read (only needed with breakpoints).
    pcs_at_stop: Option<Vec<(ThreadId, u64)>>,
    last_stop: Option<Stop>,
    /// A stop reply that arrived while waiting for an acknowledgement.
    pending_stop: Option<SignalStop>,
    console: Vec<u8>,
    /// `QStartNoAckMode` was accepted: no `+`/`-` either way from then on.
    no_ack: bool,
    read_chunk: usize,
    /// The read timeout the socket has.
    read_timeout: Option<Duration>,
    stats: Stats,
}

impl std::fmt::Debug for GdbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GdbClient")
            .field("addr", &self.addr)
            .field("state", &self.state)
            .field("broken", &self.broken)
            .field("breakpoints", &self.breakpoints)
            .finish_non_exhaustive()
    }
}

impl GdbClient {
    /// Connects to `addr` (`HOST:PORT`), which stops the guest, and learns the target.
    pub fn connect(addr: &str, config: Config) -> Result<Self, GdbError> {
        let bad = || GdbError::BadAddress {
            addr: addr.to_string(),
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        Self::connect_addr(sock, config)
    }

    /// Connects to a socket address; see [`GdbClient::connect`].
    pub fn connect_addr(addr: SocketAddr, config: Config) -> Result<Self, GdbError> {
        let stream = TcpStream::connect_timeout(&addr, config.connect_timeout)
            .map_err(|source| GdbError::NoStub { addr, source })?;
        let io = |source| GdbError::Io {
            during: "setting up the connection".into(),
            source,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_write_timeout(Some(config.reply_timeout))
            .map_err(io)?;
        let mut c = Self {
            stream,
            addr,
            read_chunk: config.max_read_chunk.clamp(1, MAX_PACKET / 2),
            config,
            decoder: Decoder::default(),
            frames: VecDeque::new(),
            rbuf: vec![0; 16 * 1024].into_boxed_slice(),
            state: RunState::Stopped,
            broken: None,
            detached: false,
            features: Features::default(),
            target: None,
            threads: Vec::new(),
            g_thread: None,
            breakpoints: BTreeSet::new(),
            pcs_at_stop: None,
            last_stop: None,
            pending_stop: None,
            console: Vec::new(),
            no_ack: false,
            read_timeout: None,
            stats: Stats::default(),
        };
        // On failure, dropping `c` detaches if the link still works: connecting paused QEMU.
        c.handshake()?;
        Ok(c)
    }

    fn handshake(&mut self) -> Result<(), GdbError> {
        let query = "qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+";
        let timeout = self.config.connect_timeout;
        let reply = match self.exchange(query, timeout) {
            Err(GdbError::Timeout { .. }) => {
                return Err(GdbError::Busy {
                    addr: self.addr,
                    timeout,
                })
            }
            r => r?,
        };
        self.features = parse_features(&reply);
        self.features.packet_size = self.features.packet_size.clamp(64, MAX_PACKET);
        self.read_chunk = self.read_chunk.min(self.features.packet_size / 2);
        // Acks only guard against a lossy serial line; over TCP they cost a round trip each.
        // QEMU 7.2 does not offer this, so there acks stay on.
        if self.features.no_ack_mode && self.exchange("QStartNoAckMode", timeout)? == b"OK" {
            self.no_ack = true;
        }

        let vcont = self.command("vCont?")?;
        let actions: Vec<&[u8]> = vcont.split(|&b| b == b';').collect();
        if !vcont.starts_with(b"vCont")
            || !actions.contains(&&b"c"[..])
            || !actions.contains(&&b"s"[..])
        {
            return Err(GdbError::Unsupported {
                command: "vCont;s".into(),
            });
        }

        if self.features.target_xml {
            let main = self.read_feature_file("target.xml")?;
            let mut fetch = |name: &str| self.read_feature_file(name);
            let desc = TargetDescription::parse(&main, &mut fetch)?;
            if let Some(arch) = &desc.architecture {
                if arch != "riscv:rv64" {
                    return Err(GdbError::Architecture { arch: arch.clone() });
                }
            }
            self.target = Some(desc);
        }

        self.threads = self.list_threads()?;
        if self.threads.is_empty() {
            return Err(GdbError::protocol(
                "qfThreadInfo",
                b"",
                "the stub lists no threads",
            ));
        }
        // `?` removes QEMU's breakpoints on the current CPU only. Asking it of every CPU in
        // turn clears what a vanished client left; the first CPU comes last, as on a fresh
        // connection.
        let order: Vec<ThreadId> = if self.config.clear_stale_breakpoints {
            self.threads.iter().rev().copied().collect()
        } else {
            vec![self.threads[0]]
        };
        let mut reply = Vec::new();
        for t in order {
            self.expect_ok(&format!("Hc{t}"))?;
            reply = self.command("?")?;
        }
        let signal = match StopReply::parse(&reply) {
            Ok(StopReply::Signal(s)) => s,
            Ok(_) => return Err(GdbError::protocol("?", &reply, "not a signal stop")),
            Err(e) => return Err(GdbError::stop("?", &reply, e)),
        };
        self.pending_stop = None;
        self.last_stop = Some(Stop {
            thread: signal.thread,
            cause: StopCause::Attached,
            reply: signal,
            at_breakpoints: Vec::new(),
        });
        Ok(())
    }

    // ---- accessors ----

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// True when the stub accepted `QStartNoAckMode` and packets go without acks.
    pub fn no_ack_mode(&self) -> bool {
        self.no_ack
    }

    pub fn features(&self) -> &Features {
        &self.features
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn target_description(&self) -> Option<&TargetDescription> {
        self.target.as_ref()
    }

    /// The threads (harts) listed when connecting; QEMU's never change.
    pub fn known_threads(&self) -> &[ThreadId] {
        &self.threads
    }

    /// The current stop while stopped, else the last one.
    pub fn last_stop(&self) -> Option<&Stop> {
        self.last_stop.as_ref()
    }

    pub fn breakpoints(&self) -> impl Iterator<Item = u64> + '_ {
        self.breakpoints.iter().copied()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Takes the console output (`O` packets) received so far.
    pub fn take_console_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.console)
    }

    /// The `p` number of a register, from the target description.
    pub fn register_number(&self, name: &str) -> Option<u32> {
        self.target
            .as_ref()
            .and_then(|t| t.register(name))
            .map(|r| r.regnum)
    }

    // ---- threads and registers ----

    /// Lists the threads (one per hart) with `qfThreadInfo`/`qsThreadInfo`.
    pub fn threads(&mut self) -> Result<Vec<ThreadId>, GdbError> {
        self.require_stopped("list threads")?;
        let t = self.list_threads()?;
        self.threads.clone_from(&t);
        Ok(t)
    }

    fn list_threads(&mut self) -> Result<Vec<ThreadId>, GdbError> {
        let mut out = Vec::new();
        let mut command = "qfThreadInfo";
        loop {
            let reply = self.command(command)?;
            match reply.split_first() {
                Some((b'l', _)) => return Ok(out),
                Some((b'm', ids)) => {
                    for id in ids.split(|&b| b == b',') {
                        let t =
                            ThreadId::parse(id).map_err(|e| GdbError::hex(command, &reply, e))?;
                        out.push(t);
                    }
                }
                _ => return Err(GdbError::protocol(command, &reply, "expected m<ids> or l")),
            }
            if out.len() > MAX_THREADS {
                return Err(GdbError::protocol(
                    command,
                    &reply,
                    format!("more than {MAX_THREADS} threads"),
                ));
            }
            command = "qsThreadInfo";
        }
    }

    fn select_g(&mut self, thread: ThreadId) -> Result<(), GdbError> {
        if self.g_thread != Some(thread) {
            self.expect_ok(&format!("Hg{thread}"))?;
            self.g_thread = Some(thread);
        }
        Ok(())
    }

    /// x0-x31 and pc of a stopped hart, with `Hg` and `g`.
    pub fn read_core_registers(&mut self, thread: ThreadId) -> Result<CoreRegisters, GdbError> {
        self.require_stopped("read registers")?;
        self.select_g(thread)?;
        let reply = self.command("g")?;
        let need = 33 * 16;
        if reply.len() < need {
            return Err(GdbError::protocol(
                "g",
                &reply,
                format!("expected at least {need} hex digits for x0-x31 and pc"),
            ));
        }
        let mut regs = CoreRegisters::default();
        for (i, hex) in reply[..need].chunks_exact(16).enumerate() {
            let mut b = [0u8; 8];
            hex_decode_into(hex, &mut b).map_err(|e| GdbError::hex("g", &reply, e))?;
            let v = u64::from_le_bytes(b);
            if i < 32 {
                regs.x[i] = v;
            } else {
                regs.pc = v;
            }
        }
        Ok(regs)
    }

    /// The raw bytes (target order) of register `regnum` of a stopped hart, with `p`.
    /// QEMU answers `p` only after the target description was read, which `connect` does.
    pub fn read_register_raw(
        &mut self,
        thread: ThreadId,
        regnum: u32,
    ) -> Result<Vec<u8>, GdbError> {
        self.require_stopped("read registers")?;
        self.select_g(thread)?;
        let command = format!("p{regnum:x}");
        let reply = self.command(&command)?;
        if reply.is_empty() {
            return Err(GdbError::NoRegister {
                name: format!("#{regnum}"),
            });
        }
        if let Some(code) = error_code(&reply) {
            return Err(self.refused(&command, code));
        }
        let expected = self
            .target
            .as_ref()
            .and_then(|t| t.register_by_number(regnum))
            .map(|r| r.bitsize as usize / 4);
        if expected.is_some_and(|n| n != reply.len()) {
            return Err(GdbError::protocol(
                &command,
                &reply,
                format!("expected {} hex digits", expected.unwrap_or(0)),
            ));
        }
        let mut out = vec![0u8; reply.len() / 2];
        hex_decode_into(&reply, &mut out).map_err(|e| GdbError::hex(&command, &reply, e))?;
        Ok(out)
    }

    /// A register of up to 64 bits by its name in the target description (`pc`, `priv`,
    /// `scause`, `satp`, `mhartid`, ...).
    pub fn read_register(&mut self, thread: ThreadId, name: &str) -> Result<u64, GdbError> {
        let regnum = self
            .register_number(name)
            .ok_or_else(|| GdbError::NoRegister {
                name: name.to_string(),
            })?;
        let raw = self.read_register_raw(thread, regnum)?;
        if raw.len() > 8 {
            return Err(GdbError::protocol(
                &format!("p{regnum:x}"),
                &raw,
                "register wider than 64 bits",
            ));
        }
        let mut b = [0u8; 8];
        b[..raw.len()].copy_from_slice(&raw);
        Ok(u64::from_le_bytes(b))
    }

    fn read_optional(&mut self, thread: ThreadId, name: &str) -> Result<Option<u64>, GdbError> {
        if self.register_number(name).is_none() {
            return Ok(None);
        }
        self.read_register(thread, name).map(Some)
    }

    /// pc, x registers, privilege level and the supervisor trap CSRs of a stopped hart.
    /// Registers the target description lacks are `None`.
    pub fn read_hart_registers(&mut self, thread: ThreadId) -> Result<HartRegisters, GdbError> {
        let core = self.read_core_registers(thread)?;
        Ok(HartRegisters {
            core,
            privilege: self.read_optional(thread, "priv")?.map(|v| v as u8),
            scause: self.read_optional(thread, "scause")?,
            sepc: self.read_optional(thread, "sepc")?,
            stval: self.read_optional(thread, "stval")?,
            satp: self.read_optional(thread, "satp")?,
        })
    }

    fn read_pc(&mut self, thread: ThreadId) -> Result<u64, GdbError> {
        if self.register_number("pc").is_some() {
            self.read_register(thread, "pc")
        } else {
            Ok(self.read_core_registers(thread)?.pc)
        }
    }

    // ---- memory ----

    /// Reads guest memory while stopped, in `m` requests of at most 2048 bytes.
    pub fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), GdbError> {
        self.require_stopped("read memory")?;
        if addr.checked_add(buf.len() as u64).is_none() {
            return Err(GdbError::BadAddressRead {
                addr,
                len: buf.len(),
                code: "none (the range wraps around the address space)".into(),
            });
        }
        let mut done = 0;
        while done < buf.len() {
            let a = addr + done as u64;
            let n = (buf.len() - done).min(self.read_chunk);
            let command = format!("m{a:x},{n:x}");
            let reply = self.command(&command)?;
            if let Some(code) = error_code(&reply) {
                // A stub with a smaller reply buffer than it claims refuses big reads.
                if code == "22" && self.read_chunk > 256 {
                    self.read_chunk /= 2;
                    continue;
                }
                return Err(GdbError::BadAddressRead {
                    addr: a,
                    len: n,
                    code: format!("E{code}"),
                });
            }
            let got = reply.len() / 2;
            if reply.is_empty() || reply.len() % 2 != 0 || got > n {
                return Err(GdbError::protocol(
                    &command,
                    &reply,
                    format!("expected up to {n} bytes of hex"),
                ));
            }
            hex_decode_into(&reply, &mut buf[done..done + got])
                .map_err(|e| GdbError::hex(&command, &reply, e))?;
            done += got;
        }
        Ok(())
    }

    /// Writes guest memory while stopped, with `M`.
    pub fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), GdbError> {
        self.require_stopped("write memory")?;
        let chunk = ((self.features.packet_size - 40) / 2).clamp(16, 1024);
        for (i, part) in data.chunks(chunk).enumerate() {
            let a = addr.wrapping_add((i * chunk) as u64);
            let command = format!("M{a:x},{:x}:{}", part.len(), hex_encode(part));
            self.expect_ok(&command)?;
        }
        Ok(())
    }

    // ---- breakpoints ----

    /// Inserts a software breakpoint on every hart (`Z0`). Inserting one twice is a no-op:
    /// QEMU would keep two copies and need two removals.
    pub fn insert_breakpoint(&mut self, addr: u64) -> Result<(), GdbError> {
        self.require_stopped("insert a breakpoint")?;
        if self.breakpoints.contains(&addr) {
            return Ok(());
        }
        let command = format!("Z0,{addr:x},4");
        let reply = self.command(&command)?;
        match &reply[..] {
            b"OK" => {
                self.breakpoints.insert(addr);
                Ok(())
            }
            b"" => Err(GdbError::Unsupported { command }),
            r => Err(GdbError::Breakpoint {
                addr,
                problem: format!(
                    "the stub refused it ({}): the address may not be in RAM or ROM",
                    String::from_utf8_lossy(r)
                ),
            }),
        }
    }

    /// Removes a breakpoint this client inserted (`z0`).
    pub fn remove_breakpoint(&mut self, addr: u64) -> Result<(), GdbError> {
        self.require_stopped("remove a breakpoint")?;
        if !self.breakpoints.contains(&addr) {
            return Err(GdbError::Breakpoint {
                addr,
                problem: "this client did not insert it".into(),
            });
        }
        let command = format!("z0,{addr:x},4");
        let reply = self.command(&command)?;
        match &reply[..] {
            b"OK" => {
                self.breakpoints.remove(&addr);
                Ok(())
            }
            // QEMU 7.2 stops at the first hart lacking the breakpoint and says E22; it stays
            // tracked so that detaching, which clears every hart, cleans up.
            r => Err(GdbError::Breakpoint {
                addr,
                problem: format!(
                    "QEMU could not remove it from every hart ({}); it stays inserted until the client detaches",
                    String::from_utf8_lossy(r)
                ),
            }),
        }
    }

    // ---- run control ----

    /// Resumes every hart. After a breakpoint stop, each hart on an inserted breakpoint is
    /// first stepped off it (QEMU would stop again at once). If such a step lands on another
    /// breakpoint, the guest stays stopped and that stop is returned; otherwise `None`, and
    /// the guest runs. After any other stop, a hart on a breakpoint stops there again at once,
    /// and that is reported as a breakpoint stop.
    pub fn resume(&mut self) -> Result<Option<Stop>, GdbError> {
        self.require_stopped("resume")?;
        if let Some(pcs) = self.pcs_at_stop.take() {
            for (thread, pc) in pcs {
                if !self.breakpoints.contains(&pc) {
                    continue;
                }
                // Only this hart moved, so the other pcs stay valid.
                let signal = self.step_signal(thread)?;
                let landed = self.read_pc(thread)?;
                if signal.signal != SIGTRAP
                    || signal.thread != Some(thread)
                    || self.breakpoints.contains(&landed)
                {
                    return self.finish_stop(signal, true).map(Some);
                }
            }
        }
        self.send_packet("vCont;c", self.config.reply_timeout)?;
        self.set_running();
        Ok(None)
    }

    /// Steps one hart by one instruction, the others staying stopped (`vCont;s:<thread>`; a
    /// plain `s` would run the other harts).
    pub fn step(&mut self, thread: ThreadId) -> Result<Stop, GdbError> {
        let signal = self.step_signal(thread)?;
        self.finish_stop(signal, true)
    }

    /// Steps and returns the raw stop reply, without classifying it.
    fn step_signal(&mut self, thread: ThreadId) -> Result<SignalStop, GdbError> {
        self.require_stopped("step")?;
        let command = format!("vCont;s:{thread}");
        self.send_packet(&command, self.config.reply_timeout)?;
        self.set_running();
        let deadline = Instant::now() + self.config.step_timeout;
        if let Some(signal) = self.wait_signal_until(deadline)? {
            return Ok(signal);
        }
        // A hart in `wfi` never finishes its step: stop the machine and report.
        self.interrupt()?;
        Err(GdbError::Timeout {
            what: format!("a single step of {thread} (the hart may be waiting for an interrupt)"),
            timeout: self.config.step_timeout,
        })
    }

    /// Stops the running guest (interrupt byte 0x03) and returns the stop. If the guest had
    /// already stopped on its own (a breakpoint), that stop is returned. Idempotent.
    pub fn interrupt(&mut self) -> Result<Stop, GdbError> {
        self.check_usable()?;
        if self.state == RunState::Stopped {
            return self.last_stop.clone().ok_or_else(|| GdbError::Stopped {
                op: "interrupt".into(),
            });
        }
        if let Some(stop) = self.wait_stop_until(Instant::now())? {
            return Ok(stop);
        }
        let start = Instant::now();
        self.write_raw(&[INTERRUPT], "sending an interrupt")?;
        self.stats.interrupts += 1;
        let deadline = start + self.config.interrupt_timeout;
        match self.wait_stop_until(deadline)? {
            Some(stop) => {
                self.stats.last_interrupt = start.elapsed();
                Ok(stop)
            }
            None => Err(GdbError::Timeout {
                what: "an interrupt (the guest still runs)".into(),
                timeout: self.config.interrupt_timeout,
            }),
        }
    }

    /// Waits up to `timeout` for the running guest to stop on its own (a breakpoint); `None`
    /// if it still runs. A zero timeout only looks at what already arrived. When the guest
    /// is stopped, returns the current stop.
    pub fn wait_stop(&mut self, timeout: Duration) -> Result<Option<Stop>, GdbError> {
        self.check_usable()?;
        if self.state == RunState::Stopped {
            return Ok(self.last_stop.clone());
        }
        self.wait_stop_until(Instant::now() + timeout)
    }

    /// Runs `f` with the guest stopped, for polling: a running guest is interrupted, and
    /// resumed afterwards unless it stopped for a reason of its own (then
    /// [`Paused::stop`] says why and it stays stopped). The guest is resumed even if `f`
    /// fails. Keep `f` short: reads of at most [`MAX_READ_PER_PAUSE`] bytes.
    pub fn pause_with<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, GdbError>,
    ) -> Result<Paused<R>, GdbError> {
        if self.state == RunState::Stopped {
            self.check_usable()?;
            return Ok(Paused {
                value: f(self)?,
                pause: Duration::ZERO,
                stop: None,
            });
        }
        let start = Instant::now();
        let stop = self.interrupt()?;
        let ours = stop.cause == StopCause::Interrupted && stop.at_breakpoints.is_empty();
        let value = f(self);
        if !ours {
            return Ok(Paused {
                value: value?,
                pause: start.elapsed(),
                stop: Some(stop),
            });
        }
        let resumed = self.resume();
        let pause = start.elapsed();
        let value = value?;
        let stop = resumed?;
        Ok(Paused { value, pause, stop })
    }

    /// Removes this client's breakpoints and detaches (`D;1`). QEMU resumes the guest.
    pub fn detach(mut self) -> Result<(), GdbError> {
        let r = self.detach_inner();
        let _ = self.stream.shutdown(Shutdown::Both);
        r
    }

    /// Closes the connection without detaching, leaving the guest stopped for another
    /// debugger (QEMU keeps a machine paused when its client goes). This client's breakpoints
    /// are removed first; QEMU would keep them.
    pub fn close_paused(mut self) -> Result<(), GdbError> {
        self.require_stopped("leave the guest paused")?;
        let mut result = Ok(());
        for addr in self.breakpoints.clone() {
            if let Err(e) = self.remove_breakpoint(addr) {
                result = Err(e);
                break;
            }
        }
        self.detached = true;
        let _ = self.stream.shutdown(Shutdown::Both);
        result
    }

    fn detach_inner(&mut self) -> Result<(), GdbError> {
        if self.detached {
            return Ok(());
        }
        self.check_usable()?;
        if self.state == RunState::Running {
            self.interrupt()?;
        }
        let mut first_err = None;
        for addr in self.breakpoints.clone() {
            if let Err(e) = self.remove_breakpoint(addr) {
                first_err.get_or_insert(e);
            }
        }
        // QEMU's detach clears every breakpoint of the process on every hart, and resumes.
        let command = if self.features.multiprocess {
            let pid = self.threads.first().and_then(|t| t.pid).unwrap_or(1);
            format!("D;{pid:x}")
        } else {
            "D".to_string()
        };
        self.expect_ok(&command)?;
        self.breakpoints.clear();
        self.detached = true;
        self.state = RunState::Running;
        match first_err {
            // Detaching cleared what `z0` could not.
            Some(GdbError::Breakpoint { .. }) | None => Ok(()),
            Some(e) => Err(e),
        }
    }

    // ---- stops ----

    fn set_running(&mut self) {
        self.state = RunState::Running;
        self.g_thread = None;
        self.pcs_at_stop = None;
    }

    fn read_all_pcs(&mut self) -> Result<Vec<(ThreadId, u64)>, GdbError> {
        let mut pcs = Vec::with_capacity(self.threads.len());
        for t in self.threads.clone() {
            pcs.push((t, self.read_pc(t)?));
        }
        Ok(pcs)
    }

    /// Reads until a stop reply or the deadline, and classifies the stop.
    fn wait_stop_until(&mut self, deadline: Instant) -> Result<Option<Stop>, GdbError> {
        match self.wait_signal_until(deadline)? {
            Some(signal) => self.finish_stop(signal, false).map(Some),
            None => Ok(None),
        }
    }

    /// Reads until a stop reply or the deadline; the guest is stopped when one comes.
    fn wait_signal_until(&mut self, deadline: Instant) -> Result<Option<SignalStop>, GdbError> {
        let signal = loop {
            if let Some(s) = self.pending_stop.take() {
                break s;
            }
            let Some(frame) = self.next_frame(deadline, "waiting for the guest to stop")? else {
                return Ok(None);
            };
            let RspFrame::Packet(p) = frame else { continue };
            self.ack()?;
            match StopReply::parse(&p) {
                Ok(StopReply::Signal(s)) => break s,
                Ok(StopReply::Output(text)) => {
                    let keep = MAX_CONSOLE.saturating_sub(self.console.len());
                    self.console
                        .extend_from_slice(&text[..text.len().min(keep)]);
                }
                Ok(StopReply::Exited { status, .. }) => {
                    return Err(self.fail(GdbError::Exited { status }));
                }
                Ok(StopReply::Terminated { signal, .. }) => {
                    return Err(self.fail(GdbError::Terminated { signal }));
                }
                Err(e) => return Err(self.fail(GdbError::stop("(waiting for a stop)", &p, e))),
            }
        };
        self.state = RunState::Stopped;
        self.g_thread = None;
        Ok(Some(signal))
    }

    /// Classifies a stop (`stepping` makes a plain SIGTRAP a step) and records it.
    fn finish_stop(&mut self, signal: SignalStop, stepping: bool) -> Result<Stop, GdbError> {
        let stop = self.classify(signal, stepping)?;
        self.last_stop = Some(stop.clone());
        Ok(stop)
    }

    fn classify(&mut self, reply: SignalStop, stepping: bool) -> Result<Stop, GdbError> {
        let mut at_breakpoints = Vec::new();
        self.pcs_at_stop = None;
        // Only a trap can be a breakpoint. After an interrupt the pcs are not read (it would
        // lengthen every poll): a hart that reached a breakpoint as the interrupt came traps
        // again when resumed, and that stop is reported then.
        if reply.signal == SIGTRAP && !self.breakpoints.is_empty() {
            let pcs = self.read_all_pcs()?;
            at_breakpoints = pcs
                .iter()
                .copied()
                .filter(|(_, pc)| self.breakpoints.contains(pc))
                .collect();
            self.pcs_at_stop = Some(pcs);
        }
        let thread = reply.thread;
        let on_bp = at_breakpoints
            .iter()
            .find(|(t, _)| Some(*t) == thread)
            .map(|&(_, addr)| addr);
        let cause = match (reply.signal, on_bp) {
            (SIGINT, _) => StopCause::Interrupted,
            (SIGTRAP, Some(addr)) => StopCause::Breakpoint { addr },
            (SIGTRAP, None) if stepping => StopCause::Step,
            (s, _) => StopCause::Signal(s),
        };
        Ok(Stop {
            thread,
            cause,
            reply,
            at_breakpoints,
        })
    }

    // ---- the target description ----

    fn read_feature_file(&mut self, annex: &str) -> Result<String, GdbError> {
        let mut data = Vec::new();
        let len = self.features.packet_size - 5;
        loop {
            let command = format!("qXfer:features:read:{annex}:{:x},{len:x}", data.len());
            let reply = self.command(&command)?;
            let (last, body) = match reply.split_first() {
                Some((b'l', body)) => (true, body),
                Some((b'm', body)) => (false, body),
                _ => {
                    return Err(GdbError::protocol(
                        &command,
                        &reply,
                        "expected m<data> or l<data>",
                    ))
                }
            };
            let body = unescape(body).map_err(|e| GdbError::hex(&command, &reply, e))?;
            if !last && body.is_empty() {
                return Err(GdbError::protocol(&command, &reply, "empty chunk"));
            }
            data.extend_from_slice(&body);
            if data.len() > MAX_TARGET_XML {
                return Err(GdbError::protocol(
                    &command,
                    b"",
                    format!("{annex} is larger than {MAX_TARGET_XML} bytes"),
                ));
            }
            if last {
                break;
            }
        }
        String::from_utf8(data).map_err(|_| {
            GdbError::TargetXml(TargetXmlError::Xml {
                file: annex.to_string(),
                message: "not UTF-8".into(),
            })
        })
    }

    // ---- packets ----

    fn check_usable(&self) -> Result<(), GdbError> {
        if let Some(cause) = &self.broken {
            return Err(GdbError::Unusable {
                cause: cause.clone(),
            });
        }
        if self.detached {
            return Err(GdbError::Unusable {
                cause: "the client detached".into(),
            });
        }
        Ok(())
    }

    fn require_stopped(&self, op: &str) -> Result<(), GdbError> {
        self.check_usable()?;
        if self.state == RunState::Running {
            return Err(GdbError::Running { op: op.to_string() });
        }
        Ok(())
    }

    /// Records a failure that ends the connection's usefulness.
    fn fail(&mut self, e: GdbError) -> GdbError {
        // A timeout leaves a reply in flight, so later replies would be misread.
        if e.is_fatal() || matches!(e, GdbError::Timeout { .. } | GdbError::Codec(_)) {
            self.broken.get_or_insert_with(|| e.to_string());
        }
        e
    }

    fn refused(&self, command: &str, code: String) -> GdbError {
        let hint = match code.as_str() {
            "22" => ": the stub found an argument invalid",
            "14" => ": bad address",
            _ => "",
        };
        GdbError::Refused {
            command: command.to_string(),
            code: format!("E{code}"),
            hint,
        }
    }

    /// Sends a command while stopped and returns the reply payload.
    fn command(&mut self, command: &str) -> Result<Vec<u8>, GdbError> {
        self.require_stopped(command)?;
        self.exchange(command, self.config.reply_timeout)
    }

    fn expect_ok(&mut self, command: &str) -> Result<(), GdbError> {
        let reply = self.command(command)?;
        match &reply[..] {
            b"OK" => Ok(()),
            b"" => Err(GdbError::Unsupported {
                command: command.to_string(),
            }),
            r => match error_code(r) {
                Some(code) => Err(self.refused(command, code)),
                None => Err(self.fail(GdbError::protocol(command, r, "expected OK"))),
            },
        }
    }

    fn exchange(&mut self, command: &str, timeout: Duration) -> Result<Vec<u8>, GdbError> {
        self.send_packet(command, timeout)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_frame(deadline, command)? {
                None => {
                    return Err(self.fail(GdbError::Timeout {
                        what: format!("`{command}`"),
                        timeout,
                    }))
                }
                Some(RspFrame::Packet(p)) => {
                    self.ack()?;
                    // A stop announced late to a new client is not this command's reply (no
                    // reply but `?`'s starts like a stop reply).
                    if command != "?"
                        && matches!(p.first(), Some(b'S' | b'T'))
                        && StopReply::is_stop_reply(&p)
                    {
                        if let Ok(StopReply::Signal(s)) = StopReply::parse(&p) {
                            self.pending_stop = Some(s);
                            continue;
                        }
                    }
                    return Ok(p);
                }
                // Stray acknowledgements and notifications carry nothing for us.
                Some(_) => {}
            }
        }
    }

    /// Sends a packet and waits for its `+`, resending on `-`.
    /// Acknowledges a packet received, unless acks are off.
    fn ack(&mut self) -> Result<(), GdbError> {
        if self.no_ack {
            return Ok(());
        }
        self.write_raw(b"+", "acknowledging a packet")
    }

    fn send_packet(&mut self, command: &str, timeout: Duration) -> Result<(), GdbError> {
        let wire = encode_packet(command.as_bytes());
        if self.no_ack {
            self.write_raw(&wire, command)?;
            self.stats.packets_sent += 1;
            return Ok(());
        }
        for attempt in 0..=self.config.retransmits {
            if attempt > 0 {
                self.stats.retransmits += 1;
            }
            self.write_raw(&wire, command)?;
            self.stats.packets_sent += 1;
            let deadline = Instant::now() + timeout;
            loop {
                match self.next_frame(deadline, command)? {
                    None => {
                        return Err(self.fail(GdbError::Timeout {
                            what: format!("`{command}`"),
                            timeout,
                        }))
                    }
                    Some(RspFrame::Ack) => return Ok(()),
                    Some(RspFrame::Nack) => break,
                    // QEMU announces a stop it made for a new client before acknowledging.
                    Some(RspFrame::Packet(p)) => {
                        self.ack()?;
                        match StopReply::parse(&p) {
                            Ok(StopReply::Signal(s)) => self.pending_stop = Some(s),
                            Ok(StopReply::Output(text)) => {
                                let keep = MAX_CONSOLE.saturating_sub(self.console.len());
                                self.console
                                    .extend_from_slice(&text[..text.len().min(keep)]);
                            }
                            _ => {
                                return Err(self.fail(GdbError::protocol(
                                    command,
                                    &p,
                                    "a packet arrived before the acknowledgement",
                                )))
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        Err(self.fail(GdbError::Corrupted {
            command: command.to_string(),
            attempts: self.config.retransmits + 1,
        }))
    }

    fn write_raw(&mut self, bytes: &[u8], during: &str) -> Result<(), GdbError> {
        match self.stream.write_all(bytes) {
            Ok(()) => {
                self.stats.bytes_sent += bytes.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.io_error(e, during)),
        }
    }

    /// The next frame, or `None` at the deadline. A deadline already passed still takes what
    /// has arrived.
    fn next_frame(
        &mut self,
        deadline: Instant,
        during: &str,
    ) -> Result<Option<RspFrame>, GdbError> {
        loop {
            while let Some(f) = self.frames.pop_front() {
                match f {
                    Ok(f) => {
                        if matches!(f, RspFrame::Packet(_)) {
                            self.stats.packets_received += 1;
                        }
                        return Ok(Some(f));
                    }
                    Err(e @ CodecError::TooLong { .. }) => return Err(self.fail(e.into())),
                    Err(_) => {
                        self.stats.bad_packets += 1;
                        if !self.no_ack {
                            self.write_raw(b"-", "asking for a resend")?;
                        }
                    }
                }
            }
            if !self.fill(deadline, during)? {
                return Ok(None);
            }
        }
    }

    /// Reads what the socket has, waiting until the deadline. False at the deadline.
    fn fill(&mut self, deadline: Instant, during: &str) -> Result<bool, GdbError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let result = if remaining.is_zero() {
            self.nonblocking_read()
        } else {
            match self.set_read_timeout(remaining) {
                Ok(()) => self.stream.read(&mut self.rbuf),
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(0) => Err(self.fail(GdbError::Disconnected {
                during: during.to_string(),
            })),
            Ok(n) => {
                self.stats.bytes_received += n as u64;
                let frames = &mut self.frames;
                self.decoder
                    .feed(&self.rbuf[..n], &mut |f| frames.push_back(f));
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(!remaining.is_zero() && Instant::now() < deadline)
            }
            Err(e) => Err(self.io_error(e, during)),
        }
    }

    /// Sets the socket's read timeout, skipping the system call when the one set is close
    /// enough: a shorter one only wakes the loop early, a longer one may overshoot by 1/8.
    fn set_read_timeout(&mut self, remaining: Duration) -> io::Result<()> {
        if let Some(t) = self.read_timeout {
            let slack = (remaining / 8).max(Duration::from_millis(1));
            if t <= remaining + slack && t >= remaining / 2 {
                return Ok(());
            }
        }
        self.stream.set_read_timeout(Some(remaining))?;
        self.read_timeout = Some(remaining);
        Ok(())
    }

    fn nonblocking_read(&mut self) -> io::Result<usize> {
        self.stream.set_nonblocking(true)?;
        let r = self.stream.read(&mut self.rbuf);
        self.stream.set_nonblocking(false)?;
        r
    }

    fn io_error(&mut self, e: io::Error, during: &str) -> GdbError {
        let err = match e.kind() {
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected => GdbError::Disconnected {
                during: during.to_string(),
            },
            ErrorKind::WouldBlock | ErrorKind::TimedOut => GdbError::Timeout {
                what: format!("sending `{during}`"),
                timeout: self.config.reply_timeout,
            },
            _ => GdbError::Io {
                during: during.to_string(),
                source: e,
            },
        };
        self.fail(err)
    }
}

impl Drop for GdbClient {
    /// Detaches, so the guest is not left paused with breakpoints in it. Waits are shortened:
    /// a drop must not hang on a dead QEMU.
    fn drop(&mut self) {
        if self.detached || self.broken.is_some() {
            return;
        }
        let short = Duration::from_millis(500);
        self.config.reply_timeout = self.config.reply_timeout.min(short);
        self.config.interrupt_timeout = self.config.interrupt_timeout.min(short);
        let _ = self.detach_inner();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl GuestMemory for GdbClient {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read_memory(addr, buf)
            .map_err(|e| MemoryError::Failed {
                addr,
                len: buf.len(),
                reason: e.to_string(),
            })
    }
}

/// The code of an `Enn` reply.
fn error_code(reply: &[u8]) -> Option<String> {
    match reply {
        [b'E', a, b] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
            Some(String::from_utf8_lossy(&reply[1..]).into_owned())
        }
        _ => None,
    }
}

fn parse_features(reply: &[u8]) -> Features {
    let mut f = Features {
        packet_size: 4096,
        ..Features::default()
    };
    for item in reply.split(|&b| b == b';') {
        match item {
            b"multiprocess+" => f.multiprocess = true,
            b"qXfer:features:read+" => f.target_xml = true,
            b"QStartNoAckMode+" => f.no_ack_mode = true,
            _ => {
                if let Some(size) = item.strip_prefix(b"PacketSize=") {
                    if let Ok(v) = parse_hex_u64(size) {
                        f.packet_size = usize::try_from(v).unwrap_or(MAX_PACKET);
                    }
                }
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_features() {
        let f =
            parse_features(b"PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+");
        assert_eq!(
            f,
            Features {
                packet_size: 4096,
                multiprocess: true,
                target_xml: true,
                no_ack_mode: false
            }
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(error_code(b"E14").as_deref(), Some("14"));
        assert_eq!(error_code(b"E1"), None);
        assert_eq!(error_code(b"OK"), None);
        assert_eq!(error_code(b"e0123"), None);
    }

    #[test]
    fn hart_registers_map_to_the_model() {
        let mut r = HartRegisters::default();
        r.core.pc = 0x8000_0010;
        r.core.x[1] = 1;
        r.core.x[2] = 2;
        r.core.x[8] = 8;
        r.privilege = Some(1);
        r.scause = Some(0xd);
        let m = HartRegs::from(&r);
        assert_eq!((m.pc, m.ra, m.sp, m.fp), (0x8000_0010, 1, 2, 8));
        assert_eq!(m.privilege, Some(1));
        assert_eq!(m.scause, Some(0xd));
        assert_eq!(m.sepc, None);
    }
}
