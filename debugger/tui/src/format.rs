//! Compact text for numbers, durations, places and sparklines: every numeric cell fits in six
//! columns so the lock table keeps its columns at 80x24.

use std::fmt::Write;

use lockscope_engine::model::{EventKind, HartRun};
use lockscope_engine::monitor::{short_function, Place};

/// A count in at most 6 columns: exact below a million, then `1.23M`, `12.3M`, `123M`, `1.23G`.
pub fn count(n: u64) -> String {
    if n < 1_000_000 {
        return n.to_string();
    }
    let mut v = n as f64 / 1e6;
    let mut unit = 0;
    const UNITS: [&str; 5] = ["M", "G", "T", "P", "E"];
    // 999.5 and up would print as 1000: move to the next unit instead.
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1e3;
        unit += 1;
    }
    let unit = UNITS[unit];
    three_digits(v, unit)
}

/// A duration in nanoseconds in at most 6 columns: `850ns`, `1.23µs`, `12.3ms`, `1.20s`.
pub fn dur(ns: u64) -> String {
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    let (v, unit) = if ns < 1_000_000 {
        (ns as f64 / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        (ns as f64 / 1e6, "ms")
    } else {
        (ns as f64 / 1e9, "s")
    };
    if unit == "s" && v >= 1000.0 {
        return format!("{:.0}s", v.min(999_999.0));
    }
    three_digits(v, unit)
}

/// An optional duration; `-` when unknown.
pub fn opt_dur(ns: Option<u64>) -> String {
    ns.map_or_else(|| "-".to_string(), dur)
}

/// Three significant digits: `1.23`, `12.3`, `123`.
fn three_digits(v: f64, unit: &str) -> String {
    // Round first so that 9.996 prints as 10.0, not 10.00.
    if (v * 100.0).round() < 1000.0 {
        format!("{v:.2}{unit}")
    } else if (v * 10.0).round() < 1000.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// A percentage in at most 6 columns, `-` when unknown.
pub fn pct(p: Option<f64>) -> String {
    match p {
        None => "-".to_string(),
        Some(p) if !p.is_finite() => "-".to_string(),
        Some(p) if p >= 99.95 => "100%".to_string(),
        Some(p) if p >= 9.995 => format!("{p:.1}%"),
        Some(p) => format!("{p:.2}%"),
    }
}

/// Target time since boot as seconds with microseconds: `12.345678`.
pub fn timestamp(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1_000)
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The newest `width` values as a sparkline scaled to their own maximum. Zero is a blank so
/// that "none" and "a little" differ.
pub fn sparkline(values: &[u64], width: usize, out: &mut String) {
    let tail = &values[values.len().saturating_sub(width)..];
    let max = tail.iter().copied().max().unwrap_or(0);
    for _ in tail.len()..width {
        out.push(' ');
    }
    for &v in tail {
        if v == 0 || max == 0 {
            out.push(' ');
        } else {
            // 1..=max maps onto the 8 bar heights.
            let i = ((v as u128 * 8).div_ceil(max as u128) as usize).clamp(1, 8) - 1;
            out.push(BARS[i]);
        }
    }
}

/// A horizontal bar of `value / max` over `width` columns, with eighth-block precision.
pub fn bar(value: u64, max: u64, width: usize, out: &mut String) {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    if max == 0 || width == 0 {
        return;
    }
    let eighths = ((value.min(max) as u128 * width as u128 * 8) / max as u128) as usize;
    // Anything above zero shows at least a sliver.
    let eighths = if value > 0 { eighths.max(1) } else { 0 };
    for _ in 0..eighths / 8 {
        out.push('█');
    }
    if eighths % 8 != 0 {
        out.push(PARTS[eighths % 8]);
    }
}

/// A source location without the checkout's prefix: `/home/me/lockscope/kernel/src/bio.rs:88`
/// becomes `kernel/src/bio.rs:88` (the crate directory and what follows its `src`).
pub fn short_location(loc: &str) -> &str {
    match loc.rfind("/src/") {
        Some(i) => {
            let start = loc[..i].rfind('/').map_or(0, |j| j + 1);
            &loc[start..]
        }
        None => loc,
    }
}

/// `function file:line` for a site, or the raw address when nothing is known.
pub fn place(p: &Place, out: &mut String) {
    match (&p.function, &p.location) {
        (Some(f), Some(l)) => {
            let _ = write!(out, "{} {}", short_function(f), short_location(l));
        }
        (Some(f), None) => out.push_str(short_function(f)),
        (None, Some(l)) => out.push_str(short_location(l)),
        (None, None) => {
            let _ = write!(out, "{:#x}", p.pc);
        }
    }
}

/// `function file:line` with the file's directories dropped: `bio::bget bio.rs:88`.
pub fn place_compact(p: &Place, out: &mut String) {
    match (&p.function, &p.location) {
        (Some(f), Some(_)) => {
            let _ = write!(out, "{} {}", short_function(f), file_line(p));
        }
        _ => place(p, out),
    }
}

/// Orders names the way people count: `bucket2` before `bucket10`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (&a[..da], &b[..db]);
                let trim = |n: &'_ [u8]| -> usize { n.iter().take_while(|c| **c == b'0').count() };
                let (ta, tb) = (&na[trim(na)..], &nb[trim(nb)..]);
                let o = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// `text` cut to `width` characters, ending in `…` when cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// `file:line` alone, the compact form for chains and lists.
pub fn file_line(p: &Place) -> String {
    match &p.location {
        Some(l) => l.rsplit('/').next().unwrap_or(l).to_string(),
        None => match &p.function {
            Some(f) => short_function(f).to_string(),
            None => format!("{:#x}", p.pc),
        },
    }
}

pub fn hart_run(run: HartRun) -> &'static str {
    match run {
        HartRun::Offline => "offline",
        HartRun::Booting => "booting",
        HartRun::Running => "running",
        HartRun::Idle => "idle",
        HartRun::Halted => "halted",
        HartRun::Panicked => "panicked",
        HartRun::Unknown => "unknown",
    }
}

pub fn event_kind(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Spin => "spin",
        EventKind::Acquired { contended: false } => "acquire",
        EventKind::Acquired { contended: true } => "acquire*",
        EventKind::Released => "release",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_with_an_ellipsis_only_when_needed() {
        assert_eq!(fit("deadlock: hart1", 15), "deadlock: hart1");
        assert_eq!(fit("deadlock: hart1", 10), "deadlock:…");
        assert_eq!(fit("héllo", 3), "hé…");
        assert_eq!(fit("x", 0), "…");
    }

    #[test]
    fn counts_fit_six_columns_and_stay_exact_below_a_million() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999_999), "999999");
        assert_eq!(count(3_777_896), "3.78M");
        assert_eq!(count(99_960_000), "100M");
        assert_eq!(count(999_600_000), "1.00G");
        assert_eq!(count(u64::MAX), "18.4E");
        assert_eq!(count(173_435_000_000), "173G");
        for n in [
            1u64,
            999_999,
            1_000_000,
            9_999_999,
            123_456_789_012,
            u64::MAX,
        ] {
            assert!(count(n).chars().count() <= 6, "{n} -> {}", count(n));
        }
    }

    #[test]
    fn durations_pick_a_unit_and_fit_six_columns() {
        assert_eq!(dur(850), "850ns");
        assert_eq!(dur(1_297_560), "1.30ms");
        assert_eq!(dur(187_823_500), "188ms");
        assert_eq!(dur(9_996), "10.0µs");
        assert_eq!(dur(2_500_000_000), "2.50s");
        for n in [
            0u64,
            999,
            1_000,
            999_999,
            999_999_999,
            86_400_000_000_000,
            u64::MAX,
        ] {
            assert!(dur(n).chars().count() <= 7, "{n} -> {}", dur(n));
        }
    }

    #[test]
    fn percentages_and_timestamps() {
        assert_eq!(pct(Some(0.974)), "0.97%");
        assert_eq!(pct(Some(42.0)), "42.0%");
        assert_eq!(pct(Some(100.0)), "100%");
        assert_eq!(pct(None), "-");
        assert_eq!(pct(Some(f64::NAN)), "-");
        assert_eq!(timestamp(5_866_074_600), "5.866074");
    }

    #[test]
    fn sparkline_scales_to_its_own_maximum_and_pads_left() {
        let mut s = String::new();
        sparkline(&[0, 1, 4, 8], 6, &mut s);
        assert_eq!(s, "   ▁▄█");
        s.clear();
        sparkline(&[5, 5, 5, 5, 5, 5, 5, 5, 5, 1], 3, &mut s);
        assert_eq!(s, "██▂");
        s.clear();
        sparkline(&[], 2, &mut s);
        assert_eq!(s, "  ");
    }

    #[test]
    fn bars_show_any_non_zero_value() {
        let mut s = String::new();
        bar(1, 1000, 10, &mut s);
        assert_eq!(s, "▏");
        s.clear();
        bar(1000, 1000, 4, &mut s);
        assert_eq!(s, "████");
        s.clear();
        bar(5, 10, 3, &mut s);
        assert_eq!(s, "█▌");
        s.clear();
        bar(3, 0, 3, &mut s);
        assert_eq!(s, "");
    }

    #[test]
    fn names_sort_naturally() {
        let mut v = vec!["bucket10", "bucket2", "bucket1", "evict", "bucket02x", "b"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["b", "bucket1", "bucket2", "bucket02x", "bucket10", "evict"]
        );
    }

    #[test]
    fn locations_drop_the_checkout_prefix() {
        assert_eq!(
            short_location("/work/main/kernel/src/kalloc.rs:146"),
            "kernel/src/kalloc.rs:146"
        );
        assert_eq!(
            short_location("core/src/panicking.rs:80"),
            "core/src/panicking.rs:80"
        );
        assert_eq!(short_location("bio.rs:88"), "bio.rs:88");
    }
}
