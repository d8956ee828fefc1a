//! Arbitrary bytes from a "stub": the decoder must stay bounded and never panic, and every
//! packet it yields must survive the parsers and re-encode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockscope_engine::gdb::codec::{encode_packet, unescape, Decoder, RspFrame};
use lockscope_engine::gdb::hex::hex_decode;
use lockscope_engine::gdb::stop::StopReply;
use lockscope_engine::gdb::target_xml::{TargetDescription, TargetXmlError};
use lockscope_engine::gdb::ThreadId;

const MAX: usize = 4096;

fn check_payload(p: &[u8]) {
    assert!(p.len() <= MAX);
    let _ = StopReply::is_stop_reply(p);
    let _ = StopReply::parse(p);
    let _ = hex_decode(p);
    let _ = ThreadId::parse(p);
    if let Ok(raw) = unescape(p) {
        // Encoding escapes, decoding keeps escapes: unescaping gives the bytes back.
        let mut d = Decoder::new(2 * raw.len() + 8);
        let frames = d.decode(&encode_packet(&raw));
        match &frames[..] {
            [Ok(RspFrame::Packet(q))] => assert_eq!(unescape(q).unwrap(), raw),
            other => panic!("re-encoded packet decoded as {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(MAX);
    for &b in data {
        if let Some(Ok(RspFrame::Packet(p) | RspFrame::Notification(p))) = d.push(b) {
            check_payload(&p);
        }
        assert!(d.buffered() <= MAX);
    }
    let _ = StopReply::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let mut fetch = |_: &str| -> Result<String, TargetXmlError> { Ok(text.to_string()) };
        let _ = TargetDescription::parse(text, &mut fetch);
    }
});
