//! `workload=demo`, what `cargo xtask demo` shows, booted for real and watched through the ABI
//! in a shared RAM file while it runs: every bucket of the buffer cache gets blocks, the
//! phases keep coming round, every hart keeps working, and the starter phase shows the lab's
//! contrast (the one `kmem` lock spinning beside the per-hart ones).

use lockscope_abi::*;
use lockscope_engine::qemu::{QemuConfig, RAM_BASE};
use lockscope_kernel_tests::*;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HARTS: usize = 4;
const NBUCKET: usize = 13;
/// Everything below must happen by then (1-second phases: a whole cycle takes 4 s).
const DEADLINE: Duration = Duration::from_secs(60);

/// QEMU, killed when the test ends however it ends.
struct Guest {
    child: Child,
    console: Arc<Mutex<String>>,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Guest {
    fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }
}

fn boot(cfg: &QemuConfig) -> Guest {
    let mut cmd = cfg.command().unwrap_or_else(|e| panic!("{e}"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("starting QEMU");
    let mut out = child.stdout.take().expect("piped stdout");
    let console = Arc::new(Mutex::new(String::new()));
    let sink = console.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
            sink.lock().unwrap().push_str(&text);
        }
    });
    Guest { child, console }
}

/// What one look at guest RAM shows.
struct Look {
    root: Root,
    buckets: Vec<BucketInfo>,
    bufs: Vec<BufInfo>,
    harts: Vec<HartState>,
}

fn read<T: bytemuck::Pod>(ram: &File, addr: u64, n: usize) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    let mut bytes = vec![0u8; size * n];
    ram.read_exact_at(&mut bytes, addr.checked_sub(RAM_BASE)?)
        .ok()?;
    Some(
        bytes
            .chunks_exact(size)
            .map(bytemuck::pod_read_unaligned)
            .collect(),
    )
}

fn look(ram: &File, root_addr: u64) -> Option<Look> {
    let root: Root = read(ram, root_addr, 1)?.pop()?;
    if root.flags & FLAG_READY == 0 || root.bcache == 0 {
        return None;
    }
    let h: BcacheHeader = read(ram, root.bcache, 1)?.pop()?;
    assert_eq!(
        h.nbucket as usize, NBUCKET,
        "the demo runs the hashed cache"
    );
    Some(Look {
        buckets: read(ram, h.buckets, h.nbucket as usize)?,
        bufs: read(ram, h.bufs, h.nbuf as usize)?,
        harts: read(ram, root.harts, HARTS)?,
        root,
    })
}

