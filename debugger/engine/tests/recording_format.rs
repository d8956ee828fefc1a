//! Version-2 recordings: round trips of real feeds, cuts at every chunk boundary and inside
//! chunks, flipped bits, lengths that claim gigabytes, version-1 traces.

mod recording_util;

use std::path::Path;

use lockscope_engine::feed::Feed;
use lockscope_engine::recording::format::{ChunkHeader, ChunkKind, HEADER_LEN};
use lockscope_engine::recording::{Problem, Recording, RecordingError};
use recording_util::*;

#[test]
fn every_feed_kind_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let feeds = all_kinds();
    let path = dir.path().join("r.lsrec");
    write(&path, &feeds, small_chunks());
    let rec = Recording::open(&path).unwrap();
    assert_eq!(rec.feeds().collect::<Vec<_>>(), feeds);
    assert!(rec.problems().is_empty(), "{:?}", rec.problems());
    assert_eq!(rec.header().smp, 4);
    assert_eq!(rec.version(), 2);
}

#[test]
fn real_recordings_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "bucket-order-deadlock",
        "null-next-kerneltrap",
        "healthy-mixed",
    ] {
        let feeds = sample_feeds(name);
        let path = dir.path().join(format!("{name}.lsrec"));
        write(&path, &feeds, small_chunks());
        let got: Vec<Feed> = Recording::open(&path).unwrap().feeds().collect();
        assert_eq!(got.len(), feeds.len(), "{name}");
        assert!(got == feeds, "{name}: feeds differ after the round trip");
    }
    // The committed version-2 fixtures (real kalloctest and bcachetest sessions) still read.
    for name in ["kalloctest-head", "bcachetest-head"] {
        let rec = Recording::open(&fixtures().join(format!("{name}.lsrec"))).unwrap();
        let events: usize = rec
            .feeds()
            .map(|f| match f {
                Feed::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        assert!(events > 150_000, "{name}: {events} events");
        assert!(rec.problems().is_empty(), "{name}: {:?}", rec.problems());
        // Written again with the default options, the real session stays far under the
        // issue's 4 bytes an event (cargo xtask bench recording measures whole sessions).
        let dir = tempfile::tempdir().unwrap();
        let again = dir.path().join("again.lsrec");
        let feeds: Vec<Feed> = rec.feeds().collect();
        write(
            &again,
            &feeds,
            lockscope_engine::recording::WriterOptions::default(),
        );
        let bytes = std::fs::metadata(&again).unwrap().len();
        let per_event = bytes as f64 / events as f64;
        assert!(per_event < 4.0, "{name}: {per_event:.2} bytes an event");
    }
}

/// The chunks of a finished recording, as (offset, header).
fn chunk_table(bytes: &[u8]) -> Vec<(usize, ChunkHeader)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + HEADER_LEN <= bytes.len() {
        let h = ChunkHeader::decode(bytes[at..at + HEADER_LEN].try_into().unwrap()).unwrap();
        out.push((at, h));
        if h.kind == ChunkKind::Index {
            break;
        }
        at += HEADER_LEN + h.stored_len as usize;
    }
    out
}

/// The feeds held by the feed chunks strictly before chunk `n` (by the writer's numbering).
fn feeds_before(full: &Recording, n: u32) -> Vec<Feed> {
    full.feed_chunks()
        .iter()
        .filter(|c| c.chunk.header.seq < n)
        .flat_map(|c| full.read_feeds(&c.chunk).unwrap())
        .collect()
}

#[test]
fn a_cut_anywhere_replays_every_whole_chunk_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let full_path = dir.path().join("full.lsrec");
    let feeds = v1_feeds(&v1_trace());
    write(&full_path, &feeds, small_chunks());
    let bytes = std::fs::read(&full_path).unwrap();
    let full = Recording::open(&full_path).unwrap();
    let table = chunk_table(&bytes);
    assert!(table.len() > 10, "{} chunks", table.len());
    let cut_path = dir.path().join("cut.lsrec");
    for &(at, h) in &table[1..] {
        // At the boundary (before chunk h.seq), inside its header, inside its payload.
        for (cut, inside) in [
            (at, false),
            (at + 20, true),
            (
                at + HEADER_LEN + h.stored_len as usize / 2,
                h.stored_len > 1,
            ),
        ] {
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            let rec = Recording::open(&cut_path).unwrap();
            let got: Vec<Feed> = rec.feeds().collect();
            assert_eq!(got, feeds_before(&full, h.seq), "cut at {cut}");
            let problems = rec.problems();
            assert!(
                problems.contains(&Problem::Unfinished {
                    file: cut_path.display().to_string()
                }),
                "{problems:?}"
            );
            let said = problems
                .iter()
                .find(|p| matches!(p, Problem::Cut { .. }))
                .map(|p| p.to_string());
            if inside {
                let said = said.unwrap_or_else(|| panic!("cut at {cut}: {problems:?}"));
                assert!(
                    said.contains(&format!("inside chunk {} (at byte {at}", h.seq)),
                    "{said}"
                );
            } else {
                assert!(said.is_none(), "cut at a boundary: {said:?}");
            }
        }
    }
    // Cut inside the file magic or before the header chunk ends: a clear error, no panic.
    for cut in [0, 5, 8, 30] {
        std::fs::write(&cut_path, &bytes[..cut]).unwrap();
        let err = Recording::open(&cut_path).err().unwrap();
        assert!(
            matches!(
                err,
                RecordingError::NotARecording { .. } | RecordingError::NoHeader { .. }
            ),
            "{err}"
        );
    }
}

