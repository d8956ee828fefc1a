//! The post-mortem gdb server: serves one saved stop (every hart's registers, the guest's RAM
//! through Sv39 translation) to `gdb-multiarch kernel -ex 'target remote :PORT'`, on the
//! `gdbstub` crate, with QEMU 7.2's own target description and register numbering.
//!
//! The target cannot run: `continue`, `step`, breakpoints and writes are answered with
//! "post-mortem: this target cannot run". gdbstub has no reply of its own for a target without
//! resume support (it would leave gdb waiting), so those packets are answered before they reach
//! it; everything else is gdbstub's.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;

use gdbstub::arch::{Arch, RegId, Registers};
use gdbstub::common::Tid;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{GdbStubBuilder, MultiThreadStopReason};
use gdbstub::target::ext::base::multithread::MultiThreadBase;
use gdbstub::target::ext::base::single_register_access::{
    SingleRegisterAccess, SingleRegisterAccessOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::ext::thread_extra_info::{ThreadExtraInfo, ThreadExtraInfoOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use thiserror::Error;

use super::proxy::ProxyError;
use super::stop::PostMortemStop;
use super::sv39::{read_virtual, AddressSpace};
use super::target_xml::TargetXml;
use crate::gdb::codec::{Decoder, RspFrame};

/// What gdb prints when asked to run the saved stop.
pub const CANNOT_RUN: &str = "post-mortem: this target cannot run (it is a saved stop)";
const REFUSE_RUN: &[u8] =
    b"E.post-mortem: this target cannot run (it is a saved stop; `lockscope run` debugs a live guest)";
const REFUSE_WRITE: &[u8] =
    b"E.post-mortem: this target cannot run, and its memory and registers are read-only";

#[derive(Debug, Error)]
pub enum PostMortemError {
    #[error("cannot listen for gdb on {addr}: {source}; pick another port")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the stop has no hart with saved registers: it cannot be served to gdb (record again with a lockscope that saves them)")]
    NoHarts,
    #[error("gdb connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("gdb protocol: {0}")]
    Protocol(String),
}

impl From<ProxyError> for PostMortemError {
    fn from(e: ProxyError) -> Self {
        Self::Protocol(e.to_string())
    }
}

/// QEMU 7.2's RV64 register numbering, which gdbstub_arch's RISC-V description does not have.
pub enum Qemu72Rv64 {}

/// What `g` carries on QEMU: x0-x31 and pc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreRegs {
    pub x: [u64; 32],
    pub pc: u64,
}

impl Registers for CoreRegs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.pc
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for v in self.x.iter().chain(std::iter::once(&self.pc)) {
            v.to_le_bytes().iter().for_each(|&b| write_byte(Some(b)));
        }
    }

    fn gdb_deserialize(&mut self, _bytes: &[u8]) -> Result<(), ()> {
        Err(())
    }
}

/// A register by QEMU's number: 0-31 x, 32 pc, 33-64 f, 65 priv, 66 + n CSR n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuRegId {
    X(u8),
    Pc,
    F(u8),
    Priv,
    Csr(u16),
}

impl RegId for QemuRegId {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        let r = match id {
            0..=31 => Self::X(id as u8),
            32 => Self::Pc,
            33..=64 => Self::F((id - 33) as u8),
            65 => Self::Priv,
            66..=4161 => Self::Csr((id - 66) as u16),
            _ => return None,
        };
        Some((r, NonZeroUsize::new(8)))
    }
}

impl Arch for Qemu72Rv64 {
    type Usize = u64;
    type Registers = CoreRegs;
    type BreakpointKind = usize;
    type RegId = QemuRegId;
}

struct PmTarget {
    stop: PostMortemStop,
    xml: TargetXml,
}

fn tid(hart: u32) -> Tid {
    NonZeroUsize::new(hart as usize + 1).unwrap_or(NonZeroUsize::MIN)
}

impl PmTarget {
    fn hart(&self, t: Tid) -> TargetResult<&crate::model::FullRegs, Self> {
        let hart = u32::try_from(t.get() - 1).map_err(|_| TargetError::Errno(22))?;
        self.stop
            .hart(hart)
            .map(|h| &h.regs)
            .ok_or(TargetError::Errno(22))
    }
}

impl Target for PmTarget {
    type Arch = Qemu72Rv64;
    /// Fatal errors only; there are none (every failure is an `Enn` reply).
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    // Breakpoints are refused before they reach gdbstub: nothing runs.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadBase for PmTarget {
    fn read_registers(&mut self, regs: &mut CoreRegs, t: Tid) -> TargetResult<(), Self> {
        let r = self.hart(t)?;
        for (i, x) in regs.x.iter_mut().enumerate() {
            *x = r.x(i);
        }
        regs.pc = r.pc;
        Ok(())
    }

