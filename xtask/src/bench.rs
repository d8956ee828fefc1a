//! The debugger's benchmarks: engine ingest, dashboard render time, and the probe effect of
//! watching a guest (bare vs shared RAM vs gdb polling), each reported as a ratio measured side
//! by side in one run, because these machines are noisy.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lockscope_engine::qemu::QemuConfig;

use crate::cmd::{cargo, status};
use crate::kernel::{boot, build_kernel};

/// `cargo bench` of the engine's ingest (decode + analysis on one core).
pub fn ingest() -> Result<()> {
    println!("== engine ingest: events per second, one core (target: at least 20 M/s)");
    let mut c = cargo();
    c.args(["bench", "-q", "-p", "lockscope-engine", "--bench", "ingest"]);
    status(c)
}

/// The dashboard's frame time with 1,024 locks and 8 harts.
pub fn render() -> Result<()> {
    println!("== dashboard render time per frame, 1,024 locks, 8 harts (target: at most 5 ms)");
    let mut c = cargo();
    c.args([
        "run",
        "-q",
        "--release",
        "-p",
        "lockscope-tui",
        "--example",
        "bench_render",
    ]);
    status(c)
}

/// The kernel's own `kalloctest: total N ops/s`, and the longest per-hart run in ms.
fn kalloctest_rate(console: &str) -> Option<(f64, f64)> {
    let total = console
        .lines()
        .find_map(|l| l.strip_prefix("kalloctest: total "))?
        .strip_suffix(" ops/s")?
        .trim()
        .parse()
        .ok()?;
    let ms = console
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("kalloctest: hart ")?;
            let (_, after) = rest.split_once(" ops in ")?;
            after
                .strip_suffix(" ms")?
                .split(':')
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .fold(0.0, f64::max);
    Some((total, ms))
}

