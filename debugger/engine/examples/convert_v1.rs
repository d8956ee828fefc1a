//! Converts version-1 traces to version-2 recordings: `convert_v1 IN.lstrace OUT.lsrec ...`
//! (pairs). Prints the sizes and bytes per event.

use std::path::Path;

use lockscope_engine::recording::{convert_v1, WriterOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() % 2 != 0 {
        eprintln!("usage: convert_v1 IN.lstrace OUT.lsrec [IN OUT]...");
        std::process::exit(2);
    }
    for pair in args.chunks(2) {
        let (from, to) = (Path::new(&pair[0]), Path::new(&pair[1]));
        match convert_v1(from, to, WriterOptions::default()) {
            Ok(c) => {
                // Check: the v2 recording replays exactly the v1 feeds.
                let rec = lockscope_engine::recording::Recording::open(to).expect("reopen");
                let mut v1r = lockscope_engine::trace::TraceReader::open(from).expect("v1");
                let mut n = 0u64;
                for f in rec.feeds() {
                    let g = v1r.next_feed().ok().flatten();
                    assert_eq!(Some(&f), g.as_ref(), "feed {n} differs");
                    n += 1;
                }
                assert!(rec.problems().is_empty(), "{:?}", rec.problems());
                let v1 = std::fs::metadata(from).map_or(0, |m| m.len());
                let v2 = c.stats.bytes;
                let per = |b: u64| b as f64 / c.stats.events.max(1) as f64;
                println!(
                    "{}: {} events; v1 {} bytes ({:.2} B/event), v2 {} bytes ({:.2} B/event){}",
                    from.display(),
                    c.stats.events,
                    v1,
                    per(v1),
                    v2,
                    per(v2),
                    c.problem.map(|p| format!("; {p}")).unwrap_or_default()
                );
            }
            Err(e) => {
                eprintln!("{}: {e}", from.display());
                std::process::exit(1);
            }
        }
    }
}
