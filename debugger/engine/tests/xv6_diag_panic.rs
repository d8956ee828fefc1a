//! Panics of the xv6-shaped fixture kernel diagnosed under a live lockscope session (real QEMU,
//! shared RAM, the gdb stub): `bget: no buffers`, a kerneltrap from a NULL pointer,
//! `panic: acquire` and `panic: sched locks`. Each test boots one build once and checks the
//! verdict, the hart, the message, the lines and the diagnosis.

#[path = "xv6_diag_support/mod.rs"]
mod support;

use lockscope_engine::model::{AccessKind, FrameKind};
use lockscope_engine::monitor::{FrameLine, View};
use lockscope_engine::Verdict;

use support::*;

/// Runs `command` at the prompt and waits for the panic report with every hart's stack.
fn panic_of(b: &Built, command: &str, name: &str) -> (Run, std::sync::Arc<View>) {
    let run = Run::start(b);
    run.prompt();
    run.type_line(command);
    let v = run.until("a panic report with every hart's stack", COMMAND, |v| {
        let p = v.panic.as_ref()?;
        (p.diagnosis.is_some()
            && !p.harts.is_empty()
            && p.harts.iter().all(|h| !h.frames.is_empty()))
        .then(|| std::sync::Arc::new(v.clone()))
    });
    eprintln!("{name}: {}", v.verdict_sentence());
    record_view(name, &v, b);
    (run, v)
}

fn functions(frames: &[FrameLine]) -> Vec<&str> {
    frames
        .iter()
        .filter_map(|f| f.function.as_deref())
        .collect()
}

fn line(p: &lockscope_engine::monitor::Place) -> String {
    p.location.as_deref().map(file_line).unwrap_or_default()
}

#[test]
fn refcnt_leak_panics_bget_no_buffers() {
    let b = Built::new(&["BUG=refcnt-leak"]);
    let (run, v) = panic_of(&b, "bcachetest", "xv6_bget_no_buffers");
    assert_eq!(v.check.verdict, Verdict::Panic);
    let p = v.report.panic.as_ref().unwrap();
    assert_eq!(p.message, "bget: no buffers");
    assert!(p.trap.is_none(), "not from a trap: {:?}", p.trap);
    let d = v.panic.as_ref().unwrap();
    let panic_line = b.line_of("bio.c", "panic(\"bget: no buffers\")");
    // Blamed on bget, inlined into bread, at the panic call: not on panic() itself.
    let fault = d.fault.as_ref().unwrap();
    assert_eq!(fault.function.as_deref(), Some("bget"));
    assert_eq!(line(fault), format!("bio.c:{panic_line}"));
    assert_eq!(
        fault.inlined_into.first().map(|x| x.0.as_str()),
        Some("bread")
    );
    // The panicking hart's stack: panic, bget [inlined] into bread, the test's worker; read
    // through the kernel page table (a process's kernel stack).
    let bt = functions(&d.backtrace);
    assert_eq!(bt[..3], ["panic", "bget", "bread"], "{bt:?}");
    assert!(d.backtrace[1].inlined && !d.backtrace[2].inlined);
    assert!(bt.contains(&"worker1") || bt.contains(&"reader0"), "{bt:?}");
    // Every hart's stack.
    assert_eq!(d.harts.len(), b.cpus as usize);
    for h in &d.harts {
        assert!(
            h.frames.len() >= 2,
            "hart {}: {:?}",
            h.hart,
            functions(&h.frames)
        );
    }
    assert!(d
        .source
        .as_ref()
        .is_some_and(|s| s.lines.iter().any(|l| l.contains("bget: no buffers"))));
    assert!(d.disassembly.iter().any(|a| a.at_pc));
    // Why: every buf referenced, nobody holding most of them; the locks bget holds.
    let diag = d.diagnosis.as_ref().unwrap();
    assert_eq!(
        diag.process.as_ref().map(|p| p.name.as_str()),
        Some("bcachetest")
    );
    assert!(
        !diag.message_from_console,
        "the message comes from the call site"
    );
    let bufs = diag.bufs.as_ref().unwrap();
    // Harts still running after the panic may drop a reference or two before the stop.
    assert!(
        bufs.total == 30 && bufs.referenced.len() >= 27,
        "{}",
        bufs.sentence
    );
    assert!(bufs.sentence.contains("never dropped"), "{}", bufs.sentence);
    let held: Vec<(String, String)> = diag
        .held
        .iter()
        .map(|h| {
            (
                h.path.clone().unwrap_or_default(),
                h.site.as_ref().map(line).unwrap_or_default(),
            )
        })
        .collect();
    let evict = b.line_of("bio.c", "acquire(&bcache.lock);");
    assert!(
        held.contains(&("bcache.lock".into(), format!("bio.c:{evict}"))),
        "{held:?}"
    );
    assert!(
        held.iter()
            .any(|(p, l)| p.starts_with("bcache.bucket[") && l == &format!("bio.c:{}", evict + 2)),
        "the bucket lock, taken again after bcache.lock: {held:?}"
    );
    let timing = run.finish().monitor.panic_timing();
    eprintln!(
        "panic report {:?} after the flag, {:?} after the console line",
        timing.from_flag(),
        timing.from_console()
    );
}

