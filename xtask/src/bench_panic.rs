//! Panic capture latency: from the kernel's `panic: ` line on the console (and from the first
//! snapshot that shows the panic) to the full report with every hart's backtrace, in a real
//! lockscope session (QEMU, shared RAM, the gdb stub), for the xv6-shaped C fixture kernel
//! (`BUG=refcnt-leak`, bcachetest: `panic: bget: no buffers`) and for our own kernel
//! (`workload=bcachetest bug=refcnt-leak panic=halt`), alternating in one run (these machines are noisy).
//!
//! Target: under 200 ms for both.
//!
//! The timestamps are the monitor's own ([`lockscope_engine::monitor::PanicTiming`]), so the
//! views' publishing rate is not counted. The fixture's shell is given its command through
//! guest RAM (its console's input buffer, found by DWARF), because sessions take no console
//! input yet.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lockscope_engine::monitor::PanicTiming;
use lockscope_engine::qemu::QemuConfig;
use lockscope_engine::symbols::types::Types;
use lockscope_engine::symbols::Symbols;
use lockscope_engine::{Session, SessionOptions, Target, View};

use crate::fixture;

/// The latency target, for the ratio printed.
const TARGET: Duration = Duration::from_millis(200);
/// From boot to the panic report.
const WITHIN: Duration = Duration::from_secs(240);

