//! What a recording carries besides feeds: every stop with its registers and guest RAM, the
//! kernel ELF; and `keep`, which keeps only the last part of a long session.

mod recording_util;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use lockscope_engine::feed::{Feed, StopInfo, StopReason};
use lockscope_engine::memory::{ByteImage, GuestMemory};
use lockscope_engine::model::FullRegs;
use lockscope_engine::recording::format::{ChunkHeader, ChunkKind, HEADER_LEN};
use lockscope_engine::recording::{
    Keep, Problem, Recording, RecordingError, RecordingWriter, WriterOptions,
};
use recording_util::*;

const BASE: u64 = 0x8000_0000;

fn kernel_elf() -> Vec<u8> {
    std::fs::read(traces().join("lockscope-kernel.elf")).unwrap()
}

/// 32 MiB of guest RAM: the kernel image at the base, a page of data at 20 MiB, zeros.
fn guest_ram() -> ByteImage {
    let mut bytes = vec![0u8; 32 << 20];
    let elf = kernel_elf();
    bytes[..elf.len()].copy_from_slice(&elf);
    for (i, b) in bytes[(20 << 20) + 100..(20 << 20) + 4196]
        .iter_mut()
        .enumerate()
    {
        *b = (i * 31 % 251) as u8;
    }
    ByteImage { base: BASE, bytes }
}

fn stop_info(reason: StopReason) -> StopInfo {
    let deadlock = v1_feeds(&v1_trace());
    let mut info = deadlock
        .iter()
        .find_map(|f| match f {
            Feed::Stop(s) => Some(s.clone()),
            _ => None,
        })
        .expect("the sample deadlock trace has a stop");
    info.reason = reason;
    // Every register of every hart travels in the stop itself.
    for h in &mut info.harts {
        h.full = Some(regs(h.hart));
    }
    info
}

fn regs(hart: u32) -> FullRegs {
    FullRegs {
        x: (0..32).map(|i| i * 0x1000 + hart as u64).collect(),
        pc: 0x8000_1234,
        privilege: Some(1),
        csrs: vec![(0x180, 0x8000_0000_0008_0000), (0x100, 0x22)],
    }
}

#[test]
fn stops_keep_their_registers_and_guest_ram() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stop.lsrec");
    let feeds: Vec<Feed> = v1_feeds(&v1_trace())
        .into_iter()
        .filter(|f| !matches!(f, Feed::Stop(_)))
        .collect();
    let mut ram = guest_ram();
    let range = BASE..BASE + ram.bytes.len() as u64;
    let mut w = RecordingWriter::create(&path, &header(), WriterOptions::default()).unwrap();
    for f in &feeds[..feeds.len() / 2] {
        w.write(f).unwrap();
    }
    let first = stop_info(StopReason::Interrupted);
    w.write(&Feed::Stop(first.clone())).unwrap();
    let saved = w.stop_ram(&mut ram, range.clone()).unwrap();
    assert_eq!((saved.stop, saved.bytes_in), (0, ram.bytes.len() as u64));
    w.write(&Feed::Resumed).unwrap();
    for f in &feeds[feeds.len() / 2..] {
        w.write(f).unwrap();
    }
    let second = stop_info(StopReason::Panic);
    w.write(&Feed::Stop(second.clone())).unwrap();
    let stats = w.finish().unwrap();
    assert_eq!(stats.stops, 2);
    // 32 MiB, mostly zero, with a 3 MiB kernel image in it: the image dominates.
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < 2 << 20, "{size} bytes");

    let rec = Recording::open(&path).unwrap();
    let stops = rec.stops();
    assert_eq!(stops.len(), 2);
    assert_eq!(stops[0].info.as_ref(), Some(&first));
    let full: Vec<_> = first.harts.iter().map(|h| h.full.clone()).collect();
    assert!(full
        .iter()
        .all(|f| f.as_ref().is_some_and(|f| f.x.len() == 32)));
    assert_eq!(
        stops[0]
            .info
            .as_ref()
            .unwrap()
            .harts
            .iter()
            .map(|h| h.full.clone())
            .collect::<Vec<_>>(),
        full
    );
    assert_eq!(stops[0].ram, Some(range.clone()));
    assert_eq!(stops[1].info.as_ref(), Some(&second));
    assert!(stops[1].ram.is_none());

    let mut saved = rec.stop_ram(0).unwrap();
    assert_eq!(saved.range(), range);
    // Reads anywhere, across block boundaries, equal the RAM as it was.
    for (addr, len) in [
        (BASE, 4096usize),
        (BASE + (1 << 20) - 10, 20),
        (BASE + (20 << 20), 8192),
        (BASE + (31 << 20), 1 << 20),
        (BASE + 12345, 3 << 20),
    ] {
        let mut buf = vec![0xAAu8; len];
        saved.read(addr, &mut buf).unwrap();
        let off = (addr - BASE) as usize;
        assert!(buf == ram.bytes[off..off + len], "{addr:#x}+{len}");
    }
    let mut buf = [0u8; 16];
    let e = saved.read(range.end - 8, &mut buf).unwrap_err();
    assert!(e.to_string().contains("outside guest RAM"), "{e}");
    assert!(matches!(
        rec.stop_ram(1).err().unwrap(),
        RecordingError::NoRam { stop: 1, .. }
    ));
    let e = rec.stop_ram(7).err().unwrap();
    assert!(
        e.to_string().contains("has no stop number 7 (it has 2"),
        "{e}"
    );
}

