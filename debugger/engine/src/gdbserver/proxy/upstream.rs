//! The proxy's own handshake with QEMU's stub, before relaying starts (blocking, with
//! timeouts): the thread list, and the breakpoints an earlier client left behind removed.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::packet::{frame, is_stop, stop_thread};
use super::ProxyError;
use crate::gdb::codec::{Decoder, RspFrame};

/// Most threads (harts) accepted from the stub.
const MAX_THREADS: usize = 1024;

pub struct Upstream {
    pub stream: TcpStream,
    /// Raw thread ids, as QEMU writes them (`p01.01`).
    pub threads: Vec<Vec<u8>>,
    /// The thread QEMU reports as current.
    pub current: Vec<u8>,
}

struct Handshake {
    stream: TcpStream,
    addr: SocketAddr,
    decoder: Decoder,
    frames: VecDeque<RspFrame>,
    timeout: Duration,
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
                    self.stream.write_all(b"+").map_err(io)?;
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
    };
    // Thread ids come as `p01.01` from then on, whoever asks later.
    h.exchange("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+")?;
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
    Ok(Upstream {
        stream: h.stream,
        threads,
        current,
    })
}
