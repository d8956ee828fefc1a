//! What lockscope's QEMU plugin costs the guest: the same workload with and without the plugin,
//! side by side in one run, under QEMU 7.2 (plugin API v1) and QEMU 10 (v2+), on the lockscope
//! kernel and on the xv6-shaped fixture. Two measures:
//! - cpu: QEMU's own CPU seconds for a fixed amount of guest work under `-icount shift=0` (one TCG
//!   thread, the same guest instructions every run), which host load barely moves. The plugin
//!   adds no guest instruction, so the difference is exactly the cost of its callbacks;
//! - wall: the workload's own rate with 2 harts (MTTCG), what a user sees; noisy on a shared host.

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
    /// times in a row (enough CPU time to measure at /proc's 10 ms resolution).
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
    let d = crate::root().join("target/bench-plugin").join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(Scratch(d))
}

fn build_plugins(root: &Path) -> Result<()> {
    let mut c = crate::cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "lockscope-qemu-v1",
        "-p",
        "lockscope-qemu-v2",
    ]);
    crate::status(c).context("building the plugin")?;
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
    println!("== plugin cost: guest speed with lockscope's QEMU plugin vs without (target: at most 5% slower)");
    println!("   cpu: QEMU's CPU seconds for the same guest work under -icount, 1 hart; wall: the workload's own speed, 2 harts");
    for k in kernels {
        let syms = Symbols::load(&k.elf)?;
        let plan = plugin::plan(&syms, &k.funcs)?;
        for (qlabel, qemu, data, api) in qemus {
            let so = root.join("target/release").join(api.file_name());
            for (label, load) in &k.loads {
                for icount in [true, false] {
                    let mut on = Vec::new();
                    let mut off = Vec::new();
                    for _ in 0..pairs {
                        for (with, out) in [(false, &mut off), (true, &mut on)] {
                            let plugin = with.then_some((so.as_path(), &plan));
                            out.push(run_once(k, qemu, data.as_deref(), *load, icount, plugin)?);
                        }
                    }
                    // Each pair ran back to back: its ratio is less exposed to drifting load.
                    let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
                    ratios.sort_by(f64::total_cmp);
                    let median = ratios[ratios.len() / 2];
                    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                    let (unit, a, b) = if icount {
                        ("cpu s", 1.0 / mean(&off), 1.0 / mean(&on))
                    } else {
                        ("/s   ", mean(&off), mean(&on))
                    };
                    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
                    println!(
                        "{:<9} {:<8} {:<10} {:<4} without {:>10.2} {unit}  with {:>10.2} {unit}  speed {:.3} ({:+.1}%)  pairs {}",
                        k.name,
                        qlabel,
                        label,
                        if icount { "cpu" } else { "wall" },
                        a,
                        b,
                        median,
                        (median - 1.0) * 100.0,
                        shown.join(" ")
                    );
                }
            }
        }
    }
    Ok(())
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
/// otherwise the workload's rate (lockscope kernel) or 1 / wall seconds of the command (fixture).
fn run_once(
    k: &Kernel,
    qemu: &Path,
    data: Option<&Path>,
    load: Load,
    icount: bool,
    plugin: Option<(&Path, &plugin::WatchPlan)>,
) -> Result<f64> {
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
    let _file = match plugin {
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
                        (true, Some(_)) if cpu > 0 => Ok(TICKS_PER_S / cpu as f64),
                        (false, Some(r)) => Ok(r),
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
            let (cpu0, wall0) = (cpu_ticks(pid).context("QEMU's stat")?, Instant::now());
            let mut at = at;
            for _ in 0..times {
                stdin.write_all(format!("{cmd}\n").as_bytes())?;
                at = wait(done, at)?;
                at = wait("$ ", at)?;
            }
            let (cpu1, wall) = (cpu_ticks(pid).context("QEMU's stat")?, wall0.elapsed());
            let _ = child.kill();
            let _ = child.wait();
            if icount {
                if cpu1 <= cpu0 {
                    bail!("`{cmd}` took no CPU time");
                }
                Ok(times as f64 * TICKS_PER_S / (cpu1 - cpu0) as f64)
            } else {
                Ok(times as f64 / wall.as_secs_f64())
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
                ("rwlktest", Load::Shell("rwlktest", "rwlktest ", 30)),
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
    crate::status({
        let mut c = std::process::Command::new("cp");
        c.arg("-r").arg(&src).arg(&dest);
        c
    })?;
    crate::status({
        let mut c = std::process::Command::new("make");
        c.current_dir(&dest)
            .args(["-j2", "kernel/kernel", "fs.img"]);
        c
    })
    .context("building the xv6 fixture")?;
    Ok((dest.join("kernel/kernel"), dest.join("fs.img")))
}