/// A session's gdb thread saves the RAM while it holds the guest stopped; the stop itself
/// reaches the writer later, through the monitor. They meet by number.
#[test]
fn ram_saved_before_its_stop_is_written_belongs_to_that_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stop.lsrec");
    let mut ram = guest_ram();
    let range = BASE..BASE + ram.bytes.len() as u64;
    let mut w = RecordingWriter::create(&path, &header(), WriterOptions::default()).unwrap();
    let first = stop_info(StopReason::Interrupted);
    w.write(&Feed::Stop(first.clone())).unwrap();
    w.write(&Feed::Resumed).unwrap();
    // Stop 1's RAM, then stop 1.
    ram.bytes[(20 << 20) + 200] = 0x77;
    w.stop_ram_of(1, &mut ram, range.clone()).unwrap();
    let second = stop_info(StopReason::Panic);
    w.write(&Feed::Stop(second.clone())).unwrap();
    w.finish().unwrap();
    let rec = Recording::open(&path).unwrap();
    let stops = rec.stops();
    assert_eq!(stops.len(), 2);
    assert!(stops[0].ram.is_none(), "stop 0 was saved without RAM");
    assert_eq!(stops[1].info.as_ref(), Some(&second));
    assert_eq!(stops[1].ram, Some(range));
    let mut b = [0u8; 1];
    rec.stop_ram(1)
        .unwrap()
        .read(BASE + (20 << 20) + 200, &mut b)
        .unwrap();
    assert_eq!(b[0], 0x77);
}

#[test]
fn a_damaged_ram_block_fails_its_reads_and_only_its_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stop.lsrec");
    let mut ram = guest_ram();
    let range = BASE..BASE + ram.bytes.len() as u64;
    let mut w = RecordingWriter::create(&path, &header(), WriterOptions::default()).unwrap();
    w.write(&Feed::Stop(stop_info(StopReason::Panic))).unwrap();
    w.stop_ram(&mut ram, range).unwrap();
    w.finish().unwrap();
    let rec = Recording::open(&path).unwrap();
    let block = rec
        .chunks()
        .iter()
        .find(|c| c.header.kind == ChunkKind::Ram && c.header.t0 == BASE + (1 << 20))
        .copied()
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0x55], block.offset + HEADER_LEN as u64 + 10)
        .unwrap();
    let rec = Recording::open(&path).unwrap();
    let mut saved = rec.stop_ram(0).unwrap();
    let mut buf = [0u8; 64];
    let e = saved.read(BASE + (1 << 20) + 64, &mut buf).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains(&format!("chunk {} at byte {}", block.ordinal, block.offset))
            && e.contains("damaged"),
        "{e}"
    );
    saved.read(BASE, &mut buf).unwrap();
    assert_eq!(buf[..4], *b"\x7fELF");
}

