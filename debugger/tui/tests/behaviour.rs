//! How the UI behaves: keys, sorting, filtering, auto-switching, mouse, colours, commands to the
//! session (the loop's redraw policy is in event_loop.rs). Views come from real recordings.

mod common;

use std::sync::Arc;

use common::*;
use crossterm::event::{
    Event as Term, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use lockscope_engine::feed::StopReason;
use lockscope_engine::monitor::{TargetState, View};
use lockscope_engine::session::Command;
use lockscope_tui::{Action, App, Effect, Tab, Theme};
use ratatui::style::Color;

/// Lock names in table order, read off the screen (first column of the Locks table).
fn lock_order(app: &App, view: &View) -> Vec<String> {
    let s = screen(app, view, 100, 30);
    s.lines()
        .skip(4)
        .filter_map(|l| l.strip_prefix('│'))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .filter(|n| !n.is_empty() && !n.starts_with('│'))
        .collect()
}

/// Names ordered by a numeric key, largest first, ties by name (natural order).
fn expected(view: &View, key: fn(&lockscope_engine::analysis::LockRow) -> u64) -> Vec<String> {
    let mut rows: Vec<_> = view.report.locks.iter().collect();
    rows.sort_by(|a, b| {
        key(b)
            .cmp(&key(a))
            .then_with(|| lockscope_tui::format::natural_cmp(&a.name, &b.name))
    });
    rows.into_iter().map(|r| r.name.clone()).collect()
}

#[test]
fn locks_sort_by_contention_then_by_any_column_and_reverse() {
    let view = fixture("kalloc_global");
    let mut a = app(Tab::Locks);
    // The screen shows the top of the sorted table.
    let shown = lock_order(&a, &view);
    let want = expected(&view, |r| r.contended);
    assert_eq!(shown, want[..shown.len()]);
    assert_eq!(shown[0], "kmem");
    // s: spins; S reverses it.
    press(&mut a, &view, ch('s'));
    assert_eq!(a.locks.sort, lockscope_tui::SortKey::Spins);
    let shown = lock_order(&a, &view);
    assert_eq!(shown, expected(&view, |r| r.spins)[..shown.len()]);
    press(&mut a, &view, ch('S'));
    let shown = lock_order(&a, &view);
    assert_ne!(
        shown[0], "kmem",
        "the most contended lock is no longer first"
    );
    let reversed: Vec<String> = expected(&view, |r| r.spins).into_iter().rev().collect();
    let least = &view.report.locks.iter().map(|l| l.spins).min().unwrap();
    let first = view
        .report
        .locks
        .iter()
        .find(|l| l.name == shown[0])
        .unwrap();
    assert_eq!(first.spins, *least, "{shown:?} vs {reversed:?}");
    // Round to names (A to Z, naturally), then acquisitions.
    for _ in 0..7 {
        press(&mut a, &view, ch('s'));
    }
    assert_eq!(a.locks.sort, lockscope_tui::SortKey::Name);
    let healthy = fixture("healthy");
    let mut names: Vec<String> = healthy
        .report
        .locks
        .iter()
        .map(|l| l.name.clone())
        .collect();
    names.sort_by(|x, y| lockscope_tui::format::natural_cmp(x, y));
    let shown = lock_order(&a, &healthy);
    assert_eq!(shown, names[..shown.len()]);
    assert!(
        shown.iter().position(|n| n == "bcache.bucket2")
            < shown.iter().position(|n| n == "bcache.bucket10")
    );
    press(&mut a, &view, ch('s'));
    press(&mut a, &view, ch('s'));
    assert_eq!(a.locks.sort, lockscope_tui::SortKey::Acquires);
    let shown = lock_order(&a, &healthy);
    assert_eq!(shown, expected(&healthy, |r| r.acquires)[..shown.len()]);
}

#[test]
fn filter_narrows_the_table_and_escape_clears_it() {
    let view = fixture("healthy");
    let total = view.report.locks.len();
    let kmem = view
        .report
        .locks
        .iter()
        .filter(|l| l.name.starts_with("kmem"))
        .count();
    assert!(kmem >= 4 && total > kmem);
    let mut a = app(Tab::Locks);
    for c in "/KMEM".chars() {
        press(&mut a, &view, ch(c));
    }
    press(&mut a, &view, key(KeyCode::Enter));
    assert_eq!(a.input, None);
    let names = lock_order(&a, &view);
    assert_eq!(names.len(), kmem, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("kmem")));
    assert!(screen(&a, &view, 80, 24).contains(&format!("Locks: {kmem} of {total}")));
    press(&mut a, &view, key(KeyCode::Esc));
    assert!(screen(&a, &view, 80, 24).contains(&format!("Locks: {total} of {total}")));
}

