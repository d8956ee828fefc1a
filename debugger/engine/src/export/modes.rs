//! Sleeplock and reader-writer holds in the Perfetto export, on tracks of their own: their
//! events name the lock's inner spinlock, whose own holds are on the lock tracks, and a
//! reader-writer lock's read holds overlap.
//!
//! - `Sleeplocks` > one track per process > one track per sleeplock it held: a slice per hold.
//!   The process is the one its hart ran at the last snapshot before the acquisition (xv6's
//!   `cpus[i].proc`), or "process unknown"; a sleeplock is held by one process at a time, so
//!   its holds never overlap on any track.
//! - `Reader-writer locks` > one track per lock > `write` and `read, hart N`: a slice per
//!   hold (a hart's read hold taken again inside itself stays one slice).

use std::collections::BTreeMap;

use perfetto_protos::track_event::track_event;

use super::out::{arg_str, arg_u64, event, ExportError, Out};
use crate::model::{EventKind, HartId, LockEvent, LockId, LockMode, Snapshot};

pub(crate) const ROOT_SLEEP: u64 = 6;
pub(crate) const ROOT_RW: u64 = 7;
const MODE_BASE: u64 = 5 << 32;

/// An open hold: its track, and how deep (a read lock taken again by its hart).
struct Open {
    track: u64,
    depth: u32,
}

#[derive(Default)]
pub(crate) struct ModeTracks {
    /// Sleeplock names by their inner spinlock.
    sleep_names: BTreeMap<LockId, String>,
    /// Declared tracks by (parent, name).
    declared: BTreeMap<(u64, String), u64>,
    next: u64,
    roots: bool,
    sleep_open: BTreeMap<LockId, Open>,
    rw_open: BTreeMap<(LockId, Option<HartId>), Open>,
    /// The last end time on each track: a start before it is moved to it.
    last_end: BTreeMap<u64, u64>,
}

impl ModeTracks {
    pub(crate) fn note_snapshot(&mut self, s: &Snapshot) {
        for x in &s.sleeplocks {
            if let Some(l) = x.lock {
                self.sleep_names.insert(l, x.path.clone());
            }
        }
    }

    fn track(
        &mut self,
        o: &mut Out,
        parent: u64,
        name: String,
        parent_of_parent: Option<(u64, String)>,
    ) -> Result<u64, ExportError> {
        if !self.roots {
            self.roots = true;
            o.track(ROOT_SLEEP, None, "Sleeplocks", false)?;
            o.track(ROOT_RW, None, "Reader-writer locks", false)?;
        }
        let parent = match parent_of_parent {
            Some((root, pname)) => self.track(o, root, pname, None)?,
            None => parent,
        };
        if let Some(&t) = self.declared.get(&(parent, name.clone())) {
            return Ok(t);
        }
        let uuid = MODE_BASE + self.next;
        self.next += 1;
        o.track(uuid, Some(parent), &name, false)?;
        self.declared.insert((parent, name), uuid);
        Ok(uuid)
    }

    fn begin(
        &mut self,
        o: &mut Out,
        track: u64,
        ts: u64,
        e: &LockEvent,
        name: String,
    ) -> Result<(), ExportError> {
        let floor = self.last_end.get(&track).copied().unwrap_or(0);
        let ts = if ts < floor {
            o.stats.clamped += 1;
            floor
        } else {
            ts
        };
        let mut ev = event(track_event::Type::TYPE_SLICE_BEGIN, track);
        ev.set_name(name);
        ev.debug_annotations.push(arg_u64("hart", e.hart as u64));
        if let EventKind::Acquired { contended: true } = e.kind {
            ev.debug_annotations.push(arg_str("waited", "yes"));
        }
        o.event(ts, ev)
    }

    fn end(&mut self, o: &mut Out, track: u64, ts: u64) -> Result<(), ExportError> {
        let ts = ts.max(self.last_end.get(&track).copied().unwrap_or(0));
        self.last_end.insert(track, ts);
        o.event(ts, event(track_event::Type::TYPE_SLICE_END, track))
    }

