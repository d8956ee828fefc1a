//! The state at one time without a timeline: for `lockscope replay TRACE --at 3.2s --check`.

use std::sync::Arc;

use super::reader::Recording;
use super::timeline::canonical;
use super::RecordingError;
use crate::feed::Feed;
use crate::monitor::{Monitor, MonitorConfig, SourceKind, View};
use crate::symbols::Symbols;

/// The view as of time `t` without building a timeline: replays up to `t` only (for
/// `lockscope replay TRACE --at 3.2s --check --json`). `t` counts from the recording's first
/// timed element when `relative`; else it is absolute target time.
pub fn view_at(
    rec: &Recording,
    symbols: Option<Arc<Symbols>>,
    t: u64,
    relative: bool,
) -> Result<(View, u64), RecordingError> {
    let mut m = Monitor::new(MonitorConfig::default(), symbols, SourceKind::Trace)?;
    let mut mono = 0u64;
    let mut start: Option<u64> = None;
    'chunks: for c in rec.feed_chunks() {
        for mut feed in rec.feeds_or_gap(&c) {
            canonical(&mut feed);
            let first_time = match &feed {
                Feed::Events { events, .. } => events.iter().map(|e| e.time_ns).min(),
                Feed::Snapshot(s) => Some(s.time_ns),
                _ => None,
            };
            if start.is_none() {
                start = first_time;
            }
            let limit = match (relative, start) {
                (true, Some(s)) => s.saturating_add(t),
                (true, None) => t,
                (false, _) => t,
            };
            match &feed {
                Feed::Events { events, lost } => {
                    let mut n = 0;
                    for e in events {
                        if mono.max(e.time_ns) > limit {
                            break;
                        }
                        mono = mono.max(e.time_ns);
                        n += 1;
                    }
                    if n < events.len() {
                        if n > 0 {
                            m.apply(&Feed::Events {
                                events: events[..n].to_vec(),
                                lost: lost.clone(),
                            });
                        }
                        break 'chunks;
                    }
                    m.apply(&feed);
                }
                Feed::Snapshot(s) => {
                    if mono.max(s.time_ns) > limit {
                        break 'chunks;
                    }
                    mono = mono.max(s.time_ns);
                    m.apply(&feed);
                }
                _ => m.apply(&feed),
            }
        }
    }
    Ok((m.view(), mono))
}

/// Parses a time for `--at`: `3.2s`, `1500ms`, `250us`, `2m`, or plain seconds.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a time: use 3.2s, 1500ms, 250us or 2m"))?;
    let mul = match unit.trim() {
        "" | "s" => 1e9,
        "ms" => 1e6,
        "us" | "µs" => 1e3,
        "ns" => 1.0,
        "m" | "min" => 60e9,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}: use s, ms, us, ns or m"
            ))
        }
    };
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("{s:?} is not a time"));
    }
    Ok((v * mul) as u64)
}
