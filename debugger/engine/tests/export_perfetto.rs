//! Perfetto export, checked with Perfetto's own schema: the `perfetto` Python package's
//! `perfetto_trace_pb2` parses the trace, and tests/perfetto/check_trace.py checks per-track
//! non-overlap and counts against the engine's own decoding of the recording.
//!
//! The Python comes from `LOCKSCOPE_PERFETTO_PYTHON` (set by `cargo xtask test`, which makes
//! the virtual environment `target/perfetto-venv`), else from that environment if it exists.

mod recording_util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use lockscope_engine::export::export_perfetto;
use lockscope_engine::feed::Feed;
use lockscope_engine::model::EventKind;
use lockscope_engine::recording::Recording;
use lockscope_engine::symbols::Symbols;
use recording_util::*;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LOCKSCOPE_PERFETTO_PYTHON") {
        return p.into();
    }
    let venv = root().join("target/perfetto-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the perfetto package: run `cargo xtask test` (it creates target/perfetto-venv), or set LOCKSCOPE_PERFETTO_PYTHON to a python that has `perfetto` and `protobuf`"
    );
    venv
}

/// Spinlock acquisitions per lock name and spins per hart, as the engine decodes the recording
/// (sleeplock and reader-writer holds are on tracks of their own).
fn engine_counts(rec: &Recording) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    for f in rec.feeds() {
        if let Feed::Snapshot(s) = f {
            for l in &s.locks {
                names.insert(l.meta.id, l.meta.name.clone());
            }
        }
    }
    let (mut holds, mut spins) = (BTreeMap::new(), BTreeMap::new());
    for f in rec.feeds() {
        if let Feed::Events { events, .. } = f {
            for e in events {
                match e.kind {
                    EventKind::Acquired { .. } if e.mode.is_none() => {
                        let n = names
                            .get(&e.lock)
                            .cloned()
                            .unwrap_or_else(|| format!("lock#{}", e.lock));
                        *holds.entry(n).or_insert(0) += 1;
                    }
                    EventKind::Spin => *spins.entry(e.hart.to_string()).or_insert(0) += 1,
                    EventKind::Acquired { .. } | EventKind::Released => {}
                }
            }
        }
    }
    (holds, spins)
}

fn check(recording: &Path, symbols: Option<Arc<Symbols>>, extra: serde_json::Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.pftrace");
    let rec = Recording::open(recording).unwrap();
    let stats = export_perfetto(&rec, symbols, &out).unwrap();
    let (holds, spins) = engine_counts(&rec);
    assert!(!holds.is_empty());
    let stat_spins: BTreeMap<String, u64> = stats
        .spins
        .iter()
        .map(|(h, n)| (h.to_string(), *n))
        .collect();
    assert_eq!(stats.holds, holds, "{}", recording.display());
    assert_eq!(stat_spins, spins);
    let mut expected = serde_json::json!({ "holds": holds, "spins": spins });
    if let serde_json::Value::Object(m) = extra {
        expected.as_object_mut().unwrap().extend(m);
    }
    let exp_path = dir.path().join("expected.json");
    std::fs::write(&exp_path, expected.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto/check_trace.py");
    let run = Command::new(python())
        .arg(&script)
        .arg(&out)
        .arg(&exp_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{}: {stdout}\n{}",
        recording.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

#[test]
fn kalloctest_and_bcachetest_exports_parse_and_count_right() {
    for name in ["kalloctest-head.lsrec", "bcachetest-head.lsrec"] {
        let out = check(&fixtures().join(name), None, serde_json::json!({}));
        let found: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(found["holds"].as_u64().unwrap() > 50_000, "{name}: {out}");
        assert!(
            found["counter_values"].as_u64().unwrap() > 10,
            "{name}: {out}"
        );
    }
}

#[test]
fn a_deadlock_export_has_its_findings_with_file_and_line() {
    let sym = Arc::new(Symbols::load(traces().join("lockscope-kernel.elf")).unwrap());
    let out = check(
        &traces().join("bucket-order-deadlock.lsrec"),
        Some(sym),
        serde_json::json!({
            "instants": ["deadlock", "lock-order inversion"],
            "arg_contains": "bio.rs:",
        }),
    );
    let found: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(found["spins"].as_u64().unwrap() >= 2, "{out}");
}

#[test]
fn flows_join_a_release_to_the_waiting_acquisition() {
    // The bcachetest fixture has contended acquisitions: each ends a wait with a flow.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.pftrace");
    let rec = Recording::open(&fixtures().join("kalloctest-head.lsrec")).unwrap();
    let stats = export_perfetto(&rec, None, &out).unwrap();
    let contended: u64 = rec
        .feeds()
        .map(|f| match f {
            Feed::Events { events, .. } => events
                .iter()
                .filter(|e| e.kind == EventKind::Acquired { contended: true })
                .count() as u64,
            _ => 0,
        })
        .sum();
    assert!(contended > 0);
    assert!(
        stats.flows > 0 && stats.flows <= contended,
        "{} of {contended}",
        stats.flows
    );
    assert_eq!(stats.clamped, 0);
}

/// An xv6 session (the C fixture's bcachetest and rwlktest, events from the plugin): the
/// buffers' sleeplock holds go on process tracks and reader-writer holds on their own, and the
/// spinlock tracks still never overlap.
#[test]
fn xv6_sleeplocks_on_process_tracks_and_reader_writer_holds() {
    use lockscope_engine::model::LockMode;
    let path = traces().join("xv6-bcachetest-rwlktest.lsrec");
    let rec = Recording::open(&path).unwrap();
    let (mut sleep, mut rw) = (0u64, 0u64);
    let mut depth: BTreeMap<(u32, u32), u32> = BTreeMap::new();
    for f in rec.feeds() {
        if let Feed::Events { events, .. } = f {
            for e in events {
                match (e.mode, e.kind) {
                    (Some(LockMode::Sleep), EventKind::Acquired { .. }) => sleep += 1,
                    (Some(LockMode::Read), EventKind::Acquired { .. }) => {
                        let d = depth.entry((e.lock, e.hart)).or_insert(0);
                        rw += u64::from(*d == 0);
                        *d += 1;
                    }
                    (Some(LockMode::Read), EventKind::Released) => {
                        if let Some(d) = depth.get_mut(&(e.lock, e.hart)) {
                            *d = d.saturating_sub(1);
                        }
                    }
                    (Some(LockMode::Write), EventKind::Acquired { .. }) => rw += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(
        sleep > 100 && rw > 100,
        "sleeplock holds {sleep}, reader-writer {rw}"
    );
    let out = check(
        &path,
        None,
        serde_json::json!({ "sleep_holds": sleep, "rw_holds": rw }),
    );
    let found: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(found["sleep_holds"], sleep, "{out}");
    assert_eq!(found["rw_holds"], rw, "{out}");
}
