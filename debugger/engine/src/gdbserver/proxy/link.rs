//! One TCP connection of the proxy (to QEMU, to the user's gdb, to lockscope's own client):
//! a non-blocking socket, the codec's decoder, and a bounded output buffer.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use super::packet::frame;
use crate::gdb::codec::{CodecError, Decoder, RspFrame, INTERRUPT};

/// More unsent output than this means the peer stopped reading: it is dropped.
const MAX_PENDING_OUTPUT: usize = 4 << 20;

pub struct Link {
    pub stream: TcpStream,
    pub peer: Option<SocketAddr>,
    decoder: Decoder,
    out: Vec<u8>,
    /// The peer negotiated `QStartNoAckMode`: no `+`/`-` either way.
    pub no_ack: bool,
    /// The last packet sent, resent when the peer answers `-`.
    last_packet: Vec<u8>,
    rbuf: Box<[u8]>,
    /// `LOCKSCOPE_GDB_TRACE=1` prints every packet with this label, for debugging.
    pub trace: Option<&'static str>,
}

impl Link {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            peer: stream.peer_addr().ok(),
            stream,
            decoder: Decoder::default(),
            out: Vec::new(),
            no_ack: false,
            last_packet: Vec::new(),
            rbuf: vec![0; 16 * 1024].into_boxed_slice(),
            trace: None,
        }
    }

    /// Reads everything available. `Ok(false)` at end of stream. Resends on `-` are done here;
    /// the frames that matter (packets, interrupts) are handed to `out`.
    pub fn read(&mut self, frames: &mut Vec<RspFrame>) -> io::Result<bool> {
        loop {
            match self.stream.read(&mut self.rbuf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    let mut bad = 0;
                    let mut got = Vec::new();
                    self.decoder.feed(&self.rbuf[..n], &mut |f| match f {
                        Ok(f) => got.push(f),
                        // A damaged packet is answered with `-` and the peer resends; an
                        // oversized one is dropped (the decoder held none of it).
                        Err(CodecError::TooLong { .. }) => {}
                        Err(_) => bad += 1,
                    });
                    for _ in 0..bad {
                        if !self.no_ack {
                            self.out.push(b'-');
                        }
                    }
                    for f in got {
                        if let (Some(label), RspFrame::Packet(p)) = (self.trace, &f) {
                            eprintln!("{label} -> {}", String::from_utf8_lossy(p));
                        }
                        match f {
                            RspFrame::Nack if !self.no_ack && !self.last_packet.is_empty() => {
                                let again = self.last_packet.clone();
                                self.out.extend_from_slice(&again);
                            }
                            RspFrame::Ack | RspFrame::Nack | RspFrame::Notification(_) => {}
                            f => frames.push(f),
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues a packet, framed verbatim.
    pub fn send_packet(&mut self, payload: &[u8]) {
        if let Some(label) = self.trace {
            eprintln!("{label} <- {}", String::from_utf8_lossy(payload));
        }
        let wire = frame(payload);
        self.out.extend_from_slice(&wire);
        self.last_packet = wire;
    }

    /// Acknowledges a packet received (unless acks are off).
    pub fn ack(&mut self) {
        if !self.no_ack {
            self.out.push(b'+');
        }
    }

    pub fn send_interrupt(&mut self) {
        if let Some(label) = self.trace {
            eprintln!("{label} <- ^C");
        }
        self.out.push(INTERRUPT);
    }

    /// Output is waiting for the socket to take it.
    pub fn pending(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes what the socket takes. An error, or a peer that stopped reading, is fatal.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out.len() > MAX_PENDING_OUTPUT {
            return Err(io::Error::other("the peer stopped reading"));
        }
        Ok(())
    }
}