#[test]
fn selection_follows_the_lock_when_the_order_changes() {
    let view = fixture("healthy");
    let mut a = app(Tab::Locks);
    press(&mut a, &view, ch('j'));
    let selected_name = |a: &App| {
        let buf = draw(a, &view, 100, 30);
        // The selected row is drawn reversed in the mono theme.
        (0..buf.area.height)
            .find(|&y| {
                buf[(3, y)]
                    .modifier
                    .contains(ratatui::style::Modifier::REVERSED)
                    && y > 3
            })
            .map(|y| {
                (1..40)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string()
            })
    };
    let before = selected_name(&a).expect("a selected row");
    press(&mut a, &view, ch('S'));
    assert_eq!(selected_name(&a).as_deref(), Some(before.as_str()));
    press(&mut a, &view, key(KeyCode::Enter));
    assert!(a.locks.detail);
    assert!(screen(&a, &view, 100, 30).contains(&format!("┌ {before} · class")));
}

#[test]
fn grouping_by_class_shows_class_totals() {
    let view = fixture("healthy");
    let mut a = app(Tab::Locks);
    press(&mut a, &view, ch('c'));
    let s = screen(&a, &view, 100, 30);
    assert!(s.contains("▾ kmem (4)"), "{s}");
    // The class total is the sum of its four locks' acquisitions.
    let total: u64 = view
        .report
        .locks
        .iter()
        .filter(|l| l.class == "kmem")
        .map(|l| l.acquires)
        .sum();
    let line = s.lines().find(|l| l.contains("▾ kmem (4)")).unwrap();
    assert!(
        line.contains(&lockscope_tui::format::count(total)),
        "{line} lacks {total}"
    );
}

#[test]
fn panic_and_deadlock_views_open_by_themselves_once() {
    let healthy = fixture("healthy");
    let panic = fixture("null_next");
    let deadlock = fixture("deadlock");
    let mut a = app(Tab::Locks);
    a.observe(&healthy);
    assert_eq!(a.tab, Tab::Locks);
    a.observe(&deadlock);
    assert_eq!(a.tab, Tab::Deadlock);
    press(&mut a, &deadlock, ch('1'));
    a.observe(&deadlock);
    assert_eq!(a.tab, Tab::Locks, "switched a second time");
    a.observe(&panic);
    assert_eq!(a.tab, Tab::Panic);
    press(&mut a, &panic, ch('2'));
    a.observe(&panic);
    assert_eq!(a.tab, Tab::Harts);
}

#[test]
fn panic_view_decodes_the_trap_and_marks_the_faulting_instruction() {
    let view = fixture("null_next");
    let trap = view.check.panic.as_ref().unwrap().trap.as_ref().unwrap();
    let s = screen(&app(Tab::Panic), &view, 160, 48);
    assert!(s.contains("load page fault (scause 0xd)"), "{s}");
    assert!(
        s.contains(&format!("sepc {:#x}  stval {:#x}", trap.sepc, trap.stval)),
        "{s}"
    );
    assert!(
        s.contains(&format!("> {:#x}", trap.sepc)),
        "faulting instruction not marked:\n{s}"
    );
    // The seed's bug: a list walk in the buffer cache dereferences a null link.
    assert!(s.contains("bio::lookup kernel/src/bio.rs"), "{s}");
    assert!(s.contains("[inlined]"), "{s}");
}

#[test]
fn deadlock_view_draws_the_chain_and_the_inversion() {
    let view = fixture("deadlock");
    let cycle = &view.report.deadlocks[0];
    let (first, second) = (&cycle.edges[0], &cycle.edges[1]);
    let s = screen(&app(Tab::Deadlock), &view, 160, 48);
    assert!(s.contains("DEADLOCK (confirmed"), "{s}");
    assert!(
        s.contains(&format!("hart{} holds {}", first.waiter, second.lock_name)),
        "{s}"
    );
    assert!(
        s.contains(&format!("held by hart{}: the cycle closes", first.waiter)),
        "{s}"
    );
    let (a, b) = (&first.lock_name, &second.lock_name);
    assert!(
        s.contains(&format!("{a} → {b} → {a}")) || s.contains(&format!("{b} → {a} → {b}")),
        "{s}"
    );
}

#[test]
fn bucket_selection_lists_that_buckets_buffers() {
    let view = fixture("bget_no_buffers");
    let mut a = app(Tab::Bcache);
    press(&mut a, &view, ch('j'));
    press(&mut a, &view, ch('j'));
    let s = screen(&a, &view, 160, 48);
    assert!(s.contains("Bucket 2 (bcache.bucket2): buffers"), "{s}");
    let in_bucket: Vec<u32> = view
        .bufs
        .iter()
        .filter(|b| b.bucket == Some(2))
        .map(|b| b.blockno)
        .collect();
    assert!(!in_bucket.is_empty());
    for blockno in in_bucket {
        assert!(
            s.contains(&format!(" {blockno} ")),
            "block {blockno} missing:\n{s}"
        );
    }
}

