use lockscope_engine::recording::*;
use std::time::Instant;
fn main() {
    let p = std::env::args().nth(1).unwrap();
    let t = Instant::now();
    let tl = Timeline::open(std::path::Path::new(&p), None).unwrap();
    println!(
        "open {:?}, {} elements, {} keyframes, {} marks, dur {} ms",
        t.elapsed(),
        tl.len(),
        tl.keyframes(),
        tl.marks().len(),
        tl.duration_ns() / 1_000_000
    );
    for m in tl.marks().iter().take(10) {
        println!("  {:?}", m);
    }
    let n = 20;
    let mut worst = std::time::Duration::ZERO;
    for i in 0..n {
        let tt = tl.start_ns() + tl.duration_ns() * i / n;
        let t = Instant::now();
        let (pos, v) = tl.seek(tt);
        let e = t.elapsed();
        worst = worst.max(e);
        if i % 5 == 0 {
            println!(
                "seek {} -> pos {} in {:?}; events_total {}",
                tt, pos, e, v.events_total
            );
        }
    }
    println!("worst seek {:?}", worst);
    // check equality vs from-scratch
    let pos = tl.len() * 2 / 3;
    let a = tl.view_at(pos);
    let mut m = lockscope_engine::monitor::Monitor::new(
        Default::default(),
        None,
        lockscope_engine::monitor::SourceKind::Trace,
    )
    .unwrap();
    let _ = &mut m;
    println!("events_total at 2/3: {}", a.events_total);
    let t = Instant::now();
    let d = tl.range_delta(tl.len() / 4, tl.len() / 2);
    println!(
        "range delta {:?}: {:?}",
        t.elapsed(),
        &d.classes[..d.classes.len().min(3)]
    );
    let s = tl.step_event(pos, Some(1), Direction::Forward);
    let b = tl.step_event(pos, Some(1), Direction::Back);
    println!("step fwd {:?} back {:?} from {}", s, b, pos);
    println!("around {:?}", tl.events_around(pos, 2, 2));
}
