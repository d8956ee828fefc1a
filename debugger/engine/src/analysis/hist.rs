//! Log2 histograms of durations.

use serde::{Deserialize, Serialize};

/// Buckets: 0 holds the value 0, bucket `k` (1..=64) holds `[2^(k-1), 2^k)`.
const BUCKETS: usize = 65;

/// A log2 histogram of nanosecond durations: fixed size, no allocation to add a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log2Hist {
    counts: [u64; BUCKETS],
}

impl Default for Log2Hist {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
        }
    }
}

impl Log2Hist {
    #[inline]
    fn bucket(v: u64) -> usize {
        (64 - v.leading_zeros()) as usize
    }

    #[inline]
    pub fn add(&mut self, v: u64) {
        let b = Self::bucket(v);
        self.counts[b] = self.counts[b].saturating_add(1);
    }

    pub fn merge(&mut self, other: &Log2Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// Samples in the histogram.
    pub fn samples(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The range of values bucket `k` holds, as `(lo, hi)` inclusive.
    fn range(k: usize) -> (u64, u64) {
        match k {
            0 => (0, 0),
            64 => (1 << 63, u64::MAX),
            _ => (1 << (k - 1), (1 << k) - 1),
        }
    }

    /// The buckets from the first non-empty one to the last, empty ones between included, so a
    /// UI can draw them as bars.
    pub fn view(&self) -> HistView {
        let first = self.counts.iter().position(|&c| c != 0);
        let last = self.counts.iter().rposition(|&c| c != 0);
        let buckets = match (first, last) {
            (Some(f), Some(l)) => (f..=l)
                .map(|k| {
                    let (lo_ns, hi_ns) = Self::range(k);
                    HistBucket {
                        lo_ns,
                        hi_ns,
                        count: self.counts[k],
                    }
                })
                .collect(),
            _ => Vec::new(),
        };
        HistView {
            samples: self.samples(),
            buckets,
        }
    }
}

/// One bar of a histogram: `count` samples with `lo_ns <= value <= hi_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistBucket {
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

/// A histogram for display: how many samples it is based on, and its non-empty span of buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistView {
    pub samples: u64,
    pub buckets: Vec<HistBucket>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_their_power_of_two_bucket() {
        let mut h = Log2Hist::default();
        for v in [0, 1, 2, 3, 4, 7, 8, 1000, u64::MAX] {
            h.add(v);
        }
        let v = h.view();
        assert_eq!(v.samples, 9);
        let count_of = |lo: u64| v.buckets.iter().find(|b| b.lo_ns == lo).map(|b| b.count);
        assert_eq!(count_of(0), Some(1));
        assert_eq!(count_of(1), Some(1));
        assert_eq!(count_of(2), Some(2)); // 2 and 3
        assert_eq!(count_of(4), Some(2)); // 4 and 7
        assert_eq!(count_of(8), Some(1));
        assert_eq!(count_of(512), Some(1)); // 1000
        let top = v.buckets.last().unwrap();
        assert_eq!((top.lo_ns, top.hi_ns, top.count), (1 << 63, u64::MAX, 1));
    }

    #[test]
    fn view_spans_first_to_last_non_empty_bucket() {
        let mut h = Log2Hist::default();
        assert!(h.view().buckets.is_empty());
        h.add(5);
        h.add(100);
        let v = h.view();
        assert_eq!(v.buckets.first().unwrap().lo_ns, 4);
        assert_eq!(v.buckets.last().unwrap().lo_ns, 64);
        assert_eq!(v.buckets.len(), 5);
        assert_eq!(v.buckets.iter().map(|b| b.count).sum::<u64>(), 2);
    }
}
