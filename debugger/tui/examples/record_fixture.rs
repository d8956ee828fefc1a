//! Records a `monitor::View` as a JSON fixture for the TUI's snapshot tests.
//!
//! ```text
//! # every fixture the tests use (boots QEMU twice, ~10 s)
//! cargo run -p lockscope-tui --example record_fixture -- all
//! # boot the real kernel in QEMU, read it through shared RAM, dump the view after 1.5 s
//! cargo run -p lockscope-tui --example record_fixture -- live --name healthy --at 1.5 -- workload=kalloctest secs=3
//! # replay a recorded trace (.lstrace) or a JSON-lines feed
//! cargo run -p lockscope-tui --example record_fixture -- trace --name panic --file some.lstrace
//! cargo run -p lockscope-tui --example record_fixture -- feed --name deadlock --file feed.jsonl
//! ```
//!
//! Views land in `debugger/tui/tests/fixtures/<name>.view.json`. The kernel ELF (for symbols)
//! defaults to the one `cargo xtask build` writes.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use lockscope_engine::feed::{Ending, Feed};
use lockscope_engine::memory::SharedRam;
use lockscope_engine::model::LockEvent;
use lockscope_engine::monitor::{Monitor, MonitorConfig, SourceKind, View};
use lockscope_engine::qemu::{Console, QemuConfig, RAM_BASE};
use lockscope_engine::reader::{AbiError, AbiReader};
use lockscope_engine::symbols::Symbols;
use lockscope_engine::trace::TraceReader;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
    /// Fixture name: writes tests/fixtures/NAME.view.json.
    #[arg(long, global = true, default_value = "out")]
    name: String,
    /// Kernel ELF for symbols (and for booting, in live mode).
    #[arg(long, global = true)]
    kernel: Option<PathBuf>,
    /// Do not symbolize (addresses stay raw).
    #[arg(long, global = true)]
    no_symbols: bool,
}

#[derive(Subcommand)]
enum Mode {
    /// Boot the kernel in QEMU with shared RAM and record it live.
    Live {
        #[arg(long, default_value_t = 4)]
        smp: u32,
        /// Seconds after the ABI is ready at which to take the view; default: when QEMU exits.
        #[arg(long)]
        at: Option<f64>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// Boot arguments.
        #[arg(last = true)]
        bootargs: Vec<String>,
    },
    /// Replay a trace written by `lockscope run --record`.
    Trace {
        #[arg(long)]
        file: PathBuf,
    },
    /// Replay a feed written as one JSON `Feed` per line.
    Feed {
        #[arg(long)]
        file: PathBuf,
    },
    /// Record every fixture the tests use: `healthy` and `kalloc_global` live, then the
    /// placeholders.
    All,
    /// Write the three `*.placeholder.view.json` fixtures for the bug scenarios the kernel does
    /// not have yet, from the engine's recorded panic-test trace and hand-written deadlock feed.
    Placeholders,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() -> Result<()> {
    let args = Args::parse();
    let kernel = args.kernel.clone().unwrap_or_else(|| {
        workspace_root().join("target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel")
    });
    let symbols = if args.no_symbols {
        None
    } else {
        Some(Arc::new(Symbols::load(&kernel).with_context(|| {
            format!("loading symbols from {}", kernel.display())
        })?))
    };
    match args.mode {
        Mode::Placeholders => return placeholders(symbols),
        Mode::All => {
            let Some(sym) = symbols else {
                bail!("recording needs symbols; drop --no-symbols");
            };
            for (name, bootargs) in [
                ("healthy", "workload=kalloctest secs=3"),
                ("kalloc_global", "workload=kalloctest kalloc=global secs=3"),
            ] {
                let view = live(
                    &kernel,
                    Some(sym.clone()),
                    4,
                    bootargs,
                    Some(Duration::from_millis(1500)),
                    Duration::from_secs(60),
                )?;
                save(&fixture_path(name), &view)?;
            }
            return placeholders(Some(sym));
        }
        _ => {}
    }
    let view = match &args.mode {
        Mode::Live {
            smp,
            at,
            timeout,
            bootargs,
        } => live(
            &kernel,
            symbols,
            *smp,
            &bootargs.join(" "),
            at.map(Duration::from_secs_f64),
            Duration::from_secs_f64(*timeout),
        )?,
        Mode::Trace { file } => {
            let mut r = TraceReader::open(file)?;
            let mut m = Monitor::new(MonitorConfig::default(), symbols, SourceKind::Trace)?;
            while let Some(f) = r.next_feed()? {
                m.apply(&f);
            }
            m.view()
        }
        Mode::Feed { file } => {
            let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let mut m = Monitor::new(MonitorConfig::default(), symbols, SourceKind::Trace)?;
            for (i, line) in BufReader::new(f).lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let feed: Feed = serde_json::from_str(&line)
                    .with_context(|| format!("{}:{}: not a Feed", file.display(), i + 1))?;
                m.apply(&feed);
            }
            m.view()
        }
        Mode::Placeholders | Mode::All => unreachable!("handled above"),
    };
    let out = fixture_path(&args.name);
    save(&out, &view)
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.view.json"))
}