#[test]
fn a_flipped_bit_is_named_and_its_chunk_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.lsrec");
    let feeds = sample_feeds("null-next-kerneltrap");
    write(&path, &feeds, small_chunks());
    let bytes = std::fs::read(&path).unwrap();
    let full = Recording::open(&path).unwrap();
    let table = chunk_table(&bytes);
    let feed_chunks: Vec<&(usize, ChunkHeader)> = table
        .iter()
        .filter(|(_, h)| h.kind == ChunkKind::Feeds)
        .collect();
    assert!(feed_chunks.len() >= 6);
    let bad = dir.path().join("bad.lsrec");
    for &&(at, h) in [
        feed_chunks[1],
        feed_chunks[feed_chunks.len() / 2],
        feed_chunks[feed_chunks.len() - 1],
    ]
    .iter()
    {
        // In the payload, in the header's length field, in the header's magic.
        for (offset, bit) in [
            (at + HEADER_LEN + h.stored_len as usize / 3, 3),
            (at + 13, 0),
            (at + 1, 6),
        ] {
            let mut b = bytes.clone();
            b[offset] ^= 1 << bit;
            std::fs::write(&bad, &b).unwrap();
            let rec = Recording::open(&bad).unwrap();
            let mut got: Vec<Feed> = rec.feeds().collect();
            // In the damaged chunk's place: every hart lost events (the analysis is told).
            let gap = Feed::Events {
                events: vec![],
                lost: vec![(0, 1), (1, 1), (2, 1), (3, 1)],
            };
            let gaps = got.iter().filter(|f| **f == gap).count();
            assert_eq!(gaps, 1, "flip at byte {offset}: one gap");
            got.retain(|f| *f != gap);
            let want: Vec<Feed> = full
                .feed_chunks()
                .iter()
                .filter(|c| c.chunk.header.seq != h.seq)
                .flat_map(|c| full.read_feeds(&c.chunk).unwrap())
                .collect();
            assert_eq!(got, want, "flip at byte {offset}: everything else replays");
            let problems = rec.problems();
            let named = problems.iter().any(|p| {
                matches!(p, Problem::Damaged { chunk, offset: o, .. }
                    if *chunk == h.seq as u64 && *o == at as u64)
            });
            assert!(named, "flip at byte {offset}: {problems:?}");
            let text = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                text.contains(&format!("chunk {} at byte {at}", h.seq)),
                "{text}"
            );
        }
    }
}

#[test]
fn a_length_claiming_gigabytes_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.lsrec");
    write(&path, &all_kinds(), small_chunks());
    let bytes = std::fs::read(&path).unwrap();
    let table = chunk_table(&bytes);
    let (at, h) = table[2];
    let bad = dir.path().join("bad.lsrec");
    assert_eq!(h.kind, ChunkKind::Feeds);
    for (stored, raw) in [(0xF000_0000u32, h.raw_len), (h.stored_len, 0xFFFF_FFF0)] {
        let claim = ChunkHeader {
            stored_len: stored,
            raw_len: raw,
            ..h
        };
        let mut b = bytes.clone();
        b[at..at + HEADER_LEN].copy_from_slice(&claim.encode());
        // With the index at the end, and without it (found by scanning).
        for keep in [b.len(), b.len() - 16] {
            std::fs::write(&bad, &b[..keep]).unwrap();
            let rec = Recording::open(&bad).unwrap();
            // The rest still replays.
            assert!(rec.feeds().count() > 0);
            let problems: Vec<String> = rec.problems().iter().map(|p| p.to_string()).collect();
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(&format!("chunk {} at byte {at}", h.seq))
                        && p.contains("limit")),
                "{problems:?}"
            );
        }
    }
}

