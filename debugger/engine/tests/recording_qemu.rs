//! A stop's RAM from a real guest: the lockscope kernel runs kalloctest in QEMU with its RAM in
//! a shared file; that RAM saved the way a stop saves it reads back byte for byte, and the ABI
//! reader finds the kernel's root descriptor in it, as the post-mortem gdb server will.

#[path = "fixtures/symbols/support.rs"]
mod support;

use std::time::Duration;

use lockscope_engine::feed::{Feed, StopInfo, StopReason};
use lockscope_engine::memory::{GuestMemory, SharedRam};
use lockscope_engine::qemu::QemuConfig;
use lockscope_engine::recording::{Recording, RecordingHeader, RecordingWriter, WriterOptions};
use lockscope_engine::symbols::Symbols;
use support::kernel_elf;

const RAM_BASE: u64 = 0x8000_0000;

#[test]
fn a_real_guests_ram_saved_at_a_stop_reads_back_exactly() {
    let elf = kernel_elf().expect("no kernel ELF: run the tests with `cargo xtask test`");
    let dir = tempfile::tempdir().unwrap();
    let ram_file = dir.path().join("ram");
    let run = QemuConfig::new(&elf)
        .smp(4)
        .bootargs("workload=kalloctest")
        .shared_ram(&ram_file)
        .run_captured(Duration::from_secs(300))
        .unwrap();
    assert!(run.verdict.passed(), "{}\n{}", run.verdict, run.console);

    let mut shared = SharedRam::open(&ram_file, RAM_BASE).unwrap();
    let range = shared.range();
    assert_eq!(range.end - range.start, 128 << 20);
    let path = dir.path().join("stop.lsrec");
    let mut w = RecordingWriter::create(
        &path,
        &RecordingHeader::new(4, "workload=kalloctest", "fixture"),
        WriterOptions::default(),
    )
    .unwrap();
    w.write(&Feed::Stop(StopInfo {
        reason: StopReason::Interrupted,
        hart: Some(0),
        harts: vec![],
    }))
    .unwrap();
    w.stop_ram(&mut shared, range.clone()).unwrap();
    let stats = w.finish().unwrap();
    // 128 MiB of a real guest (freed pages full of junk, which compresses) in a few MiB.
    assert!(
        stats.ram_bytes_out < 8 << 20,
        "{} bytes",
        stats.ram_bytes_out
    );

    let rec = Recording::open(&path).unwrap();
    let mut saved = rec.stop_ram(0).unwrap();
    let want = std::fs::read(&ram_file).unwrap();
    let mut got = vec![0u8; want.len()];
    saved.read(RAM_BASE, &mut got).unwrap();
    assert!(got == want, "the saved RAM differs from the guest's");

    let sym = Symbols::load(&elf).unwrap();
    let root_addr = sym.abi_root().unwrap().address;
    let root: lockscope_abi::Root = read_pod(&mut saved, root_addr);
    assert_eq!(root.magic, lockscope_abi::ROOT_MAGIC);
    let live: lockscope_abi::Root = read_pod(&mut shared, root_addr);
    assert_eq!(bytemuck::bytes_of(&root), bytemuck::bytes_of(&live));
}

fn read_pod<T: bytemuck::Pod>(mem: &mut dyn GuestMemory, addr: u64) -> T {
    let mut buf = vec![0u8; std::mem::size_of::<T>()];
    mem.read(addr, &mut buf).unwrap();
    bytemuck::pod_read_unaligned(&buf)
}
