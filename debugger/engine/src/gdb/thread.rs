//! Thread ids. QEMU's stub shows each hart (vCPU) as a thread: `p01.01` is process 1 (the CPU
//! cluster), thread 1 (CPU index 0).

use std::fmt;

use super::hex::{parse_hex_u64, HexError};

/// A concrete thread, as the stub names it. With the multiprocess extension the stub names
/// threads `p<pid>.<tid>`; without it, `<tid>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId {
    pub pid: Option<u64>,
    pub tid: u64,
}

impl ThreadId {
    /// Parses `p1.2`, `p01.02` or `2` (all hex). The special ids `-1` (all) and `0` (any) are
    /// rejected: a stop reply or thread list always names a real thread.
    pub fn parse(s: &[u8]) -> Result<Self, HexError> {
        let (pid, tid) = match s.strip_prefix(b"p") {
            Some(rest) => {
                let dot = rest
                    .iter()
                    .position(|&b| b == b'.')
                    .ok_or(HexError::Empty)?;
                (Some(parse_id(&rest[..dot])?), parse_id(&rest[dot + 1..])?)
            }
            None => (None, parse_id(s)?),
        };
        Ok(Self { pid, tid })
    }

    /// QEMU's CPU index of this thread (thread ids start at 1). On the `virt` machine it is
    /// also the hart id.
    pub fn cpu_index(&self) -> Option<u32> {
        self.tid.checked_sub(1).and_then(|i| u32::try_from(i).ok())
    }
}

fn parse_id(s: &[u8]) -> Result<u64, HexError> {
    match parse_hex_u64(s)? {
        0 => Err(HexError::Digit('0')),
        v => Ok(v),
    }
}

/// Formats the id the way the stub expects it back (`p1.2`, or `2`).
impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "p{pid:x}.{:x}", self.tid),
            None => write!(f, "{:x}", self.tid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_ids() {
        let t = ThreadId::parse(b"p01.0a").unwrap();
        assert_eq!(
            t,
            ThreadId {
                pid: Some(1),
                tid: 10
            }
        );
        assert_eq!(t.to_string(), "p1.a");
        assert_eq!(t.cpu_index(), Some(9));
        assert_eq!(ThreadId::parse(b"3").unwrap().to_string(), "3");
        assert!(ThreadId::parse(b"p1").is_err());
        assert!(ThreadId::parse(b"-1").is_err());
        assert!(ThreadId::parse(b"0").is_err());
        assert!(ThreadId::parse(b"p1.").is_err());
        assert!(ThreadId::parse(b"").is_err());
    }
}