#[test]
fn version_1_traces_open_and_lose_the_recording_machine_path() {
    {
        let path = v1_trace();
        let rec = Recording::open(&path).unwrap();
        assert_eq!(rec.version(), 1);
        let want = v1_feeds(&path);
        assert!(
            rec.feeds().collect::<Vec<_>>() == want,
            "{}",
            path.display()
        );
        let h = rec.header();
        assert_eq!(h.kernel_name.as_deref(), Some("lockscope-kernel.elf"));
        assert!(h.kernel_fingerprint.is_some());
        let json = serde_json::to_string(h).unwrap();
        assert!(!json.contains('/'), "no path in the header: {json}");
    }
    // A cut version-1 trace opens up to the cut and says so.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(v1_trace()).unwrap();
    let cut = dir.path().join("cut.lstrace");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let rec = Recording::open(&cut).unwrap();
    assert!(rec.feeds().count() > 0);
    let p = rec.problems();
    assert!(
        p.iter().any(|p| p.to_string().contains("cut short")),
        "{p:?}"
    );
}

#[test]
fn other_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let elf = dir.path().join("x");
    std::fs::write(&elf, b"\x7fELF\x02\x01\x01\0\0\0\0\0").unwrap();
    let e = Recording::open(&elf).err().unwrap();
    assert!(e.to_string().contains("not a lockscope recording"), "{e}");
    let newer = dir.path().join("n");
    std::fs::write(&newer, b"LSREC\0\x03\nxxxxxxxxxxxxxxxx").unwrap();
    let e = Recording::open(&newer).err().unwrap();
    assert!(e.to_string().contains("update lockscope"), "{e}");
    let e = Recording::open(Path::new("/nonexistent/r.lsrec"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("/nonexistent/r.lsrec"), "{e}");
}

#[test]
fn a_version_1_trace_converted_to_version_2_replays_as_the_original() {
    // Converted by the `convert_v1` example when the samples were version 1.
    let v2 = Recording::open(&fixtures().join("bucket-order-deadlock.lsrec")).unwrap();
    assert_eq!(v2.version(), 2);
    assert!(v2.problems().is_empty(), "{:?}", v2.problems());
    assert!(v2.feeds().collect::<Vec<_>>() == v1_feeds(&v1_trace()));
    assert_eq!(
        v2.header().kernel_name.as_deref(),
        Some("lockscope-kernel.elf")
    );
}

#[test]
fn the_sample_recordings_open_whole_with_their_kernel() {
    let elf = std::fs::read(traces().join("lockscope-kernel.elf")).unwrap();
    let fingerprint = lockscope_engine::symbols::Symbols::from_bytes("k", elf)
        .unwrap()
        .fingerprint();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(traces()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "lsrec") {
            continue;
        }
        let rec = Recording::open(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(rec.version(), 2, "{name}");
        assert!(rec.problems().is_empty(), "{name}: {:?}", rec.problems());
        let h = rec.header();
        let size = std::fs::metadata(&path).unwrap().len();
        if name.starts_with("xv6-") {
            // The C fixture's session: its kernel travels inside, with its fingerprint.
            assert!(h.with_kernel, "{name}");
            let inside = rec.kernel_elf().unwrap();
            let fp = lockscope_engine::symbols::Symbols::from_bytes("k", inside)
                .unwrap()
                .fingerprint();
            assert_eq!(h.kernel_fingerprint.as_deref(), Some(fp.as_str()), "{name}");
            // Its snapshots carry the process table and every buf.
            assert!(size < 3 << 20, "{name}: {size} bytes");
        } else {
            assert_eq!(
                h.kernel_name.as_deref(),
                Some("lockscope-kernel.elf"),
                "{name}"
            );
            assert_eq!(
                h.kernel_fingerprint.as_deref(),
                Some(fingerprint.as_str()),
                "{name}"
            );
            // Small enough to keep in the repository.
            assert!(size < 2 << 20, "{name}: {size} bytes");
        }
        // Every scenario but stale-ticks' short run has events.
        let events: usize = rec
            .feeds()
            .map(|f| match f {
                Feed::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum();
        assert!(events > 0, "{name}");
        names.push(name);
    }
    assert!(names.len() >= 10, "{names:?}");
}

#[test]
fn writers_and_timelines_can_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<lockscope_engine::recording::RecordingWriter>();
    send::<Recording>();
    sync::<Recording>();
    send::<lockscope_engine::recording::Timeline>();
    send::<lockscope_engine::recording::RecordedRam>();
}
