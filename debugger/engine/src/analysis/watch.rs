//! What snapshots say about liveness: actual deadlocks (cycles in the wait-for graph) and stalls
//! (running harts that stop making progress), with confirmation across snapshots because a
//! snapshot of running harts can be torn.

use serde::{Deserialize, Serialize};

use crate::model::{HartId, HartRun, HartSnapshot, LockId, Snapshot};

/// Cycles reported per snapshot, at most. With 8 harts there are far fewer.
const MAX_CYCLES: usize = 64;
/// Edge visits allowed to the wait-for cycle search per snapshot.
const CYCLE_STEPS: u64 = 100_000;

/// Hart `waiter` spins on `lock`, which `holder` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEdge {
    pub waiter: HartId,
    pub lock: LockId,
    pub lock_name: String,
    /// Return address into the code that spins (symbolize `pc - 1`).
    pub waiter_pc: u64,
    pub waiting_since_ns: u64,
    pub waiting_for_ns: u64,
    pub holder: HartId,
    /// Return address into the code where the holder acquired the lock, when the holder's held
    /// list has it.
    pub holder_pc: Option<u64>,
    pub held_since_ns: Option<u64>,
}

/// A cycle of harts each spinning on a lock the next one holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlockCycle {
    /// Edge `i`'s holder is edge `i + 1`'s waiter; the last edge's holder is the first waiter.
    /// Starts at the lowest hart.
    pub edges: Vec<WaitEdge>,
    /// One hart spinning on a lock it holds itself.
    pub self_deadlock: bool,
    /// Seen unchanged in snapshots at least `deadlock_confirm_ns` apart, or in a snapshot of a
    /// stopped target. Otherwise only suspected: a live snapshot can be torn.
    pub confirmed: bool,
    pub first_seen_ns: u64,
    pub seen_for_ns: u64,
}

impl DeadlockCycle {
    /// The chain in words, `site` turning a pc into a place (for example `bio.rs:88`):
    /// `hart1 holds bcache.bucket3 (bio.rs:88) -> waits bcache.bucket7 at bio.rs:95 <- held by
    /// hart2 (bio.rs:91) -> waits bcache.bucket3 at bio.rs:97`.
    pub fn describe(&self, site: impl Fn(u64) -> String) -> String {
        let n = self.edges.len();
        let Some(first) = self.edges.first() else {
            return String::new();
        };
        let place = |pc: Option<u64>| pc.map_or_else(|| "?".to_string(), &site);
        if self.self_deadlock {
            return format!(
                "hart{} holds {} ({}) and spins on it again at {}",
                first.waiter,
                first.lock_name,
                place(first.holder_pc),
                site(first.waiter_pc)
            );
        }
        let last = &self.edges[n - 1];
        let mut s = format!(
            "hart{} holds {} ({}) -> waits {} at {}",
            first.waiter,
            last.lock_name,
            place(last.holder_pc),
            first.lock_name,
            site(first.waiter_pc)
        );
        for i in 0..n - 1 {
            let (e, next) = (&self.edges[i], &self.edges[i + 1]);
            s.push_str(&format!(
                " <- held by hart{} ({}) -> waits {} at {}",
                e.holder,
                place(e.holder_pc),
                next.lock_name,
                site(next.waiter_pc)
            ));
        }
        s
    }
}

/// Why a hart counts as stalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum StallReason {
    /// Running, not spinning, heartbeat unchanged.
    NoProgress,
    /// Spinning on one lock for longer than the stall time, outside any deadlock cycle.
    SpinningTooLong {
        lock: LockId,
        holder: Option<HartId>,
    },
    /// Runs no process (its scheduler finds nothing runnable) while the processes wait on
    /// something that will not come (seen at two stops).
    NothingToRun,
}

/// One stalled hart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StalledHart {
    pub hart: HartId,
    pub reason: StallReason,
    /// How long it has been stuck, in target time.
    pub for_ns: u64,
    pub heartbeat: Option<u64>,
    /// The hart's pc when its registers were read (symbolize as is), else its spin pc.
    pub pc: Option<u64>,
}

/// Harts that stopped making progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StallReport {
    pub harts: Vec<StalledHart>,
    /// Every running hart is stalled or has spun longer than the stall time (in a deadlock
    /// cycle or not): the system as a whole is hung.
    pub system_hang: bool,
}

/// What is remembered about a hart between snapshots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HartWatch {
    pub heartbeat: Option<u64>,
    /// Since when the heartbeat has had its current value (first snapshot that showed it).
    pub heartbeat_since_ns: u64,
    /// The heartbeat has been seen to change at least once.
    pub heartbeat_moved: bool,
    spin: Option<(LockId, u64)>,
    spin_first_seen_ns: u64,
}