fn save(out: &Path, view: &View) -> Result<()> {
    lockscope_tui::fixture::save(out, view)?;
    eprintln!(
        "wrote {} (generation {}, {} locks, {} harts, {} events, panic: {}, deadlocks: {})",
        out.display(),
        view.generation,
        view.report.locks.len(),
        view.report.harts.len(),
        view.events_total,
        view.panic.is_some(),
        view.report.deadlocks.len()
    );
    Ok(())
}

/// Kills QEMU when recording ends, however it ends.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn live(
    kernel: &Path,
    symbols: Option<Arc<Symbols>>,
    smp: u32,
    bootargs: &str,
    at: Option<Duration>,
    timeout: Duration,
) -> Result<View> {
    let Some(sym) = symbols else {
        bail!("live mode needs symbols to find the ABI root; drop --no-symbols");
    };
    let root_addr = sym.abi_root()?.address;
    let dir = tempfile::tempdir()?;
    let ram_path = dir.path().join("ram");
    let console_path = dir.path().join("console");
    let config = QemuConfig::new(kernel)
        .smp(smp)
        .bootargs(bootargs)
        .shared_ram(&ram_path)
        .console(Console::File(console_path.clone()));
    eprintln!("booting: {}", config.display());
    let ram_size = config.memory_mib as u64 * 1024 * 1024;
    let mut qemu = Qemu(
        config
            .command()?
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting QEMU")?,
    );
    let start = Instant::now();
    let mut mem = loop {
        if start.elapsed() > timeout {
            bail!("QEMU did not create its RAM file in time");
        }
        if std::fs::metadata(&ram_path).is_ok_and(|m| m.len() == ram_size) {
            break SharedRam::open(&ram_path, RAM_BASE)?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut monitor = Monitor::new(MonitorConfig::default(), Some(sym), SourceKind::SharedRam)?;
    let mut console = ConsoleTail::default();
    let mut reader = loop {
        if start.elapsed() > timeout {
            bail!("the kernel never published its ABI root");
        }
        let ram = mem.range();
        match AbiReader::open(&mut mem, root_addr, ram) {
            Ok(r) => break r,
            // Before QEMU has loaded the ELF, RAM is still zero.
            Err(AbiError::NotReady | AbiError::BadMagic { found: 0, .. }) => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let nharts = reader.layout().nharts;
    monitor.apply(&Feed::TraceStart {
        harts: (0..nharts).collect(),
    });
    let ready = Instant::now();
    let mut next_snap = ready;
    let mut events: Vec<LockEvent> = Vec::new();
    loop {
        let exited = qemu.0.try_wait()?;
        let due = at.is_some_and(|at| ready.elapsed() >= at);
        let last = exited.is_some() || due || start.elapsed() > timeout;
        events.clear();
        let st = reader.drain(&mut mem, usize::MAX / 2, &mut events)?;
        let lost: Vec<(u32, u64)> = st
            .per_hart
            .iter()
            .enumerate()
            .filter(|(_, (_, l))| *l > 0)
            .map(|(h, (_, l))| (h as u32, *l))
            .collect();
        let newest = events.iter().map(|e| e.time_ns).max().unwrap_or(0);
        // The rings drain hart by hart; merge by time so that the monitor's bounded window of
        // recent events holds every hart, not just the last one drained. (Stable: each hart's
        // own order is kept.)
        events.sort_by_key(|e| e.time_ns);
        if !events.is_empty() || !lost.is_empty() {
            monitor.apply(&Feed::Events {
                events: std::mem::take(&mut events),
                lost,
            });
        }
        if last || Instant::now() >= next_snap {
            next_snap += Duration::from_millis(100);
            let now = (ready.elapsed().as_nanos() as u64).max(newest);
            // A live read can be torn (a hart's depth and held[] seen at different moments):
            // read again.
            let mut tries = 0;
            let snap = loop {
                match reader.snapshot(&mut mem, now) {
                    Err(AbiError::Corrupt { .. }) if tries < 10 => tries += 1,
                    r => break r?,
                }
            };
            if tries > 0 {
                eprintln!("note: {tries} torn snapshot read(s) retried");
            }
            monitor.apply(&Feed::Snapshot(snap));
            if let Some(text) = console.read_new(&console_path)? {
                monitor.apply(&Feed::Console(text));
            }
        }
        if let Some(status) = exited {
            let status = status.code().unwrap_or(-1);
            monitor.apply(&Feed::End(Ending::Exited { status }));
            break;
        }
        if last {
            if !due {
                bail!("timed out after {timeout:?}");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(monitor.view())
}

/// The console file, read incrementally.
#[derive(Default)]
struct ConsoleTail {
    offset: u64,
}

impl ConsoleTail {
    fn read_new(&mut self, path: &Path) -> Result<Option<String>> {
        let Ok(mut f) = File::open(path) else {
            return Ok(None);
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        // Keep an incomplete UTF-8 sequence for next time.
        let cut = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => buf.len(),
        };
        self.offset += cut as u64;
        if cut == 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&buf[..cut]).into_owned()))
    }
}

fn read_trace(path: &Path) -> Result<Vec<Feed>> {
    let mut r = TraceReader::open(path)?;
    let mut v = Vec::new();
    while let Some(f) = r.next_feed()? {
        v.push(f);
    }
    Ok(v)
}

fn replay(feeds: &[Feed], symbols: Option<Arc<Symbols>>) -> Result<View> {
    let mut m = Monitor::new(MonitorConfig::default(), symbols, SourceKind::Trace)?;
    for f in feeds {
        m.apply(f);
    }
    Ok(m.view())
}

/// Stand-ins for the bug scenarios until the kernel has them: real recorded data with the
/// scenario's panic message, trap and buffer cache written in.
fn placeholders(symbols: Option<Arc<Symbols>>) -> Result<()> {
    let engine = workspace_root().join("debugger/engine/tests/fixtures/analysis");
    let panic_trace = read_trace(&engine.join("panic_test_2harts.lstrace"))?;
    let edit = |f: &dyn Fn(&mut lockscope_engine::model::Snapshot)| -> Vec<Feed> {
        panic_trace
            .iter()
            .cloned()
            .map(|mut feed| {
                if let Feed::Snapshot(s) = &mut feed {
                    f(s);
                }
                feed
            })
            .collect()
    };

    // refcnt-leak: every buffer stays referenced until bget finds none to recycle.
    let bget = edit(&|s| {
        s.config.workload = Some("bcachetest".into());
        s.config.bug = Some("refcnt-leak".into());
        s.config.bootargs = "workload=bcachetest bug=refcnt-leak panic=halt".into();
        if let Some(p) = &mut s.panic {
            p.message = "bget: no buffers".into();
        }
        s.bcache = Some(leaked_bcache(s.ticks.unwrap_or(0)));
    });
    let mut feeds = bget;
    feeds.push(Feed::Console(
        "start bcachetest test0\npanic: bget: no buffers\n".into(),
    ));
    save(
        &fixture_path("bget_no_buffers.placeholder"),
        &replay(&feeds, symbols.clone())?,
    )?;

    // null-next: a load through a null `next` pointer traps in the kernel.
    let sepc = 0x8000_2b0c; // an instruction in kalloc::alloc of the recorded kernel
    let null_next = edit(&|s| {
        s.config.bug = Some("null-next".into());
        s.config.bootargs = "workload=kalloctest bug=null-next panic=halt".into();
        if let Some(p) = &mut s.panic {
            p.message = "kerneltrap: load page fault at sepc 0x80002b0c stval 0x8".into();
            p.trap = Some(lockscope_engine::model::TrapInfo {
                scause: 13,
                sepc,
                stval: 8,
            });
        }
    });
    save(
        &fixture_path("null_next.placeholder"),
        &replay(&null_next, symbols.clone())?,
    )?;

    // bucket-order: the engine's hand-written deadlock feed (addresses stay raw).
    let f = File::open(engine.join("bucket_order_deadlock.jsonl"))?;
    let mut feeds = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            feeds.push(serde_json::from_str::<Feed>(&line)?);
        }
    }
    save(
        &fixture_path("deadlock.placeholder"),
        &replay(&feeds, None)?,
    )
}

fn leaked_bcache(now_ticks: u64) -> lockscope_engine::model::BcacheSnapshot {
    use lockscope_engine::model::{BcacheSnapshot, BucketSnapshot, BufSnapshot};
    const NBUF: u32 = 30;
    const NBUCKET: u32 = 13;
    let bufs: Vec<BufSnapshot> = (0..NBUF)
        .map(|i| BufSnapshot {
            index: i,
            dev: 1,
            blockno: 100 + i * 7,
            refcnt: 1 + (i % 3 == 0) as u32,
            valid: true,
            last_use_ticks: now_ticks.saturating_sub(3 * i as u64),
            bucket: Some((100 + i * 7) % NBUCKET),
            lock: None,
        })
        .collect();
    BcacheSnapshot {
        mode: "hashed".into(),
        evict_lock: None,
        buckets: (0..NBUCKET)
            .map(|b| BucketSnapshot {
                index: b,
                lock: None,
                nbuf: bufs.iter().filter(|x| x.bucket == Some(b)).count() as u32,
                hits: 50 + b as u64 * 11,
                misses: 3 + b as u64,
                steals: (b % 4) as u64,
            })
            .collect(),
        bufs,
    }
}
