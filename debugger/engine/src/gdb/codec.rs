//! Packet framing of the gdb Remote Serial Protocol, with no I/O.
//!
//! On the wire a packet is `$payload#cc`, where `cc` is the sum of the payload bytes modulo 256
//! in two hex digits; notifications use `%` instead of `$`. Outside packets, `+` and `-`
//! acknowledge a packet and 0x03 interrupts the target. Within a payload, `X*n` repeats `X`
//! `n - 29` more times (run-length encoding, covered by the checksum as sent), and binary data
//! escapes `$`, `#`, `}` and `*` as `}` followed by the byte XOR 0x20.
//!
//! As in gdb, [`Decoder`] expands run lengths while framing but leaves `}` escapes alone: only
//! binary replies (`qXfer`, `x`) are escaped, and their callers apply [`unescape`].

use thiserror::Error;

use super::hex::{hex_byte, hex_pair, HexError};

/// Largest payload the decoder accepts, after run-length expansion. QEMU's replies are at most
/// 4 KiB; anything far beyond that is a broken or hostile peer, not a bigger reply.
pub const MAX_PACKET: usize = 64 * 1024;

/// The interrupt byte: sent outside a packet, it stops a running target.
pub const INTERRUPT: u8 = 0x03;

/// Why some bytes from the peer were not a valid packet.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("packet checksum mismatch: the payload sums to {computed:02x} but the packet says {received:02x}; the link corrupted it (the stub is asked to resend)")]
    Checksum { computed: u8, received: u8 },
    #[error(
        "packet checksum {0:?} is not two hex digits: the peer does not speak the gdb protocol"
    )]
    ChecksumDigits([u8; 2]),
    #[error(
        "packet longer than {max} bytes: the peer does not speak the gdb protocol or is broken"
    )]
    TooLong { max: usize },
    #[error("invalid run-length encoding ({0}): the peer does not speak the gdb protocol")]
    RunLength(&'static str),
}

/// One unit of the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RspFrame {
    /// `+`: the last packet arrived intact.
    Ack,
    /// `-`: the last packet arrived damaged; resend it.
    Nack,
    /// 0x03 outside a packet.
    Interrupt,
    /// `$...#cc` with a valid checksum; the payload is run-length expanded, escapes kept.
    Packet(Vec<u8>),
    /// `%...#cc` with a valid checksum.
    Notification(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Payload,
    /// After `*`: the next byte is a repeat count.
    RunLength,
    Checksum1,
    Checksum2(u8),
}

/// Incremental decoder: feed it bytes in chunks of any size, get frames as they complete.
///
/// Memory stays bounded by the maximum payload size whatever the input; garbage between packets
/// is skipped, and a `$` inside a packet restarts framing at that `$` (as gdb does), so the
/// decoder resynchronises after any corruption.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    notification: bool,
    payload: Vec<u8>,
    sum: u8,
    max: usize,
    /// Set once the current packet overflowed: its bytes are dropped until its end.
    overflowed: bool,
    skipped: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(MAX_PACKET)
    }
}

impl Decoder {
    /// A decoder accepting payloads of at most `max` bytes after run-length expansion.
    pub fn new(max: usize) -> Self {
        Self {
            state: State::Idle,
            notification: false,
            payload: Vec::new(),
            sum: 0,
            max,
            overflowed: false,
            skipped: 0,
        }
    }

    /// Bytes skipped so far: garbage outside packets and packets abandoned at a new `$`.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// True while a packet has started but not ended.
    pub fn in_packet(&self) -> bool {
        self.state != State::Idle
    }

    /// Payload bytes currently buffered (never more than the maximum).
    pub fn buffered(&self) -> usize {
        self.payload.len()
    }

