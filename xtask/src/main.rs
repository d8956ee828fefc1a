//! `cargo xtask`: the one entry point for humans and CI.
//!
//! Every command first installs what is missing (the rustup target; QEMU, gdb-multiarch, tmux
//! and the RISC-V C compiler through apt-get when root) or says how to.
//!
//! Adding to it:
//! - a command: a variant of [`Cmd`] (its doc comment is its help) and an arm in [`run`];
//! - a tool a command needs: a [`tools::Tool`] passed to [`ensure_tools`];
//! - something the test binaries need (a built fixture, a fetched QEMU, a Python venv): a
//!   [`TestStep`] in [`TEST_STEPS`] that prepares it and sets the environment variable that
//!   tells the tests where it is (or a check of the tree, like [`no_module_cycles`]).

mod bench;
mod bench_gdb;
mod bench_panic;
mod bench_plugin;
mod bench_recording;
mod cmd;
mod fixture;
mod kernel;
mod modcycles;
mod perfetto;
mod qemu10;
mod record;
mod tools;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use lockscope_abi::exit;
use lockscope_engine::qemu::QemuConfig;
use std::ffi::OsString;
use std::process::{Command, ExitCode};
use std::time::Instant;

use cmd::{cargo, root};
use kernel::{build_kernel, build_lockscope, ensure_disk};

/// Boot arguments of `cargo xtask demo`: the demo workload, which runs until the dashboard
/// quits (docs/kernel.md, "The demo").
const DEMO_BOOTARGS: &str = "workload=demo";
const DEMO_HARTS: u32 = 4;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run, test and measure lockscope",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build, then open the dashboard on 4 harts running workload=demo (? for keys, q quits)
    Demo,
    /// Every test, including those that boot QEMU
    Test {
        /// Instead of the whole workspace, these `cargo test` arguments (after `--`), with the
        /// same preparation: `cargo xtask test -- -p lockscope --test xv6_check`
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// The kernel ELF, the disk image and the debugger
    Build,
    /// Boot the kernel alone; the exit status is its verdict (0 pass, 2 fail, 3 bad boot
    /// arguments or no disk, 4 panic)
    Qemu(QemuArgs),
    /// Benchmarks, all by default: trace (kernel tracing cost, trace=on vs off), ingest
    /// (engine events/s), render (dashboard frame time), probe (guest speed with lockscope
    /// watching vs not), plugin (guest speed with the QEMU plugin), recording (format v2 vs v1), gdb (the gdb proxy vs QEMU directly), panic (panic line
    /// to full report, xv6 fixture and our kernel)
    Bench(BenchArgs),
    /// Long kalloctest runs on 1..8 harts, both allocators
    Soak {
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Record the dashboard's test fixtures and the sample traces in traces/ from the real
    /// kernel (then review: cargo insta review)
    Fixtures,
}

#[derive(Args)]
struct QemuArgs {
    /// Harts
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=8))]
    smp: u32,
    /// Boot arguments, after `--`: cargo xtask qemu -- workload=bcachetest secs=1
    #[arg(last = true)]
    bootargs: Vec<String>,
}

#[derive(Args)]
struct BenchArgs {
    /// Which benchmarks (default: all)
    #[arg(value_enum)]
    which: Vec<Bench>,
    /// trace: trace=on/off pairs of runs in wall-clock time
    #[arg(long, default_value_t = 5)]
    pairs: u32,
    /// Harts (default: 1 for trace, 2 for probe)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8))]
    smp: Option<u32>,
    /// probe: rounds of bare, shared-RAM and gdb-polled runs
    #[arg(long, default_value_t = 5)]
    rounds: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    Trace,
    Ingest,
    Render,
    Probe,
    /// Guest speed with lockscope's QEMU plugin vs without, on QEMU 7.2 and 10
    Plugin,
    /// Recording format v2 against v1: bytes per event, writer CPU, seek time, RAM snapshots
    Recording,
    /// The gdb proxy against QEMU's stub directly: stepi round trips and 64 KiB reads
    Gdb,
    /// Panic capture latency: the panic line to the full report, the xv6 fixture and our kernel
    Panic,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    ensure_tools(&[])?;
    match cmd {
        Cmd::Demo => demo(),
        Cmd::Test { cargo_args } => test(&cargo_args),
        Cmd::Build => build().map(|_| ExitCode::SUCCESS),
        Cmd::Qemu(a) => qemu(a),
        Cmd::Bench(a) => bench(a).map(|_| ExitCode::SUCCESS),
        Cmd::Soak { rounds } => bench::soak(rounds),
        Cmd::Fixtures => record::fixtures().map(|_| ExitCode::SUCCESS),
    }
}

