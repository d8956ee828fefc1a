//! What lockscope's QEMU plugin costs the guest: the same workload with and without the plugin,
//! side by side in one run, under QEMU 7.2 (plugin API v1) and QEMU 10 (v2+), on the lockscope
//! kernel and on the xv6-shaped fixture. Two measures: guest instructions (`-icount shift=0`:
//! guest time advances 1 ns per instruction, so a rate in guest time counts the instructions the
//! kernel executes, deterministic and independent of host load) and wall clock (MTTCG, what a
//! user sees, noisy on a shared host). The plugin adds no guest instruction, so under `-icount`
//! its cost shows only in wall time; the icount ratio checks that the guest runs the same code.

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
    /// lockscope kernel boot arguments; the rate is read from the console by `rate`.
    Bootargs(&'static str, fn(&str) -> Option<f64>),
    /// A command typed into the fixture's shell; the rate is 1 / the ticks it took.
    Shell(&'static str, &'static str),
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
/// ratios (with plugin / without). `qemus`: (label, binary, data dir for -L, plugin API).
pub fn bench_plugin(
    root: &Path,
    kernels: &[Kernel],
    qemus: &[(&str, PathBuf, Option<PathBuf>, PluginApi)],
    pairs: u32,
) -> Result<()> {
    build_plugins(root)?;
    println!("== plugin cost: guest speed with lockscope's QEMU plugin vs without (target: at most 5% slower)");
    for k in kernels {
        let syms = Symbols::load(&k.elf)?;
        let plan = plugin::plan(&syms, &k.funcs)?;
        for (qlabel, qemu, data, api) in qemus {
            let so = root.join("target/release").join(api.file_name());
            for (label, load) in &k.loads {
                for icount in [true, false] {
                    let mut on = Vec::new();
                    let mut off = Vec::new();
                    let n = if icount { 1 } else { pairs };
                    for _ in 0..n {
                        for (with, out) in [(false, &mut off), (true, &mut on)] {
                            let plugin = with.then_some((so.as_path(), &plan));
                            out.push(run_once(k, qemu, data.as_deref(), *load, icount, plugin)?);
                        }
                    }
                    let mut ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
                    ratios.sort_by(f64::total_cmp);
                    let median = ratios[ratios.len() / 2];
                    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                    println!(
                        "{:<8} {:<9} {:<12} {:<9} without {:>12.0}/s  with {:>12.0}/s  ratio {:.3} ({:+.1}%)",
                        k.name,
                        qlabel,
                        label,
                        if icount { "icount" } else { "wall" },
                        mean(&off),
                        mean(&on),
                        median,
                        (median - 1.0) * 100.0
                    );
                }
            }
        }
    }
    Ok(())
}

/// One boot; returns the workload's rate.
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
        Load::Bootargs(args, rate) => {
            cfg = cfg.bootargs(args).console(Console::File(console.clone()));
            let mut child = cfg
                .command()?
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?;
            let deadline = Instant::now() + Duration::from_secs(300);
            let r = loop {
                let text = std::fs::read_to_string(&console).unwrap_or_default();
                if let Some(r) = rate(&text) {
                    break Ok(r);
                }
                if child.try_wait()?.is_some() || Instant::now() > deadline {
                    break Err(anyhow::anyhow!("`{args}` printed no rate:\n{text}"));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let _ = child.kill();
            let _ = child.wait();
            r
        }
        Load::Shell(cmd, done) => {
            cfg = cfg.console(Console::Stdio);
            let mut child = cfg
                .command()?
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
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
                    std::thread::sleep(Duration::from_millis(50));
                }
            };
            let ticks = |from: usize| -> Result<(u64, usize)> {
                let at = wait("ticks", from)?;
                let t = text.lock().unwrap().clone();
                let line = t[..at].lines().last().unwrap_or("");
                let n = line
                    .split(|c: char| !c.is_ascii_digit())
                    .find_map(|w| w.parse::<u64>().ok())
                    .context("uptime printed no number")?;
                Ok((n, at))
            };
            let at = wait("$ ", 0)?;
            stdin.write_all(b"uptime\n")?;
            let (t0, at) = ticks(at)?;
            stdin.write_all(format!("{cmd}\nuptime\n").as_bytes())?;
            let at = wait(done, at)?;
            let (t1, _) = ticks(at)?;
            let _ = child.kill();
            let _ = child.wait();
            if t1 <= t0 {
                bail!("`{cmd}` took no ticks");
            }
            Ok(1.0 / (t1 - t0) as f64)
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
                Load::Bootargs("workload=kalloctest secs=2", kalloc_rate),
            ),
            (
                "bcachetest",
                Load::Bootargs("workload=bcachetest secs=2", bcache_rate),
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
                ("kalloctest", Load::Shell("kalloctest", "test2 ")),
                ("bcachetest", Load::Shell("bcachetest", "test1 ")),
                ("rwlktest", Load::Shell("rwlktest", "rwlktest ")),
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
