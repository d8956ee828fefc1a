//! What the proxy needs to know about a packet: which command it is, and the few fields it
//! rewrites or routes on. Framing itself is the engine's codec (`gdb::codec`).

use crate::gdb::codec::checksum;
use crate::gdb::stop::StopReply;
use crate::gdb::ThreadId;

/// Frames a payload exactly as given: `$payload#cc`. The codec's decoder keeps `}` escapes
/// and expands run lengths, so framing its output verbatim sends the same command or reply
/// (neither gdb nor QEMU 7.2 run-length encodes what it sends).
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(b'$');
    out.extend_from_slice(payload);
    out.push(b'#');
    out.extend_from_slice(format!("{:02x}", checksum(payload)).as_bytes());
    out
}

/// The commands the proxy treats specially; everything else is relayed as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `?`: answered by the proxy (QEMU 7.2's `?` removes the current CPU's breakpoints).
    StopQuery,
    /// `D`, `D;pid`: answered by the proxy (QEMU's would remove everyone's breakpoints).
    Detach,
    /// `QStartNoAckMode`: answered by the proxy, per connection.
    NoAck,
    /// `c`, `C`, `s`, `S`, `vCont;...`.
    Resume {
        /// Some action steps (`s`, `S`).
        step: bool,
        /// The legacy packets act on the thread `Hc` selected.
        uses_hc: bool,
    },
    /// `Hg<id>` or `Hc<id>`.
    SetThread {
        op: u8,
        id: Vec<u8>,
    },
    /// `Z<type>,<addr>,<kind>`: the key is everything after the `Z`.
    Insert {
        key: Vec<u8>,
    },
    /// `z<type>,<addr>,<kind>`.
    Remove {
        key: Vec<u8>,
    },
    /// `k` (QEMU exits without a reply) or `vKill` (it replies first).
    Kill {
        replies: bool,
    },
    /// `qRcmd` (`monitor`): `O` packets, then the final reply.
    Monitor,
    Other,
}

impl Command {
    pub fn parse(p: &[u8]) -> Self {
        match p {
            b"?" => Self::StopQuery,
            [b'D'] | [b'D', b';', ..] => Self::Detach,
            b"QStartNoAckMode" => Self::NoAck,
            [b'c' | b'C', ..] => Self::Resume {
                step: false,
                uses_hc: true,
            },
            [b's' | b'S', ..] => Self::Resume {
                step: true,
                uses_hc: true,
            },
            [b'v', b'C', b'o', b'n', b't', b';', actions @ ..] => Self::Resume {
                step: actions
                    .split(|&b| b == b';')
                    .any(|a| matches!(a.first(), Some(b's' | b'S'))),
                uses_hc: false,
            },
            [b'H', op @ (b'g' | b'c'), id @ ..] => Self::SetThread {
                op: *op,
                id: id.to_vec(),
            },
            [b'Z', b'0'..=b'4', b',', ..] => Self::Insert {
                key: p[1..].to_vec(),
            },
            [b'z', b'0'..=b'4', b',', ..] => Self::Remove {
                key: p[1..].to_vec(),
            },
            b"k" => Self::Kill { replies: false },
            [b'v', b'K', b'i', b'l', b'l', ..] => Self::Kill { replies: true },
            [b'q', b'R', b'c', b'm', b'd', b',', ..] => Self::Monitor,
            _ => Self::Other,
        }
    }
}

/// The address of a breakpoint key (`0,80000018,4`), for matching stopped pcs.
pub fn breakpoint_addr(key: &[u8]) -> Option<(u8, u64)> {
    let mut parts = key.split(|&b| b == b',');
    let kind = match parts.next()? {
        [t @ b'0'..=b'4'] => t - b'0',
        _ => return None,
    };
    let addr = crate::gdb::hex::parse_hex_u64(parts.next()?).ok()?;
    Some((kind, addr))
}

/// The raw thread id of a stop reply (`p01.03` from `T05thread:p01.03;`), as QEMU wrote it.
pub fn stop_thread(p: &[u8]) -> Option<Vec<u8>> {
    let i = find(p, b"thread:")? + b"thread:".len();
    let end = p[i..]
        .iter()
        .position(|&b| b == b';')
        .map_or(p.len(), |e| i + e);
    Some(p[i..end].to_vec())
}

/// Rewrites `thread:pPP.TT` to `thread:TT` for a client that did not ask for the multiprocess
/// extension (xv6's grader): QEMU numbers threads that way for such a client.
pub fn without_pid(p: &[u8]) -> Vec<u8> {
    let Some(start) = find(p, b"thread:p").map(|i| i + b"thread:".len()) else {
        return p.to_vec();
    };
    let Some(dot) = p[start..].iter().position(|&b| b == b'.') else {
        return p.to_vec();
    };
    let mut out = p[..start].to_vec();
    out.extend_from_slice(&p[start + dot + 1..]);
    out
}