#[test]
fn events_filter_by_hart_and_scroll_back() {
    let view = fixture("kalloc_global");
    let mut a = app(Tab::Events);
    // The hart with the most of the newest events (under the one global lock, harts take long
    // turns: which ones the last events show depends on when the recording stopped).
    let mut counts = std::collections::BTreeMap::new();
    for e in &view.recent_events {
        *counts.entry(e.hart).or_insert(0) += 1;
    }
    let hart = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(h, _)| *h)
        .unwrap();
    let filter = format!("/hart{hart}");
    for c in filter.chars() {
        press(&mut a, &view, ch(c));
    }
    press(&mut a, &view, key(KeyCode::Enter));
    let s = screen(&a, &view, 120, 40);
    // Event rows start with a timestamp.
    let rows: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with('│') && l.chars().nth(1).is_some_and(|c| c.is_ascii_digit()))
        .collect();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|l| l.contains(&format!("hart{hart}"))),
        "{rows:?}"
    );
    // k scrolls back in time.
    press(&mut a, &view, ch('k'));
    assert_eq!(a.events.back, 1);
    assert!(screen(&a, &view, 120, 40).contains("1 back"));
    press(&mut a, &view, ch('G'));
    assert_eq!(a.events.back, 0);
}

#[test]
fn help_closes_on_any_key_and_q_quits() {
    let view = fixture("healthy");
    let mut a = app(Tab::Locks);
    press(&mut a, &view, ch('?'));
    assert!(a.show_help);
    assert_eq!(press(&mut a, &view, ch('j')), Effect::None);
    assert!(!a.show_help);
    assert_eq!(press(&mut a, &view, ch('q')), Effect::Quit);
    let ctrl_c = Term::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(a.action_for(&ctrl_c), Some(Action::Quit));
}

#[test]
fn interrupt_and_resume_go_to_a_controllable_session_only() {
    let running = fixture("healthy");
    let mut stopped = (*running).clone();
    stopped.state = TargetState::Stopped {
        reason: StopReason::Interrupted,
    };
    let stopped = Arc::new(stopped);
    let mut a = App::new(Theme::mono(), true);
    assert_eq!(
        press(&mut a, &running, ch('i')),
        Effect::Send(Command::Interrupt)
    );
    assert_eq!(
        press(&mut a, &stopped, ch('i')),
        Effect::Send(Command::Resume)
    );
    let mut replay = App::new(Theme::mono(), false);
    assert_eq!(press(&mut replay, &running, ch('i')), Effect::None);
    assert!(replay
        .message
        .as_deref()
        .unwrap()
        .contains("cannot stop the guest"));
}

#[test]
fn mouse_clicks_switch_tabs_sort_columns_and_select_rows() {
    let view = fixture("healthy");
    let mut a = app(Tab::Locks);
    let s = screen(&a, &view, 100, 30);
    let click = |a: &mut App, column: u16, row: u16| {
        let e = Term::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        });
        press(a, &view, e);
    };
    // Column title "Spins" in the table header (row 3).
    let header = s.lines().nth(3).unwrap();
    let x = header
        .chars()
        .take_while(|_| true)
        .collect::<String>()
        .find("Spins")
        .unwrap();
    let x = header[..x].chars().count() as u16;
    click(&mut a, x, 3);
    assert_eq!(a.locks.sort, lockscope_tui::SortKey::Spins);
    // Third row of the table; clicking it again opens its detail.
    let third = lock_order(&a, &view)[2].clone();
    click(&mut a, 5, 6);
    click(&mut a, 5, 6);
    assert!(a.locks.detail);
    assert!(screen(&a, &view, 100, 30).contains(&format!("┌ {third} · class")));
    // The "4 Events" tab on the tab bar (row 1).
    let tabs = s.lines().nth(1).unwrap();
    let x = tabs[..tabs.find("4 Events").unwrap()].chars().count() as u16;
    click(&mut a, x + 2, 1);
    assert_eq!(a.tab, Tab::Events);
}

#[test]
fn no_color_is_monochrome_and_colour_marks_spinning_harts() {
    let view = fixture("deadlock");
    let buf = draw(&app(Tab::Harts), &view, 120, 30);
    assert!(buf
        .content
        .iter()
        .all(|c| c.fg == Color::Reset && c.bg == Color::Reset));
    let mut colour = App::new(Theme::color(), false);
    colour.tab = Tab::Harts;
    let buf = draw(&colour, &view, 120, 30);
    let text = text(&buf);
    // The last spinning hart: the first row is selected, which has its own style.
    let lines: Vec<&str> = text.lines().collect();
    let y = lines
        .iter()
        .rposition(|l| l.starts_with("│hart") && l.contains("SPINNING"))
        .unwrap() as u16;
    assert!(y > 4);
    assert_eq!(buf[(2, y)].fg, Theme::color().spinning.fg.unwrap());

    // No other test reads NO_COLOR, so changing it here races with nothing.
    std::env::set_var("NO_COLOR", "1");
    assert!(!Theme::from_env().color);
    std::env::set_var("NO_COLOR", "");
    assert!(Theme::from_env().color, "an empty NO_COLOR does not count");
    std::env::remove_var("NO_COLOR");
    assert!(Theme::from_env().color);
}

