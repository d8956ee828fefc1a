//! What lockscope's QEMU plugin costs the guest: the same workload with and without the plugin,
//! side by side in one run, under QEMU 7.2 (plugin API v1) and QEMU 10 (v2+), on the lockscope
//! kernel and on the xv6-shaped fixture. Two measures:
//! - cpu: QEMU's own CPU seconds for a fixed amount of guest work under `-icount shift=0` (one TCG
//!   thread, the same guest instructions every run), which host load barely moves. The plugin
//!   adds no guest instruction, so the difference is exactly the cost of its callbacks;
//! - wall: the workload's own rate with 2 harts (MTTCG), what a user sees; noisy on a shared host.
//!
//! Environment, for working on the plugin:
//! - `LOCKSCOPE_BENCH_PLUGIN_ONLY=w1,w2,...`: measure only the lines whose label
//!   (`kernel QEMU load measure`, e.g. `fixture QEMU 7.2 rwlktest cpu`) contains every word;
//! - `LOCKSCOPE_BENCH_PLUGIN_BASELINE=DIR`: also run the plugin builds in DIR (a copy of
//!   `target/release/liblockscope_qemu_v*.so` from before a change, same file layout) in each
//!   pair, and print its speed beside the current build's: a before/after in one run;
//! - `LOCKSCOPE_BENCH_PLUGIN_PERF=DIR`: record each fixture run with `perf record -g` into DIR
//!   (the shell commands only, not the boot), to see where the plugin's time goes.

