//! A recording as a Perfetto trace (`.pftrace`), for <https://ui.perfetto.dev>.
//!
//! Encoded with Perfetto's own protos (the `perfetto_protos` crate), one `TracePacket` at a time:
//! a serialized `Trace` holding one packet is exactly one element of the file's repeated `packet`
//! field, so packets are streamed out as they are made.
//!
//! Tracks:
//! - `Locks` > one track per lock class > one track per lock: a slice per hold, named after the
//!   holding hart. Holds go on lock tracks, not nested on harts: xv6's `sleep()` takes `p->lock`
//!   and then releases the lock it came with, so one hart's holds need not nest, while a lock's
//!   holds never overlap.
//! - `Harts` > one track per hart: a slice per spin (wait), naming the lock and its holder when
//!   the spin began, and the spinning site. A flow goes from the release that ended a wait to the
//!   acquisition by the hart that was spinning.
//! - `Counters`: cumulative `#acquire` and `#test-and-set` per class, contended acquisitions per
//!   second, free pages per allocator list, buffers in use per bucket.
//! - `Findings`: instant events for panics, deadlocks, stalls and lock-order inversions.
//!
//! - `Sleeplocks` and `Reader-writer locks`: their holds, per process and per lock (see
//!   `modes.rs`).
//!
//! A spin names the process its hart runs when the source reads it (xv6's `cpus[i].proc`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use perfetto_protos::track_event::track_event;

use super::findings::Findings;
use super::modes::ModeTracks;
use super::out::{arg_str, arg_u64, event, Out, FINDINGS};
pub use super::out::{ExportError, ExportStats};
use crate::feed::Feed;
use crate::model::{EventKind, HartId, LockEvent, LockId, Snapshot};
use crate::monitor::{Monitor, MonitorConfig, SourceKind};
use crate::recording::Recording;
use crate::symbols::Symbols;

const ROOT_LOCKS: u64 = 1;
const ROOT_HARTS: u64 = 2;
const ROOT_COUNTERS: u64 = 3;
const CONTENTION_RATE: u64 = 5;
const CLASS_BASE: u64 = 1 << 32;
const LOCK_BASE: u64 = 2 << 32;
const HART_BASE: u64 = 3 << 32;
const COUNTER_BASE: u64 = 4 << 32;

/// Lock names and classes, harts, allocator lists and buckets: the tracks to declare.
#[derive(Default)]
struct Catalog {
    locks: BTreeMap<LockId, (String, String)>,
    harts: std::collections::BTreeSet<HartId>,
    kmem_lists: std::collections::BTreeSet<HartId>,
    buckets: std::collections::BTreeSet<u32>,
}

impl Catalog {
    fn note_snapshot(&mut self, s: &Snapshot) {
        for l in &s.locks {
            self.locks
                .insert(l.meta.id, (l.meta.name.clone(), l.meta.class.clone()));
        }
        self.harts.extend(s.harts.iter().map(|h| h.hart));
        if let Some(k) = &s.kmem {
            self.kmem_lists.extend(k.lists.iter().map(|l| l.hart));
        }
        if let Some(b) = &s.bcache {
            self.buckets.extend(b.buckets.iter().map(|k| k.index));
        }
    }

    fn name(&self, id: LockId) -> String {
        self.locks
            .get(&id)
            .map_or_else(|| format!("lock#{id}"), |l| l.0.clone())
    }

    fn class(&self, id: LockId) -> String {
        match self.locks.get(&id) {
            Some((name, class)) if class.is_empty() => name.clone(),
            Some((_, class)) => class.clone(),
            None => format!("lock#{id}"),
        }
    }
}

fn class_uuid(classes: &[String], class: &str) -> u64 {
    CLASS_BASE + classes.iter().position(|c| c == class).unwrap_or(0) as u64
}

struct Hold {
    hart: HartId,
    end_ns: u64,
    open: bool,
}

struct SpinState {
    lock: LockId,
    open: bool,
    end_ns: u64,
}