/// Installs the rustup target and every missing tool of [`tools::BASE`] and `extra`, or says
/// exactly how to. Cheap when everything is there, so modules call it for their own tools.
pub(crate) fn ensure_tools(extra: &[tools::Tool]) -> Result<()> {
    tools::ensure(extra)
}

fn build() -> Result<()> {
    let elf = build_kernel()?;
    let disk = kernel::make_disk()?;
    let lockscope = build_lockscope()?;
    println!("kernel:   {}", elf.display());
    println!("disk:     {}", disk.display());
    println!("debugger: {}", lockscope.display());
    Ok(())
}

/// What the kernel's exit status means (`lockscope_abi::exit`).
fn verdict(code: Option<i32>) -> String {
    match code {
        Some(exit::PASS) => "pass".into(),
        Some(exit::FAIL) => "fail: the workload's check failed".into(),
        Some(exit::BOOTARGS) => "bad boot arguments, or a workload that needs the disk".into(),
        Some(exit::PANIC) => "kernel panic".into(),
        Some(1) => "QEMU error (exit status 1)".into(),
        Some(c) => format!("unexpected exit status {c}"),
        None => "killed by a signal".into(),
    }
}

fn qemu(a: QemuArgs) -> Result<ExitCode> {
    let elf = build_kernel()?;
    // The workload's writes go to a scratch overlay (QemuConfig's default), so the image stays
    // as made and several QEMUs can share it.
    let cfg = QemuConfig::new(elf)
        .smp(a.smp)
        .bootargs(a.bootargs.join(" "))
        .disk(ensure_disk()?);
    let st = cfg.command()?.status().context("running QEMU")?;
    if st.code() != Some(exit::PASS) {
        eprintln!("xtask: {}", verdict(st.code()));
    }
    // QEMU's status is the kernel's verdict.
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

/// Environment variables for the test binaries, set by the [`TEST_STEPS`].
#[derive(Default)]
pub(crate) struct TestEnv(Vec<(OsString, OsString)>);

impl TestEnv {
    pub(crate) fn set(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        self.0.push((key.into(), value.into()));
    }
}

/// One thing `cargo xtask test` prepares before `cargo test`: builds or fetches it, and says
/// where it is through [`TestEnv`]; or a check of the tree that fails the run.
pub(crate) type TestStep = fn(&mut TestEnv) -> Result<()>;

/// What the tests need, in order, after the cheap checks.
const TEST_STEPS: &[TestStep] = &[
    no_module_cycles,
    kernel_for_tests,
    plugin_for_tests,
    xv6_fixture_for_tests,
    perfetto_for_tests,
    qemu10_for_tests,
];

/// No import cycles between the modules of any source tree ([`modcycles::TREES`]); first,
/// since it takes a second.
fn no_module_cycles(_env: &mut TestEnv) -> Result<()> {
    modcycles::check()
}

/// The kernel ELF (`LOCKSCOPE_KERNEL`) and the disk image next to it.
fn kernel_for_tests(env: &mut TestEnv) -> Result<()> {
    env.set("LOCKSCOPE_KERNEL", build_kernel()?);
    ensure_disk()?;
    Ok(())
}

/// lockscope's QEMU plugin, built optimized as users get it (a debug build slows the guest), and
/// named to every test by `LOCKSCOPE_PLUGIN_DIR` so that a stale build beside the test binaries
/// is never loaded instead.
fn plugin_for_tests(env: &mut TestEnv) -> Result<()> {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "lockscope-qemu-v1",
        "-p",
        "lockscope-qemu-v2",
    ]);
    cmd::status(c).context("building lockscope's QEMU plugin")?;
    env.set("LOCKSCOPE_PLUGIN_DIR", root().join("target/release"));
    Ok(())
}