    fn write_registers(&mut self, _: &CoreRegs, _: Tid) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], t: Tid) -> TargetResult<usize, Self> {
        let r = self.hart(t)?;
        let space = AddressSpace {
            satp: r.csr(0x180),
            privilege: r.privilege,
        };
        match read_virtual(self.stop.ram.as_mut(), space, start, data) {
            // E14, as QEMU answers for an address with no RAM.
            0 if !data.is_empty() => Err(TargetError::Errno(14)),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, _: u64, _: &[u8], _: Tid) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn list_active_threads(&mut self, active: &mut dyn FnMut(Tid)) -> Result<(), &'static str> {
        for h in self.stop.ordered() {
            active(tid(h.hart));
        }
        Ok(())
    }

    fn support_thread_extra_info(&mut self) -> Option<ThreadExtraInfoOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<Tid> for PmTarget {
    fn read_register(
        &mut self,
        t: Tid,
        reg: QemuRegId,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let r = self.hart(t)?;
        let v = match reg {
            QemuRegId::X(n) => Some(r.x(usize::from(n))),
            QemuRegId::Pc => Some(r.pc),
            QemuRegId::Priv => r.privilege.map(u64::from),
            QemuRegId::Csr(n) => r.csr(n),
            QemuRegId::F(_) => None,
        };
        // Not saved: gdb shows `<unavailable>`.
        let Some(v) = v else { return Ok(0) };
        let n = buf.len().min(8);
        buf[..n].copy_from_slice(&v.to_le_bytes()[..n]);
        Ok(n)
    }

    fn write_register(&mut self, _: Tid, _: QemuRegId, _: &[u8]) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }
}

impl TargetDescriptionXmlOverride for PmTarget {
    fn target_description_xml(
        &self,
        annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let name = std::str::from_utf8(annex).map_err(|_| TargetError::Errno(22))?;
        let text = self.xml.annex(name).ok_or(TargetError::Errno(22))?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        let n = length.min(buf.len()).min(text.len() - start);
        buf[..n].copy_from_slice(&text.as_bytes()[start..start + n]);
        Ok(n)
    }
}

impl ThreadExtraInfo for PmTarget {
    fn thread_extra_info(&self, t: Tid, buf: &mut [u8]) -> Result<usize, &'static str> {
        let hart = t.get() - 1;
        let s = if Some(hart as u32) == self.stop.focus {
            format!("CPU#{hart} [post-mortem, {}]", self.stop.reason)
        } else {
            format!("CPU#{hart} [post-mortem]")
        };
        let n = s.len().min(buf.len());
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        Ok(n)
    }
}

/// The reply to a packet the saved stop cannot honour, if this is one.
fn refusal(p: &[u8]) -> Option<&'static [u8]> {
    match p {
        // Breakpoints are accepted and never hit: gdb inserts them (and RISC-V's software
        // single step) before it resumes, and the resume is what gets the clear refusal.
        [b'Z' | b'z', ..] => Some(b"OK"),
        [b'c' | b'C' | b's' | b'S' | b'i' | b'I' | b'R', ..] => Some(REFUSE_RUN),
        _ if p.starts_with(b"vCont;") || p.starts_with(b"vRun") || p.starts_with(b"vAttach") => {
            Some(REFUSE_RUN)
        }
        [b'M' | b'X' | b'G' | b'P', ..] => Some(REFUSE_WRITE),
        _ => None,
    }
}

/// A post-mortem server bound to its port.
pub struct PostMortemServer {
    listener: TcpListener,
    target: PmTarget,
}