/// A cycle's identity across snapshots: each edge's waiter, lock and spin start.
type CycleKey = Vec<(HartId, LockId, u64)>;

#[derive(Clone)]
pub(crate) struct Watch {
    max_harts: usize,
    confirm_ns: u64,
    stall_ns: u64,
    harts: Vec<Option<HartWatch>>,
    suspects: Vec<(CycleKey, u64)>,
    pub deadlocks: Vec<DeadlockCycle>,
    pub stall: Option<StallReport>,
    pub cycles_truncated: bool,
}

struct RawEdge {
    waiter: usize,
    holder: usize,
}

impl Watch {
    pub fn new(max_harts: usize, confirm_ns: u64, stall_ns: u64) -> Self {
        Self {
            max_harts,
            confirm_ns,
            stall_ns,
            harts: Vec::new(),
            suspects: Vec::new(),
            deadlocks: Vec::new(),
            stall: None,
            cycles_truncated: false,
        }
    }

    pub fn clear(&mut self) {
        self.harts.clear();
        self.suspects.clear();
        self.deadlocks.clear();
        self.stall = None;
    }

    pub fn hart(&self, id: HartId) -> Option<&HartWatch> {
        self.harts.get(id as usize)?.as_ref()
    }

    /// Whether the hart's heartbeat is advancing: `None` until it has been watched long enough
    /// to tell.
    pub fn advancing(&self, id: HartId, now_ns: u64) -> Option<bool> {
        let w = self.hart(id)?;
        w.heartbeat?;
        let still = now_ns.saturating_sub(w.heartbeat_since_ns);
        if still >= self.stall_ns {
            Some(false)
        } else if w.heartbeat_moved {
            Some(true)
        } else {
            None
        }
    }

    /// `t` is the snapshot's time, made monotonic by the caller.
    pub fn observe(&mut self, snap: &Snapshot, t: u64, stopped: bool) {
        for hs in &snap.harts {
            let h = hs.hart as usize;
            if h >= self.max_harts {
                continue;
            }
            if self.harts.len() <= h {
                self.harts.resize(h + 1, None);
            }
            let w = self.harts[h].get_or_insert(HartWatch {
                heartbeat: hs.heartbeat,
                heartbeat_since_ns: t,
                heartbeat_moved: false,
                spin: None,
                spin_first_seen_ns: t,
            });
            if w.heartbeat != hs.heartbeat {
                w.heartbeat_moved |= w.heartbeat.is_some() && hs.heartbeat.is_some();
                w.heartbeat = hs.heartbeat;
                w.heartbeat_since_ns = t;
            }
            let spin = hs.spinning.map(|s| (s.lock, s.since_ns));
            if spin != w.spin {
                w.spin = spin;
                w.spin_first_seen_ns = t;
            }
        }
        self.find_deadlocks(snap, t, stopped);
        self.find_stalls(snap, t, stopped);
    }