#[test]
fn a_writer_killed_while_saving_ram_leaves_the_stop_without_ram() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stop.lsrec");
    let mut ram = guest_ram();
    let mut w = RecordingWriter::create(&path, &header(), WriterOptions::default()).unwrap();
    w.write(&Feed::Stop(stop_info(StopReason::Panic))).unwrap();
    w.stop_ram(&mut ram, BASE..BASE + (32 << 20)).unwrap();
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let rec = Recording::open(&path).unwrap();
    let second_block = rec
        .chunks()
        .iter()
        .filter(|c| c.header.kind == ChunkKind::Ram)
        .nth(1)
        .unwrap()
        .offset as usize;
    let cut = dir.path().join("cut.lsrec");
    std::fs::write(&cut, &bytes[..second_block + 100]).unwrap();
    let rec = Recording::open(&cut).unwrap();
    let stops = rec.stops();
    assert_eq!(stops.len(), 1, "the stop itself was saved before its RAM");
    assert!(stops[0].info.is_some());
    assert!(matches!(
        rec.stop_ram(0).err().unwrap(),
        RecordingError::NoRam { .. }
    ));
    assert!(rec
        .problems()
        .iter()
        .any(|p| matches!(p, Problem::Cut { .. })));
}

#[test]
fn the_kernel_travels_inside_and_no_path_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("with-kernel.lsrec");
    let elf = kernel_elf();
    let kernel_path = traces()
        .join("lockscope-kernel.elf")
        .canonicalize()
        .unwrap();
    let header = header().kernel(&kernel_path, "b8544ccfa4ed6d9a".into());
    let options = WriterOptions {
        kernel_elf: Some(elf.clone()),
        ..WriterOptions::default()
    };
    let mut w = RecordingWriter::create(&path, &header, options).unwrap();
    for f in sample_feeds("null-next-kerneltrap") {
        w.write(&f).unwrap();
    }
    w.finish().unwrap();
    let rec = Recording::open(&path).unwrap();
    assert!(rec.header().with_kernel);
    assert_eq!(
        rec.header().kernel_name.as_deref(),
        Some("lockscope-kernel.elf")
    );
    assert_eq!(rec.kernel_elf().unwrap(), elf);
    let out = dir.path().join("kernel");
    rec.extract_kernel(&out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), elf);
    // Compressed: the 3 MiB ELF costs about a third of that.
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size < elf.len() as u64 / 2, "{size}");
    // No directory of the recording machine anywhere in the file.
    let bytes = std::fs::read(&path).unwrap();
    let dir_name = kernel_path.parent().unwrap().to_string_lossy().into_owned();
    assert!(!bytes
        .windows(dir_name.len())
        .any(|w| w == dir_name.as_bytes()));

    let plain = dir.path().join("plain.lsrec");
    write(&plain, &all_kinds(), WriterOptions::default());
    let e = Recording::open(&plain).unwrap().kernel_elf().unwrap_err();
    assert!(e.to_string().contains("--with-kernel"), "{e}");
}

/// 30 s of target time: a real snapshot every 100 ms, real events between, every 1 ms.
fn long_session() -> impl Iterator<Item = Feed> {
    let base = fixture_feeds("kalloctest-head.lsrec");
    let snap = base
        .iter()
        .rev()
        .find_map(|f| match f {
            Feed::Snapshot(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    let events: Vec<_> = base
        .iter()
        .filter_map(|f| match f {
            Feed::Events { events, .. } => Some(events.clone()),
            _ => None,
        })
        .flatten()
        .take(100)
        .collect();
    (0..30_000u64).map(move |ms| {
        let t = ms * 1_000_000;
        if ms % 100 == 0 {
            let mut s = snap.clone();
            s.time_ns = t;
            Feed::Snapshot(s)
        } else {
            let mut ev = events.clone();
            for (i, e) in ev.iter_mut().enumerate() {
                e.time_ns = t + i as u64 * 1000;
            }
            Feed::Events {
                events: ev,
                lost: vec![],
            }
        }
    })
}

fn times(rec: &Recording) -> (u64, u64, Option<Feed>) {
    let feeds: Vec<Feed> = rec.feeds().collect();
    let ts: Vec<u64> = feeds
        .iter()
        .flat_map(|f| match f {
            Feed::Events { events, .. } => events.iter().map(|e| e.time_ns).collect(),
            Feed::Snapshot(s) => vec![s.time_ns],
            _ => vec![],
        })
        .collect();
    (
        *ts.iter().min().unwrap(),
        *ts.iter().max().unwrap(),
        feeds.first().cloned(),
    )
}

fn keep_options(keep: Keep) -> WriterOptions {
    WriterOptions {
        keep: Some(keep),
        chunk_interval: Duration::from_secs(3600),
        chunk_events: 10_000,
        ..WriterOptions::default()
    }
}

fn parts(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".part-")
        })
        .count()
}