/// `cargo xtask bench panic`: `rounds` panics of each kernel, alternating.
pub fn panic_latency(root: &Path, our_elf: &Path, our_disk: &Path, rounds: u32) -> Result<()> {
    println!(
        "== panic capture latency: panic line (or flag) to the full report (target: under 200 ms)"
    );
    let build = tempdir("lockscope-bench-panic")?;
    fixture::build_fixture(root, &build, &[("BUG", "refcnt-leak")])?;
    let (xv6_elf, xv6_disk) = (build.join("kernel/kernel"), build.join("fs.img"));
    let (mut xc, mut xf, mut oc, mut of) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = xv6_panic(&xv6_elf, &xv6_disk, &build)?;
        xc.push(
            t.from_console()
                .context("the fixture's panic line was not seen")?,
        );
        xf.push(
            t.from_flag()
                .context("no snapshot showed the fixture's panic")?,
        );
        let t = our_panic(our_elf, our_disk)?;
        oc.push(
            t.from_console()
                .context("our kernel's panic line was not seen")?,
        );
        of.push(
            t.from_flag()
                .context("no snapshot showed our kernel's panic")?,
        );
    }
    let _ = std::fs::remove_dir_all(&build);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "", "from line", "from flag", "line/target"
    );
    for (name, c, f) in [
        ("xv6 fixture (3 harts)", &mut xc, &mut xf),
        ("lockscope kernel (4 harts)", &mut oc, &mut of),
    ] {
        let (c, f) = (median(c), median(f));
        println!(
            "{name:<34} {:>8.1}ms {:>8.1}ms {:>12.2}",
            ms(c),
            ms(f),
            c.as_secs_f64() / TARGET.as_secs_f64()
        );
    }
    println!(
        "(medians of {rounds} alternating rounds; the report has every hart's registers and stack)"
    );
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn tempdir(prefix: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Waits until `f` says yes about the session's view.
fn until(s: &Session, what: &str, f: impl Fn(&View) -> bool) -> Result<()> {
    let deadline = Instant::now() + WITHIN;
    while !f(&s.view()) {
        if Instant::now() > deadline {
            bail!(
                "no {what} within {WITHIN:?}:\n{}",
                s.view().console.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Ends the session once its console has the panic line too (our kernel records its panic
/// before it prints it: the report can be complete first, which counts as 0).
fn finish(s: Session) -> Result<PanicTiming> {
    until(&s, "panic line", |v| {
        v.console.iter().any(|l| l.contains("panic: "))
    })?;
    Ok(s.finish().monitor.panic_timing())
}

fn reported(v: &View) -> bool {
    v.panic
        .as_ref()
        .is_some_and(|p| !p.harts.is_empty() && p.harts.iter().all(|h| !h.frames.is_empty()))
}

fn xv6_panic(elf: &Path, disk: &Path, dir: &Path) -> Result<PanicTiming> {
    let mut symbols = Symbols::load(elf)?;
    symbols.set_source_root(dir);
    let symbols = Arc::new(symbols);
    let types = Types::load(&symbols)?;
    let options = SessionOptions::new(Target::Run(QemuConfig::new(elf).smp(3).disk(disk)));
    let session = Session::start(options, symbols)?;
    until(&session, "prompt", |v| {
        v.console.iter().any(|l| l.starts_with("$ "))
    })?;
    let ram = session
        .qemu_command
        .as_deref()
        .and_then(|c| c.split("mem-path=").nth(1))
        .and_then(|r| r.split([' ', ',']).next())
        .map(PathBuf::from)
        .context("the session's QEMU has no shared RAM")?;
    type_line(&types, &ram, "bcachetest")?;
    until(&session, "panic report", reported)?;
    finish(session)
}

fn our_panic(elf: &Path, disk: &Path) -> Result<PanicTiming> {
    let symbols = Arc::new(Symbols::load(elf)?);
    let config = QemuConfig::new(elf)
        .smp(4)
        .disk(disk)
        .bootargs("workload=bcachetest bug=refcnt-leak panic=halt");
    let session = Session::start(SessionOptions::new(Target::Run(config)), symbols)?;
    until(&session, "panic report", reported)?;
    finish(session)
}

/// Puts `line` in the fixture console's input buffer and wakes the shell asleep on it: what
/// the UART interrupt does for a typed line.
fn type_line(t: &Types, ram: &Path, line: &str) -> Result<()> {
    let cons = t.global("cons").context("the fixture's `cons`")?;
    let member = |n: &str| -> Result<u64> {
        Ok(t.member(cons.ty, n)
            .with_context(|| format!("cons.{n}"))?
            .offset
            + cons.address)
    };
    let (buf, r, w, e) = (member("buf")?, member("r")?, member("w")?, member("e")?);
    let len = t
        .size_of(t.member(cons.ty, "buf").context("cons.buf")?.ty)
        .context("cons.buf's size")?;
    let procs = t.global("proc").context("proc[]")?;
    let (pty, count) = t.array(procs.ty).context("proc[] is an array")?;
    let stride = t.size_of(pty).context("struct proc's size")?;
    let state = t.member(pty, "state").context("proc.state")?.offset;
    let chan = t.member(pty, "chan").context("proc.chan")?.offset;
    let m = Ram {
        file: std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(ram)?,
    };
    let start = m.get(e);
    let mut end = start;
    for c in line.bytes().chain(std::iter::once(b'\n')) {
        m.put8(buf + u64::from(end) % len, c);
        end = end.wrapping_add(1);
    }
    m.put(e, end);
    m.put(w, end);
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.get(r) != end {
        for i in 0..count.unwrap_or(0) {
            let p = procs.address + i * stride;
            // SLEEPING on &cons.r -> RUNNABLE.
            if m.get(p + state) == 2 && m.get64(p + chan) == r {
                m.put(p + state, 3);
            }
        }
        if Instant::now() > deadline {
            bail!("the fixture's shell never read `{line}`");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Guest RAM through its shared file, by physical address: positioned reads and writes go
/// through the same page cache QEMU maps.
struct Ram {
    file: std::fs::File,
}

impl Ram {
    fn read<const N: usize>(&self, addr: u64) -> [u8; N] {
        let mut b = [0u8; N];
        let _ = self.file.read_at(&mut b, addr - 0x8000_0000);
        b
    }
    fn get(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.read(addr))
    }
    fn get64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.read(addr))
    }
    fn put(&self, addr: u64, v: u32) {
        let _ = self.file.write_at(&v.to_le_bytes(), addr - 0x8000_0000);
    }
    fn put8(&self, addr: u64, v: u8) {
        let _ = self.file.write_at(&[v], addr - 0x8000_0000);
    }
}
