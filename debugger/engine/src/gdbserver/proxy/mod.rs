//! The gdb proxy: lockscope owns the gdb port, so the user's gdb (or the lab's grader) and
//! lockscope's own client debug the same QEMU at once.
//!
//! One connection goes to QEMU's stub (moved to a private port); the user's gdb connects on
//! the port the Makefile asked for; lockscope's [`crate::gdb::GdbClient`] connects to a second,
//! private port. QEMU's packets are relayed as they are; only what two clients would get wrong
//! is intercepted (see `relay.rs` and docs/gdb.md).

mod events;
mod link;
mod packet;
mod ram_reads;
mod relay;
mod upstream;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use thiserror::Error;

pub use events::{ProxyEvent, StoppedInterval, UserStatus, UserStop, UserStopReason};
pub use packet::frame;
pub use ram_reads::RamFile;
pub use relay::ReportOutcome;

use events::Shared;
use link::Link;
use relay::{Relay, Who};

const UPSTREAM: Token = Token(0);
const USER_LISTEN: Token = Token(1);
const LS_LISTEN: Token = Token(2);
const USER: Token = Token(3);
const LS: Token = Token(4);
const WAKER: Token = Token(5);

/// Refusals being written at once; more connections than this are closed at once.
const MAX_REFUSALS: usize = 4;

/// Why the proxy could not start or stopped.
#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("no gdb stub at {addr} ({reason}): start QEMU with -gdb tcp::PORT on that port")]
    NoStub { addr: SocketAddr, reason: String },
    #[error("QEMU's gdb stub at {addr} did not answer `{command}`: another debugger is probably connected to it (QEMU serves one at a time); disconnect it and retry")]
    Busy { addr: SocketAddr, command: String },
    #[error("QEMU's gdb stub at {addr}: {reason}")]
    Upstream { addr: SocketAddr, reason: String },
    #[error("cannot listen for gdb on {addr}: {source}; another QEMU or lockscope probably uses this port: pick another one (the lab's Makefile takes GDBPORT=...)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{spec:?} is not a gdb listen address: use PORT, HOST:PORT, or QEMU's tcp::PORT / tcp:HOST:PORT")]
    BadListen { spec: String },
    #[error("the gdb proxy has stopped: {reason}")]
    Stopped { reason: String },
    #[error("gdb proxy: {0}")]
    Io(#[from] std::io::Error),
}

/// How the proxy starts.
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// QEMU was started with `-S` for gdb (as `make qemu-gdb` does): the guest waits for the
    /// user's gdb to continue it, whatever lockscope does.
    pub hold_for_user: bool,
    /// How long QEMU's stub may take to answer the proxy's handshake (default 2 s).
    pub connect_timeout: Option<Duration>,
    /// The guest's shared RAM file: memory reads of a stopped guest are answered from it
    /// where QEMU would answer the same (see `ram_reads.rs`).
    pub ram: Option<RamFile>,
}

