//! The lab's own tests as the console shows them (`start test0`, `test0 results:`,
//! `test0: OK`), and the lock counters over each test's window: what kalloctest and bcachetest
//! print and judge, recomputed from the kernel's `n` and `nts`.
//!
//! The lab measures `tot=` as the sum of `nts` over the locks whose names start with "kmem"
//! or "bcache" (its `statslock`), between a count taken after `start testN` and one taken
//! after `testN results`; a window here runs from the first snapshot after the start line to
//! the first after the results line (or after `testN OK`/`FAIL` when a test prints no results
//! line). The same total over every allocator and buffer-cache lock whatever its name
//! (`tot_all`) shows what a misnamed lock hides from the lab.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::{LockId, Snapshot};

/// Tests kept at most (a console that prints `start` in a loop must not grow this forever).
const MAX_TESTS: usize = 64;
/// Lines kept per test to quote.
const MAX_LINE: usize = 120;

/// What the lab's own output said of a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabResult {
    Ok,
    Fail,
}

/// One lock's counters over a test's window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabLock {
    pub id: LockId,
    pub name: String,
    pub path: Option<String>,
    /// `#test-and-set` over the window.
    pub nts: i64,
    /// `#acquire()` over the window.
    pub n: i64,
    /// Counted by the lab's `statslock` (named kmem* or bcache*).
    pub lab_counted: bool,
    /// An allocator or buffer-cache lock, whatever its name.
    pub allocator_or_cache: bool,
}

/// One test the console showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabTest {
    /// `test0`, `rwlktest`.
    pub name: String,
    /// The line that opened the window.
    pub start_line: String,
    /// The line that closed it (`test0 results:`), when it has closed.
    pub end_line: Option<String>,
    /// From the lab's own output.
    pub result: Option<LabResult>,
    pub result_line: Option<String>,
    /// Counters were read at both ends of the window (a console without the kernel's
    /// counters, or a window still open, has none).
    pub measured: bool,
    /// Locks whose counters moved in the window, most test-and-sets first.
    pub locks: Vec<LabLock>,
    /// `tot=` as the lab's `statslock` computes it: `nts` summed over locks named kmem* or
    /// bcache*, over the window.
    pub tot: i64,
    /// The same over every allocator and buffer-cache lock, whatever its name.
    pub tot_all: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    Start,
    End,
}

/// Counters at one end of a window: per lock, `(n, nts)`.
type Counts = HashMap<LockId, (i64, i64)>;

/// Follows the console and the snapshots.
#[derive(Clone, Debug, Default)]
pub(super) struct LabTracker {
    partial: String,
    tests: Vec<LabTest>,
    /// The counters read at each open window's start, and which snapshot they came from.
    starts: HashMap<usize, (u64, Counts)>,
    /// Snapshots seen.
    snapshots: u64,
    /// A window edge waiting for the next snapshot.
    pending: Vec<(usize, Edge)>,
    /// The kernel keeps the lab's counters (the first snapshot said so).
    has_counts: bool,
}

/// True when `text` may hold a line that opens or closes a test's window: the session then
/// reads the counters at once instead of at the next periodic snapshot.
pub fn may_bound_a_test(text: &str) -> bool {
    text.contains("start ")
        || text.contains("results")
        || text.contains("OK")
        || text.contains("FAIL")
}

fn clip(line: &str) -> String {
    line.chars().take(MAX_LINE).collect()
}

impl LabTracker {
    pub(super) fn tests(&self) -> &[LabTest] {
        &self.tests
    }

    /// The first test the lab's own output failed, if any.
    pub(super) fn failed(&self) -> Option<&LabTest> {
        self.tests
            .iter()
            .find(|t| t.result == Some(LabResult::Fail))
    }