    /// Feeds one byte; returns a frame or an error when this byte completes one.
    pub fn push(&mut self, b: u8) -> Option<Result<RspFrame, CodecError>> {
        match self.state {
            State::Idle => match b {
                b'$' | b'%' => {
                    self.start(b == b'%');
                    None
                }
                b'+' => Some(Ok(RspFrame::Ack)),
                b'-' => Some(Ok(RspFrame::Nack)),
                INTERRUPT => Some(Ok(RspFrame::Interrupt)),
                _ => {
                    self.skipped += 1;
                    None
                }
            },
            State::Payload => {
                match b {
                    b'#' => self.state = State::Checksum1,
                    // Only `$` restarts: `%` is ordinary inside a packet.
                    b'$' => {
                        self.skipped += self.payload.len() as u64 + 1;
                        self.start(false);
                    }
                    b'*' => {
                        self.sum = self.sum.wrapping_add(b);
                        self.state = State::RunLength;
                    }
                    _ => {
                        self.sum = self.sum.wrapping_add(b);
                        self.append(b, 1);
                    }
                }
                None
            }
            State::RunLength => match b {
                b'$' => {
                    self.skipped += self.payload.len() as u64 + 2;
                    self.start(false);
                    None
                }
                // Encoders never emit these as counts; gdb's own limits are 3..=97 repeats.
                b'#' | 0..=31 | 127.. => self.fail(CodecError::RunLength("bad repeat count")),
                _ => {
                    self.sum = self.sum.wrapping_add(b);
                    self.state = State::Payload;
                    if self.overflowed {
                        return None;
                    }
                    match self.payload.last() {
                        Some(&prev) => {
                            self.append(prev, usize::from(b - 29));
                            None
                        }
                        None => self.fail(CodecError::RunLength("`*` with nothing before it")),
                    }
                }
            },
            State::Checksum1 => {
                self.state = State::Checksum2(b);
                None
            }
            State::Checksum2(hi) => {
                self.state = State::Idle;
                let digits = [hi, b];
                let Some(received) = hex_byte(hi, b) else {
                    return self.fail(CodecError::ChecksumDigits(digits));
                };
                if self.overflowed {
                    return self.fail(CodecError::TooLong { max: self.max });
                }
                if received != self.sum {
                    return self.fail(CodecError::Checksum {
                        computed: self.sum,
                        received,
                    });
                }
                let payload = std::mem::take(&mut self.payload);
                Some(Ok(if self.notification {
                    RspFrame::Notification(payload)
                } else {
                    RspFrame::Packet(payload)
                }))
            }
        }
    }

    /// Feeds a chunk, handing each frame it completes to `out`. The same as pushing byte by
    /// byte, but copies runs of plain payload bytes at once.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut impl FnMut(Result<RspFrame, CodecError>)) {
        while let Some(&first) = bytes.first() {
            if self.state == State::Payload && !self.overflowed {
                let run = bytes
                    .iter()
                    .position(|&b| matches!(b, b'#' | b'$' | b'*'))
                    .unwrap_or(bytes.len());
                if run > 0 && self.payload.len() + run <= self.max {
                    let (plain, rest) = bytes.split_at(run);
                    self.sum = plain.iter().fold(self.sum, |s, &b| s.wrapping_add(b));
                    self.payload.extend_from_slice(plain);
                    bytes = rest;
                    continue;
                }
            }
            if let Some(f) = self.push(first) {
                out(f);
            }
            bytes = &bytes[1..];
        }
    }

    /// Feeds a chunk and collects every frame it completes.
    pub fn decode(&mut self, bytes: &[u8]) -> Vec<Result<RspFrame, CodecError>> {
        let mut frames = Vec::new();
        self.feed(bytes, &mut |f| frames.push(f));
        frames
    }

    fn start(&mut self, notification: bool) {
        self.state = State::Payload;
        self.notification = notification;
        self.payload.clear();
        self.sum = 0;
        self.overflowed = false;
    }

    fn append(&mut self, b: u8, count: usize) {
        if self.overflowed {
            return;
        }
        if self.payload.len() + count > self.max {
            // Keep framing so the stream resynchronises at the packet's end, but hold nothing.
            self.overflowed = true;
            self.payload = Vec::new();
            return;
        }
        self.payload.extend(std::iter::repeat_n(b, count));
    }

    fn fail(&mut self, e: CodecError) -> Option<Result<RspFrame, CodecError>> {
        self.state = State::Idle;
        self.payload.clear();
        self.overflowed = false;
        Some(Err(e))
    }
}

/// The protocol checksum: the byte sum modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// True for the bytes a payload cannot carry as they are.
fn needs_escape(b: u8) -> bool {
    matches!(b, b'$' | b'#' | b'}' | b'*')
}

/// Frames `payload` as `$...#cc`, escaping the bytes that would break framing.
pub fn encode_packet(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(b'$');
    for &b in payload {
        if needs_escape(b) {
            out.push(b'}');
            out.push(b ^ 0x20);
        } else {
            out.push(b);
        }
    }
    let sum = checksum(&out[1..]);
    out.push(b'#');
    out.extend_from_slice(&hex_pair(sum));
    out
}

