//! Stop replies: what the stub says when the target stops, exits or prints.

use thiserror::Error;

use super::hex::{hex_decode, parse_hex_u64, HexError};
use super::thread::ThreadId;

/// SIGINT in gdb's numbering: QEMU's answer to an interrupt.
pub const SIGINT: u8 = 2;
/// SIGTRAP in gdb's numbering: breakpoints and single steps.
pub const SIGTRAP: u8 = 5;

/// A stop reply, as sent after `?`, `c`, `s`, `vCont` or an interrupt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReply {
    /// `S` or `T`: the target stopped with a signal.
    Signal(SignalStop),
    /// `W`: the process exited. From QEMU this means the machine shut down.
    Exited { status: u8, pid: Option<u64> },
    /// `X`: the process was killed by a signal.
    Terminated { signal: u8, pid: Option<u64> },
    /// `O`: console output; the target keeps running.
    Output(Vec<u8>),
}

/// The contents of an `S` or `T` stop reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignalStop {
    /// gdb's signal number ([`SIGINT`], [`SIGTRAP`], ...).
    pub signal: u8,
    pub thread: Option<ThreadId>,
    pub core: Option<u64>,
    pub break_kind: Option<BreakKind>,
    /// `n:r` pairs: register number and its raw bytes, in target order.
    pub registers: Vec<(u64, Vec<u8>)>,
}

/// The breakpoint or watchpoint a thread stopped at, when the stub says (`swbreak`, `hwbreak`,
/// `watch`...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakKind {
    SoftwareBreakpoint,
    HardwareBreakpoint,
    Watchpoint { kind: WatchKind, addr: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    Write,
    Read,
    Access,
}

/// A stop reply that could not be parsed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StopError {
    #[error("empty stop reply")]
    Empty,
    #[error("stop reply {kind:?} is not supported by this client")]
    Unsupported { kind: char },
    #[error("bad signal number in stop reply: {0}")]
    Signal(HexError),
    #[error("bad field {field:?} in stop reply: {source}")]
    Field { field: String, source: HexError },
}

impl StopReply {
    /// Parses a stop reply payload (after framing and run-length expansion).
    pub fn parse(payload: &[u8]) -> Result<Self, StopError> {
        let (&kind, rest) = payload.split_first().ok_or(StopError::Empty)?;
        match kind {
            b'S' => Ok(Self::Signal(SignalStop {
                signal: parse_signal(rest)?,
                ..SignalStop::default()
            })),
            b'T' => parse_t(rest).map(Self::Signal),
            b'W' | b'X' => {
                let (code, pid) = parse_exit(rest)?;
                Ok(if kind == b'W' {
                    Self::Exited { status: code, pid }
                } else {
                    Self::Terminated { signal: code, pid }
                })
            }
            b'O' => hex_decode(rest)
                .map(Self::Output)
                .map_err(|source| StopError::Field {
                    field: "O".into(),
                    source,
                }),
            _ => Err(StopError::Unsupported {
                kind: char::from(kind),
            }),
        }
    }

    /// True if `payload` looks like a stop reply rather than the reply to a command.
    pub fn is_stop_reply(payload: &[u8]) -> bool {
        match payload {
            [b'S' | b'T' | b'W' | b'X', a, b, ..] => a.is_ascii_hexdigit() && b.is_ascii_hexdigit(),
            // `OK` is a command reply; `O` console output is hex.
            [b'O', rest @ ..] => !rest.is_empty() && rest.iter().all(u8::is_ascii_hexdigit),
            _ => false,
        }
    }
}

fn parse_signal(s: &[u8]) -> Result<u8, StopError> {
    if s.len() != 2 {
        return Err(StopError::Signal(HexError::OddLength));
    }
    let v = parse_hex_u64(s).map_err(StopError::Signal)?;
    Ok(v as u8)
}

fn field_err(field: &[u8]) -> impl FnOnce(HexError) -> StopError + '_ {
    move |source| StopError::Field {
        field: String::from_utf8_lossy(field).into_owned(),
        source,
    }
}

