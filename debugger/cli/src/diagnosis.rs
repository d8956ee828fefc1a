//! `lockscope check`'s text for what stops of the guest showed, for a kernel read through its
//! DWARF (xv6): the panicking process, the locks it holds and where it took them, the faulting
//! access named, why no buffer was free, every hart's stack; and a hang confirmed across two
//! stops. The same facts as the JSON's `panic_diagnosis`, `panic_harts` and `hang`.

use std::fmt::Write as _;

use lockscope_engine::model::ProcRef;
use lockscope_engine::monitor::{
    short_function, FrameLine, HangDetail, HartBacktrace, HeldLine, PanicDiagnosis, Place,
};

/// Referenced buffers listed at most in text.
const MAX_BUFS: usize = 64;

fn proc_text(p: &ProcRef) -> String {
    format!("pid {} ({})", p.pid, p.name)
}

/// `bget bio.c:239, inlined into bread bio.c:449`.
pub fn place_text(p: &Place) -> String {
    let mut s = match (&p.function, &p.location) {
        (Some(f), Some(l)) => format!("{} {l}", short_function(f)),
        (Some(f), None) => short_function(f).to_string(),
        (None, Some(l)) => l.clone(),
        (None, None) => format!("{:#x}", p.pc),
    };
    for (f, at) in &p.inlined_into {
        let _ = write!(s, ", inlined into {}", short_function(f));
        if let Some(at) = at {
            let _ = write!(s, " {at}");
        }
    }
    s
}

fn frame_text(f: &FrameLine) -> String {
    let at = match (&f.function, &f.location) {
        (Some(func), Some(l)) => format!("{} {l}", short_function(func)),
        (Some(func), None) => short_function(func).to_string(),
        (None, Some(l)) => l.clone(),
        (None, None) => String::new(),
    };
    format!(
        "{:#018x} {at}{}",
        f.pc,
        if f.inlined { " [inlined]" } else { "" }
    )
}

fn held_text(out: &mut String, indent: &str, held: &[HeldLine]) {
    for l in held {
        let name = l.path.as_deref().unwrap_or(&l.name);
        match &l.site {
            Some(s) => {
                let _ = writeln!(out, "{indent}{name}, taken at {}", place_text(s));
            }
            None => {
                let _ = writeln!(out, "{indent}{name}");
            }
        }
    }
}

/// What the panic's stop showed beyond the panicking hart's backtrace.
pub fn panic_text(out: &mut String, d: Option<&PanicDiagnosis>, harts: &[HartBacktrace]) {
    if let Some(d) = d {
        if let Some(p) = &d.process {
            let _ = writeln!(out, "process: {}", proc_text(p));
        }
        if d.message_from_console {
            let _ = writeln!(out, "(the message is the console's `panic: ` line)");
        }
        if !d.held.is_empty() {
            let _ = writeln!(out, "locks the panicking hart holds:");
            held_text(out, "  ", &d.held);
        }
        if let Some(a) = &d.access {
            let _ = writeln!(out, "faulting access: {}", a.sentence);
            for c in &a.candidates {
                let _ = writeln!(out, "  candidate: {c}");
            }
        }
        if let Some(b) = &d.bufs {
            let _ = writeln!(out, "buffer cache: {}", b.sentence);
            for r in b.referenced.iter().take(MAX_BUFS) {
                let holder = r.holder.as_ref().map_or_else(String::new, |p| {
                    format!(", sleeplock held by {}", proc_text(p))
                });
                let _ = writeln!(
                    out,
                    "  buf {:>3}: block {:>5}, refcnt {}{holder}",
                    r.index, r.blockno, r.refcnt
                );
            }
            if b.referenced.len() > MAX_BUFS {
                let _ = writeln!(
                    out,
                    "  and {} more (--json lists them all)",
                    b.referenced.len() - MAX_BUFS
                );
            }
        }
    }
    if harts.len() > 1 {
        let _ = writeln!(out, "every hart at the stop:");
        for h in harts {
            let pc =
                h.pc.map_or_else(|| "pc unknown".into(), |pc| format!("pc {pc:#x}"));
            let _ = writeln!(out, "  hart {} ({:?}, {pc})", h.hart, h.run);
            for f in &h.frames {
                let _ = writeln!(out, "    {}", frame_text(f));
            }
        }
    }
}

/// A hang two stops confirmed: each hart's state, line, locks and stack; the sleepers.
pub fn hang_text(out: &mut String, h: &HangDetail) {
    if !h.confirmed {
        return;
    }
    let _ = writeln!(out, "\n--- hang (confirmed across two stops)");
    let _ = writeln!(out, "{}", h.headline);
    for x in &h.harts {
        let process = x
            .process
            .as_ref()
            .map_or_else(String::new, |p| format!(", {}", proc_text(p)));
        let _ = writeln!(
            out,
            "hart {} (pc {:#x}{process}): {}",
            x.hart, x.pc, x.state
        );
        if let Some(at) = &x.at {
            let _ = writeln!(out, "  at {}", place_text(at));
        }
        if !x.held.is_empty() {
            let _ = writeln!(out, "  holds:");
            held_text(out, "    ", &x.held);
        }
        for f in &x.frames {
            let _ = writeln!(out, "    {}", frame_text(f));
        }
    }
    for s in h.rw.iter().chain(&h.chains) {
        let _ = writeln!(out, "{s}");
    }
    if !h.sleepers.is_empty() {
        let _ = writeln!(out, "sleeping processes:");
        for s in &h.sleepers {
            let chan = s.chan.as_deref().unwrap_or("?");
            let lock = s
                .sleeplock
                .as_deref()
                .map_or_else(String::new, |l| format!(" (sleeplock {l})"));
            let _ = writeln!(out, "  pid {} ({}) on {chan}{lock}", s.pid, s.name);
            for f in &s.frames {
                let _ = writeln!(out, "    {}", frame_text(f));
            }
            if let Some(n) = &s.note {
                let _ = writeln!(out, "    ({n})");
            }
        }
    }
    for n in &h.notes {
        let _ = writeln!(out, "note: {n}");
    }
}
