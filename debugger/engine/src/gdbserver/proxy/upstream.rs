//! The proxy's own handshake with QEMU's stub, before relaying starts (blocking, with
//! timeouts): the thread list, and the breakpoints an earlier client left behind removed.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::packet::{frame, is_stop, stop_thread};
use super::ProxyError;
use crate::gdb::codec::{unescape, Decoder, RspFrame};
use crate::gdb::target_xml::{TargetDescription, TargetXmlError};

/// Most threads (harts) accepted from the stub.
const MAX_THREADS: usize = 1024;
/// Largest target description file accepted (QEMU 7.2's CSR file is about 40 KiB).
const MAX_FEATURE_FILE: usize = 1 << 20;

pub struct Upstream {
    pub stream: TcpStream,
    /// Raw thread ids, as QEMU writes them (`p01.01`).
    pub threads: Vec<Vec<u8>>,
    /// The thread QEMU reports as current.
    pub current: Vec<u8>,
    /// QEMU agreed to `QStartNoAckMode`: no `+` either way from now on.
    pub no_ack: bool,
    /// The numbers of the `priv` and `satp` registers in QEMU's target description, when it
    /// has both: what memory reads served from guest RAM translate with.
    pub space_regs: Option<(u32, u32)>,
}

struct Handshake {
    stream: TcpStream,
    addr: SocketAddr,
    decoder: Decoder,
    frames: VecDeque<RspFrame>,
    timeout: Duration,
    no_ack: bool,
}

impl Handshake {
    fn exchange(&mut self, command: &str) -> Result<Vec<u8>, ProxyError> {
        let io = |e: std::io::Error| ProxyError::Upstream {
            addr: self.addr,
            reason: format!("sending `{command}`: {e}"),
        };
        self.stream
            .write_all(&frame(command.as_bytes()))
            .map_err(io)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            while let Some(f) = self.frames.pop_front() {
                if let RspFrame::Packet(p) = f {
                    if !self.no_ack {
                        self.stream.write_all(b"+").map_err(io)?;
                    }
                    // QEMU announces the stop it made for a new connection before answering.
                    if command != "?" && is_stop(&p) {
                        continue;
                    }
                    return Ok(p);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProxyError::Busy {
                    addr: self.addr,
                    command: command.to_string(),
                });
            }
            self.stream.set_read_timeout(Some(left)).map_err(io)?;
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(ProxyError::Upstream {
                        addr: self.addr,
                        reason: format!("QEMU closed the connection during `{command}`"),
                    })
                }
                Ok(n) => {
                    let frames = &mut self.frames;
                    self.decoder.feed(&buf[..n], &mut |f| {
                        if let Ok(f) = f {
                            frames.push_back(f);
                        }
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// One file of the target description (`qXfer:features:read`), bounded.
    fn feature_file(&mut self, annex: &str) -> Result<String, ProxyError> {
        let mut data = Vec::new();
        loop {
            let command = format!("qXfer:features:read:{annex}:{:x},ffb", data.len());
            let reply = self.exchange(&command)?;
            let bad = || ProxyError::Upstream {
                addr: self.addr,
                reason: format!("unexpected reply to {command}"),
            };
            let (last, body) = match reply.split_first() {
                Some((b'l', body)) => (true, body),
                Some((b'm', body)) if !body.is_empty() => (false, body),
                _ => return Err(bad()),
            };
            data.extend_from_slice(&unescape(body).map_err(|_| bad())?);
            if data.len() > MAX_FEATURE_FILE {
                return Err(bad());
            }
            if last {
                return String::from_utf8(data).map_err(|_| bad());
            }
        }
    }

    /// The register numbers of `priv` and `satp`, or `None` when the description lacks one or
    /// cannot be read (reads then all go to QEMU).
    fn space_registers(&mut self) -> Option<(u32, u32)> {
        let main = self.feature_file("target.xml").ok()?;
        let desc = TargetDescription::parse(&main, &mut |annex| {
            self.feature_file(annex).map_err(|_| Unreadable)
        })
        .ok()?;
        Some((desc.register("priv")?.regnum, desc.register("satp")?.regnum))
    }
}

/// The target description could not be read (only whether it could matters).
struct Unreadable;

impl From<TargetXmlError> for Unreadable {
    fn from(_: TargetXmlError) -> Self {
        Unreadable
    }
}

/// Connects to QEMU's stub (which stops the guest) and learns its threads.
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Upstream, ProxyError> {
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| ProxyError::NoStub {
        addr,
        reason: e.to_string(),
    })?;
    let _ = stream.set_nodelay(true);
    let mut h = Handshake {
        stream,
        addr,
        decoder: Decoder::default(),
        frames: VecDeque::new(),
        timeout,
        no_ack: false,
    };
    // Thread ids come as `p01.01` from then on, whoever asks later.
    let supported = h.exchange("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+")?;
    // Without acks the relay wakes once per reply, not also for every `+` (QEMU 7.2 does not
    // offer it; a stub that does gets it).
    if supported
        .split(|&b| b == b';')
        .any(|f| f == b"QStartNoAckMode+")
        && h.exchange("QStartNoAckMode")? == b"OK"
    {
        h.no_ack = true;
    }
    let mut threads = Vec::new();
    let mut command = "qfThreadInfo";
    loop {
        let reply = h.exchange(command)?;
        match reply.split_first() {
            Some((b'm', ids)) => threads.extend(ids.split(|&b| b == b',').map(<[u8]>::to_vec)),
            Some((b'l', _)) => break,
            _ => {
                return Err(ProxyError::Upstream {
                    addr,
                    reason: format!(
                        "unexpected reply {:?} to {command}: is this QEMU's gdb stub?",
                        String::from_utf8_lossy(&reply)
                    ),
                })
            }
        }
        if threads.len() > MAX_THREADS {
            return Err(ProxyError::Upstream {
                addr,
                reason: format!("the stub lists more than {MAX_THREADS} threads"),
            });
        }
        command = "qsThreadInfo";
    }
    if threads.is_empty() {
        return Err(ProxyError::Upstream {
            addr,
            reason: "the stub lists no threads".into(),
        });
    }
    // QEMU keeps breakpoints across connections, and its `?` removes the current CPU's only:
    // asking it on every CPU clears what an earlier client left, the first CPU last.
    let mut current = threads[0].clone();
    for t in threads.iter().rev() {
        let id = String::from_utf8_lossy(t);
        h.exchange(&format!("Hc{id}"))?;
        let reply = h.exchange("?")?;
        if let Some(t) = stop_thread(&reply) {
            current = t;
        }
    }
    let space_regs = if supported
        .split(|&b| b == b';')
        .any(|f| f == b"qXfer:features:read+")
    {
        h.space_registers()
    } else {
        None
    };
    Ok(Upstream {
        space_regs,
        no_ack: h.no_ack,
        stream: h.stream,
        threads,
        current,
    })
}