/// Writes `rec` as a Perfetto trace to `out`. With `symbols`, sites are `function file:line`.
pub fn export_perfetto(
    rec: &Recording,
    symbols: Option<Arc<Symbols>>,
    out: &Path,
) -> Result<ExportStats, ExportError> {
    // Pass 1: what the tracks are.
    let mut cat = Catalog::default();
    for f in rec.feeds() {
        match &f {
            Feed::Snapshot(s) => cat.note_snapshot(s),
            Feed::Events { events, .. } => {
                for e in events {
                    cat.harts.insert(e.hart);
                    cat.locks
                        .entry(e.lock)
                        .or_insert_with(|| (format!("lock#{}", e.lock), String::new()));
                }
            }
            _ => {}
        }
    }
    let file = File::create(out).map_err(|source| ExportError::Io {
        path: out.to_owned(),
        source,
    })?;
    let mut o = Out {
        w: BufWriter::new(file),
        path: out.to_owned(),
        stats: ExportStats::default(),
        first: true,
    };
    let mut classes: Vec<String> = cat.locks.keys().map(|&id| cat.class(id)).collect();
    classes.sort();
    classes.dedup();
    o.track(ROOT_LOCKS, None, "Locks", false)?;
    o.track(ROOT_HARTS, None, "Harts", false)?;
    o.track(ROOT_COUNTERS, None, "Counters", false)?;
    o.track(FINDINGS, None, "Findings", false)?;
    for (i, c) in classes.iter().enumerate() {
        o.track(CLASS_BASE + i as u64, Some(ROOT_LOCKS), c, false)?;
    }
    for &id in cat.locks.keys() {
        let parent = class_uuid(&classes, &cat.class(id));
        o.track(LOCK_BASE + id as u64, Some(parent), &cat.name(id), false)?;
    }
    for &h in &cat.harts {
        o.track(
            HART_BASE + h as u64,
            Some(ROOT_HARTS),
            &format!("hart {h}"),
            false,
        )?;
    }
    // Counter tracks: per class #acquire and #test-and-set, the contention rate, free pages,
    // bucket occupancy.
    let acq_track = |i: usize| COUNTER_BASE + 2 * i as u64;
    let tas_track = |i: usize| COUNTER_BASE + 2 * i as u64 + 1;
    let kmem_track = |h: HartId| COUNTER_BASE + (1 << 20) + h as u64;
    let bucket_track = |b: u32| COUNTER_BASE + (2 << 20) + b as u64;
    for (i, c) in classes.iter().enumerate() {
        o.track(
            acq_track(i),
            Some(ROOT_COUNTERS),
            &format!("{c} #acquire"),
            true,
        )?;
        o.track(
            tas_track(i),
            Some(ROOT_COUNTERS),
            &format!("{c} #test-and-set"),
            true,
        )?;
    }
    o.track(
        CONTENTION_RATE,
        Some(ROOT_COUNTERS),
        "contended acquisitions/s",
        true,
    )?;
    for &h in &cat.kmem_lists {
        o.track(
            kmem_track(h),
            Some(ROOT_COUNTERS),
            &format!("free pages hart{h}"),
            true,
        )?;
    }
    for &b in &cat.buckets {
        o.track(
            bucket_track(b),
            Some(ROOT_COUNTERS),
            &format!("bucket {b} in use"),
            true,
        )?;
    }

    // Pass 2: the events, with a monitor alongside for the findings.
    let mut monitor = Monitor::new(MonitorConfig::default(), symbols, SourceKind::Trace)?;
    let mut findings = Findings::default();
    let mut holds: BTreeMap<LockId, Hold> = BTreeMap::new();
    let mut spins: BTreeMap<HartId, SpinState> = BTreeMap::new();
    let mut pending_flow: BTreeMap<LockId, u64> = BTreeMap::new();
    let mut next_flow = 1u64;
    let mut last_contended: Option<(u64, u64)> = None;
    // The process each hart runs, as of the last snapshot (sources that read xv6's `cpus[]`).
    let mut running: BTreeMap<HartId, String> = BTreeMap::new();
    let mut modes = ModeTracks::default();
    let mut now = 0u64;
    let mut batch: Vec<LockEvent> = Vec::new();
    for feed in rec.feeds() {
        monitor.apply(&feed);
        match &feed {
            Feed::Events { events, .. } => {
                batch.clear();
                batch.extend_from_slice(events);
                batch.sort_by_key(|e| e.time_ns);
                for e in &batch {
                    now = now.max(e.time_ns);
                    o.stats.events += 1;
                    let lock_track = LOCK_BASE + e.lock as u64;
                    let hart_track = HART_BASE + e.hart as u64;
                    if let (Some(mode), false) = (e.mode, e.kind == EventKind::Spin) {
                        // A spin on a reader-writer lock is a spin like any other; its holds,
                        // and sleeplocks', go on tracks of their own.
                        if e.kind != EventKind::Released {
                            if let Some(s) = spins.get_mut(&e.hart) {
                                end_spin(&mut o, s, e.time_ns, hart_track)?;
                            }
                        }
                        let process = running.get(&e.hart).map(String::as_str);
                        modes.event(&mut o, e, mode, process, &cat.name(e.lock))?;
                        continue;
                    }
                    match e.kind {
                        EventKind::Spin => {
                            if let Some(s) = spins.get_mut(&e.hart) {
                                // A spin that ended unseen (lost events).
                                end_spin(&mut o, s, e.time_ns, hart_track)?;
                            }
                            let s = spins.entry(e.hart).or_insert(SpinState {
                                lock: e.lock,
                                open: false,
                                end_ns: 0,
                            });
                            let ts = clamp(e.time_ns, s.end_ns, &mut o.stats.clamped);
                            s.lock = e.lock;
                            s.open = true;
                            let mut ev = event(track_event::Type::TYPE_SLICE_BEGIN, hart_track);
                            ev.set_name(format!("spin {}", cat.name(e.lock)));
                            ev.debug_annotations.push(arg_str("lock", cat.name(e.lock)));
                            match holds.get(&e.lock).filter(|h| h.open) {
                                Some(h) => ev
                                    .debug_annotations
                                    .push(arg_str("owner", format!("hart {}", h.hart))),
                                None => ev.debug_annotations.push(arg_str("owner", "unknown")),
                            }
                            ev.debug_annotations
                                .push(arg_str("site", findings.site(&monitor, e.pc)));
                            if let Some(p) = running.get(&e.hart) {
                                ev.debug_annotations.push(arg_str("process", p.clone()));
                            }
                            o.event(ts, ev)?;
                            *o.stats.spins.entry(e.hart).or_default() += 1;
                        }
                        EventKind::Acquired { contended } => {
                            // End this hart's spin, receiving the flow from the release.
                            if let Some(s) = spins.get_mut(&e.hart).filter(|s| s.open) {
                                s.open = false;
                                s.end_ns = e.time_ns.max(s.end_ns);
                                let mut ev = event(track_event::Type::TYPE_SLICE_END, hart_track);
                                if s.lock == e.lock && contended {
                                    if let Some(f) = pending_flow.remove(&e.lock) {
                                        ev.terminating_flow_ids.push(f);
                                        o.stats.flows += 1;
                                    }
                                }
                                o.event(s.end_ns, ev)?;
                            }
                            pending_flow.remove(&e.lock);
                            let h = holds.entry(e.lock).or_insert(Hold {
                                hart: e.hart,
                                end_ns: 0,
                                open: false,
                            });
                            if h.open {
                                // Its release was lost: end the old hold here.
                                h.end_ns = e.time_ns.max(h.end_ns);
                                o.event(
                                    h.end_ns,
                                    event(track_event::Type::TYPE_SLICE_END, lock_track),
                                )?;
                                o.stats.holds_cut += 1;
                            }
                            let ts = clamp(e.time_ns, h.end_ns, &mut o.stats.clamped);
                            h.hart = e.hart;
                            h.open = true;
                            let mut ev = event(track_event::Type::TYPE_SLICE_BEGIN, lock_track);
                            ev.set_name(format!("held by hart {}", e.hart));
                            ev.debug_annotations.push(arg_u64("hart", e.hart as u64));
                            ev.debug_annotations
                                .push(arg_str("site", findings.site(&monitor, e.pc)));
                            if contended {
                                ev.debug_annotations.push(arg_str("contended", "yes"));
                            }
                            o.event(ts, ev)?;
                            *o.stats.holds.entry(cat.name(e.lock)).or_default() += 1;
                        }
                        EventKind::Released => {
                            let Some(h) = holds.get_mut(&e.lock).filter(|h| h.open) else {
                                o.stats.unmatched_releases += 1;
                                continue;
                            };
                            h.open = false;
                            h.end_ns = e.time_ns.max(h.end_ns);
                            let mut ev = event(track_event::Type::TYPE_SLICE_END, lock_track);
                            let waiting = spins.values().any(|s| s.open && s.lock == e.lock);
                            if waiting {
                                ev.flow_ids.push(next_flow);
                                pending_flow.insert(e.lock, next_flow);
                                next_flow += 1;
                            }
                            o.event(h.end_ns, ev)?;
                        }
                    }
                }
            }
            Feed::Snapshot(s) => {
                now = now.max(s.time_ns);
                let t = now;
                modes.note_snapshot(s);
                running.clear();
                for h in &s.harts {
                    if let Some(p) = h.cpu.as_ref().and_then(|c| c.proc.as_ref()) {
                        running.insert(h.hart, format!("pid {} {}", p.pid, p.name));
                    }
                }
                let mut per_class: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
                let mut contended = 0u64;
                for l in &s.locks {
                    let class = if l.meta.class.is_empty() {
                        l.meta.name.as_str()
                    } else {
                        l.meta.class.as_str()
                    };
                    let c = per_class.entry(class).or_default();
                    c.0 = c.0.saturating_add(l.counters.acquires);
                    c.1 = c.1.saturating_add(l.counters.spins);
                    contended = contended.saturating_add(l.counters.contended);
                }
                for (class, (acq, tas)) in per_class {
                    let i = classes.iter().position(|c| c == class);
                    if let Some(i) = i {
                        o.counter(t, acq_track(i), acq as i64)?;
                        o.counter(t, tas_track(i), tas as i64)?;
                    }
                }
                if let Some((t0, c0)) = last_contended {
                    if t > t0 && contended >= c0 {
                        let rate = (contended - c0) as f64 * 1e9 / (t - t0) as f64;
                        o.counter_f(t, CONTENTION_RATE, rate)?;
                    }
                }
                last_contended = Some((t, contended));
                if let Some(k) = &s.kmem {
                    for l in &k.lists {
                        o.counter(t, kmem_track(l.hart), l.free_pages as i64)?;
                    }
                }
                if let Some(b) = &s.bcache {
                    for k in &b.buckets {
                        let used = b
                            .bufs
                            .iter()
                            .filter(|x| x.bucket == Some(k.index) && x.refcnt > 0)
                            .count();
                        o.counter(t, bucket_track(k.index), used as i64)?;
                    }
                }
                findings.after_snapshot(&monitor, t, &mut o)?;
            }
            _ => {}
        }
    }
    // Close what is still open at the end.
    for (lock, h) in holds.iter().filter(|(_, h)| h.open) {
        o.event(
            now.max(h.end_ns),
            event(track_event::Type::TYPE_SLICE_END, LOCK_BASE + *lock as u64),
        )?;
    }
    for (hart, s) in spins.iter().filter(|(_, s)| s.open) {
        o.event(
            now.max(s.end_ns),
            event(track_event::Type::TYPE_SLICE_END, HART_BASE + *hart as u64),
        )?;
    }
    modes.close(&mut o, now)?;
    findings.inversions(&monitor, &mut o)?;
    o.w.flush().map_err(|source| ExportError::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(o.stats)
}

/// Ends `s` at `ts` (not before its last end) if it is open.
fn end_spin(o: &mut Out, s: &mut SpinState, ts: u64, track: u64) -> Result<(), ExportError> {
    if s.open {
        s.open = false;
        s.end_ns = ts.max(s.end_ns);
        o.event(s.end_ns, event(track_event::Type::TYPE_SLICE_END, track))?;
    }
    Ok(())
}

fn clamp(ts: u64, floor: u64, clamped: &mut u64) -> u64 {
    if ts < floor {
        *clamped += 1;
        floor
    } else {
        ts
    }
}