fn parse_t(s: &[u8]) -> Result<SignalStop, StopError> {
    if s.len() < 2 {
        return Err(StopError::Signal(HexError::OddLength));
    }
    let mut stop = SignalStop {
        signal: parse_signal(&s[..2])?,
        ..SignalStop::default()
    };
    for pair in s[2..].split(|&b| b == b';').filter(|p| !p.is_empty()) {
        let colon = pair.iter().position(|&b| b == b':');
        let (key, value) = match colon {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        match key {
            b"thread" => stop.thread = Some(ThreadId::parse(value).map_err(field_err(key))?),
            b"core" => stop.core = Some(parse_hex_u64(value).map_err(field_err(key))?),
            b"swbreak" => stop.break_kind = Some(BreakKind::SoftwareBreakpoint),
            b"hwbreak" => stop.break_kind = Some(BreakKind::HardwareBreakpoint),
            b"watch" | b"rwatch" | b"awatch" => {
                let kind = match key {
                    b"watch" => WatchKind::Write,
                    b"rwatch" => WatchKind::Read,
                    _ => WatchKind::Access,
                };
                let addr = parse_hex_u64(value).map_err(field_err(key))?;
                stop.break_kind = Some(BreakKind::Watchpoint { kind, addr });
            }
            _ if !key.is_empty() && key.iter().all(u8::is_ascii_hexdigit) => {
                let n = parse_hex_u64(key).map_err(field_err(key))?;
                let v = hex_decode(value).map_err(field_err(key))?;
                stop.registers.push((n, v));
            }
            // The protocol says to ignore reasons we do not know.
            _ => {}
        }
    }
    Ok(stop)
}

fn parse_exit(s: &[u8]) -> Result<(u8, Option<u64>), StopError> {
    let (code, rest) = match s.iter().position(|&b| b == b';') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let code = parse_hex_u64(code).map_err(StopError::Signal)? as u8;
    let pid = match rest.and_then(|r| r.strip_prefix(b"process:")) {
        Some(p) => Some(parse_hex_u64(p).map_err(field_err(b"process"))?),
        None => None,
    };
    Ok((code, pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_interrupt_and_breakpoint() {
        let s = StopReply::parse(b"T02thread:p01.02;").unwrap();
        let StopReply::Signal(s) = s else { panic!() };
        assert_eq!(s.signal, SIGINT);
        assert_eq!(s.thread.unwrap().to_string(), "p1.2");
        let StopReply::Signal(s) = StopReply::parse(b"T05thread:p01.04;").unwrap() else {
            panic!()
        };
        assert_eq!(s.signal, SIGTRAP);
        assert_eq!(s.thread.unwrap().cpu_index(), Some(3));
    }

    #[test]
    fn full_t_packet() {
        let StopReply::Signal(s) =
            StopReply::parse(b"T05swbreak:;thread:p1.3;core:2;20:1400008000000000;library:;")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(s.break_kind, Some(BreakKind::SoftwareBreakpoint));
        assert_eq!(s.core, Some(2));
        assert_eq!(
            s.registers,
            vec![(0x20, vec![0x14, 0, 0, 0x80, 0, 0, 0, 0])]
        );
        let StopReply::Signal(s) = StopReply::parse(b"T05watch:80001000;").unwrap() else {
            panic!()
        };
        assert_eq!(
            s.break_kind,
            Some(BreakKind::Watchpoint {
                kind: WatchKind::Write,
                addr: 0x8000_1000
            })
        );
    }

    #[test]
    fn exits_and_output() {
        assert_eq!(
            StopReply::parse(b"W00").unwrap(),
            StopReply::Exited {
                status: 0,
                pid: None
            }
        );
        assert_eq!(
            StopReply::parse(b"X09;process:1").unwrap(),
            StopReply::Terminated {
                signal: 9,
                pid: Some(1)
            }
        );
        assert_eq!(
            StopReply::parse(b"O68690a").unwrap(),
            StopReply::Output(b"hi\n".to_vec())
        );
        assert!(StopReply::is_stop_reply(b"O68690a"));
        assert!(!StopReply::is_stop_reply(b"OK"));
        assert!(!StopReply::is_stop_reply(b"E22"));
        assert!(StopReply::is_stop_reply(b"S05"));
    }

    #[test]
    fn malformed() {
        assert_eq!(StopReply::parse(b""), Err(StopError::Empty));
        assert!(StopReply::parse(b"T").is_err());
        assert!(StopReply::parse(b"Tzz").is_err());
        assert!(StopReply::parse(b"T05thread:;").is_err());
        assert!(StopReply::parse(b"T0520:123;").is_err());
        assert!(StopReply::parse(b"N").is_err());
        assert!(StopReply::parse(b"S5").is_err());
    }
}
