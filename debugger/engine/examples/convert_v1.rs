//! Converts version-1 traces to version-2 recordings, and checks the result replays the same
//! feeds: `cargo run --release -p lockscope-engine --example convert_v1 -- [--head EVENTS]
//! IN.lstrace OUT.lsrec [IN OUT]...`. `--head` keeps only the feeds up to that many events (how
//! the test fixtures in tests/fixtures/recording/ were cut from real recordings).

use std::path::Path;

use lockscope_engine::feed::Feed;
use lockscope_engine::recording::{
    convert_v1, Recording, RecordingHeader, RecordingWriter, WriterOptions,
};
use lockscope_engine::trace::TraceReader;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut head = None;
    if args.first().map(String::as_str) == Some("--head") && args.len() > 1 {
        head = args[1].parse::<u64>().ok();
        args.drain(..2);
    }
    if args.is_empty() || !args.len().is_multiple_of(2) {
        eprintln!("usage: convert_v1 [--head EVENTS] IN.lstrace OUT.lsrec [IN OUT]...");
        std::process::exit(2);
    }
    for pair in args.chunks(2) {
        let (from, to) = (Path::new(&pair[0]), Path::new(&pair[1]));
        if let Err(e) = convert(from, to, head) {
            eprintln!("{}: {e}", from.display());
            std::process::exit(1);
        }
    }
}

fn convert(from: &Path, to: &Path, head: Option<u64>) -> Result<(), String> {
    let (events, bytes, problem) = match head {
        None => {
            let c = convert_v1(from, to, WriterOptions::default()).map_err(|e| e.to_string())?;
            (c.stats.events, c.stats.bytes, c.problem)
        }
        Some(limit) => {
            let mut r = TraceReader::open(from).map_err(|e| e.to_string())?;
            let h = r.header().clone();
            let mut header = RecordingHeader::new(h.smp, &h.bootargs, &h.source);
            header.abi_version = h.abi_version;
            header.kernel_name = h
                .kernel
                .as_ref()
                .and_then(|k| k.file_name())
                .map(|n| n.to_string_lossy().into_owned());
            header.kernel_fingerprint = h.kernel_fingerprint.clone();
            let mut w = RecordingWriter::create(to, &header, WriterOptions::default())
                .map_err(|e| e.to_string())?;
            let mut n = 0u64;
            while let Some(f) = r.next_feed().map_err(|e| e.to_string())? {
                if let Feed::Events { events, .. } = &f {
                    n += events.len() as u64;
                }
                w.write(&f).map_err(|e| e.to_string())?;
                if n >= limit {
                    break;
                }
            }
            let s = w.finish().map_err(|e| e.to_string())?;
            (s.events, s.bytes, None)
        }
    };
    // The v2 recording replays exactly the v1 feeds.
    let rec = Recording::open(to).map_err(|e| e.to_string())?;
    let mut v1 = TraceReader::open(from).map_err(|e| e.to_string())?;
    for (i, f) in rec.feeds().enumerate() {
        let g = v1.next_feed().ok().flatten();
        if Some(&f) != g.as_ref() {
            return Err(format!("feed {i} differs after conversion"));
        }
    }
    if !rec.problems().is_empty() {
        return Err(format!("{:?}", rec.problems()));
    }
    let v1_bytes = std::fs::metadata(from).map_or(0, |m| m.len());
    let per = |b: u64| b as f64 / events.max(1) as f64;
    println!(
        "{}: {events} events; v1 {v1_bytes} bytes ({:.2} B/event), v2 {bytes} bytes ({:.2} B/event){}",
        from.display(),
        per(v1_bytes),
        per(bytes),
        problem.map(|p| format!("; {p}")).unwrap_or_default()
    );
    Ok(())
}
