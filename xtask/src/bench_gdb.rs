//! The gdb proxy's cost to the user's gdb: a `stepi` round trip and a 64 KiB memory read,
//! timed inside real gdb-multiarch against the real kernel in QEMU, directly and through
//! lockscope's proxy, alternating in one run (these machines are noisy).
//!
//! Target: through the proxy each costs at most 1.5x the direct one.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lockscope_engine::gdbserver::proxy::RamFile;
use lockscope_engine::gdbserver::{GdbProxy, ProxyOptions};
use lockscope_engine::qemu::{Console, QemuConfig, RAM_BASE};

/// Timed inside gdb, so gdb's start and the connection are not counted. The caches are off so
/// every read goes to the stub, as a read after a stop does.
const SCRIPT: &str = r#"
import gdb, time
gdb.execute("set stack-cache off")
gdb.execute("set code-cache off")
steps, reads = STEPS, READS
t = time.perf_counter()
for _ in range(steps):
    gdb.execute("stepi", to_string=True)
step = (time.perf_counter() - t) / steps
inf = gdb.selected_inferior()
t = time.perf_counter()
for _ in range(reads):
    inf.read_memory(0x80000000, 65536)
read = (time.perf_counter() - t) / reads
print("\nBENCH %.9f %.9f" % (step, read))
"#;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One gdb session against `addr`: (seconds per stepi, seconds per 64 KiB read).
fn measure(elf: &Path, addr: SocketAddr, script: &Path) -> Result<(f64, f64)> {
    let mut child = Command::new("gdb-multiarch")
        .args(["-batch", "-nx", "-ex", "set pagination off"])
        .args(["-ex", &format!("target remote {addr}")])
        .args(["-ex", &format!("source {}", script.display())])
        .args(["-ex", "detach"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running gdb-multiarch")?;
    // A session that hangs (a stub that stopped answering) ends the bench with an error.
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("gdb-multiarch against {addr} did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split("BENCH ").nth(1))
        .with_context(|| {
            format!(
                "gdb printed no result:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let mut it = line.split_whitespace().map(str::parse::<f64>);
    match (it.next(), it.next()) {
        (Some(Ok(s)), Some(Ok(r))) => Ok((s, r)),
        _ => bail!("unreadable result {line:?}"),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `cargo xtask bench gdb`: direct vs through the proxy, `rounds` of each, alternating.
pub fn proxy_cost(elf: &Path, rounds: u32) -> Result<()> {
    println!("== gdb through lockscope's proxy vs directly to QEMU (target: at most 1.5x)");
    let dir = std::env::temp_dir().join(format!("lockscope-bench-gdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("bench.py");
    std::fs::write(
        &script,
        SCRIPT.replace("STEPS", "200").replace("READS", "50"),
    )?;
    let port = free_port()?;
    // Guest RAM shared, as in a session: the proxy answers memory reads of the stopped
    // guest from it.
    let ram = dir.join("ram");
    let mut cmd = QemuConfig::new(elf)
        .smp(2)
        .shared_ram(&ram)
        .bootargs("workload=kalloctest secs=3600 exit=no")
        .gdb_port(port)
        .console(Console::File(dir.join("console")))
        .command()?;
    let _qemu = Kill(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting QEMU")?,
    );
    let qemu = SocketAddr::from(([127, 0, 0, 1], port));
    // Wait for the stub: a refused connection means not yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(qemu).is_err() {
        if Instant::now() > deadline {
            bail!("QEMU's gdb stub did not come up on {qemu}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // That probe was a client too: QEMU stopped the guest for it; the first session resumes it.
    let (mut ds, mut dr, mut ps, mut pr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (s, r) = measure(elf, qemu, &script)?;
        ds.push(s);
        dr.push(r);
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let options = ProxyOptions {
            ram: Some(RamFile {
                path: ram.clone(),
                base: RAM_BASE,
            }),
            ..ProxyOptions::default()
        };
        let proxy = GdbProxy::start_with(qemu, listen, options)?;
        let (s, r) = measure(elf, proxy.user_addr(), &script)?;
        proxy.shutdown()?;
        ps.push(s);
        pr.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (ds, dr, ps, pr) = (
        median(&mut ds),
        median(&mut dr),
        median(&mut ps),
        median(&mut pr),
    );
    println!("{:<22} {:>12} {:>12} {:>7}", "", "direct", "proxy", "ratio");
    println!(
        "{:<22} {:>10.0}µs {:>10.0}µs {:>7.2}",
        "stepi round trip",
        ds * 1e6,
        ps * 1e6,
        ps / ds
    );
    println!(
        "{:<22} {:>10.0}µs {:>10.0}µs {:>7.2}",
        "64 KiB read",
        dr * 1e6,
        pr * 1e6,
        pr / dr
    );
    println!("(medians of {rounds} alternating rounds; 200 stepi and 50 reads each)");
    Ok(())
}