/// The xv6-shaped C fixture kernel, built once (`LOCKSCOPE_XV6_FIXTURE`: a built copy of the
/// tree; tests copy it again before booting, since QEMU locks and writes its fs.img).
fn xv6_fixture_for_tests(env: &mut TestEnv) -> Result<()> {
    let root = root();
    let built = fixture::build_fixture(&root, &fixture::default_out(&root), &[])?;
    env.set(fixture::ENV, built);
    Ok(())
}

/// QEMU 10 from bookworm-backports, unpacked under target/ beside the system's 7.2, so the
/// plugin is tested with both plugin API versions.
fn qemu10_for_tests(env: &mut TestEnv) -> Result<()> {
    env.set("LOCKSCOPE_QEMU10", qemu10::ensure_qemu10(&root())?);
    Ok(())
}

/// Perfetto's own schema in a Python venv (`LOCKSCOPE_PERFETTO_PYTHON`), to check exports.
fn perfetto_for_tests(env: &mut TestEnv) -> Result<()> {
    env.set(perfetto::PYTHON_VAR, perfetto::ensure_venv()?);
    Ok(())
}

fn test(cargo_args: &[String]) -> Result<ExitCode> {
    let start = Instant::now();
    let mut env = TestEnv::default();
    for step in TEST_STEPS {
        step(&mut env)?;
    }
    let mut c = cargo();
    // Every test binary runs even if one fails, so one report shows every failure.
    c.arg("test");
    if cargo_args.is_empty() {
        c.args(["--workspace", "--no-fail-fast"]);
    } else {
        c.args(cargo_args);
    }
    c.envs(env.0);
    let ok = c.status().context("running cargo test")?.success();
    eprintln!("xtask: test took {:.0} s", start.elapsed().as_secs_f64());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn demo() -> Result<ExitCode> {
    let elf = build_kernel()?;
    let disk = ensure_disk()?;
    let lockscope = build_lockscope()?;
    eprintln!(
        "xtask: opening the dashboard on {DEMO_HARTS} harts running `{DEMO_BOOTARGS}` until you quit; press ? for help, q to quit"
    );
    let st = Command::new(&lockscope)
        .args(["run", "--smp", &DEMO_HARTS.to_string()])
        .args(["--bootargs", DEMO_BOOTARGS])
        .arg("--kernel")
        .arg(&elf)
        .arg("--disk")
        .arg(&disk)
        .status()
        .with_context(|| format!("running {}", lockscope.display()))?;
    Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8))
}

fn bench(a: BenchArgs) -> Result<()> {
    let which = if a.which.is_empty() {
        vec![
            Bench::Trace,
            Bench::Ingest,
            Bench::Render,
            Bench::Probe,
            Bench::Plugin,
            Bench::Recording,
            Bench::Gdb,
            Bench::Panic,
        ]
    } else {
        a.which
    };
    for w in which {
        match w {
            Bench::Trace => bench::trace(a.pairs, a.smp)?,
            Bench::Ingest => bench::ingest()?,
            Bench::Render => bench::render()?,
            Bench::Probe => {
                let elf = build_kernel()?;
                let lockscope = build_lockscope()?;
                bench::probe_effect(&elf, &lockscope, a.smp.unwrap_or(2), a.rounds)?;
            }
            Bench::Plugin => {
                bench_plugin::run_default(&root(), &build_kernel()?, &ensure_disk()?, a.pairs)?
            }
            Bench::Recording => bench_recording::run(&build_kernel()?, &build_lockscope()?)?,
            Bench::Gdb => bench_gdb::proxy_cost(&build_kernel()?, a.rounds)?,
            Bench::Panic => {
                bench_panic::panic_latency(&root(), &build_kernel()?, &ensure_disk()?, a.rounds)?
            }
        }
    }
    Ok(())
}
