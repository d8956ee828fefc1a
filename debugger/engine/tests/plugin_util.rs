//! Support for the plugin tests: the plugin builds, QEMU 7.2 and 10, a kernel booted with the
//! plugin and a drainer thread, and the lockscope kernel's own lock table read from shared RAM.
//! Included by the `plugin_*` tests with `#[path]`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lockscope_engine::memory::{GuestMemory, SharedRam};
use lockscope_engine::qemu::{Console, QemuConfig, RAM_BASE};
use lockscope_engine::sources::plugin::{
    self as plugin, LockFunctions, PluginApi, PluginEvent, PluginEventKind, PluginFile,
    PluginStatus, WatchPlan,
};
use lockscope_engine::symbols::Symbols;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The lockscope kernel ELF (`LOCKSCOPE_KERNEL`, or where `cargo xtask build` puts it).
pub fn kernel() -> PathBuf {
    std::env::var_os("LOCKSCOPE_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace().join("target/kernel/riscv64gc-unknown-none-elf/release/lockscope-kernel")
        })
}

pub fn disk() -> PathBuf {
    workspace().join("target/kernel/disk.img")
}

/// QEMU 10 as `cargo xtask qemu10` unpacks it (`LOCKSCOPE_QEMU10` overrides).
pub fn qemu10() -> PathBuf {
    let p = std::env::var_os("LOCKSCOPE_QEMU10")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/qemu-10/usr/bin/qemu-system-riscv64"));
    assert!(
        p.is_file(),
        "QEMU 10 is not at {}: fetch it with `cargo xtask qemu10` (Debian bookworm-backports) or set LOCKSCOPE_QEMU10",
        p.display()
    );
    p
}

/// QEMU 10's data directory for `-L`, next to its binary.
pub fn qemu10_data(bin: &Path) -> PathBuf {
    bin.parent().unwrap().join("../share/qemu")
}

/// Builds both plugin builds (release: the hot path is what is measured) once per test run.
pub fn plugin_so(api: PluginApi) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = std::process::Command::new(cargo)
            .current_dir(workspace())
            .args([
                "build",
                "--release",
                "-p",
                "lockscope-qemu-v1",
                "-p",
                "lockscope-qemu-v2",
            ])
            .status()
            .expect("running cargo build for the plugin");
        assert!(st.success(), "building the plugin failed");
    });
    workspace().join("target/release").join(api.file_name())
}

/// QEMU tests run one at a time: they share 2 cores.
pub static QEMU_LOCK: Mutex<()> = Mutex::new(());

/// Which QEMU to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Qemu72,
    Qemu10,
}