use anyhow::{bail, Context, Result};
use lockscope_engine::qemu::{Console, QemuConfig};
use lockscope_engine::sources::plugin::{self, abi, LockFunctions, PluginApi, PluginFile};
use lockscope_engine::symbols::Symbols;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// One kernel to measure.
pub struct Kernel {
    pub name: &'static str,
    pub elf: PathBuf,
    pub disk: PathBuf,
    pub funcs: LockFunctions,
    /// Workloads: (label, how to run it and read its rate).
    pub loads: Vec<(&'static str, Load)>,
}

/// How a workload runs and what its rate is.
#[derive(Clone, Copy)]
pub enum Load {
    /// lockscope kernel boot arguments, the `ops=` of a fixed amount of work, and how to read
    /// the workload's rate from the console.
    Bootargs(&'static str, u32, fn(&str) -> Option<f64>),
    /// A command typed into the fixture's shell, the text that says it is done, and how many
    /// times in a row (enough CPU time to measure at /proc's 10 ms resolution). On one hart
    /// (the `-icount` runs) the fixture's rwlktest does a fixed 20,000 reads and 300 writes.
    Shell(&'static str, &'static str, u32),
}

/// kalloctest's "kalloctest: total N ops/s".
pub fn kalloc_rate(console: &str) -> Option<f64> {
    console
        .lines()
        .find_map(|l| l.strip_prefix("kalloctest: total "))
        .and_then(|r| r.strip_suffix(" ops/s"))
        .and_then(|n| n.trim().parse().ok())
}

/// bcachetest's test0 "test0: N hits, M misses" over its `secs=2`.
pub fn bcache_rate(console: &str) -> Option<f64> {
    console
        .lines()
        .filter_map(|l| l.strip_prefix("test0: "))
        .find(|r| r.contains(" hits,"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .map(|hits| hits / 2.0)
}

/// A scratch folder under target/, removed on drop (xtask has no tempfile dependency).
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir() -> Result<Scratch> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = crate::cmd::root().join("target/bench-plugin").join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(Scratch(d))
}

fn build_plugins(root: &Path) -> Result<()> {
    let mut c = crate::cmd::cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "lockscope-qemu-v1",
        "-p",
        "lockscope-qemu-v2",
    ]);
    crate::cmd::status(c).context("building the plugin")?;
    let _ = root;
    Ok(())
}

/// Runs every kernel's loads under every QEMU, `pairs` alternating pairs each, and prints the
/// speed ratios (with the plugin / without). `qemus`: (label, binary, data dir for -L, API).
pub fn bench_plugin(
    root: &Path,
    kernels: &[Kernel],
    qemus: &[(&str, PathBuf, Option<PathBuf>, PluginApi)],
    pairs: u32,
) -> Result<()> {
    build_plugins(root)?;
    let only: Vec<String> = std::env::var("LOCKSCOPE_BENCH_PLUGIN_ONLY")
        .unwrap_or_default()
        .split(',')
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty())
        .collect();
    let baseline = std::env::var_os("LOCKSCOPE_BENCH_PLUGIN_BASELINE").map(PathBuf::from);
    println!("== plugin cost: guest speed with lockscope's QEMU plugin vs without (target: at most 5% slower)");
    println!("   cpu: QEMU's CPU seconds for the same guest work under -icount, 1 hart; wall: the workload's own speed, 2 harts");
    for k in kernels {
        let syms = Symbols::load(&k.elf)?;
        let plan = plugin::plan(&syms, &k.funcs)?;
        for (qlabel, qemu, data, api) in qemus {
            let so = root.join("target/release").join(api.file_name());
            let base_so = baseline.as_ref().map(|d| d.join(api.file_name()));
            for (label, load) in &k.loads {
                for icount in [true, false] {
                    let measure = if icount { "cpu" } else { "wall" };
                    let name = format!("{} {qlabel} {label} {measure}", k.name);
                    if !only.iter().all(|w| name.contains(w.as_str())) {
                        continue;
                    }
                    // Runs without, with, and with the baseline build, back to back.
                    let mut builds = vec![("with", so.clone())];
                    if let Some(b) = &base_so {
                        builds.push(("baseline", b.clone()));
                    }
                    let mut off = Vec::new();
                    let mut on = vec![Vec::new(); builds.len()];
                    let mut acquires = vec![Vec::new(); builds.len()];
                    for _ in 0..pairs {
                        off.push(run_once(k, qemu, data.as_deref(), *load, icount, None)?.0);
                        for (i, (_, so)) in builds.iter().enumerate() {
                            let plugin = Some((so.as_path(), &plan));
                            let (speed, n) =
                                run_once(k, qemu, data.as_deref(), *load, icount, plugin)?;
                            on[i].push(speed);
                            acquires[i].extend(n);
                        }
                    }
                    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                    let unit = if icount { "cpu s" } else { "/s   " };
                    let shown = |v: &[f64]| if icount { 1.0 / mean(v) } else { mean(v) };
                    let mut line = format!(
                        "{:<9} {:<8} {:<10} {measure:<4} without {:>10.2} {unit}",
                        k.name,
                        qlabel,
                        label,
                        shown(&off)
                    );
                    for (((what, _), runs), acq) in builds.iter().zip(&on).zip(&acquires) {
                        // Each pair ran back to back: its ratio is less exposed to drifting load.
                        let mut ratios: Vec<f64> =
                            runs.iter().zip(&off).map(|(a, b)| a / b).collect();
                        ratios.sort_by(f64::total_cmp);
                        let median = ratios[ratios.len() / 2];
                        let pairs: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
                        line += &format!(
                            "  {what} {:>10.2} {unit} speed {median:.3} ({:+.1}%) pairs {}",
                            shown(runs),
                            (median - 1.0) * 100.0,
                            pairs.join(" ")
                        );
                        // The plugin's cost per acquisition it saw (icount: the same work).
                        if icount && !acq.is_empty() {
                            let per_run = acq.iter().sum::<u64>() as f64 / acq.len() as f64;
                            let extra = 1.0 / mean(runs) - 1.0 / mean(&off);
                            line += &format!(
                                "  [{per_run:.0} acquisitions, {:.0} ns each]",
                                extra * 1e9 / per_run.max(1.0)
                            );
                        }
                    }
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

/// Acquisitions the plugin has seen so far, all harts.
fn acquires(file: &Option<PluginFile>) -> Option<u64> {
    let f = file.as_ref()?;
    Some(f.hart_states().iter().map(|s| s.acquires).sum())
}

/// User + system clock ticks of process `pid` (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: count fields from after its closing parenthesis.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second of /proc's times (USER_HZ: 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// One boot; returns its speed: under `icount`, runs of the fixed work per QEMU CPU second;
/// otherwise the workload's rate (lockscope kernel) or 1 / wall seconds of the command (fixture);
/// and with the plugin, the acquisitions it saw in one unit of that work.
fn run_once(
    k: &Kernel,
    qemu: &Path,
    data: Option<&Path>,
    load: Load,
    icount: bool,
    plugin: Option<(&Path, &plugin::WatchPlan)>,
) -> Result<(f64, Option<u64>)> {
    let dir = scratch_dir()?;
    let console = dir.path().join("console");
    let smp = if icount { 1 } else { 2 };
    let mut cfg = QemuConfig::new(&k.elf).smp(smp).disk(&k.disk);
    cfg.qemu = qemu.to_path_buf();
    if let Some(d) = data {
        cfg = cfg.arg("-L").arg(d);
    }
    if icount {
        cfg = cfg.arg("-icount").arg("shift=0");
    }
    let file = match plugin {
        Some((so, plan)) => {
            let path = dir.path().join("plugin");
            let f = PluginFile::create(&path, smp, abi::DEFAULT_RING_ENTRIES, plan, (8, 0))?;
            cfg.extra_args.extend(plugin::qemu_plugin_args(so, &path));
            Some(f)
        }
        None => None,
    };
    match load {
        Load::Bootargs(args, ops, rate) => {
            let args = if icount {
                format!("{args} ops={ops}")
            } else {
                format!("{args} secs=2")
            };
            cfg = cfg.bootargs(&args).console(Console::File(console.clone()));
            let mut child = cfg
                .command()?
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            let pid = child.id();
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut cpu = 0;
            let r = loop {
                // Read before reaping: an exited child's stat keeps its times until then.
                if let Some(t) = cpu_ticks(pid) {
                    cpu = t;
                }
                if child.try_wait()?.is_some() {
                    let text = std::fs::read_to_string(&console).unwrap_or_default();
                    break match (icount, rate(&text)) {
                        (true, Some(_)) if cpu > 0 => {
                            Ok((TICKS_PER_S / cpu as f64, acquires(&file)))
                        }
                        (false, Some(r)) => Ok((r, acquires(&file))),
                        _ => Err(anyhow::anyhow!("`{args}` printed no result:\n{text}")),
                    };
                }
                if Instant::now() > deadline {
                    break Err(anyhow::anyhow!("`{args}` did not finish in 600 s"));
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let _ = child.kill();
            let _ = child.wait();
            r
        }
        Load::Shell(cmd, done, times) => {
            cfg = cfg.console(Console::Stdio);
            let mut child = cfg
                .command()?
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let pid = child.id();
            let mut stdin = child.stdin.take().context("stdin")?;
            let mut stdout = child.stdout.take().context("stdout")?;
            let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let t2 = text.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    t2.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            let deadline = Instant::now() + Duration::from_secs(600);
            let wait = |what: &str, from: usize| -> Result<usize> {
                loop {
                    let t = text.lock().unwrap().clone();
                    if let Some(i) = t[from..].find(what) {
                        return Ok(from + i + what.len());
                    }
                    if Instant::now() > deadline {
                        bail!("no {what:?} from the fixture:\n{t}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            let at = wait("$ ", 0)?;
            let perf = match std::env::var_os("LOCKSCOPE_BENCH_PLUGIN_PERF") {
                Some(d) => {
                    let build = plugin.map_or("without".into(), |(so, _)| {
                        so.file_stem().unwrap_or_default().to_string_lossy()
                    });
                    let name = format!(
                        "{}-{build}-{cmd}-{}.data",
                        k.name,
                        if icount { "cpu" } else { "wall" }
                    );
                    Some(
                        std::process::Command::new("perf")
                            .args(["record", "-g", "-q", "-p", &pid.to_string(), "-o"])
                            .arg(Path::new(&d).join(name))
                            .stdout(Stdio::null())
                            .spawn()
                            .context("running perf record")?,
                    )
                }
                _ => None,
            };
            let acq0 = acquires(&file);
            let (cpu0, wall0) = (cpu_ticks(pid).context("QEMU's stat")?, Instant::now());
            let mut at = at;
            for _ in 0..times {
                stdin.write_all(format!("{cmd}\n").as_bytes())?;
                at = wait(done, at)?;
                at = wait("$ ", at)?;
            }
            let (cpu1, wall) = (cpu_ticks(pid).context("QEMU's stat")?, wall0.elapsed());
            let acq = acquires(&file)
                .zip(acq0)
                .map(|(a, b)| (a - b) / times as u64);
            if let Some(mut p) = perf {
                // perf writes its file when interrupted.
                let _ = std::process::Command::new("kill")
                    .args(["-INT", &p.id().to_string()])
                    .status();
                let _ = p.wait();
            }
            let _ = child.kill();
            let _ = child.wait();
            if icount {
                if cpu1 <= cpu0 {
                    bail!("`{cmd}` took no CPU time");
                }
                Ok((times as f64 * TICKS_PER_S / (cpu1 - cpu0) as f64, acq))
            } else {
                Ok((times as f64 / wall.as_secs_f64(), acq))
            }
        }
    }
}

/// `cargo xtask bench plugin`: the lockscope kernel (and the xv6 fixture, when it is in the
/// tree or `LOCKSCOPE_XV6_FIXTURE` names it) under QEMU 7.2 and QEMU 10, `pairs` wall-clock
/// pairs each.
pub fn run_default(root: &Path, elf: &Path, disk: &Path, pairs: u32) -> Result<()> {
    let mut qemus: Vec<(&str, PathBuf, Option<PathBuf>, PluginApi)> = vec![(
        "QEMU 7.2",
        PathBuf::from("qemu-system-riscv64"),
        None,
        PluginApi::V1,
    )];
    match crate::qemu10::ensure_qemu10(root) {
        Ok(bin) => qemus.push((
            "QEMU 10",
            bin,
            Some(crate::qemu10::qemu10_data_dir(root)),
            PluginApi::V2,
        )),
        Err(e) => eprintln!("xtask: no QEMU 10, measuring QEMU 7.2 only: {e:#}"),
    }
    let mut kernels = vec![Kernel {
        name: "lockscope",
        elf: elf.to_path_buf(),
        disk: disk.to_path_buf(),
        funcs: LockFunctions::lockscope_kernel(),
        // The lockscope kernel has no reader-writer lock: its rwlktest-like load is the
        // fixture's.
        loads: vec![
            (
                "kalloctest",
                Load::Bootargs("workload=kalloctest", 100_000, kalloc_rate),
            ),
            (
                "bcachetest",
                Load::Bootargs("workload=bcachetest", 10_000, bcache_rate),
            ),
        ],
    }];
    match build_fixture(root) {
        Ok((elf, fs)) => kernels.push(Kernel {
            name: "fixture",
            elf,
            disk: fs,
            funcs: LockFunctions::xv6(),
            loads: vec![
                ("kalloctest", Load::Shell("kalloctest", "test2 ", 1)),
                ("bcachetest", Load::Shell("bcachetest", "test1 ", 4)),
                ("rwlktest", Load::Shell("rwlktest", "rwlktest ", 40)),
            ],
        }),
        Err(e) => eprintln!("xtask: no xv6 fixture, measuring the lockscope kernel only: {e:#}"),
    }
    bench_plugin(root, &kernels, &qemus, pairs)
}

/// Builds the xv6 fixture from a copy of its tree into target/bench-plugin/fixture.
fn build_fixture(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let src = std::env::var_os("LOCKSCOPE_XV6_FIXTURE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("kernel/xv6-fixture"));
    if !src.join("Makefile").is_file() {
        bail!(
            "no fixture at {} (set LOCKSCOPE_XV6_FIXTURE)",
            src.display()
        );
    }
    let dest = root.join("target/bench-plugin/fixture");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(dest.parent().context("parent")?)?;
    crate::cmd::status({
        let mut c = std::process::Command::new("cp");
        c.arg("-r").arg(&src).arg(&dest);
        c
    })?;
    crate::cmd::status({
        let mut c = std::process::Command::new("make");
        c.current_dir(&dest)
            .args(["-j2", "kernel/kernel", "fs.img"]);
        c
    })
    .context("building the xv6 fixture")?;
    Ok((dest.join("kernel/kernel"), dest.join("fs.img")))
}