#[test]
fn every_view_renders_at_odd_sizes_without_panicking() {
    let views: Vec<Arc<View>> = FIXTURES
        .iter()
        .map(|f| fixture(f))
        .chain([empty_view()])
        .collect();
    for v in &views {
        for tab in Tab::ALL {
            for (w, h) in [
                (1, 1),
                (39, 7),
                (40, 8),
                (41, 9),
                (57, 13),
                (80, 24),
                (300, 90),
            ] {
                let mut a = app(tab);
                let s = screen(&a, v, w, h);
                assert_eq!(s.lines().count(), h as usize);
                // Detail, grouping and help at every size too.
                press(&mut a, v, key(KeyCode::Enter));
                press(&mut a, v, ch('c'));
                let _ = screen(&a, v, w, h);
                press(&mut a, v, ch('?'));
                let _ = screen(&a, v, w, h);
            }
        }
    }
}

// ---- The loop: redraws, pause, commands. ----

// ---- A source without lock events (xv6 through DWARF). ----

#[test]
fn xv6_locks_show_variables_and_the_kernels_counts_and_say_what_needs_events() {
    let view = fixture("xv6_odd_names");
    assert!(!view.lock_events);
    let a = app(Tab::Locks);
    let s = screen(&a, &view, 160, 48);
    assert!(s.contains("Variable"), "{s}");
    assert!(s.contains("bcache.bucket[3].lock"), "{s}");
    assert!(s.contains("wait and hold times need lock events"), "{s}");
    assert!(!s.contains("Wavg"), "no time columns: {s}");
    // The tabs are what the source gives: no Events; Processes, Findings, Console.
    let tabs: Vec<Tab> = Tab::visible(&view, false);
    assert!(!tabs.contains(&Tab::Events));
    assert!(tabs.contains(&Tab::Processes) && tabs.contains(&Tab::Findings));
    assert!(tabs.contains(&Tab::Console));
    let mut a = app(Tab::Bcache);
    press(&mut a, &view, key(KeyCode::Tab));
    assert_eq!(a.tab, Tab::Panic, "Tab skips the hidden Events view");
    press(&mut a, &view, ch('4'));
    assert_eq!(a.tab, Tab::Panic);
    assert!(a.message.as_deref().unwrap().contains("no Events view"));
    let s = screen(&app(Tab::Findings), &view, 120, 40);
    assert!(s.contains("lock_name_not_counted"), "{s}");
    let s = screen(&app(Tab::Bcache), &view, 120, 40);
    assert!(s.contains("keeps no hit, miss or steal counts"), "{s}");
    assert!(!s.contains("Hit%"), "{s}");
    assert!(
        s.contains("at boot"),
        "free pages against the boot total: {s}"
    );
}

#[test]
fn the_console_takes_typing_when_the_session_has_its_input() {
    let view = fixture("xv6_odd_names");
    let mut a = app(Tab::Console);
    // Without console input, Enter says why.
    press(&mut a, &view, key(KeyCode::Enter));
    assert!(a.input.is_none());
    assert!(a.message.as_deref().unwrap().contains("no console input"));
    a.console_input = true;
    press(&mut a, &view, key(KeyCode::Enter));
    assert_eq!(a.input, Some(lockscope_tui::app::Input::Console));
    assert_eq!(press(&mut a, &view, ch('q')), Effect::Type(*b"q\0\0\0", 1));
    assert_eq!(
        press(&mut a, &view, key(KeyCode::Enter)),
        Effect::Type([b'\r', 0, 0, 0], 1)
    );
    assert_eq!(
        press(&mut a, &view, key(KeyCode::Backspace)),
        Effect::Type([0x7f, 0, 0, 0], 1)
    );
    let ctrl_p = Term::Key(KeyEvent::new(KeyCode::Char('p'), KeyModifiers::CONTROL));
    assert_eq!(
        press(&mut a, &view, ctrl_p),
        Effect::Type([0x10, 0, 0, 0], 1)
    );
    press(&mut a, &view, key(KeyCode::Esc));
    assert!(a.input.is_none());
    assert_eq!(press(&mut a, &view, ch('q')), Effect::Quit, "q quits again");
}