/// The number after `key` in a `demo: cycle` line (`spins: kmem 123 kmem<i> 4 ...`).
fn count_after(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn demo_fills_every_bucket_and_keeps_moving() {
    let dir = tempfile::tempdir().unwrap();
    let ram_path = dir.path().join("ram");
    let cfg = QemuConfig::new(kernel())
        .smp(HARTS as u32)
        .bootargs("workload=demo secs=1")
        .disk(fresh_disk(dir.path()))
        .shared_ram(&ram_path);
    let elf = std::fs::read(kernel()).unwrap();
    let (root_addr, _) = symbol(&elf, ROOT_SYMBOL).expect("the root symbol");
    let start = Instant::now();
    let guest = boot(&cfg);
    let fail = |what: &str| -> ! {
        panic!(
            "{what} after {:?}; console:\n{}",
            start.elapsed(),
            guest.console()
        )
    };

    // 1. Every bucket gets blocks: each is seen holding a buffer that caches one of its blocks.
    let mut ram = None;
    let mut filled = [false; NBUCKET];
    let first = loop {
        if start.elapsed() > DEADLINE {
            fail(&format!(
                "buckets never given a block: {:?}",
                missing(&filled)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
        if ram.is_none() {
            ram = File::open(&ram_path).ok();
        }
        let Some(l) = ram.as_ref().and_then(|f| look(f, root_addr)) else {
            continue;
        };
        for b in &l.bufs {
            let k = b.bucket as usize;
            if b.blockno != NONE && k < NBUCKET && b.blockno as usize % NBUCKET == k {
                filled[k] |= l.buckets[k].misses > 0;
            }
        }
        if filled.iter().all(|&f| f) {
            break l;
        }
    };
    let ram = ram.unwrap();
    eprintln!("every bucket had blocks {:?} after boot", start.elapsed());
    assert_eq!(first.root.workload, Workload::Demo as u32);

    // 2. Later it is still moving: every hart's heartbeat and the cache's lookups grow, the
    //    phase comes round twice more, and nothing failed.
    let lookups = |l: &Look| l.buckets.iter().map(|b| b.hits + b.misses).sum::<u64>();
    let mut phases = BTreeSet::new();
    let mut changes = 0;
    let mut phase = first.root.live.phase;
    let later = loop {
        if start.elapsed() > DEADLINE {
            fail(&format!(
                "the demo stopped moving (phases seen {phases:?}, {changes} changes)"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
        let Some(l) = look(&ram, root_addr) else {
            continue;
        };
        assert_eq!(
            l.root.live.outcome,
            Outcome::Running as u32,
            "{}",
            guest.console()
        );
        phases.insert(l.root.live.phase);
        if l.root.live.phase != phase {
            phase = l.root.live.phase;
            changes += 1;
        }
        let beating = l
            .harts
            .iter()
            .zip(&first.harts)
            .all(|(now, then)| now.heartbeat > then.heartbeat);
        if beating && lookups(&l) > lookups(&first) && changes >= 2 {
            break l;
        }
    };
    for (h, s) in later.harts.iter().enumerate() {
        assert_eq!(s.status, HartStatus::Running as u32, "hart {h}");
    }
    eprintln!(
        "still moving {:?} after boot: phases {phases:?}, lookups {} -> {}",
        start.elapsed(),
        lookups(&first),
        lookups(&later)
    );

    // 3. Hart 0's report of each phase of the first cycle shows what the phase is for.
    let report = |phase: &str| loop {
        let console = guest.console();
        let prefix = format!("demo: cycle 1 {phase}: ");
        // Only whole lines: the console streams in while the kernel prints.
        let mut lines = console.split_inclusive('\n');
        if let Some(l) = lines.find(|l| l.starts_with(&prefix) && l.ends_with('\n')) {
            break l.trim_end().to_string();
        }
        if start.elapsed() > DEADLINE {
            fail(&format!("no report of the first {phase} phase"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The one `kmem` list spun beside the per-hart lists.
    let starter = report("starter");
    let global = count_after(&starter, "spins: kmem ").expect(&starter);
    let percpu = count_after(&starter, "kmem<i> ").expect(&starter);
    assert!(global > percpu, "{starter}");
    // Lists ran dry and stole.
    let steal = report("steal");
    let page_steals = count_after(&steal, "buffer steals, ").expect(&steal);
    assert!(page_steals > 0, "{steal}");
    // Every hart read the same two blocks: their buffer or bucket locks were the hot spot.
    let crowd = report("crowd");
    let (_, most) = crowd.rsplit_once("most contended ").expect(&crowd);
    assert!(
        most.starts_with("buf") || most.starts_with("bcache.bucket"),
        "{crowd}"
    );
    // Buckets that ran out took buffers from others.
    let l = look(&ram, root_addr).expect("the ABI is still readable");
    let buffer_steals: u64 = l.buckets.iter().map(|b| b.steals).sum();
    assert!(buffer_steals > 0, "no buffer moved between buckets");
    let console = guest.console();
    assert!(!console.contains("FAIL"), "{console}");
    eprintln!(
        "after {:?}: starter kmem spun {global} times (kmem<i> {percpu}); {page_steals} page steals in the steal phase; crowd's hottest lock {most}; {buffer_steals} buffer steals",
        start.elapsed()
    );
}

fn missing(filled: &[bool]) -> Vec<usize> {
    (0..filled.len()).filter(|&k| !filled[k]).collect()
}
