//! What the stops say about a hang ([`HangReport`]), and the parts of it that are not spinlock
//! cycles: reader-writer locks nobody gets through, chains of processes asleep on sleeplocks.

use serde::{Deserialize, Serialize};

use crate::model::{Diagnosis, FieldValue, HartId, HartState, ProcRef, RwLockSnapshot};

/// A reader or writer stuck in a reader-writer lock's acquire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RwWaiter {
    pub hart: HartId,
    pub function: String,
    /// Return address into the caller of the acquire.
    pub site: Option<u64>,
    /// An earlier call of the same acquire still on the hart's stack: it holds the lock.
    pub earlier: Option<u64>,
}

/// A reader-writer lock nobody can get through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RwDeadlock {
    pub rwlock: String,
    /// Its fields at the last stop, as the student defined them.
    pub fields: Vec<FieldValue>,
    pub readers: Vec<RwWaiter>,
    pub writers: Vec<RwWaiter>,
    /// The fields read as counts: readers inside, writers waiting, a writer inside (by name:
    /// `readers`/`nreader`, `waiting`/`wwait`, `writer`/`writing`).
    pub readers_inside: Option<i64>,
    pub writers_waiting: Option<i64>,
    pub writer_inside: Option<i64>,
}

/// One process in a chain of sleeplock waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepLink {
    pub pid: i64,
    pub name: String,
    pub chan_name: Option<String>,
    /// The sleeplock it sleeps on, when its channel is one.
    pub sleeplock: Option<String>,
    /// That sleeplock's holder.
    pub holder: Option<ProcRef>,
    /// The sleeplock is free: nobody will wake this process (a lost wakeup).
    pub free: bool,
}

/// Processes waiting on each other's sleeplocks, or on one nobody will release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepChain {
    pub links: Vec<SleepLink>,
    /// The last link's holder is the first link's process.
    pub cycle: bool,
}

/// What kind of hang the stops show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HangKind {
    /// Harts waiting on each other's spinlocks (the cycles are in the deadlock list).
    Deadlock,
    /// A reader-writer lock nobody can get through.
    RwDeadlock,
    /// Processes waiting on each other's sleeplocks.
    SleepDeadlock,
    /// Stuck without a cycle: a lock nobody holds, a wakeup that never comes, everyone asleep.
    Stall,
    /// Stuck before any hart reached the kernel's scheduler.
    Boot,
}

/// What the stops say about a hang.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangReport {
    /// The last stop's diagnosis.
    pub diagnosis: Diagnosis,
    /// Target time of the earlier stop it was compared with, when it was.
    pub compared_with_ns: Option<u64>,
    /// The same stuck state at two stops far enough apart.
    pub confirmed: bool,
    pub kind: Option<HangKind>,
    pub rw: Vec<RwDeadlock>,
    pub chains: Vec<SleepChain>,
    /// Every process is asleep and no hart runs one.
    pub all_asleep: bool,
    /// What raised the suspicion that led to the stops, when one did.
    pub suspicion: Option<String>,
}

/// Channels a device or the timer wakes: the console's input, `ticks`.
pub(super) fn device_channel(name: Option<&str>) -> bool {
    name.is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        n == "ticks" || n.starts_with("cons") || n.starts_with("uart")
    })
}

/// The value of the first field whose name matches, for the wording of a rw deadlock.
fn field(fields: &[FieldValue], want: impl Fn(&str) -> bool) -> Option<i64> {
    fields
        .iter()
        .find(|f| want(&f.name.to_ascii_lowercase()))
        .and_then(|f| f.value)
}