/// The thread id QEMU gives a hart (CPU index), in its own format.
pub fn qemu_thread(hart: u32) -> Vec<u8> {
    format!("p01.{:02x}", u64::from(hart) + 1).into_bytes()
}

/// The hart a raw thread id names.
pub fn hart_of(thread: &[u8]) -> Option<u32> {
    ThreadId::parse(thread).ok()?.cpu_index()
}

/// The signal of an `S`/`T` stop reply.
pub fn stop_signal(p: &[u8]) -> Option<u8> {
    match StopReply::parse(p) {
        Ok(StopReply::Signal(s)) => Some(s.signal),
        _ => None,
    }
}

/// True for the stop replies that end a run: `S`, `T`, `W`, `X` (not `O` console output).
pub fn is_stop(p: &[u8]) -> bool {
    matches!(p.first(), Some(b'S' | b'T' | b'W' | b'X')) && StopReply::is_stop_reply(p)
}

/// `O<hex>`: console output (from `qRcmd`, or a running target).
pub fn is_output(p: &[u8]) -> bool {
    p.first() == Some(&b'O') && StopReply::is_stop_reply(p)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb::codec::{Decoder, RspFrame};

    #[test]
    fn verbatim_frames_decode_to_the_same_payload() {
        // A binary write with escapes: framing the decoder's output again keeps them.
        let wire = crate::gdb::codec::encode_packet(b"X80000000,4:a$b}");
        let mut d = Decoder::default();
        let Ok(RspFrame::Packet(p)) = d.decode(&wire).remove(0) else {
            panic!()
        };
        assert_eq!(frame(&p), wire);
        assert_eq!(frame(b"OK"), b"$OK#9a");
    }

    #[test]
    fn classifies_what_gdb_and_the_grader_send() {
        use Command::*;
        assert_eq!(Command::parse(b"?"), StopQuery);
        assert_eq!(Command::parse(b"D;1"), Detach);
        assert_eq!(Command::parse(b"D"), Detach);
        assert_eq!(
            Command::parse(b"vCont;c:p1.-1"),
            Resume {
                step: false,
                uses_hc: false
            }
        );
        assert_eq!(
            Command::parse(b"vCont;s:p1.2;c"),
            Resume {
                step: true,
                uses_hc: false
            }
        );
        assert_eq!(Command::parse(b"vCont?"), Other);
        assert_eq!(
            Command::parse(b"c"),
            Resume {
                step: false,
                uses_hc: true
            }
        );
        assert_eq!(
            Command::parse(b"Hgp1.2"),
            SetThread {
                op: b'g',
                id: b"p1.2".to_vec()
            }
        );
        assert_eq!(
            Command::parse(b"Z1,80000018,1"),
            Insert {
                key: b"1,80000018,1".to_vec()
            }
        );
        assert_eq!(
            Command::parse(b"z0,80000018,4"),
            Remove {
                key: b"0,80000018,4".to_vec()
            }
        );
        assert_eq!(Command::parse(b"qRcmd,696e666f"), Monitor);
        assert_eq!(Command::parse(b"k"), Kill { replies: false });
        assert_eq!(Command::parse(b"vKill;1"), Kill { replies: true });
        assert_eq!(Command::parse(b"m80000000,4"), Other);
        assert_eq!(breakpoint_addr(b"0,80000018,4"), Some((0, 0x8000_0018)));
        assert_eq!(breakpoint_addr(b"9,1,1"), None);
    }

    #[test]
    fn stop_reply_fields() {
        assert_eq!(stop_thread(b"T05thread:p01.03;"), Some(b"p01.03".to_vec()));
        assert_eq!(
            stop_thread(b"T05watch:10;thread:p01.02;").unwrap(),
            b"p01.02"
        );
        assert_eq!(stop_thread(b"S05"), None);
        assert_eq!(without_pid(b"T05thread:p01.03;"), b"T05thread:03;");
        assert_eq!(without_pid(b"S05"), b"S05");
        assert_eq!(qemu_thread(2), b"p01.03");
        assert_eq!(hart_of(b"p01.03"), Some(2));
        assert_eq!(stop_signal(b"T02thread:p01.01;"), Some(2));
        assert_eq!(stop_signal(b"T05thread:p01.01;"), Some(5));
        assert!(is_stop(b"W00"));
        assert!(!is_stop(b"OK"));
        assert!(!is_stop(b"E22"));
        assert!(is_output(b"O6869"));
        assert!(!is_output(b"OK"));
    }
}