#[test]
fn keep_keeps_the_last_part_of_a_long_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.lsrec");
    let mut w =
        RecordingWriter::create(&path, &header(), keep_options("4s".parse().unwrap())).unwrap();
    let mut most_parts = 0;
    for f in long_session() {
        w.write(&f).unwrap();
        most_parts = most_parts.max(parts(dir.path()));
    }
    assert!(
        most_parts <= 7,
        "old segments were deleted: at most {most_parts}"
    );
    w.finish().unwrap();
    assert_eq!(parts(dir.path()), 0, "the segments were joined");
    let rec = Recording::open(&path).unwrap();
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
    assert_eq!(rec.header().keep.as_deref(), Some("4s"));
    let (first, last, head) = times(&rec);
    assert!(last >= 29_900_000_000, "the end is kept: {last}");
    let kept = last - first;
    assert!(
        (4_000_000_000..=6_500_000_000).contains(&kept),
        "about the last 4 s: {kept} ns"
    );
    // The kept part starts with state: the snapshot carried into its first segment.
    assert!(matches!(head, Some(Feed::Snapshot(_))), "{head:?}");
}

#[test]
fn keep_by_size_and_a_killed_keep_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sized.lsrec");
    let mut w =
        RecordingWriter::create(&path, &header(), keep_options("100KB".parse().unwrap())).unwrap();
    for f in long_session() {
        w.write(&f).unwrap();
    }
    // Killed: no finish, no drop.
    std::mem::forget(w);
    assert!(!path.exists());
    assert!(parts(dir.path()) >= 2);
    let rec = Recording::open(&path).unwrap();
    assert!(
        rec.problems()
            .iter()
            .any(|p| matches!(p, Problem::Unfinished { .. })),
        "{:?}",
        rec.problems()
    );
    let (_, last, head) = times(&rec);
    assert!(last >= 29_000_000_000, "{last}");
    assert!(matches!(head, Some(Feed::Snapshot(_))));
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk < 250_000, "{on_disk} bytes kept for a 100 KB keep");
}

#[test]
fn stop_ram_needs_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = RecordingWriter::create(
        &dir.path().join("x.lsrec"),
        &header(),
        WriterOptions::default(),
    )
    .unwrap();
    let mut ram = guest_ram();
    let e = w.stop_ram(&mut ram, BASE..BASE + 4096).unwrap_err();
    assert!(e.to_string().contains("write the Feed::Stop first"), "{e}");
    // A header that decodes is what the tests above rely on to find chunks.
    let h = ChunkHeader::decode(&[0u8; HEADER_LEN]);
    assert!(h.is_err());
}

/// A session's gdb thread announces the RAM of a stop before the monitor sees the stop: a
/// recording finished right after the stop still gets that RAM.
#[test]
fn finishing_waits_for_announced_ram() {
    use lockscope_engine::recording::Recorder;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.lsrec");
    let w = RecordingWriter::create(&path, &header(), WriterOptions::default()).unwrap();
    let rec = Recorder::new(w);
    let gdb_side = rec.clone();
    gdb_side.ram_coming();
    let saver = std::thread::spawn(move || {
        let mut ram = guest_ram();
        let range = BASE..BASE + ram.bytes.len() as u64;
        // The stop goes to the monitor first; the RAM is saved a moment later.
        std::thread::sleep(Duration::from_millis(300));
        gdb_side.stop_ram(0, &mut ram, range).unwrap();
    });
    rec.write(&Feed::Stop(stop_info(StopReason::Panic)))
        .unwrap();
    rec.write(&Feed::Resumed).unwrap();
    rec.finish().unwrap();
    saver.join().unwrap();
    assert!(rec.write(&Feed::Resumed).is_err(), "finished");
    let r = Recording::open(&path).unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    assert!(r.stops()[0].ram.is_some(), "the RAM came before the finish");
}