/// Parses where the user's gdb connects: `PORT`, `HOST:PORT`, or QEMU's `tcp::PORT` and
/// `tcp:HOST:PORT`. An empty host is 127.0.0.1 (never every interface unless asked).
pub fn parse_listen(spec: &str) -> Result<SocketAddr, ProxyError> {
    let bad = || ProxyError::BadListen {
        spec: spec.to_string(),
    };
    let s = spec.strip_prefix("tcp:").unwrap_or(spec);
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => ("", s),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = match host.trim_start_matches('[').trim_end_matches(']') {
        "" => "127.0.0.1",
        h => h,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

enum Cmd {
    Report(u32, Sender<ReportOutcome>),
    Shutdown,
}

/// A running proxy. Dropping it shuts it down.
pub struct GdbProxy {
    user_addr: SocketAddr,
    private_addr: SocketAddr,
    shared: Arc<Shared>,
    commands: Sender<Cmd>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<Result<(), ProxyError>>>,
}

impl GdbProxy {
    /// Connects to QEMU's stub at `upstream` and listens for the user's gdb on `user_listen`.
    pub fn start(upstream: SocketAddr, user_listen: SocketAddr) -> Result<Self, ProxyError> {
        Self::start_with(upstream, user_listen, ProxyOptions::default())
    }

    pub fn start_with(
        upstream: SocketAddr,
        user_listen: SocketAddr,
        options: ProxyOptions,
    ) -> Result<Self, ProxyError> {
        let listen = |addr: SocketAddr| {
            let l =
                TcpListener::bind(addr).map_err(|source| ProxyError::Listen { addr, source })?;
            l.set_nonblocking(true)?;
            Ok::<_, ProxyError>(l)
        };
        let user_l = listen(user_listen)?;
        let ls_l = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let user_addr = user_l.local_addr()?;
        let private_addr = ls_l.local_addr()?;

        let up = upstream::connect(
            upstream,
            options.connect_timeout.unwrap_or(Duration::from_secs(2)),
        )?;
        let closer = up.stream.try_clone()?;
        let up_no_ack = up.no_ack;
        up.stream.set_nonblocking(true)?;
        let mut up_stream = mio::net::TcpStream::from_std(up.stream);

        let poll = Poll::new()?;
        let registry = poll.registry();
        // Writable interest only while output waits (see `Loop::watch_writes`): every ACK
        // would otherwise wake the relay.
        registry.register(&mut up_stream, UPSTREAM, Interest::READABLE)?;
        registry.register(
            &mut SourceFd(&user_l.as_raw_fd()),
            USER_LISTEN,
            Interest::READABLE,
        )?;
        registry.register(
            &mut SourceFd(&ls_l.as_raw_fd()),
            LS_LISTEN,
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(registry, WAKER)?);

        let shared = Arc::new(Shared::default());
        let mut up_link = Link::new(up_stream);
        up_link.no_ack = up_no_ack;
        if std::env::var_os("LOCKSCOPE_GDB_TRACE").is_some() {
            up_link.trace = Some("qemu");
        }
        let ram_reads = options
            .ram
            .clone()
            .zip(up.space_regs)
            .map(|(file, regs)| ram_reads::RamReads::new(file, regs));
        let relay = Relay::new(
            up_link,
            up.threads,
            up.current,
            options.hold_for_user,
            shared.clone(),
            ram_reads,
        );
        let (tx, rx) = mpsc::channel();
        let mut lp = Loop {
            poll,
            relay,
            user_l,
            ls_l,
            commands: rx,
            shared: shared.clone(),
            closer,
            refusals: Arc::new(AtomicUsize::new(0)),
            writable: [false; 3],
        };
        let thread = std::thread::Builder::new()
            .name("gdb-proxy".into())
            .spawn(move || lp.run())?;
        Ok(Self {
            user_addr,
            private_addr,
            shared,
            commands: tx,
            waker,
            thread: Some(thread),
        })
    }

    /// Where the user's gdb connects.
    pub fn user_addr(&self) -> SocketAddr {
        self.user_addr
    }

    /// Where lockscope's own `GdbClient` connects (127.0.0.1, a free port).
    pub fn private_addr(&self) -> SocketAddr {
        self.private_addr
    }

    /// A new subscription to the proxy's events.
    /// Memory reads of the user's gdb or lockscope answered from guest RAM so far.
    pub fn reads_from_ram(&self) -> u64 {
        self.shared.ram_reads.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> Receiver<ProxyEvent> {
        let (tx, rx) = mpsc::channel();
        self.shared.subscribe(tx);
        rx
    }

    /// The user's gdb now: connected or not, and the stop it holds, if it holds one.
    pub fn user_status(&self) -> UserStatus {
        self.shared.status()
    }

    /// The intervals during which the user's gdb held the guest stopped (the last 4096).
    pub fn stopped_intervals(&self) -> Vec<StoppedInterval> {
        self.shared.intervals()
    }

    /// The total time the user's gdb held the guest stopped, including a stop in progress.
    pub fn stopped_total(&self) -> Duration {
        self.shared.total()
    }

    /// Reports a stop on `hart` (a panic or a deadlock lockscope found) to the user's gdb, as
    /// a `T05` stop of that hart's thread, which gdb then selects. While lockscope itself holds
    /// the guest stopped, a `continue` in gdb waits until lockscope resumes.
    pub fn report_stop(&self, hart: u32) -> Result<ReportOutcome, ProxyError> {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Report(hart, tx))?;
        rx.recv_timeout(Duration::from_secs(2))
            .map_err(|_| ProxyError::Stopped {
                reason: "the proxy thread did not answer".into(),
            })
    }

    fn send(&self, cmd: Cmd) -> Result<(), ProxyError> {
        self.commands.send(cmd).map_err(|_| ProxyError::Stopped {
            reason: "the proxy thread has ended (QEMU exited?)".into(),
        })?;
        self.waker.wake()?;
        Ok(())
    }

    /// Stops relaying: clients are disconnected, and QEMU is detached (its breakpoints
    /// removed, the guest left running).
    pub fn shutdown(mut self) -> Result<(), ProxyError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ProxyError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let _ = self.send(Cmd::Shutdown);
        thread.join().unwrap_or_else(|_| {
            Err(ProxyError::Stopped {
                reason: "the proxy thread panicked".into(),
            })
        })
    }
}

impl Drop for GdbProxy {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

struct Loop {
    poll: Poll,
    relay: Relay,
    user_l: TcpListener,
    ls_l: TcpListener,
    commands: Receiver<Cmd>,
    shared: Arc<Shared>,
    /// A second handle on QEMU's connection, to detach cleanly at shutdown.
    closer: TcpStream,
    refusals: Arc<AtomicUsize>,
    /// Writable interest registered, for upstream, the user, lockscope.
    writable: [bool; 3],
}

impl Loop {
    fn run(&mut self) -> Result<(), ProxyError> {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            for ev in events.iter() {
                match ev.token() {
                    UPSTREAM => {
                        let mut frames = Vec::new();
                        match self.relay.upstream.read(&mut frames) {
                            Ok(true) => self.relay.on_upstream_frames(frames),
                            Ok(false) => return self.lost("QEMU closed its gdb connection"),
                            Err(e) => return self.lost(&e.to_string()),
                        }
                    }
                    USER_LISTEN => self.accept(Who::User)?,
                    LS_LISTEN => self.accept(Who::Ls)?,
                    USER => self.client_input(Who::User),
                    LS => self.client_input(Who::Ls),
                    _ => {}
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    Cmd::Report(hart, tx) => {
                        let _ = tx.send(self.relay.report_stop(hart));
                    }
                    Cmd::Shutdown => {
                        self.close_upstream();
                        return Ok(());
                    }
                }
            }
            if let Err(e) = self.relay.upstream.flush() {
                return self.lost(&e.to_string());
            }
            let pending = self.relay.upstream.pending();
            self.watch_writes(0, pending);
            for (i, who) in [(1, Who::User), (2, Who::Ls)] {
                let (failed, pending) = match self.relay.link(who) {
                    Some(l) => (l.flush().is_err(), l.pending()),
                    None => (false, false),
                };
                if failed {
                    self.drop_client(who);
                } else {
                    self.watch_writes(i, pending);
                }
            }
        }
    }

    /// Registers writable interest on link `i` while it has output waiting.
    fn watch_writes(&mut self, i: usize, pending: bool) {
        if self.writable[i] == pending {
            return;
        }
        let interest = if pending {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let registry = self.poll.registry();
        let done = match i {
            0 => registry.reregister(&mut self.relay.upstream.stream, UPSTREAM, interest),
            _ => {
                let (who, token) = if i == 1 {
                    (Who::User, USER)
                } else {
                    (Who::Ls, LS)
                };
                match self.relay.link(who) {
                    Some(l) => registry.reregister(&mut l.stream, token, interest),
                    None => Ok(()),
                }
            }
        };
        if done.is_ok() {
            self.writable[i] = pending;
        }
    }

    fn token(who: Who) -> Token {
        match who {
            Who::User => USER,
            Who::Ls => LS,
        }
    }

    fn accept(&mut self, who: Who) -> Result<(), ProxyError> {
        loop {
            let listener = match who {
                Who::User => &self.user_l,
                Who::Ls => &self.ls_l,
            };
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A connection reset before it was accepted, or out of descriptors: keep
                // serving the clients there are.
                Err(_) => return Ok(()),
            };
            if self.relay.has_client(who) {
                if who == Who::User {
                    self.shared
                        .emit(ProxyEvent::UserRefused { peer: Some(peer) });
                }
                refuse(stream, self.refusals.clone());
                continue;
            }
            stream.set_nonblocking(true)?;
            let mut stream = mio::net::TcpStream::from_std(stream);
            self.poll
                .registry()
                .register(&mut stream, Self::token(who), Interest::READABLE)?;
            self.writable[if who == Who::User { 1 } else { 2 }] = false;
            let mut link = Link::new(stream);
            if std::env::var_os("LOCKSCOPE_GDB_TRACE").is_some() {
                link.trace = Some(match who {
                    Who::User => "user",
                    Who::Ls => "lockscope",
                });
            }
            self.relay.attach(who, link);
        }
    }

    fn client_input(&mut self, who: Who) {
        let mut frames = Vec::new();
        let alive = match self.relay.link(who) {
            Some(l) => matches!(l.read(&mut frames), Ok(true)),
            None => return,
        };
        if !frames.is_empty() {
            self.relay.on_client_frames(who, frames);
        }
        if !alive {
            self.drop_client(who);
        }
    }

    fn drop_client(&mut self, who: Who) {
        if let Some(l) = self.relay.link(who) {
            let _ = self.poll.registry().deregister(&mut l.stream);
            let _ = l.flush();
        }
        self.relay.detach(who, true);
    }

    fn lost(&mut self, reason: &str) -> Result<(), ProxyError> {
        self.shared.emit(ProxyEvent::UpstreamLost {
            reason: reason.to_string(),
        });
        // Dropping the relay's client links closes them: the user's gdb sees the connection
        // close, as it would if it were connected to QEMU.
        for who in [Who::User, Who::Ls] {
            if let Some(l) = self.relay.link(who) {
                let _ = l.stream.shutdown(Shutdown::Both);
            }
        }
        Err(ProxyError::Stopped {
            reason: reason.to_string(),
        })
    }

    /// Detaches from QEMU: `D;1` removes every breakpoint on every hart and resumes.
    fn close_upstream(&mut self) {
        for who in [Who::User, Who::Ls] {
            if let Some(l) = self.relay.link(who) {
                let _ = l.stream.shutdown(Shutdown::Both);
            }
        }
        let _ = self.relay.upstream.flush();
        let s = &mut self.closer;
        if s.set_nonblocking(false).is_err()
            || s.set_read_timeout(Some(Duration::from_millis(200)))
                .is_err()
        {
            return;
        }
        // If it runs, stop it first: QEMU takes packets only while stopped.
        let _ = s.write_all(&[crate::gdb::codec::INTERRUPT]);
        let _ = s.write_all(&packet::frame(b"D;1"));
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buf[..n]);
                    if seen.windows(3).any(|w| w == b"$OK") {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        let _ = s.write_all(b"+");
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// Turns away a second client with a message gdb prints ("Remote failure reply: E.lockscope:
/// ..."), instead of leaving it hanging in a backlog as QEMU does.
fn refuse(stream: TcpStream, active: Arc<AtomicUsize>) {
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSALS {
        active.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("gdb-refuse".into())
        .spawn({
            let active = active.clone();
            move || {
                let mut s = stream;
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                // Answer its first packet, so gdb reads this as the reply and prints it.
                let mut buf = [0u8; 512];
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline && !seen.contains(&b'#') {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let msg = b"E.lockscope: another gdb is already connected to this port; QEMU can be debugged by one gdb at a time: disconnect the other one first";
                let mut reply = b"+".to_vec();
                reply.extend(packet::frame(msg));
                let _ = s.write_all(&reply);
                let _ = s.shutdown(Shutdown::Write);
                // Wait for the peer to close, so the reply is not lost to a reset.
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
                active.fetch_sub(1, Ordering::SeqCst);
            }
        });
    if spawned.is_err() {
        active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs() {
        let a = |s: &str| parse_listen(s).unwrap().to_string();
        assert_eq!(a("tcp::26000"), "127.0.0.1:26000");
        assert_eq!(a("26000"), "127.0.0.1:26000");
        assert_eq!(a(":26000"), "127.0.0.1:26000");
        assert_eq!(a("tcp:0.0.0.0:1234"), "0.0.0.0:1234");
        assert_eq!(a("127.0.0.2:1"), "127.0.0.2:1");
        let e = parse_listen("tcp::port").unwrap_err();
        assert!(e.to_string().contains("tcp::PORT"), "{e}");
        assert!(parse_listen("").is_err());
    }
}