/// Guest throughput (ops per second of wall time the guest could have run) of one run, and the
/// gdb pause median when `how` polls.
///
/// The kernel measures its rate in guest time. With shared RAM nothing pauses the guest, so
/// guest time is wall time and any cost (host CPU taken by lockscope) shows in that rate.
/// Polling through gdb stops the guest's clock during each pause, so the pauses are added back.
fn one_run(
    how: &str,
    elf: &Path,
    lockscope: &Path,
    smp: u32,
    args: &str,
) -> Result<(f64, Option<f64>)> {
    let (console, pause_total_ns, pause_median) = match how {
        "bare" => {
            let c = QemuConfig::new(elf)
                .smp(smp)
                .bootargs(args)
                .run_captured(Duration::from_secs(600))?;
            if !c.verdict.passed() {
                bail!("`{args}` failed ({}):\n{}", c.verdict, c.console);
            }
            (c.console, 0.0, None)
        }
        _ => {
            let dir = std::env::temp_dir().join(format!("lockscope-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let log = dir.join(format!("{how}.log"));
            let _ = std::fs::remove_file(&log);
            let mut c = Command::new(lockscope);
            c.args(["check", "--json", "--for", "600", "--smp", &smp.to_string()])
                .args(["--bootargs", args])
                .arg("--kernel")
                .arg(elf)
                .arg("--console-log")
                .arg(&log);
            if how == "gdb" {
                c.args(["--gdb-poll", "--poll-hz", "10"]);
            }
            let out = c.output().context("running lockscope")?;
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).with_context(|| {
                    format!(
                        "lockscope check printed no report: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                })?;
            if report["verdict"] != "ok" {
                bail!("lockscope check of `{args}` says {}", report["summary"]);
            }
            let console = std::fs::read_to_string(&log).context("reading the console log")?;
            if let (Some(cpu), Some(wall)) = (
                report["host_cpu_ns"].as_f64(),
                report["watched_ns"].as_f64(),
            ) {
                println!(
                    "  {how}: lockscope used {:.1}% of one host core while watching",
                    cpu / wall * 100.0
                );
            }
            let total = report["pauses"]["total_ns"].as_f64().unwrap_or(0.0);
            let median = report["pauses"]["median_ns"]
                .as_f64()
                .filter(|_| how == "gdb");
            (console, total, median)
        }
    };
    let (rate, ms) = kalloctest_rate(&console)
        .with_context(|| format!("no kalloctest rate in the console:\n{console}"))?;
    // Pauses stopped the guest clock: spread the same work over the longer wall time.
    let guest_s = ms / 1000.0;
    let rate = if guest_s > 0.0 {
        rate * guest_s / (guest_s + pause_total_ns / 1e9)
    } else {
        rate
    };
    Ok((rate, pause_median))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Guest throughput with lockscope watching vs not, for shared RAM and for gdb polling at
/// 10 Hz: alternating runs, rotated so that none always goes first; ratios per round.
pub fn probe_effect(elf: &Path, lockscope: &Path, smp: u32, rounds: u32) -> Result<()> {
    println!(
        "== probe effect: kalloctest on {smp} harts, guest ops/s with lockscope watching vs not (targets: shared RAM at most 1% slower, gdb polling at 10 Hz at most 3%)"
    );
    let args = "workload=kalloctest secs=4";
    let kinds = ["bare", "shared", "gdb"];
    let mut rate: [Vec<f64>; 3] = Default::default();
    let mut pauses = Vec::new();
    for r in 0..rounds as usize {
        for k in 0..3 {
            let i = (k + r) % 3;
            let (x, p) = one_run(kinds[i], elf, lockscope, smp, args)?;
            println!("round {}: {:<6} {x:>9.0} ops/s", r + 1, kinds[i]);
            rate[i].push(x);
            pauses.extend(p);
        }
    }
    // Per round ratios: each round's three runs are close in time, so they share its load.
    let ratio = |i: usize| -> f64 {
        let mut v: Vec<f64> = rate[i].iter().zip(&rate[0]).map(|(x, b)| x / b).collect();
        median(&mut v)
    };
    let (shared, gdb) = (ratio(1), ratio(2));
    println!(
        "shared RAM: guest speed {:.3} of bare (costs {:.1}%)",
        shared,
        (1.0 - shared) * 100.0
    );
    println!(
        "gdb polling at 10 Hz: guest speed {:.3} of bare (costs {:.1}%)",
        gdb,
        (1.0 - gdb) * 100.0
    );
    if !pauses.is_empty() {
        let m = median(&mut pauses) / 1e6;
        // 10 polls a second of m ms each.
        let stopped_pct = 10.0 * m / 1000.0 * 100.0;
        println!(
            "gdb pause per poll: median {m:.2} ms (median of each run's median): at 10 Hz the guest is stopped {stopped_pct:.1}% of the time"
        );
    }
    Ok(())
}

/// The kalloctest total ops/s line of a console.
fn total_rate(console: &str) -> Option<u64> {
    kalloctest_rate(console).map(|(total, _)| total as u64)
}

/// The kernel's own cost of tracing: kalloctest with trace=on vs trace=off.
///
/// One hart by default: with more vCPUs than host cores, host scheduling noise swamps the few
/// percent being measured.
pub fn trace(pairs: u32, smp: Option<u32>) -> Result<()> {
    let smp = smp.unwrap_or(1);
    let elf = build_kernel()?;
    println!("== kernel tracing cost (target: at most 5% of throughput)");
    // `-icount shift=0`: guest time advances one nanosecond per guest instruction, so ops/s in
    // guest time measures the kernel's own cost, deterministic and independent of host load.
    println!("kalloctest throughput, {smp} harts, trace=on vs trace=off, alternating 3 s runs");
    println!("-- guest instructions (QEMU -icount shift=0): deterministic");
    bench_pairs(&elf, smp, 2, true)?;
    println!("-- wall clock (QEMU MTTCG): what a user sees, noisy on a shared host");
    bench_pairs(&elf, smp, pairs, false)
}

fn bench_pairs(elf: &Path, smp: u32, pairs: u32, icount: bool) -> Result<()> {
    let mut on = Vec::new();
    let mut off = Vec::new();
    for i in 0..pairs {
        for (trace, out) in [("on", &mut on), ("off", &mut off)] {
            let args = format!("workload=kalloctest secs=3 trace={trace}");
            let mut cfg = QemuConfig::new(elf).smp(smp).bootargs(&args);
            if icount {
                cfg = cfg.arg("-icount").arg("shift=0");
            }
            let c = cfg.run_captured(Duration::from_secs(300))?;
            if c.timed_out {
                bail!("`{args}` did not finish:\n{}", c.console);
            }
            let rate = total_rate(&c.console)
                .with_context(|| format!("no throughput line in:\n{}", c.console))?;
            println!("pair {}: trace={trace:<3} {rate:>9} ops/s", i + 1);
            out.push(rate as f64);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (m_on, m_off) = (mean(&on), mean(&off));
    // Each pair ran back to back, so its ratio is less exposed to slow drifts in host load.
    let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!("mean trace=on {m_on:.0} ops/s, trace=off {m_off:.0} ops/s");
    println!(
        "median pair ratio on/off {median:.3}: tracing costs {:.1}% of throughput (target: at most 5%)",
        (1.0 - median) * 100.0
    );
    Ok(())
}

/// `cargo xtask soak`: long kalloctest runs on 1..8 harts, both allocators.
pub fn soak(rounds: u32) -> Result<ExitCode> {
    let elf = build_kernel()?;
    let mut failures = 0;
    for round in 1..=rounds {
        for smp in 1..=8 {
            for (mode, want_pass) in [("percpu", true), ("global", smp == 1)] {
                let args = format!("workload=kalloctest kalloc={mode} secs=10");
                let c = boot(&elf, smp, &args, Duration::from_secs(300))?;
                let tot = c
                    .console
                    .lines()
                    .find(|l| l.starts_with("tot="))
                    .unwrap_or("");
                let good = c.verdict.passed() == want_pass;
                println!(
                    "round {round} smp {smp} {mode:<6} {:<4} {tot} ({:.0} s)",
                    if good { "ok" } else { "BAD" },
                    c.elapsed.as_secs_f64()
                );
                if !good {
                    failures += 1;
                    println!("{}", c.console);
                }
            }
        }
    }
    println!("soak: {failures} unexpected results");
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