    /// Console text, in the pieces it arrives in.
    pub(super) fn on_console(&mut self, text: &str) {
        self.partial.push_str(text);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.on_line(line.trim_end_matches(['\n', '\r']).trim());
        }
        // A console that never ends a line must not grow this forever.
        if self.partial.len() > 4096 {
            self.partial.clear();
        }
    }

    fn open(&self) -> Option<usize> {
        self.tests
            .iter()
            .rposition(|t| t.end_line.is_none() && t.result.is_none())
    }

    fn on_line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("start ") {
            let name = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches(':');
            if name.is_empty() || self.tests.len() >= MAX_TESTS {
                return;
            }
            // A test that never closed ends where the next one starts.
            if let Some(i) = self.open() {
                self.tests[i].end_line = Some(clip(line));
                self.pending.push((i, Edge::End));
            }
            self.tests.push(LabTest {
                name: name.to_string(),
                start_line: clip(line),
                end_line: None,
                result: None,
                result_line: None,
                measured: false,
                locks: Vec::new(),
                tot: 0,
                tot_all: 0,
            });
            self.pending.push((self.tests.len() - 1, Edge::Start));
            return;
        }
        // `test0 results:`, `test1 results: 2000 reads`.
        if let Some(i) = self.open() {
            let name = self.tests[i].name.clone();
            if line
                .strip_prefix(&name)
                .is_some_and(|r| r.trim_start().starts_with("results"))
            {
                self.tests[i].end_line = Some(clip(line));
                self.pending.push((i, Edge::End));
                return;
            }
        }
        // `test0: OK`, `test1 OK`, `test2 FAIL: ...`, `rwlktest OK`: for the newest test
        // of that name that has no result yet.
        let Some(i) = self
            .tests
            .iter()
            .rposition(|t| t.result.is_none() && line.starts_with(t.name.as_str()))
        else {
            return;
        };
        let rest = line[self.tests[i].name.len()..]
            .trim_start_matches(':')
            .trim_start();
        let result = if rest.starts_with("OK") {
            LabResult::Ok
        } else if rest.starts_with("FAIL") {
            LabResult::Fail
        } else {
            return;
        };
        let t = &mut self.tests[i];
        t.result = Some(result);
        t.result_line = Some(clip(line));
        if t.end_line.is_none() {
            t.end_line = Some(clip(line));
            self.pending.push((i, Edge::End));
        }
    }

    /// A snapshot: the counters for every window edge seen since the last one.
    pub(super) fn on_snapshot(&mut self, snap: &Snapshot) {
        self.snapshots += 1;
        if !self.has_counts {
            self.has_counts = snap.locks.iter().any(|l| l.lab.is_some());
        }
        if self.pending.is_empty() {
            return;
        }
        let counts: Counts = snap
            .locks
            .iter()
            .filter_map(|l| l.lab.map(|c| (l.meta.id, (c.n, c.nts))))
            .collect();
        for (i, edge) in std::mem::take(&mut self.pending) {
            match edge {
                Edge::Start => {
                    self.starts.insert(i, (self.snapshots, counts.clone()));
                }
                Edge::End => {
                    // A window that opened and closed before one snapshot (a console read
                    // after the fact, as when joining a session) was not measured.
                    match self.starts.remove(&i) {
                        Some((at, start)) if at != self.snapshots => {
                            self.close(i, &start, &counts, snap)
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn close(&mut self, i: usize, start: &Counts, end: &Counts, snap: &Snapshot) {
        let mut cache_locks: Vec<LockId> = Vec::new();
        if let Some(k) = &snap.kmem {
            cache_locks.extend(k.lists.iter().filter_map(|l| l.lock));
        }
        if let Some(b) = &snap.bcache {
            cache_locks.extend(b.buckets.iter().filter_map(|k| k.lock));
            cache_locks.extend(b.evict_lock);
        }
        let mut locks = Vec::new();
        let (mut tot, mut tot_all) = (0i64, 0i64);
        for (&id, &(n1, nts1)) in end {
            let (n0, nts0) = start.get(&id).copied().unwrap_or((0, 0));
            // The kernel's counters are C ints: a delta across a wrap is still right.
            let delta = |a: i64, b: i64| i64::from((a as i32).wrapping_sub(b as i32));
            let (n, nts) = (delta(n1, n0), delta(nts1, nts0));
            if n == 0 && nts == 0 {
                continue;
            }
            let Some(l) = snap.lock(id) else { continue };
            let lab_counted = l.meta.name.starts_with("kmem") || l.meta.name.starts_with("bcache");
            let allocator_or_cache = cache_locks.contains(&id);
            if lab_counted {
                tot += nts;
            }
            if allocator_or_cache {
                tot_all += nts;
            }
            locks.push(LabLock {
                id,
                name: l.meta.name.clone(),
                path: l.path.clone(),
                nts,
                n,
                lab_counted,
                allocator_or_cache,
            });
        }
        locks.sort_by(|a, b| b.nts.cmp(&a.nts).then(b.n.cmp(&a.n)).then(a.id.cmp(&b.id)));
        let t = &mut self.tests[i];
        t.locks = locks;
        t.tot = tot;
        t.tot_all = tot_all;
        t.measured = self.has_counts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        BcacheSnapshot, BucketSnapshot, KmemList, KmemSnapshot, LabCounts, LockMeta, LockState,
    };

    fn snap(counts: &[(&str, i64, i64)]) -> Snapshot {
        let locks = counts
            .iter()
            .enumerate()
            .map(|(i, (name, n, nts))| LockState {
                meta: LockMeta {
                    id: i as u32,
                    name: name.to_string(),
                    class: String::new(),
                },
                path: Some(format!("path{i}")),
                lab: Some(LabCounts { n: *n, nts: *nts }),
                ..LockState::default()
            })
            .collect();
        Snapshot {
            locks,
            kmem: Some(KmemSnapshot {
                lists: vec![KmemList {
                    lock: Some(0),
                    ..KmemList::default()
                }],
                ..KmemSnapshot::default()
            }),
            bcache: Some(BcacheSnapshot {
                buckets: vec![
                    BucketSnapshot {
                        lock: Some(1),
                        ..BucketSnapshot::default()
                    },
                    BucketSnapshot {
                        lock: Some(2),
                        ..BucketSnapshot::default()
                    },
                ],
                ..BcacheSnapshot::default()
            }),
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_window_measures_the_deltas_the_lab_judges() {
        let mut t = LabTracker::default();
        t.on_snapshot(&snap(&[
            ("kmem", 10, 5),
            ("bcache.bucket", 100, 7),
            ("mybucket", 50, 3),
        ]));
        t.on_console("$ bcachetest\nstart te");
        t.on_console("st0\n");
        t.on_snapshot(&snap(&[
            ("kmem", 12, 5),
            ("bcache.bucket", 110, 7),
            ("mybucket", 60, 3),
        ]));
        t.on_console("test0 results:\n--- lock kmem/bcache stats\n");
        // Counters move after the window closed: not counted.
        t.on_snapshot(&snap(&[
            ("kmem", 20, 9),
            ("bcache.bucket", 200, 17),
            ("mybucket", 90, 13),
        ]));
        t.on_snapshot(&snap(&[
            ("kmem", 30, 99),
            ("bcache.bucket", 300, 99),
            ("mybucket", 99, 99),
        ]));
        t.on_console("tot= 22\ntest0: OK\n");
        let x = &t.tests()[0];
        assert_eq!(x.name, "test0");
        assert_eq!(x.end_line.as_deref(), Some("test0 results:"));
        assert_eq!(x.result, Some(LabResult::Ok));
        assert!(x.measured);
        // kmem +4, bcache.bucket +10; mybucket +10 is a cache lock the lab does not count.
        // Every one of them is an allocator or cache lock.
        assert_eq!((x.tot, x.tot_all), (14, 24));
        let names: Vec<&str> = x.locks.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["bcache.bucket", "mybucket", "kmem"]);
        assert!(!x.locks[1].lab_counted && x.locks[1].allocator_or_cache);
        assert!(t.failed().is_none());
    }

    #[test]
    fn a_test_without_a_results_line_closes_at_its_verdict_and_fail_is_seen() {
        let mut t = LabTracker::default();
        t.on_console("start test2\n");
        t.on_snapshot(&snap(&[("kmem", 0, 0)]));
        t.on_console("total free number of pages: 32000 (out of 32768)\n.....\n");
        t.on_console("test2 FAIL: 10 free, 20 allocated\n");
        t.on_snapshot(&snap(&[("kmem", 40, 2)]));
        let x = &t.tests()[0];
        assert_eq!(x.result, Some(LabResult::Fail));
        assert_eq!(x.tot, 2);
        assert_eq!(t.failed().unwrap().name, "test2");
        // `rwlktest OK` and `start rwlktest: 4 readers, 1 writer`.
        t.on_console("start rwlktest: 4 readers, 1 writer\n");
        t.on_console("rwlktest: 100 reads, 3 writes\nrwlktest OK\n");
        let x = &t.tests()[1];
        assert_eq!(x.name, "rwlktest");
        assert_eq!(x.result, Some(LabResult::Ok));
        assert!(!x.measured, "no snapshot closed it yet");
        // Opened and closed within one snapshot: not measured.
        t.on_snapshot(&snap(&[("kmem", 50, 2)]));
        assert!(!t.tests()[1].measured);
    }

    #[test]
    fn counters_that_wrap_give_the_right_delta() {
        let mut t = LabTracker::default();
        t.on_console("start test1\n");
        t.on_snapshot(&snap(&[("kmem", i64::from(i32::MAX) - 1, 0)]));
        t.on_console("test1 results:\n");
        t.on_snapshot(&snap(&[("kmem", i64::from(i32::MIN) + 1, 0)]));
        assert_eq!(t.tests()[0].locks[0].n, 3);
    }
}