#[test]
fn prev_head_mix_up_names_the_null_access() {
    let b = Built::new(&["BUG=prev-head", "DWARF=2"]);
    let (_run, v) = panic_of(&b, "bcachetest", "xv6_kerneltrap");
    let p = v.report.panic.as_ref().unwrap();
    assert_eq!(p.message, "kerneltrap");
    // The CSRs, read at the stop, still hold the trap.
    let t = p.trap.as_ref().expect("the trap CSRs");
    assert_eq!((t.scause.code, t.stval), (13, 0x48), "{t:?}");
    assert!(v
        .console
        .iter()
        .any(|l| l.starts_with(&format!("scause=0xd sepc={:#x} stval=0x48", t.sepc))));
    let d = v.panic.as_ref().unwrap();
    let refcnt_line = b.line_of("bio.c", "if (b->refcnt == 0 && (best == 0");
    let fault = d.fault.as_ref().unwrap();
    assert_eq!(
        fault.pc, t.sepc,
        "the faulting instruction, not a return address"
    );
    assert_eq!(fault.function.as_deref(), Some("lru_free"));
    assert_eq!(line(fault), format!("bio.c:{refcnt_line}"));
    // The stack goes through the trap: the faulting function is a trap frame, and the walk
    // goes on past it although lru_free is a leaf (its return address was in the saved `ra`).
    let bt = functions(&d.backtrace);
    let at = bt
        .iter()
        .position(|f| *f == "lru_free")
        .unwrap_or_else(|| panic!("{bt:?}"));
    assert!(bt[at + 1..].contains(&"bread"), "{bt:?}");
    assert!(
        d.backtrace
            .iter()
            .any(|f| f.kind == FrameKind::Trap && f.pc == t.sepc),
        "{:?}",
        functions(&d.backtrace)
    );
    let access = d
        .diagnosis
        .as_ref()
        .unwrap()
        .access
        .as_ref()
        .expect("the access named");
    assert_eq!(access.detail.kind, AccessKind::Load);
    assert_eq!(access.detail.base_value, Some(0));
    let named = access
        .detail
        .named
        .as_ref()
        .unwrap_or_else(|| panic!("{access:#?}"));
    assert_eq!(named.variable, "b");
    assert_eq!(named.member.as_deref(), Some("refcnt"));
    assert_eq!(named.pointee.as_deref(), Some("struct buf"));
    assert_eq!(named.member_offset, 72);
    assert_eq!(
        access.sentence,
        format!("load of `refcnt` (offset 72 in struct buf) through a NULL `struct buf *` b at bio.c:{refcnt_line}")
    );
}

#[test]
fn double_acquire_panics_acquire_with_the_lock_held() {
    let b = Built::new(&["BUG=double-acquire"]);
    let (_run, v) = panic_of(&b, "bcachetest", "xv6_panic_acquire");
    let p = v.report.panic.as_ref().unwrap();
    assert_eq!(p.message, "acquire");
    let d = v.panic.as_ref().unwrap();
    // The offending call: recycle's acquire of a bucket lock it already holds.
    let again = b.line_of("bio.c", "acquire(BUCKET_LOCK(o));");
    let fault = d.fault.as_ref().unwrap();
    assert_eq!(fault.function.as_deref(), Some("recycle"));
    assert_eq!(line(fault), format!("bio.c:{again}"));
    let diag = d.diagnosis.as_ref().unwrap();
    let paths: Vec<&str> = diag.held.iter().filter_map(|h| h.path.as_deref()).collect();
    assert!(paths.contains(&"bcache.lock"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("bcache.bucket[")),
        "{paths:?}"
    );
}

#[test]
fn bucket_lock_across_acquiresleep_panics_sched_locks() {
    let b = Built::new(&["BUG=sleep-holding"]);
    let (_run, v) = panic_of(&b, "bcachetest", "xv6_sched_locks");
    let p = v.report.panic.as_ref().unwrap();
    assert_eq!(p.message, "sched locks");
    let d = v.panic.as_ref().unwrap();
    // The frame that called sleep.
    let fault = d.fault.as_ref().unwrap();
    assert_eq!(fault.function.as_deref(), Some("acquiresleep"), "{fault:?}");
    assert_eq!(
        line(fault),
        format!(
            "sleeplock.c:{}",
            b.line_of("sleeplock.c", "sleep(lk, &lk->lk)")
        )
    );
    // Held: its own proc lock (taken in sleep) and the bucket lock bget kept.
    let diag = d.diagnosis.as_ref().unwrap();
    let held: Vec<(String, String)> = diag
        .held
        .iter()
        .map(|h| {
            (
                h.path.clone().unwrap_or_default(),
                h.site.as_ref().map(line).unwrap_or_default(),
            )
        })
        .collect();
    let in_sleep = format!(
        "proc.c:{}",
        b.line_of("proc.c", "  release(lk);\n  p->chan") - 1
    );
    assert!(
        held.iter()
            .any(|(p, l)| p.starts_with("proc[") && *l == in_sleep),
        "its proc lock, taken in sleep at {in_sleep}: {held:?}"
    );
    let bucket = held
        .iter()
        .find(|(p, _)| p.starts_with("bcache.bucket["))
        .unwrap_or_else(|| panic!("the bucket lock: {held:?}"));
    assert!(bucket.1.starts_with("bio.c:"), "{held:?}");
}