impl PostMortemServer {
    /// Listens on `listen` for gdb. `xml` defaults to QEMU 7.2's description.
    pub fn bind(
        stop: PostMortemStop,
        listen: SocketAddr,
        xml: Option<TargetXml>,
    ) -> Result<Self, PostMortemError> {
        if stop.harts.is_empty() {
            return Err(PostMortemError::NoHarts);
        }
        let listener = TcpListener::bind(listen).map_err(|source| PostMortemError::Listen {
            addr: listen,
            source,
        })?;
        Ok(Self {
            listener,
            target: PmTarget {
                stop,
                xml: xml.unwrap_or_else(TargetXml::qemu72),
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves gdb connections one after the other, until an error.
    pub fn serve_forever(&mut self) -> Result<(), PostMortemError> {
        loop {
            self.serve_one()?;
        }
    }

    /// Accepts one gdb and serves it until it detaches or disconnects.
    pub fn serve_one(&mut self) -> Result<(), PostMortemError> {
        let (stream, _) = self.listener.accept()?;
        match self.session(stream) {
            // A gdb that vanished mid-packet ends its session, not the server.
            Err(PostMortemError::Io(e))
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(())
            }
            r => r,
        }
    }

    fn session(&mut self, stream: TcpStream) -> Result<(), PostMortemError> {
        let proto = |e: &dyn std::fmt::Display| PostMortemError::Protocol(e.to_string());
        let _ = stream.set_nodelay(true);
        let mut reader = stream.try_clone()?;
        let gdb = GdbStubBuilder::new(stream).build().map_err(|e| proto(&e))?;
        let mut sm = gdb
            .run_state_machine(&mut self.target)
            .map_err(|e| proto(&e))?;
        let mut decoder = Decoder::default();
        let mut frames: VecDeque<RspFrame> = VecDeque::new();
        let mut bytes: VecDeque<u8> = VecDeque::new();
        let mut no_ack = false;
        let mut buf = [0u8; 4096];
        loop {
            sm = match sm {
                GdbStubStateMachine::Idle(inner) => {
                    if let Some(b) = bytes.pop_front() {
                        inner
                            .incoming_data(&mut self.target, b)
                            .map_err(|e| proto(&e))?
                    } else if let Some(f) = frames.pop_front() {
                        match f {
                            RspFrame::Packet(p) => match refusal(&p) {
                                Some(msg) => {
                                    let mut out = if no_ack { Vec::new() } else { b"+".to_vec() };
                                    out.extend(super::proxy::frame(msg));
                                    reader.write_all(&out)?;
                                }
                                None => {
                                    no_ack |= p == b"QStartNoAckMode";
                                    bytes.extend(super::proxy::frame(&p));
                                }
                            },
                            RspFrame::Ack => bytes.push_back(b'+'),
                            RspFrame::Nack => bytes.push_back(b'-'),
                            // Nothing runs, so there is nothing to interrupt.
                            RspFrame::Interrupt | RspFrame::Notification(_) => {}
                        }
                        GdbStubStateMachine::Idle(inner)
                    } else {
                        let n = match reader.read(&mut buf) {
                            Ok(0) => return Ok(()),
                            Ok(n) => n,
                            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
                            Err(e) => return Err(e.into()),
                        };
                        let mut bad = false;
                        decoder.feed(&buf[..n], &mut |f| match f {
                            Ok(f) => frames.push_back(f),
                            Err(_) => bad = true,
                        });
                        if bad && !no_ack {
                            reader.write_all(b"-")?;
                        }
                        GdbStubStateMachine::Idle(inner)
                    }
                }
                GdbStubStateMachine::Disconnected(_) => return Ok(()),
                GdbStubStateMachine::CtrlCInterrupt(inner) => inner
                    .interrupt_handled(&mut self.target, None::<MultiThreadStopReason<u64>>)
                    .map_err(|e| proto(&e))?,
                GdbStubStateMachine::Running(inner) => inner
                    .report_stop(&mut self.target, MultiThreadStopReason::DoneStep)
                    .map_err(|e| proto(&e))?,
            };
        }
    }
}

/// Serves `stop` on `listen` to one gdb after another (`lockscope serve`).
pub fn serve_postmortem(
    stop: PostMortemStop,
    listen: SocketAddr,
    xml: Option<TargetXml>,
) -> Result<(), PostMortemError> {
    PostMortemServer::bind(stop, listen, xml)?.serve_forever()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_would_run_or_write() {
        for p in [&b"c"[..], b"vCont;c:p1.-1", b"s", b"C05"] {
            assert_eq!(refusal(p), Some(REFUSE_RUN), "{p:?}");
        }
        assert_eq!(refusal(b"Z0,80000000,4"), Some(&b"OK"[..]));
        for p in [&b"M80000000,1:00"[..], b"X80000000,0:", b"P20=00", b"G00"] {
            assert_eq!(refusal(p), Some(REFUSE_WRITE));
        }
        for p in [
            &b"vCont?"[..],
            b"qC",
            b"m80000000,8",
            b"g",
            b"p41",
            b"D;1",
            b"k",
        ] {
            assert_eq!(refusal(p), None);
        }
        // The refusals frame as they are (no escapes needed).
        for msg in [REFUSE_RUN, REFUSE_WRITE] {
            assert!(!msg.iter().any(|b| b"$#}*".contains(b)));
            assert!(std::str::from_utf8(msg)
                .unwrap()
                .contains(CANNOT_RUN.split(" (").next().unwrap()));
        }
        assert_eq!(
            QemuRegId::from_raw_id(834).unwrap().0,
            QemuRegId::Csr(0x300)
        );
        assert_eq!(QemuRegId::from_raw_id(65).unwrap().0, QemuRegId::Priv);
        assert_eq!(QemuRegId::from_raw_id(32).unwrap().0, QemuRegId::Pc);
        assert!(QemuRegId::from_raw_id(5000).is_none());
    }
}
