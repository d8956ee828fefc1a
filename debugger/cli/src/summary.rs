//! The lines `lockscope qemu` prints on stderr when the session ends: how QEMU ended, the
//! verdict, the lab's tests, the findings, what a panic's or hang's stop showed (as `lockscope
//! check` prints it), and where the recording and console log are.

use std::fmt::Write as _;
use std::path::Path;

use lockscope_engine::monitor::{LabResult, LabTest};
use lockscope_engine::{CheckReport, Ending, TargetState, View};

/// Findings listed at most; the rest are counted.
const MAX_FINDINGS: usize = 5;

/// A test in a few words: `test0 OK (tot= 12; all allocator and cache locks: 12)`.
pub fn lab_test_words(t: &LabTest) -> String {
    let result = match t.result {
        Some(LabResult::Ok) => "OK",
        Some(LabResult::Fail) => "FAIL",
        None => "no result",
    };
    if t.measured {
        format!(
            "{} {result} (tot= {}; all allocator and cache locks: {})",
            t.name, t.tot, t.tot_all
        )
    } else {
        format!("{} {result}", t.name)
    }
}

/// The summary, every line starting `lockscope: `.
pub fn session_summary(
    v: &View,
    record: Option<&Path>,
    console_log: Option<&Path>,
    ram_note: Option<&str>,
) -> String {
    let mut s = String::new();
    let how = match &v.state {
        TargetState::Ended {
            ending: Ending::Exited { status },
        } => format!("QEMU exited (status {status})"),
        TargetState::Ended {
            ending: Ending::Lost { reason },
        } => format!("QEMU was lost: {reason}"),
        TargetState::Ended {
            ending: Ending::Detached,
        } => "lockscope stopped QEMU".to_string(),
        _ => "the session ended".to_string(),
    };
    let _ = writeln!(
        s,
        "lockscope: {how}; verdict {}: {}",
        v.check.verdict.as_str(),
        v.verdict_sentence()
    );
    if !v.lab_tests.is_empty() {
        let tests: Vec<String> = v.lab_tests.iter().map(lab_test_words).collect();
        let _ = writeln!(s, "lockscope: lab tests: {}", tests.join("; "));
    }
    let f = &v.detail.findings;
    if !f.is_empty() {
        let _ = writeln!(
            s,
            "lockscope: {} finding{}, each makes the lab's OK meaningless:",
            f.len(),
            if f.len() == 1 { "" } else { "s" }
        );
        for x in f.iter().take(MAX_FINDINGS) {
            let _ = writeln!(
                s,
                "lockscope:   {}: {}",
                crate::text::kind_name(x),
                x.message
            );
        }
        if f.len() > MAX_FINDINGS {
            let _ = writeln!(
                s,
                "lockscope:   and {} more (lockscope replay --check on the recording, or lockscope check --xv6, lists them all)",
                f.len() - MAX_FINDINGS
            );
        }
    }
    // What the stops showed: the student's terminal is where the session ended, so the answer
    // goes there rather than only into the recording.
    let report = CheckReport::from_view(v);
    let mut diagnosis = String::new();
    crate::text::stop_text(&mut diagnosis, &report, v);
    crate::text::order_text(&mut diagnosis, &report);
    for line in diagnosis.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(s, "lockscope: {line}");
    }
    if let Some(n) = ram_note {
        let _ = writeln!(s, "lockscope: {n}");
    }
    if let Some(r) = record {
        let _ = writeln!(s, "lockscope: recording: {}", r.display());
    }
    if let Some(l) = console_log {
        let _ = writeln!(s, "lockscope: guest console log: {}", l.display());
    }
    s
}
