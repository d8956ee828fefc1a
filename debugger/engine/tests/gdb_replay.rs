//! The codec, the stop-reply parser and the client against transcripts recorded from QEMU 7.2
//! (tests/fixtures/gdb, made by `gdb_qemu::record_fixtures`). No QEMU needed.

#[path = "gdb_util.rs"]
mod util;

use std::time::Duration;

use lockscope_engine::gdb::codec::{checksum, unescape, CodecError, Decoder, RspFrame};
use lockscope_engine::gdb::stop::{StopReply, SIGINT, SIGTRAP};
use lockscope_engine::gdb::{Config, GdbClient, GdbError};
use proptest::prelude::*;
use util::*;

const TRANSCRIPTS: [&str; 2] = ["qemu72-client.rsp", "qemu72-gdb-multiarch.rsp"];

/// Every frame of one direction, failing on any codec error.
fn frames(bytes: &[u8]) -> Vec<RspFrame> {
    let mut d = Decoder::default();
    let out: Vec<RspFrame> = d
        .decode(bytes)
        .into_iter()
        .map(|f| f.expect("recorded stream decodes"))
        .collect();
    assert!(!d.in_packet(), "stream ends inside a packet");
    assert_eq!(d.skipped(), 0, "garbage in a recorded stream");
    out
}