/// Reader-writer locks with harts stuck in their acquire (at both stops, the lock's fields
/// unchanged, when `prev` is given).
pub(super) fn rw_deadlocks(
    d: &Diagnosis,
    prev: Option<(&Diagnosis, &[RwLockSnapshot])>,
    rwlocks: &[RwLockSnapshot],
) -> Vec<RwDeadlock> {
    let mut out: Vec<RwDeadlock> = Vec::new();
    for h in &d.harts {
        let HartState::RwWaiting {
            rwlock,
            writer,
            function,
            site,
            earlier,
        } = &h.state
        else {
            continue;
        };
        if let Some((p, before)) = prev {
            let same = p.harts.iter().any(|x| {
                x.hart == h.hart
                    && matches!(&x.state, HartState::RwWaiting { rwlock: r, writer: w, .. } if r == rwlock && w == writer)
            });
            let values = |all: &[RwLockSnapshot]| {
                all.iter()
                    .find(|r| &r.path == rwlock)
                    .map(|r| r.fields.iter().map(|f| f.value).collect::<Vec<_>>())
            };
            if !same || values(before) != values(rwlocks) {
                continue;
            }
        }
        let fields = rwlocks
            .iter()
            .find(|r| &r.path == rwlock)
            .map(|r| r.fields.clone())
            .unwrap_or_default();
        let i = match out.iter().position(|r| &r.rwlock == rwlock) {
            Some(i) => i,
            None => {
                out.push(RwDeadlock {
                    rwlock: rwlock.clone(),
                    readers_inside: field(&fields, |n| n.contains("read") && !n.contains("wait")),
                    writers_waiting: field(&fields, |n| n.contains("wait")),
                    writer_inside: field(&fields, |n| {
                        (n.contains("writ") || n.contains("wlock") || n.contains("wheld"))
                            && !n.contains("wait")
                            && !n.contains("pid")
                    }),
                    fields,
                    readers: Vec::new(),
                    writers: Vec::new(),
                });
                out.len() - 1
            }
        };
        let w = RwWaiter {
            hart: h.hart,
            function: function.clone(),
            site: *site,
            earlier: *earlier,
        };
        if *writer {
            out[i].writers.push(w);
        } else {
            out[i].readers.push(w);
        }
    }
    out
}

/// Chains of sleepers following sleeplock holders, from each process asleep on a sleeplock
/// (at both stops, when `prev` is given).
pub(super) fn chains(d: &Diagnosis, prev: Option<&Diagnosis>) -> Vec<SleepChain> {
    let stuck = |pid: i64, chan: Option<u64>| {
        prev.is_none_or(|p| p.sleepers.iter().any(|s| s.pid == pid && s.chan == chan))
    };
    let link = |pid: i64| -> Option<SleepLink> {
        let s = d.sleepers.iter().find(|s| s.pid == pid)?;
        if !stuck(s.pid, s.chan) {
            return None;
        }
        let on = s.sleeplock.as_ref();
        Some(SleepLink {
            pid: s.pid,
            name: s.name.clone(),
            chan_name: s.chan_name.clone(),
            sleeplock: on.map(|o| o.path.clone()),
            holder: on.and_then(|o| o.holder.clone()),
            free: on.is_some_and(|o| !o.locked),
        })
    };
    let mut out: Vec<SleepChain> = Vec::new();
    for s in &d.sleepers {
        if s.sleeplock.is_none() {
            continue;
        }
        let Some(first) = link(s.pid) else { continue };
        let mut links = vec![first];
        let mut cycle = false;
        while links.len() <= d.sleepers.len() {
            let Some(next) = links.last().and_then(|l| l.holder.as_ref()).map(|h| h.pid) else {
                break;
            };
            if links.iter().any(|l| l.pid == next) {
                cycle = next == links[0].pid;
                break;
            }
            match link(next) {
                Some(l) => links.push(l),
                None => break,
            }
        }
        // A chain is worth telling when it loops or ends at a free sleeplock; each cycle once.
        let ends_free = links.last().is_some_and(|l| l.free);
        let dup = cycle
            && out.iter().any(|c| {
                c.cycle && c.links.len() == links.len() && c.links.iter().any(|l| l.pid == s.pid)
            });
        if (cycle || ends_free) && !dup {
            out.push(SleepChain { links, cycle });
        }
    }
    out
}
