//! Hex fields of the remote protocol: register and memory contents, numbers.

use thiserror::Error;

/// A malformed hex or escaped field in a reply.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HexError {
    #[error("odd number of hex digits")]
    OddLength,
    #[error("{0:?} is not a hex digit")]
    Digit(char),
    #[error("number has more than 16 hex digits")]
    TooLong,
    #[error("empty number")]
    Empty,
    #[error("escape character `}}` at the end of the data")]
    Escape,
}

pub(super) fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

pub(super) fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(hex_digit(hi)? << 4 | hex_digit(lo)?)
}

pub(super) fn hex_pair(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

/// Lower-case hex of `bytes`, two digits a byte.
pub fn hex_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let [h, l] = hex_pair(b);
        s.push(char::from(h));
        s.push(char::from(l));
    }
    s
}

/// Decodes two hex digits a byte.
pub fn hex_decode(hex: &[u8]) -> Result<Vec<u8>, HexError> {
    if hex.len() % 2 == 1 {
        return Err(HexError::OddLength);
    }
    hex.chunks_exact(2)
        .map(|p| {
            hex_byte(p[0], p[1]).ok_or_else(|| {
                let bad = if hex_digit(p[0]).is_none() {
                    p[0]
                } else {
                    p[1]
                };
                HexError::Digit(char::from(bad))
            })
        })
        .collect()
}

/// Decodes hex into `out`, which must be exactly half as long as `hex`.
pub fn hex_decode_into(hex: &[u8], out: &mut [u8]) -> Result<(), HexError> {
    if hex.len() != out.len() * 2 {
        return Err(HexError::OddLength);
    }
    for (o, p) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = hex_byte(p[0], p[1]).ok_or_else(|| {
            let bad = if hex_digit(p[0]).is_none() {
                p[0]
            } else {
                p[1]
            };
            HexError::Digit(char::from(bad))
        })?;
    }
    Ok(())
}

/// Parses a big-endian hex number of at most 16 digits, as in addresses and thread ids.
pub fn parse_hex_u64(hex: &[u8]) -> Result<u64, HexError> {
    if hex.is_empty() {
        return Err(HexError::Empty);
    }
    if hex.len() > 16 {
        return Err(HexError::TooLong);
    }
    hex.iter().try_fold(0u64, |v, &b| {
        let d = hex_digit(b).ok_or(HexError::Digit(char::from(b)))?;
        Ok(v << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_helpers() {
        assert_eq!(hex_encode(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(hex_decode(b"00AB10").unwrap(), vec![0, 0xab, 0x10]);
        assert_eq!(hex_decode(b"0"), Err(HexError::OddLength));
        assert_eq!(hex_decode(b"0g"), Err(HexError::Digit('g')));
        assert_eq!(parse_hex_u64(b"80000014").unwrap(), 0x8000_0014);
        assert_eq!(parse_hex_u64(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert_eq!(parse_hex_u64(b"10000000000000000"), Err(HexError::TooLong));
        assert_eq!(parse_hex_u64(b""), Err(HexError::Empty));
        let mut out = [0u8; 2];
        hex_decode_into(b"beef", &mut out).unwrap();
        assert_eq!(out, [0xbe, 0xef]);
        assert!(hex_decode_into(b"bee", &mut out).is_err());
    }
}