    /// Harts considered: those with an id below `max_harts`, by id, each once.
    fn nodes<'a>(&self, snap: &'a Snapshot) -> Vec<&'a HartSnapshot> {
        let mut v: Vec<&HartSnapshot> = snap
            .harts
            .iter()
            .filter(|h| (h.hart as usize) < self.max_harts)
            .collect();
        v.sort_by_key(|h| h.hart);
        v.dedup_by_key(|h| h.hart);
        v
    }

    fn holders(nodes: &[&HartSnapshot], snap: &Snapshot, lock: LockId) -> Vec<usize> {
        let mut out: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, h)| h.held.iter().any(|x| x.lock == lock))
            .map(|(i, _)| i)
            .collect();
        if let Some(id) = snap.lock(lock).and_then(|l| l.holder) {
            if let Some(p) = nodes.iter().position(|h| h.hart == id) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    fn find_deadlocks(&mut self, snap: &Snapshot, t: u64, stopped: bool) {
        let nodes = self.nodes(snap);
        // Out-edges per node; every edge of a waiter is about its one spin lock.
        let mut out: Vec<Vec<RawEdge>> = Vec::with_capacity(nodes.len());
        let mut found: Vec<Vec<(usize, usize)>> = Vec::new();
        for (i, h) in nodes.iter().enumerate() {
            let mut edges = Vec::new();
            if let Some(spin) = h.spinning {
                for holder in Self::holders(&nodes, snap, spin.lock) {
                    if holder == i {
                        found.push(vec![(i, i)]);
                    } else {
                        edges.push(RawEdge { waiter: i, holder });
                    }
                }
            }
            out.push(edges);
        }
        let mut steps = CYCLE_STEPS;
        let mut path = Vec::new();
        self.cycles_truncated = false;
        for s in 0..nodes.len() {
            if !cycles_from(s, s, &out, &mut path, &mut found, &mut steps) {
                self.cycles_truncated = true;
                break;
            }
        }

        let old = std::mem::take(&mut self.suspects);
        self.deadlocks.clear();
        for c in found {
            let edges: Vec<WaitEdge> = c
                .iter()
                .filter_map(|&(w, h)| wait_edge(snap, t, nodes[w], nodes[h]))
                .collect();
            if edges.len() != c.len() {
                continue;
            }
            let key: CycleKey = edges
                .iter()
                .map(|e| (e.waiter, e.lock, e.waiting_since_ns))
                .collect();
            let first_seen = old
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(t, |&(_, first)| first.min(t));
            let seen_for = t - first_seen;
            self.suspects.push((key, first_seen));
            self.deadlocks.push(DeadlockCycle {
                self_deadlock: c.len() == 1 && c[0].0 == c[0].1,
                edges,
                confirmed: stopped || seen_for >= self.confirm_ns,
                first_seen_ns: first_seen,
                seen_for_ns: seen_for,
            });
        }
    }

    fn find_stalls(&mut self, snap: &Snapshot, t: u64, stopped: bool) {
        let in_cycle = |h: HartId| {
            self.deadlocks
                .iter()
                .any(|c| c.edges.iter().any(|e| e.waiter == h))
        };
        let mut harts = Vec::new();
        let (mut running, mut stuck) = (0usize, 0usize);
        for hs in &snap.harts {
            if hs.run != HartRun::Running {
                continue;
            }
            running += 1;
            let Some(w) = self.hart(hs.hart) else {
                continue;
            };
            let pc = hs.regs.map(|r| r.pc);
            if let Some(spin) = hs.spinning {
                let age = t.saturating_sub(spin.since_ns);
                let watched = t.saturating_sub(w.spin_first_seen_ns);
                if age < self.stall_ns || !(stopped || watched >= self.confirm_ns) {
                    continue;
                }
                stuck += 1;
                if !in_cycle(hs.hart) {
                    harts.push(StalledHart {
                        hart: hs.hart,
                        reason: StallReason::SpinningTooLong {
                            lock: spin.lock,
                            holder: snap.lock(spin.lock).and_then(|l| l.holder),
                        },
                        for_ns: age,
                        heartbeat: hs.heartbeat,
                        pc: pc.or(Some(spin.pc)),
                    });
                }
            } else if w.heartbeat.is_some() {
                let still = t.saturating_sub(w.heartbeat_since_ns);
                if still >= self.stall_ns {
                    stuck += 1;
                    harts.push(StalledHart {
                        hart: hs.hart,
                        reason: StallReason::NoProgress,
                        for_ns: still,
                        heartbeat: hs.heartbeat,
                        pc,
                    });
                }
            }
        }
        let system_hang = running > 0 && stuck == running;
        self.stall =
            (!harts.is_empty() || system_hang).then_some(StallReport { harts, system_hang });
    }
}

/// Depth-first search for elementary cycles through nodes above `start`; false when out of
/// steps or cycles.
fn cycles_from(
    start: usize,
    node: usize,
    out: &[Vec<RawEdge>],
    path: &mut Vec<(usize, usize)>,
    found: &mut Vec<Vec<(usize, usize)>>,
    steps: &mut u64,
) -> bool {
    for e in &out[node] {
        if *steps == 0 || found.len() >= MAX_CYCLES {
            return false;
        }
        *steps -= 1;
        let hop = (e.waiter, e.holder);
        if e.holder == start {
            let mut c = path.clone();
            c.push(hop);
            found.push(c);
        } else if e.holder > start && !path.iter().any(|&(w, _)| w == e.holder) {
            path.push(hop);
            let ok = cycles_from(start, e.holder, out, path, found, steps);
            path.pop();
            if !ok {
                return false;
            }
        }
    }
    true
}

fn wait_edge(
    snap: &Snapshot,
    t: u64,
    waiter: &HartSnapshot,
    holder: &HartSnapshot,
) -> Option<WaitEdge> {
    let spin = waiter.spinning?;
    let held = holder.held.iter().find(|x| x.lock == spin.lock);
    Some(WaitEdge {
        waiter: waiter.hart,
        lock: spin.lock,
        lock_name: snap.lock_name(spin.lock),
        waiter_pc: spin.pc,
        waiting_since_ns: spin.since_ns,
        waiting_for_ns: t.saturating_sub(spin.since_ns),
        holder: holder.hart,
        // A source that could not tell where the lock was taken records 0.
        holder_pc: held.map(|x| x.pc).filter(|&pc| pc != 0),
        held_since_ns: held.and_then(|x| x.since_ns),
    })
}