/// Undoes `}` escapes of binary data.
pub fn unescape(bytes: &[u8]) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut it = bytes.iter();
    while let Some(&b) = it.next() {
        if b == b'}' {
            let &next = it.next().ok_or(HexError::Escape)?;
            out.push(next ^ 0x20);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packets(frames: Vec<Result<RspFrame, CodecError>>) -> Vec<Vec<u8>> {
        frames
            .into_iter()
            .filter_map(|f| match f {
                Ok(RspFrame::Packet(p)) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// gdbserver's run-length encoder (remote-utils.c), to test decoding against.
    fn rle_encode(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < payload.len() {
            let b = payload[i];
            out.push(b);
            let mut run = 1;
            while i + run < payload.len() && payload[i + run] == b && run < 98 {
                run += 1;
            }
            // Repeats of 3..=97 fit; counts 6 and 7 would encode as `#` and `$`.
            let mut extra = run - 1;
            if extra >= 3 {
                while extra + 29 == usize::from(b'#') || extra + 29 == usize::from(b'$') {
                    extra -= 1;
                }
                out.push(b'*');
                out.push((extra + 29) as u8);
                i += extra + 1;
            } else {
                i += 1;
            }
        }
        out
    }

    fn frame_raw(raw: &[u8]) -> Vec<u8> {
        let mut v = vec![b'$'];
        v.extend_from_slice(raw);
        v.push(b'#');
        v.extend_from_slice(&hex_pair(checksum(raw)));
        v
    }

    #[test]
    fn decodes_a_qemu_reply_with_its_ack() {
        let mut d = Decoder::default();
        let frames = d.decode(b"+$T05thread:p01.03;#ab");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Ok(RspFrame::Ack));
        // The checksum above is wrong on purpose: compute the right one and retry.
        assert!(matches!(frames[1], Err(CodecError::Checksum { .. })));
        let good = frame_raw(b"T05thread:p01.03;");
        assert_eq!(
            d.decode(&good),
            vec![Ok(RspFrame::Packet(b"T05thread:p01.03;".to_vec()))]
        );
    }

    #[test]
    fn expands_run_lengths() {
        // From the protocol manual: "0* " is "0000"; `"` (34) repeats 5 more times.
        let mut d = Decoder::default();
        assert_eq!(
            packets(d.decode(&frame_raw(b"0* "))),
            vec![b"0000".to_vec()]
        );
        assert_eq!(
            packets(d.decode(&frame_raw(b"a*\"b"))),
            vec![b"aaaaaab".to_vec()]
        );
    }

    #[test]
    fn rejects_run_length_without_a_byte_before() {
        let mut d = Decoder::default();
        let f = d.decode(&frame_raw(b"* "));
        assert!(matches!(f[..], [Err(CodecError::RunLength(_))]));
        // The decoder recovers for the next packet.
        assert_eq!(packets(d.decode(&frame_raw(b"OK"))), vec![b"OK".to_vec()]);
    }

    #[test]
    fn percent_inside_a_packet_is_plain() {
        // Found by proptest: `%` starts a notification only between packets.
        let mut d = Decoder::default();
        assert_eq!(packets(d.decode(&encode_packet(b"%"))), vec![b"%".to_vec()]);
        assert_eq!(
            packets(d.decode(&frame_raw(b"50%*!"))),
            vec![b"50%%%%%".to_vec()]
        );
    }

    #[test]
    fn restarts_at_a_dollar_inside_a_packet() {
        let mut d = Decoder::default();
        let mut bytes = b"$garbage without end".to_vec();
        bytes.extend(frame_raw(b"OK"));
        assert_eq!(packets(d.decode(&bytes)), vec![b"OK".to_vec()]);
        assert!(d.skipped() > 0);
    }

    #[test]
    fn too_long_is_an_error_and_holds_no_memory() {
        let mut d = Decoder::new(16);
        let big = frame_raw(&[b'a'; 100]);
        let f = d.decode(&big);
        assert_eq!(f, vec![Err(CodecError::TooLong { max: 16 })]);
        assert_eq!(d.buffered(), 0);
        // Run-length bombs are caught before expanding.
        let bomb = frame_raw(b"a*~");
        assert_eq!(d.decode(&bomb), vec![Err(CodecError::TooLong { max: 16 })]);
        assert_eq!(packets(d.decode(&frame_raw(b"OK"))), vec![b"OK".to_vec()]);
    }

    #[test]
    fn bad_checksum_digits() {
        let mut d = Decoder::default();
        assert_eq!(
            d.decode(b"$OK#zz"),
            vec![Err(CodecError::ChecksumDigits(*b"zz"))]
        );
    }

    #[test]
    fn acks_interrupts_and_notifications() {
        let mut d = Decoder::default();
        let mut bytes = b"+-\x03xyz".to_vec();
        let mut n = frame_raw(b"Stop:T05");
        n[0] = b'%';
        bytes.extend(n);
        assert_eq!(
            d.decode(&bytes),
            vec![
                Ok(RspFrame::Ack),
                Ok(RspFrame::Nack),
                Ok(RspFrame::Interrupt),
                Ok(RspFrame::Notification(b"Stop:T05".to_vec()))
            ]
        );
        assert_eq!(d.skipped(), 3);
    }

    #[test]
    fn encode_escapes_framing_bytes() {
        assert_eq!(encode_packet(b"OK"), b"$OK#9a".to_vec());
        assert_eq!(
            encode_packet(b"a$b"),
            b"$a}\x04b#"
                .iter()
                .copied()
                .chain(hex_pair(checksum(b"a}\x04b")))
                .collect::<Vec<_>>()
        );
        assert_eq!(unescape(b"a}\x04b}]").unwrap(), b"a$b}".to_vec());
        assert_eq!(unescape(b"ab}"), Err(HexError::Escape));
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let wire = encode_packet(&payload);
            // Framing never leaks: no unescaped `$` or `#` inside.
            prop_assert!(!wire[1..wire.len() - 3].iter().any(|&b| b == b'$' || b == b'#'));
            let mut d = Decoder::default();
            let got = packets(d.decode(&wire));
            prop_assert_eq!(got.len(), 1);
            // `*` is escaped, so the frame layer leaves the payload as sent.
            prop_assert_eq!(unescape(&got[0]).unwrap(), payload);
        }

        #[test]
        fn run_length_round_trips(
            runs in proptest::collection::vec((b' '..=b'~', 1usize..200), 0..20)
        ) {
            let payload: Vec<u8> = runs
                .iter()
                .filter(|(b, _)| !needs_escape(*b))
                .flat_map(|&(b, n)| std::iter::repeat_n(b, n))
                .collect();
            let raw = rle_encode(&payload);
            let mut d = Decoder::default();
            prop_assert_eq!(packets(d.decode(&frame_raw(&raw))), vec![payload]);
        }

        #[test]
        fn any_chunking_gives_the_same_frames(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
            garbage in proptest::collection::vec(
                any::<u8>().prop_filter("not a frame start", |b| !matches!(*b, b'$' | b'%' | b'+' | b'-' | INTERRUPT)),
                0..20),
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                stream.extend_from_slice(&garbage);
                stream.push(b'+');
                stream.extend(encode_packet(p));
            }
            let mut whole = Decoder::default();
            let expected = whole.decode(&stream);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for w in points.windows(2) {
                got.extend(d.decode(&stream[w[0]..w[1]]));
            }
            prop_assert_eq!(&got, &expected);
            let decoded: Vec<Vec<u8>> = packets(got).iter().map(|p| unescape(p).unwrap()).collect();
            prop_assert_eq!(&decoded, &payloads);
            prop_assert_eq!(d.skipped(), (garbage.len() * payloads.len()) as u64);
        }

        #[test]
        fn corruption_is_detected(payload in proptest::collection::vec(b' '..=b'~', 1..200), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let mut wire = encode_packet(&payload);
            let i = 1 + at.index(wire.len() - 4);
            wire[i] ^= flip;
            let mut d = Decoder::default();
            let frames = d.decode(&wire);
            // A flipped byte never yields the original payload.
            for f in frames {
                if let Ok(RspFrame::Packet(p)) = f {
                    prop_assert_ne!(unescape(&p).ok(), Some(payload.clone()));
                }
            }
        }

        #[test]
        fn bulk_feed_equals_byte_by_byte(
            // Framing bytes made common, so packets, runs and restarts all occur.
            bytes in proptest::collection::vec(any::<u8>(), 0..2000).prop_map(|v| {
                v.into_iter()
                    .map(|b| match b % 16 {
                        0 => b'$',
                        1 => b'#',
                        2 => b'*',
                        3 => b'0',
                        _ => b,
                    })
                    .collect::<Vec<u8>>()
            }),
            max in 1usize..300,
        ) {
            let mut a = Decoder::new(max);
            let one: Vec<_> = bytes.iter().filter_map(|&b| a.push(b)).collect();
            let mut b = Decoder::new(max);
            let bulk = b.decode(&bytes);
            prop_assert_eq!(one, bulk);
            prop_assert_eq!(a.skipped(), b.skipped());
            prop_assert_eq!(a.buffered(), b.buffered());
        }

        #[test]
        fn arbitrary_bytes_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let mut d = Decoder::new(256);
            for &b in &bytes {
                let _ = d.push(b);
                prop_assert!(d.buffered() <= 256);
            }
            let mut d = Decoder::new(256);
            for part in bytes.chunks(97) {
                d.feed(part, &mut |_| {});
                prop_assert!(d.buffered() <= 256);
            }
        }
    }
}