/// A QEMU running a kernel with the plugin; killed on drop.
pub struct Run {
    pub child: Child,
    pub file: PluginFile,
    pub dir: tempfile::TempDir,
    pub ram: PathBuf,
    pub console: PathBuf,
    pub events: Vec<PluginEvent>,
    pub lost: u64,
    pub bad: u64,
    pub drains: u64,
    pub max_gap: Duration,
    last_drain: Option<Instant>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots `elf` under `which` QEMU with the plugin watching `plan`, shared RAM, and `extra`
/// QEMU arguments; waits until the plugin says it runs.
pub fn boot(
    which: Which,
    elf: &Path,
    smp: u32,
    bootargs: &str,
    plan: &WatchPlan,
    with_disk: bool,
    extra: &[&str],
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin");
    let file =
        PluginFile::create(&path, smp, plugin::abi::DEFAULT_RING_ENTRIES, plan, (8, 0)).unwrap();
    let ram = dir.path().join("ram");
    let console = dir.path().join("console");
    let mut cfg = QemuConfig::new(elf)
        .smp(smp)
        .bootargs(bootargs)
        .shared_ram(&ram)
        .console(Console::File(console.clone()));
    if with_disk {
        cfg = cfg.disk(disk());
    }
    let api = match which {
        Which::Qemu72 => PluginApi::V1,
        Which::Qemu10 => {
            let q = qemu10();
            cfg.extra_args.push("-L".into());
            cfg.extra_args.push(qemu10_data(&q).into());
            cfg.qemu = q;
            PluginApi::V2
        }
    };
    let so = plugin_so(api);
    cfg.extra_args.extend(plugin::qemu_plugin_args(&so, &path));
    for a in extra {
        cfg.extra_args.push(a.into());
    }
    let mut cmd = cfg.command().unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Run {
        child,
        file,
        dir,
        ram,
        console,
        events: Vec::new(),
        lost: 0,
        bad: 0,
        drains: 0,
        max_gap: Duration::ZERO,
        last_drain: None,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match run.file.status() {
            PluginStatus::Running { .. } => break,
            PluginStatus::Failed(m) => panic!("the plugin refused its file: {m}"),
            _ => {}
        }
        if let Ok(Some(st)) = run.child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            run.child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .ok();
            panic!("QEMU exited ({st}) before the plugin ran: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "the plugin did not start within 20 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    run
}

impl Run {
    /// Drains every ring once into `events`.
    pub fn drain(&mut self) {
        let now = Instant::now();
        if let Some(l) = self.last_drain {
            self.max_gap = self.max_gap.max(now - l);
        }
        self.last_drain = Some(now);
        self.drains += 1;
        let s = self.file.drain(usize::MAX, &mut self.events).unwrap();
        self.lost += s.lost;
        self.bad += s.bad;
    }

    /// Drains every 5 ms until QEMU exits (or `timeout`), then once more; returns its status.
    pub fn drain_until_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Ok(Some(st)) = self.child.try_wait() {
                self.drain();
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    pub fn ram(&self) -> SharedRam {
        SharedRam::open(&self.ram, RAM_BASE).unwrap()
    }
}

/// Per spinlock address: (acquisitions, contended acquisitions, failed test-and-sets,
/// releases). Reader-writer holds (read or write flag) are left out: they name the rw lock.
pub fn per_lock(events: &[PluginEvent]) -> BTreeMap<u64, (u64, u64, u64, u64)> {
    let rw = plugin::abi::FLAG_READ | plugin::abi::FLAG_WRITE;
    let mut m: BTreeMap<u64, (u64, u64, u64, u64)> = BTreeMap::new();
    for e in events.iter().filter(|e| e.flags & rw == 0) {
        let c = m.entry(e.addr).or_default();
        match e.kind {
            PluginEventKind::Acquired => {
                c.0 += 1;
                c.1 += (e.spins > 0) as u64;
                c.2 += e.spins as u64;
            }
            PluginEventKind::Released => c.3 += 1,
            _ => {}
        }
    }
    m
}

/// One lock of the lockscope kernel's table.
#[derive(Clone, Debug)]
pub struct KernelLock {
    pub name: String,
    pub addr: u64,
    pub acquires: u64,
    pub contended: u64,
    pub spins: u64,
}

/// The lockscope kernel's lock table, from its shared RAM.
pub fn kernel_locks(elf: &Path, ram: &mut SharedRam) -> Vec<KernelLock> {
    use lockscope_abi as abi;
    let syms = Symbols::load(elf).unwrap();
    let root_addr = syms.abi_root().unwrap().address;
    let mut bytes = vec![0u8; std::mem::size_of::<abi::Root>()];
    ram.read(root_addr, &mut bytes).unwrap();
    let root: abi::Root = bytemuck::pod_read_unaligned(&bytes);
    assert_eq!(root.magic, abi::ROOT_MAGIC);
    let n = root.nlocks as usize;
    let mut infos = vec![<abi::LockInfo as bytemuck::Zeroable>::zeroed(); n];
    ram.read(root.locks, bytemuck::cast_slice_mut(&mut infos))
        .unwrap();
    infos
        .iter()
        .map(|l| KernelLock {
            name: abi::name_str(&l.name).unwrap_or("?").to_owned(),
            addr: l.addr,
            acquires: l.acquires,
            contended: l.contended,
            spins: l.spins,
        })
        .collect()
}

/// The watch plan for the lockscope kernel.
pub fn kernel_plan(elf: &Path) -> WatchPlan {
    let syms = Symbols::load(elf).unwrap();
    plugin::plan(&syms, &LockFunctions::lockscope_kernel()).unwrap()
}

/// (lock word address, pc) of every acquisition still in the lockscope kernel's own rings.
pub fn kernel_ring_sites(
    elf: &Path,
    ram: &mut SharedRam,
    locks: &[KernelLock],
) -> std::collections::HashSet<(u64, u64)> {
    use lockscope_engine::model::EventKind;
    let syms = Symbols::load(elf).unwrap();
    let root_addr = syms.abi_root().unwrap().address;
    let range = ram.range();
    let mut r = lockscope_engine::sources::abi::AbiReader::open(ram, root_addr, range).unwrap();
    r.skip_to_history(ram).unwrap();
    let mut evs = Vec::new();
    r.drain(ram, usize::MAX, &mut evs).unwrap();
    evs.iter()
        .filter(|e| matches!(e.kind, EventKind::Acquired { .. }))
        .map(|e| (locks[e.lock as usize].addr & !3, e.pc))
        .collect()
}

/// The xv6-shaped C fixture kernel, built once per test run from a copy of its tree
/// (`LOCKSCOPE_XV6_FIXTURE`, default `<workspace>/kernel/xv6-fixture`): (kernel ELF, fs.img).
pub fn fixture() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = std::env::var_os("LOCKSCOPE_XV6_FIXTURE")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("kernel/xv6-fixture"));
            assert!(
                src.join("Makefile").is_file(),
                "the xv6 fixture kernel is not at {} (set LOCKSCOPE_XV6_FIXTURE)",
                src.display()
            );
            let dir = tempfile::tempdir().unwrap().keep();
            let st = std::process::Command::new("cp")
                .arg("-r")
                .arg(&src)
                .arg(dir.join("fx"))
                .status()
                .unwrap();
            assert!(st.success());
            let out = std::process::Command::new("make")
                .current_dir(dir.join("fx"))
                .args(["-j2", "kernel/kernel", "fs.img"])
                .output()
                .expect("running make (install make and gcc-riscv64-unknown-elf)");
            assert!(
                out.status.success(),
                "building the fixture failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir.join("fx/kernel/kernel"), dir.join("fx/fs.img"))
        })
        .clone()
}
