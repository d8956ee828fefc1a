//! `cargo xtask`: the one entry point for humans and CI.
//!
//! build, qemu, test, demo, bench, soak. Every command first installs what is missing (the
//! rustup target; QEMU, gdb-multiarch and tmux through apt-get when root) or says how to.

mod bench;

use anyhow::{bail, Context, Result};
use lockscope_engine::qemu::{Captured, ExitVerdict, QemuConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const TARGET: &str = "riscv64gc-unknown-none-elf";
/// Boot arguments of `cargo xtask demo`: both halves of the lab at once, long enough to watch,
/// then the machine stays up so the dashboard keeps its final state.
const DEMO_BOOTARGS: &str = "workload=mixed secs=60 exit=no";

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo                              build, then open the dashboard on 4 harts running workload=mixed
  test                              every test, including those that boot QEMU
  build                             the kernel ELF, the disk image and the debugger
  qemu [--smp N] -- BOOTARGS...     boot with these boot arguments; exit status is the kernel's
                                    verdict (0 pass, 2 fail, 3 bad boot arguments, 4 panic)
  bench [WHICH...] [--pairs N] [--smp N] [--rounds N]
                                    benchmarks, all by default: trace (kernel tracing cost, trace=on
                                    vs off), ingest (engine events/s), render (dashboard frame time),
                                    probe (guest speed with lockscope watching vs not)
  soak [--rounds N]                 long kalloctest runs on 1..8 harts, both allocators
  fixtures                          record the dashboard's test fixtures and the sample traces in
                                    traces/ from the real kernel (then review: cargo insta review)
";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return Ok(ExitCode::from(2));
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "build" => build().map(|_| ExitCode::SUCCESS),
        "qemu" => qemu(rest),
        "test" => test(),
        "demo" => demo(),
        "bench" => bench(rest),
        "soak" => soak(rest),
        "fixtures" => fixtures().map(|_| ExitCode::SUCCESS),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => {
            eprint!("unknown command '{other}'\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

pub(crate) fn status(mut c: Command) -> Result<()> {
    let st = c.status().with_context(|| format!("running {c:?}"))?;
    if !st.success() {
        bail!("{c:?} failed with {st}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn in_path(bin: &str) -> bool {
    lockscope_engine::qemu::find_in_path(Path::new(bin)).is_some()
}

/// Installs what the kernel and its tests need, or says exactly how to.
fn ensure_tools() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the riscv64gc-unknown-none-elf target")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        eprintln!("xtask: adding rustup target {TARGET}");
        let mut c = Command::new("rustup");
        c.args(["target", "add", TARGET]);
        status(c)?;
    }
    let missing: Vec<&str> = [
        ("qemu-system-riscv64", "qemu-system-misc"),
        ("gdb-multiarch", "gdb-multiarch"),
        // The dashboard's end-to-end test drives it in a real terminal.
        ("tmux", "tmux"),
    ]
    .iter()
    .filter(|(bin, _)| !in_path(bin))
    .map(|(_, pkg)| *pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        bail!("missing {list}; install with: sudo apt-get install -y {list}");
    }
    eprintln!("xtask: installing {list} with apt-get");
    let install = |pkgs: &[&str]| {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install(&missing) {
        let mut c = Command::new("apt-get");
        c.arg("update");
        status(c)?;
        if !install(&missing) {
            bail!("apt-get install -y {list} failed; run it by hand to see why");
        }
    }
    Ok(())
}

fn kernel_elf() -> PathBuf {
    root()
        .join("target/kernel")
        .join(TARGET)
        .join("release/lockscope-kernel")
}

/// Builds the kernel (cargo rebuilds only what changed) and returns the ELF.
fn build_kernel() -> Result<PathBuf> {
    let mut c = cargo();
    c.args([
        "build",
        "--manifest-path",
        "kernel/Cargo.toml",
        "--target",
        TARGET,
    ])
    .args(["--release", "--target-dir", "target/kernel"]);
    status(c).context("building the kernel")?;
    Ok(kernel_elf())
}

/// The disk image the kernel's buffer cache reads: next to the kernel's target dir, where
/// `lockscope` looks for it.
fn disk_image() -> PathBuf {
    root().join("target/kernel/disk.img")
}

/// Writes the disk image: every block stamped with its number and a checksum
/// (`lockscope_abi::disk`), no file system, so no mkfs is needed.
fn make_disk() -> Result<PathBuf> {
    use lockscope_abi::disk::{stamp, BSIZE, NBLOCKS};
    use std::io::Write;
    let path = disk_image();
    std::fs::create_dir_all(path.parent().expect("target/kernel"))?;
    let tmp = path.with_extension("img.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let mut block = [0u8; BSIZE];
    for n in 0..NBLOCKS {
        stamp(&mut block, n, 0);
        out.write_all(&block)?;
    }
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("writing {}", tmp.display()))?;
    // A rename, so a QEMU already running on the old image keeps it.
    std::fs::rename(&tmp, &path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// The disk image, made again if it is missing, the wrong size, or from another format.
fn ensure_disk() -> Result<PathBuf> {
    use lockscope_abi::disk::{verify, BSIZE, IMAGE_BYTES};
    use std::io::Read;
    let path = disk_image();
    let current = std::fs::File::open(&path).is_ok_and(|mut f| {
        let mut block = [0u8; BSIZE];
        f.metadata().is_ok_and(|m| m.len() == IMAGE_BYTES)
            && f.read_exact(&mut block).is_ok()
            && verify(&block, 0).is_ok()
    });
    if current {
        Ok(path)
    } else {
        make_disk()
    }
}

fn build() -> Result<()> {
    ensure_tools()?;
    let elf = build_kernel()?;
    let disk = make_disk()?;
    let lockscope = build_lockscope()?;
    println!("kernel:   {}", elf.display());
    println!("disk:     {}", disk.display());
    println!("debugger: {}", lockscope.display());
    Ok(())
}

fn parse_smp(rest: &[String], default: u32) -> Result<(u32, Vec<String>)> {
    let mut smp = default;
    let mut others = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--smp" {
            let v = it.next().context("--smp needs a number of harts (1..8)")?;
            smp = v
                .parse()
                .with_context(|| format!("--smp {v}: not a number"))?;
        } else {
            others.push(a.clone());
        }
    }
    Ok((smp, others))
}

fn qemu(rest: &[String]) -> Result<ExitCode> {
    let (before, bootargs) = match rest.iter().position(|a| a == "--") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (smp, unknown) = parse_smp(before, 4)?;
    if let Some(u) = unknown.first() {
        bail!("unknown option '{u}'; usage: cargo xtask qemu [--smp N] -- BOOTARGS...");
    }
    ensure_tools()?;
    let elf = build_kernel()?;
    // The workload's writes go to a scratch overlay (QemuConfig's default), so the image stays
    // as made and several QEMUs can share it.
    let cfg = QemuConfig::new(elf)
        .smp(smp)
        .bootargs(bootargs.join(" "))
        .disk(ensure_disk()?);
    let st = cfg.command()?.status().context("running QEMU")?;
    let verdict = ExitVerdict::from_status(st);
    if !verdict.passed() {
        eprintln!("xtask: {verdict}");
    }
    // QEMU's status is the kernel's verdict.
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

fn test() -> Result<ExitCode> {
    let start = Instant::now();
    ensure_tools()?;
    let elf = build_kernel()?;
    ensure_disk()?;
    let mut c = cargo();
    // Every test binary runs even if one fails, so one report shows every failure.
    c.args(["test", "--workspace", "--no-fail-fast"])
        .env("LOCKSCOPE_KERNEL", &elf);
    let ok = c.status().context("running cargo test")?.success();
    eprintln!("xtask: test took {:.0} s", start.elapsed().as_secs_f64());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn demo() -> Result<ExitCode> {
    ensure_tools()?;
    let elf = build_kernel()?;
    let disk = ensure_disk()?;
    let lockscope = build_lockscope()?;
    eprintln!("xtask: opening the dashboard on 4 harts running `{DEMO_BOOTARGS}`; press ? for help, q to quit");
    let st = Command::new(&lockscope)
        .args(["run", "--smp", "4", "--bootargs", DEMO_BOOTARGS])
        .arg("--kernel")
        .arg(&elf)
        .arg("--disk")
        .arg(&disk)
        .status()
        .with_context(|| format!("running {}", lockscope.display()))?;
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

/// Builds the debugger in release mode and returns the binary.
fn build_lockscope() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--release", "-p", "lockscope"]);
    status(c).context("building the debugger")?;
    Ok(root().join("target/release/lockscope"))
}

/// The kalloctest total ops/s line of a console.
fn total_rate(console: &str) -> Option<u64> {
    console
        .lines()
        .find_map(|l| l.strip_prefix("kalloctest: total "))
        .and_then(|r| r.strip_suffix(" ops/s"))
        .and_then(|n| n.trim().parse().ok())
}

fn boot(elf: &Path, smp: u32, args: &str, timeout: Duration) -> Result<Captured> {
    let c = QemuConfig::new(elf)
        .smp(smp)
        .bootargs(args)
        .disk(ensure_disk()?)
        .run_captured(timeout)?;
    if c.timed_out {
        bail!(
            "`{args}` on {smp} harts did not finish in {timeout:?}:\n{}",
            c.console
        );
    }
    Ok(c)
}

fn option(rest: &[String], name: &str, default: u32) -> Result<u32> {
    match rest.iter().position(|a| a == name) {
        Some(i) => rest
            .get(i + 1)
            .context(format!("{name} needs a number"))?
            .parse()
            .with_context(|| format!("{name}: not a number")),
        None => Ok(default),
    }
}

fn bench(rest: &[String]) -> Result<ExitCode> {
    const ALL: [&str; 4] = ["trace", "ingest", "render", "probe"];
    let mut which: Vec<&str> = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pairs" | "--smp" | "--rounds" => {
                it.next();
            }
            w if ALL.contains(&w) => which.push(w),
            other => bail!(
                "unknown benchmark '{other}'; choose from {}",
                ALL.join(", ")
            ),
        }
    }
    if which.is_empty() {
        which = ALL.to_vec();
    }
    ensure_tools()?;
    for w in which {
        match w {
            "trace" => bench_trace(rest)?,
            "ingest" => bench::ingest()?,
            "render" => bench::render()?,
            _ => {
                let elf = build_kernel()?;
                let lockscope = build_lockscope()?;
                let smp = option(rest, "--smp", 2)?;
                let rounds = option(rest, "--rounds", 5)?;
                bench::probe_effect(&elf, &lockscope, smp, rounds)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The kernel's own cost of tracing: kalloctest with trace=on vs trace=off.
fn bench_trace(rest: &[String]) -> Result<()> {
    let pairs = option(rest, "--pairs", 5)?;
    // One hart by default: with more vCPUs than host cores, host scheduling noise swamps the
    // few percent being measured.
    let smp = option(rest, "--smp", 1)?;
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

fn soak(rest: &[String]) -> Result<ExitCode> {
    let rounds = option(rest, "--rounds", 3)?;
    ensure_tools()?;
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

/// Records real sessions with `lockscope check --record` and turns them into the dashboard's
/// view fixtures (`lockscope replay --dump-view`) and the sample traces in `traces/`, all
/// symbolized with one kernel ELF kept next to the traces.
fn fixtures() -> Result<()> {
    ensure_tools()?;
    let elf = build_kernel()?;
    let disk = ensure_disk()?;
    let lockscope = build_lockscope()?;
    let traces = root().join("traces");
    let kernel = traces.join("lockscope-kernel.elf");
    std::fs::copy(&elf, &kernel).context("copying the kernel ELF into traces/")?;
    let views = root().join("debugger/tui/tests/fixtures");
    let scratch = std::env::temp_dir().join(format!("lockscope-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // (view fixture, sample trace, boot arguments, seconds to watch)
    type Run<'a> = (Option<&'a str>, Option<&'a str>, &'a str, Option<&'a str>);
    let runs: [Run; 8] = [
        (Some("healthy"), None, "workload=mixed secs=30", Some("3")),
        (
            Some("kalloc_global"),
            None,
            "workload=kalloctest kalloc=global secs=30",
            Some("3"),
        ),
        (
            Some("deadlock"),
            Some("bucket-order-deadlock"),
            "bug=bucket-order",
            None,
        ),
        (Some("bget_no_buffers"), None, "bug=refcnt-leak", None),
        (
            Some("null_next"),
            Some("null-next-kerneltrap"),
            "bug=null-next",
            None,
        ),
        // Counters and state only (trace=off): the events of a whole run are tens of MB.
        (
            None,
            Some("refcnt-leak-panic"),
            "bug=refcnt-leak trace=off",
            None,
        ),
        (
            None,
            Some("healthy-mixed"),
            "workload=mixed secs=2 trace=off",
            None,
        ),
        (
            None,
            Some("stale-ticks"),
            "bug=stale-ticks ops=2000 trace=off",
            None,
        ),
    ];
    for (view, sample, bootargs, watch) in runs {
        let name = view.or(sample).expect("each run keeps something");
        let trace = scratch.join(format!("{name}.lstrace"));
        let mut c = Command::new(&lockscope);
        c.args(["check", "--smp", "4", "--bootargs", bootargs])
            .arg("--kernel")
            .arg(&kernel)
            .arg("--disk")
            .arg(&disk)
            .arg("--record")
            .arg(&trace)
            .args(["--for", watch.unwrap_or("120")])
            .stdout(std::process::Stdio::null());
        // check exits 3 or 4 on the bug scenarios: that is the point.
        let st = c.status().context("running lockscope check")?;
        if st.code() == Some(2) {
            bail!("lockscope check `{bootargs}` failed to run");
        }
        if let Some(v) = view {
            let mut r = Command::new(&lockscope);
            r.arg("replay")
                .arg(&trace)
                .args(["--check", "--dump-view"])
                .arg(views.join(format!("{v}.view.json")))
                .stdout(std::process::Stdio::null());
            r.status().context("running lockscope replay")?;
            println!("fixture {v}: `{bootargs}`");
        }
        if let Some(t) = sample {
            std::fs::copy(&trace, traces.join(format!("{t}.lstrace")))?;
            println!("trace {t}: `{bootargs}`");
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("now review the dashboard snapshots: cargo test -p lockscope-tui; cargo insta review");
    Ok(())
}
