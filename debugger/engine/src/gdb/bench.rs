//! Measures what polling through the stub costs the guest, for `cargo xtask bench` and the
//! docs: the pause of an interrupt + read + resume cycle, and read throughput while stopped.

use std::time::{Duration, Instant};

use super::client::GdbClient;
use super::error::GdbError;

/// Distribution of a set of durations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub samples: usize,
    pub min: Duration,
    pub median: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarizes `samples` (sorted in place). Empty input gives zeros.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let n = samples.len();
        if n == 0 {
            return Self::default();
        }
        let at = |q: f64| samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        Self {
            samples: n,
            min: samples[0],
            median: at(0.5),
            p99: at(0.99),
            max: samples[n - 1],
        }
    }
}

/// Pauses of a polling cycle reading `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseReport {
    pub len: usize,
    /// From the interrupt byte to the guest running again.
    pub pause: Summary,
    /// From the interrupt byte to the stop reply.
    pub interrupt: Summary,
}

/// Runs `cycles` polling cycles on a running guest: interrupt, read `len` bytes at `addr`,
/// resume, then let the guest run for `run_between`. Cycles in which the guest stopped for a
/// reason of its own end the measurement with what was collected.
pub fn measure_pauses(
    client: &mut GdbClient,
    addr: u64,
    len: usize,
    cycles: usize,
    run_between: Duration,
) -> Result<PauseReport, GdbError> {
    let mut buf = vec![0u8; len];
    let mut pauses = Vec::with_capacity(cycles);
    let mut interrupts = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let p = client.pause_with(|c| c.read_memory(addr, &mut buf))?;
        if p.stop.is_some() {
            break;
        }
        pauses.push(p.pause);
        interrupts.push(client.stats().last_interrupt);
        std::thread::sleep(run_between);
    }
    Ok(PauseReport {
        len,
        pause: Summary::of(&mut pauses),
        interrupt: Summary::of(&mut interrupts),
    })
}

/// Reads of a stopped guest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadReport {
    pub len: usize,
    pub read: Summary,
    /// Bytes per second at the median.
    pub throughput: f64,
}

/// Times `reads` reads of `len` bytes at `addr` on a stopped guest.
pub fn measure_reads(
    client: &mut GdbClient,
    addr: u64,
    len: usize,
    reads: usize,
) -> Result<ReadReport, GdbError> {
    let mut buf = vec![0u8; len];
    let mut times = Vec::with_capacity(reads);
    for _ in 0..reads {
        let t = Instant::now();
        client.read_memory(addr, &mut buf)?;
        times.push(t.elapsed());
    }
    let read = Summary::of(&mut times);
    let secs = read.median.as_secs_f64();
    Ok(ReadReport {
        len,
        read,
        throughput: if secs > 0.0 { len as f64 / secs } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_quantiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.samples, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.median, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(Summary::of(&mut []), Summary::default());
        let mut one = [Duration::from_millis(7)];
        assert_eq!(Summary::of(&mut one).p99, Duration::from_millis(7));
    }
}