    /// A sleeplock or reader-writer acquisition or release (`mode` is set). `process` is what
    /// the event's hart ran at the last snapshot; `lock_name` names reader-writer locks.
    pub(crate) fn event(
        &mut self,
        o: &mut Out,
        e: &LockEvent,
        mode: LockMode,
        process: Option<&str>,
        lock_name: &str,
    ) -> Result<(), ExportError> {
        match mode {
            LockMode::Sleep => self.sleep(o, e, process),
            LockMode::Read | LockMode::Write => self.rw(o, e, mode, lock_name),
        }
    }

    fn sleep(
        &mut self,
        o: &mut Out,
        e: &LockEvent,
        process: Option<&str>,
    ) -> Result<(), ExportError> {
        match e.kind {
            EventKind::Acquired { .. } => {
                if let Some(old) = self.sleep_open.remove(&e.lock) {
                    // Its release was lost.
                    self.end(o, old.track, e.time_ns)?;
                    o.stats.holds_cut += 1;
                }
                let name = self
                    .sleep_names
                    .get(&e.lock)
                    .cloned()
                    .unwrap_or_else(|| format!("sleeplock of lock#{}", e.lock));
                let proc_name = process.unwrap_or("process unknown").to_string();
                let track = self.track(o, 0, name.clone(), Some((ROOT_SLEEP, proc_name)))?;
                self.begin(o, track, e.time_ns, e, name)?;
                self.sleep_open.insert(e.lock, Open { track, depth: 1 });
                o.stats.sleep_holds += 1;
            }
            EventKind::Released => match self.sleep_open.remove(&e.lock) {
                Some(h) => self.end(o, h.track, e.time_ns)?,
                None => o.stats.unmatched_releases += 1,
            },
            EventKind::Spin => {}
        }
        Ok(())
    }

    fn rw(
        &mut self,
        o: &mut Out,
        e: &LockEvent,
        mode: LockMode,
        lock_name: &str,
    ) -> Result<(), ExportError> {
        let read = mode == LockMode::Read;
        let key = (e.lock, read.then_some(e.hart));
        match e.kind {
            EventKind::Acquired { .. } => {
                if let Some(h) = self.rw_open.get_mut(&key) {
                    if read {
                        h.depth += 1;
                        return Ok(());
                    }
                    // A write hold whose release was lost.
                    let t = h.track;
                    self.rw_open.remove(&key);
                    self.end(o, t, e.time_ns)?;
                    o.stats.holds_cut += 1;
                }
                let sub = if read {
                    format!("read, hart {}", e.hart)
                } else {
                    "write".to_string()
                };
                let track =
                    self.track(o, 0, sub.clone(), Some((ROOT_RW, lock_name.to_string())))?;
                self.begin(o, track, e.time_ns, e, format!("{sub} {lock_name}"))?;
                self.rw_open.insert(key, Open { track, depth: 1 });
                o.stats.rw_holds += 1;
            }
            EventKind::Released => match self.rw_open.get_mut(&key) {
                Some(h) if h.depth > 1 => h.depth -= 1,
                Some(h) => {
                    let t = h.track;
                    self.rw_open.remove(&key);
                    self.end(o, t, e.time_ns)?;
                }
                None => o.stats.unmatched_releases += 1,
            },
            EventKind::Spin => {}
        }
        Ok(())
    }

    /// Ends what is still open at `now`.
    pub(crate) fn close(&mut self, o: &mut Out, now: u64) -> Result<(), ExportError> {
        let tracks: Vec<u64> = self
            .sleep_open
            .values()
            .chain(self.rw_open.values())
            .map(|h| h.track)
            .collect();
        self.sleep_open.clear();
        self.rw_open.clear();
        for t in tracks {
            self.end(o, t, now)?;
        }
        Ok(())
    }
}