fn packets(bytes: &[u8]) -> Vec<Vec<u8>> {
    frames(bytes)
        .into_iter()
        .filter_map(|f| match f {
            RspFrame::Packet(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// Request/reply pairs of a transcript, in order: acks aside, the protocol is lockstep, and a
/// resume's reply is the stop that ends it.
fn exchanges(t: &Transcript) -> Vec<(Vec<u8>, Vec<u8>)> {
    let requests = packets(&t.bytes(Dir::C));
    // A stop QEMU announces to a new client comes before any ack: it answers nothing.
    let replies = frames(&t.bytes(Dir::S))
        .into_iter()
        .skip_while(|f| *f != RspFrame::Ack)
        .filter_map(|f| match f {
            RspFrame::Packet(p) => Some(p),
            _ => None,
        });
    requests.into_iter().zip(replies).collect()
}

#[test]
fn recorded_streams_decode_cleanly_in_both_directions() {
    for name in TRANSCRIPTS {
        let t = load_transcript(name);
        let s = frames(&t.bytes(Dir::S));
        let c = frames(&t.bytes(Dir::C));
        let count =
            |f: &[RspFrame], want: fn(&RspFrame) -> bool| f.iter().filter(|x| want(x)).count();
        let (s_packets, c_packets) = (
            count(&s, |f| matches!(f, RspFrame::Packet(_))),
            count(&c, |f| matches!(f, RspFrame::Packet(_))),
        );
        assert!(s_packets > 50, "{name}: {s_packets} packets");
        // Acks on: each side acknowledges each packet of the other (gdb also opens with one).
        let opening = usize::from(t.chunks[0].1.starts_with(b"+"));
        assert_eq!(
            count(&c, |f| *f == RspFrame::Ack),
            s_packets + opening,
            "{name}"
        );
        assert_eq!(count(&s, |f| *f == RspFrame::Ack), c_packets, "{name}");
        assert_eq!(count(&s, |f| *f == RspFrame::Nack), 0);
    }
}

#[test]
fn recorded_replies_have_qemu_shapes() {
    let mut stops = 0;
    let mut interrupts = 0;
    for name in TRANSCRIPTS {
        let t = load_transcript(name);
        for (q, reply) in exchanges(&t) {
            let q = String::from_utf8_lossy(&q).into_owned();
            if q.starts_with('m') && reply.first() != Some(&b'E') {
                // At most 2048 bytes per `m`, in hex.
                assert!(reply.len() <= 4096 && reply.len() % 2 == 0, "{q}");
            }
            if q == "g" {
                assert_eq!(reply.len(), 33 * 16, "g is x0-x31 and pc");
            }
            if q.starts_with('p') && !reply.is_empty() {
                assert_eq!(reply.len(), 16, "{q}");
            }
        }
        for p in packets(&t.bytes(Dir::S)) {
            if !StopReply::is_stop_reply(&p) {
                continue;
            }
            match StopReply::parse(&p).unwrap() {
                StopReply::Signal(s) => {
                    assert!(s.thread.is_some(), "QEMU names the thread");
                    assert!(matches!(s.signal, SIGINT | SIGTRAP));
                    stops += 1;
                    interrupts += usize::from(s.signal == SIGINT);
                }
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
    assert!(
        stops >= 8 && interrupts >= 2,
        "{stops} stops, {interrupts} interrupts"
    );
}

#[test]
fn target_description_fixtures_are_what_qemu_sent() {
    let t = load_transcript("qemu72-client.rsp");
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for (q, reply) in exchanges(&t) {
        let q = String::from_utf8(q).unwrap();
        if let Some(rest) = q.strip_prefix("qXfer:features:read:") {
            let annex = rest.split(':').next().unwrap().to_string();
            files
                .entry(annex)
                .or_default()
                .extend(unescape(&reply[1..]).unwrap());
        }
    }
    assert_eq!(files.len(), 5);
    for (annex, data) in files {
        let fixture = std::fs::read(fixtures().join(&annex)).unwrap();
        assert_eq!(fixture, data, "{annex}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn recorded_stream_decodes_the_same_in_any_chunks(
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 1..64)
    ) {
        let s = load_transcript("qemu72-gdb-multiarch.rsp").bytes(Dir::S);
        let expected = frames(&s);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(s.len() + 1)).collect();
        points.extend([0, s.len()]);
        points.sort_unstable();
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for w in points.windows(2) {
            got.extend(d.decode(&s[w[0]..w[1]]).into_iter().map(Result::unwrap));
        }
        prop_assert_eq!(got, expected);
    }
}

fn expected_log() -> Vec<String> {
    std::fs::read_to_string(fixtures().join("qemu72-client.expected"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn client_replays_the_recorded_session_byte_for_byte() {
    let (addr, stub) = scripted_stub(load_transcript("qemu72-client.rsp"));
    let log = client_session(&addr.to_string());
    stub.join().unwrap().unwrap();
    assert_eq!(log, expected_log());
}

/// The first `s` chunk holding a packet, split into ack and packet.
fn first_reply(t: &Transcript) -> (usize, Vec<u8>) {
    let i = t
        .chunks
        .iter()
        .position(|(d, b)| *d == Dir::S && b.contains(&b'$'))
        .unwrap();
    let b = &t.chunks[i].1;
    assert_eq!(b[0], b'+');
    (i, b[1..].to_vec())
}

#[test]
fn a_damaged_reply_is_asked_for_again() {
    let mut t = load_transcript("qemu72-client.rsp");
    let (i, packet) = first_reply(&t);
    let mut damaged = packet.clone();
    damaged[3] ^= 0x01;
    // Stub: ack, damaged reply; client: `-`; stub: the reply again.
    t.chunks[i].1 = [b"+".as_slice(), &damaged].concat();
    t.chunks.insert(i + 1, (Dir::C, b"-".to_vec()));
    t.chunks.insert(i + 2, (Dir::S, packet));
    let (addr, stub) = scripted_stub(t);
    let log = client_session(&addr.to_string());
    stub.join().unwrap().unwrap();
    assert_eq!(log, expected_log());
}

#[test]
fn a_packet_the_stub_rejects_is_sent_again() {
    let mut t = load_transcript("qemu72-client.rsp");
    let (i, _) = first_reply(&t);
    let request = t.chunks[i - 1].1.clone();
    // Stub: `-`; client: the same packet again; then as recorded.
    t.chunks.insert(i, (Dir::S, b"-".to_vec()));
    t.chunks.insert(i + 1, (Dir::C, request));
    let (addr, stub) = scripted_stub(t);
    let log = client_session(&addr.to_string());
    stub.join().unwrap().unwrap();
    assert_eq!(log, expected_log());
}

#[test]
fn garbage_and_run_lengths_from_the_stub_are_handled() {
    let mut t = load_transcript("qemu72-client.rsp");
    // Re-encode one all-zero `m` reply with run lengths, as gdbserver would send it, and
    // put line noise before it.
    let i = t
        .chunks
        .iter()
        .position(|(d, b)| *d == Dir::S && b.starts_with(b"+$0000000000000000000000000000"))
        .expect("a zero-filled reply");
    let payload_end = t.chunks[i].1.iter().position(|&b| b == b'#').unwrap();
    let payload = t.chunks[i].1[2..payload_end].to_vec();
    assert!(payload.iter().all(|&b| b == b'0'));
    let mut rle = Vec::new();
    let mut left = payload.len();
    while left > 0 {
        // `0*~` is 1 + 97 zeros.
        let n = left.min(98);
        // The count byte is 29 + repeats; `#` and `$` cannot be used.
        let count = n - 1 + 29;
        if n >= 4 && count != usize::from(b'#') && count != usize::from(b'$') {
            rle.extend_from_slice(&[b'0', b'*', count as u8]);
        } else {
            rle.extend(std::iter::repeat_n(b'0', n));
        }
        left -= n;
    }
    let mut chunk = b"+\r\n\x7fnoise".to_vec();
    chunk.push(b'$');
    chunk.extend_from_slice(&rle);
    chunk.push(b'#');
    chunk.extend_from_slice(format!("{:02x}", checksum(&rle)).as_bytes());
    t.chunks[i].1 = chunk;
    let (addr, stub) = scripted_stub(t);
    let log = client_session(&addr.to_string());
    stub.join().unwrap().unwrap();
    assert_eq!(log, expected_log());
}

fn quick() -> Config {
    Config {
        connect_timeout: Duration::from_millis(300),
        reply_timeout: Duration::from_millis(300),
        ..Config::default()
    }
}

/// The transcript up to the end of the handshake (the `?` replies), so a client connects.
fn handshake_only() -> Transcript {
    let t = load_transcript("qemu72-client.rsp");
    let last_q = t
        .chunks
        .iter()
        .rposition(|(d, b)| *d == Dir::C && b.ends_with(b"$?#3f"))
        .unwrap();
    Transcript {
        // The `?` request, its reply, and the client's ack of it.
        chunks: t.chunks[..last_q + 2].to_vec(),
    }
}

#[test]
fn a_stub_that_closes_mid_session_is_reported() {
    let mut t = handshake_only();
    // The stub acknowledges a read, then closes before replying.
    t.chunks.push((Dir::C, b"+".to_vec()));
    t.chunks.push((Dir::C, b"$m80000000,8#59".to_vec()));
    t.chunks.push((Dir::S, b"+$00".to_vec()));
    let (addr, stub) = scripted_stub(t);
    let mut c = GdbClient::connect(&addr.to_string(), quick()).unwrap();
    let e = c.read_memory(0x8000_0000, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::Disconnected { .. }), "{e}");
    assert!(e.to_string().contains("QEMU exited or was killed"), "{e}");
    let e = c.read_memory(0x8000_0000, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::Unusable { .. }), "{e}");
    drop(c);
    stub.join().unwrap().unwrap();
}

#[test]
fn a_silent_stub_times_out_and_the_connection_is_retired() {
    let mut t = handshake_only();
    t.chunks.push((Dir::C, b"+".to_vec()));
    t.chunks.push((Dir::C, b"$m80000000,8#59".to_vec()));
    t.chunks.push((Dir::S, b"+".to_vec()));
    let (addr, stub) = scripted_stub_with(t, false);
    let mut c = GdbClient::connect(&addr.to_string(), quick()).unwrap();
    let started = std::time::Instant::now();
    let e = c.read_memory(0x8000_0000, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::Timeout { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A late reply would be taken for the next command's: the client refuses to go on.
    let e = c.read_memory(0x8000_0000, &mut [0u8; 8]).unwrap_err();
    assert!(matches!(e, GdbError::Unusable { .. }), "{e}");
    drop(c);
    stub.join().unwrap().unwrap();
}

#[test]
fn an_oversized_packet_is_an_error_not_an_allocation() {
    let mut t = handshake_only();
    t.chunks.push((Dir::C, b"+".to_vec()));
    t.chunks.push((Dir::C, b"$m80000000,8#59".to_vec()));
    // 1 MiB of hex claiming to be a reply, with no end in sight for a while.
    let mut huge = b"+$".to_vec();
    huge.extend(std::iter::repeat_n(b'0', 1 << 20));
    huge.extend_from_slice(b"#00");
    t.chunks.push((Dir::S, huge));
    let (addr, stub) = scripted_stub(t);
    let mut c = GdbClient::connect(&addr.to_string(), quick()).unwrap();
    let e = c.read_memory(0x8000_0000, &mut [0u8; 8]).unwrap_err();
    assert!(
        matches!(e, GdbError::Codec(CodecError::TooLong { .. })),
        "{e}"
    );
    drop(c);
    let _ = stub.join();
}

#[test]
fn the_scripted_stub_catches_a_client_that_diverges() {
    // Skipping the stale-breakpoint cleanup changes what the client sends at connect.
    let (addr, stub) = scripted_stub(load_transcript("qemu72-client.rsp"));
    let config = Config {
        clear_stale_breakpoints: false,
        ..quick()
    };
    let _ = GdbClient::connect(&addr.to_string(), config);
    let e = stub.join().unwrap().unwrap_err();
    assert!(e.contains("client sent"), "{e}");
}

/// `$payload#cs` for a payload.
fn packet(payload: &[u8]) -> Vec<u8> {
    let mut p = vec![b'$'];
    p.extend_from_slice(payload);
    p.push(b'#');
    p.extend_from_slice(format!("{:02x}", checksum(payload)).as_bytes());
    p
}

#[test]
fn a_stub_offering_no_ack_mode_gets_it_and_acks_stop() {
    // QEMU 7.2 has no QStartNoAckMode: the recorded session, turned into the one a stub that
    // offers it would have had. The stub offers it; the client asks; after the client's ack of
    // the `OK`, neither side sends `+` again.
    let t = load_transcript("qemu72-client.rsp");
    let mut chunks = t.chunks.clone();
    let i = chunks
        .iter()
        .position(|(d, b)| *d == Dir::S && b.windows(10).any(|w| w == b"PacketSize"))
        .expect("the qSupported reply");
    let old = &chunks[i].1;
    let start = old.iter().position(|&b| b == b'$').unwrap() + 1;
    let end = old.iter().position(|&b| b == b'#').unwrap();
    let mut payload = old[start..end].to_vec();
    payload.extend_from_slice(b";QStartNoAckMode+");
    chunks[i].1 = [b"+".as_slice(), &packet(&payload)].concat();
    chunks.insert(
        i + 1,
        (
            Dir::C,
            [b"+".as_slice(), &packet(b"QStartNoAckMode")].concat(),
        ),
    );
    chunks.insert(i + 2, (Dir::S, [b"+".as_slice(), &packet(b"OK")].concat()));
    // The next client chunk still starts with the ack of `OK`; after it, no acks at all.
    let mut out = chunks[..i + 4].to_vec();
    for (d, b) in &chunks[i + 4..] {
        let b = b.strip_prefix(b"+").unwrap_or(b).to_vec();
        if !b.is_empty() {
            out.push((*d, b));
        }
    }
    let (addr, stub) = scripted_stub(Transcript { chunks: out });
    let log = client_session(&addr.to_string());
    // The stub checked every byte: no `+` after the switch.
    stub.join().unwrap().unwrap();
    let want: Vec<String> = expected_log()
        .into_iter()
        .map(|l| l.replace("no_ack_mode: false", "no_ack_mode: true"))
        .collect();
    assert_eq!(log, want);
}
