//! Shared by the recording tests: real feeds from the sample recordings, writers with small
//! chunks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockscope_engine::feed::{Ending, Feed, HartStop, StopInfo, StopReason};
use lockscope_engine::model::{EventKind, HartRegs, LockEvent};
use lockscope_engine::recording::{RecordingHeader, RecordingWriter, WriterOptions};
use lockscope_engine::trace::TraceReader;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The sample recordings (version 2, recorded from the real kernel) and the kernel ELF they
/// were recorded with.
pub fn traces() -> PathBuf {
    root().join("traces")
}

/// The version-1 trace kept for the compatibility tests (`bug=bucket-order`, recorded from an
/// older build of the kernel), next to its version-2 conversion `bucket-order-deadlock.lsrec`.
pub fn v1_trace() -> PathBuf {
    fixtures().join("bucket-order-deadlock.lstrace")
}

/// Feeds of the sample recording `traces/NAME.lsrec`.
pub fn sample_feeds(name: &str) -> Vec<Feed> {
    lockscope_engine::recording::Recording::open(&traces().join(format!("{name}.lsrec")))
        .unwrap()
        .feeds()
        .collect()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recording")
}

pub fn v1_feeds(path: &Path) -> Vec<Feed> {
    TraceReader::open(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Feeds of the committed v2 fixture `name`.
pub fn fixture_feeds(name: &str) -> Vec<Feed> {
    lockscope_engine::recording::Recording::open(&fixtures().join(name))
        .unwrap()
        .feeds()
        .collect()
}

pub fn header() -> RecordingHeader {
    RecordingHeader::new(4, "workload=mixed", "fixture")
}

/// Chunks of a few events, so a small recording has many.
pub fn small_chunks() -> WriterOptions {
    WriterOptions {
        chunk_events: 16,
        chunk_bytes: 4096,
        chunk_interval: Duration::from_secs(3600),
        ..WriterOptions::default()
    }
}

pub fn write(path: &Path, feeds: &[Feed], options: WriterOptions) {
    let mut w = RecordingWriter::create(path, &header(), options).unwrap();
    for f in feeds {
        w.write(f).unwrap();
    }
    w.finish().unwrap();
}

/// A real recording's feeds (events, snapshots, a stop) plus one of every other kind.
pub fn all_kinds() -> Vec<Feed> {
    let mut feeds = vec![
        Feed::TraceStart {
            harts: vec![0, 1, 2, 3],
        },
        Feed::Console("lockscope kernel: 4 harts\n".into()),
        Feed::Pause { nanos: 1_700_000 },
        Feed::Events {
            events: vec![LockEvent {
                time_ns: 5,
                hart: 200,
                lock: 70_000,
                kind: EventKind::Acquired { contended: true },
                pc: u64::MAX,
                mode: None,
                trylock: false,
            }],
            lost: vec![(3, 9), (0, u64::MAX)],
        },
        Feed::Events {
            events: vec![],
            lost: vec![(1, 1)],
        },
    ];
    feeds.extend(v1_feeds(&v1_trace()));
    feeds.push(Feed::Stop(StopInfo {
        reason: StopReason::Other,
        hart: None,
        harts: vec![HartStop {
            hart: 0,
            regs: HartRegs::default(),
            frames: vec![],
            full: None,
        }],
    }));
    feeds.push(Feed::Resumed);
    feeds.push(Feed::End(Ending::Exited { status: 3 }));
    feeds
}
