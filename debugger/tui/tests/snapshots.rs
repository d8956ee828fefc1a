//! Snapshot tests of every view, drawn from engine views recorded from the real kernel (and the
//! placeholders for the bug scenarios the kernel does not have yet). Review changes with
//! `cargo insta review`.

mod common;

use common::*;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use lockscope_tui::{App, Tab};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn press(app: &mut App, view: &std::sync::Arc<lockscope_engine::monitor::View>, c: KeyCode) {
    let ev = Event::Key(KeyEvent::new(c, KeyModifiers::NONE));
    let action = app.action_for(&ev).expect("a mapped key");
    app.update(action, view);
}

fn every_view(fixture_name: &str) {
    let view = fixture(fixture_name);
    for tab in Tab::ALL {
        for (w, h) in SIZES {
            let s = screen(&app(tab), &view, w, h);
            let name = format!("{fixture_name}__{}__{w}x{h}", tab.index() + 1);
            insta::assert_snapshot!(name, s);
        }
    }
}

#[test]
fn healthy_every_view() {
    every_view("healthy");
}

#[test]
fn kalloc_global_every_view() {
    every_view("kalloc_global");
}

#[test]
fn deadlock_every_view() {
    every_view("deadlock");
}

#[test]
fn bget_no_buffers_every_view() {
    every_view("bget_no_buffers");
}

#[test]
fn null_next_every_view() {
    every_view("null_next");
}

/// The C fixture kernel (xv6-shaped, BUG=odd-names) read through DWARF: the views a source
/// without lock events gets.
#[test]
fn xv6_every_view() {
    let view = fixture("xv6_odd_names");
    for tab in Tab::visible(&view, true) {
        for (w, h) in SIZES {
            let mut a = app(tab);
            a.console_input = true;
            let s = screen(&a, &view, w, h);
            let name = format!("xv6_odd_names__{}__{w}x{h}", tab.index() + 1);
            insta::assert_snapshot!(name, s);
        }
    }
    let mut a = app(Tab::Locks);
    press(&mut a, &view, KeyCode::Enter);
    insta::assert_snapshot!("xv6_odd_names__detail__80x24", screen(&a, &view, 80, 24));
}

#[test]
fn empty_view_every_view() {
    let view = empty_view();
    for tab in Tab::ALL {
        let s = screen(&app(tab), &view, 80, 24);
        insta::assert_snapshot!(format!("empty__{}__80x24", tab.index() + 1), s);
    }
}

#[test]
fn lock_detail_of_the_contended_global_kmem() {
    let view = fixture("kalloc_global");
    let mut a = app(Tab::Locks);
    press(&mut a, &view, KeyCode::Enter);
    for (w, h) in SIZES {
        insta::assert_snapshot!(
            format!("kalloc_global__detail__{w}x{h}"),
            screen(&a, &view, w, h)
        );
    }
}

#[test]
fn locks_grouped_by_class_with_one_class_folded() {
    let view = fixture("deadlock");
    let mut a = app(Tab::Locks);
    press(&mut a, &view, KeyCode::Char('c'));
    insta::assert_snapshot!("deadlock__grouped__80x24", screen(&a, &view, 80, 24));
    // Sorted by contentions, the bucket class comes first: fold it.
    press(&mut a, &view, KeyCode::Enter);
    insta::assert_snapshot!("deadlock__grouped_folded__80x24", screen(&a, &view, 80, 24));
}

#[test]
fn locks_filtered_while_typing() {
    let view = fixture("deadlock");
    let mut a = app(Tab::Locks);
    for c in ['/', 'b', 'u', 'c', 'k', 'e', 't', '1'] {
        press(&mut a, &view, KeyCode::Char(c));
    }
    insta::assert_snapshot!("deadlock__filter_bucket1__80x24", screen(&a, &view, 80, 24));
}

#[test]
fn help_overlay() {
    let view = fixture("healthy");
    let mut a = app(Tab::Locks);
    press(&mut a, &view, KeyCode::Char('?'));
    insta::assert_snapshot!("healthy__help__80x24", screen(&a, &view, 80, 24));
}

#[test]
fn panic_with_every_hart() {
    let view = fixture("bget_no_buffers");
    let mut a = app(Tab::Panic);
    press(&mut a, &view, KeyCode::Char('h'));
    insta::assert_snapshot!(
        "bget_no_buffers__all_harts__80x24",
        screen(&a, &view, 80, 24)
    );
}

#[test]
fn too_small_a_terminal_says_so() {
    let view = fixture("healthy");
    insta::assert_snapshot!(
        "healthy__tiny__30x6",
        screen(&app(Tab::Locks), &view, 30, 6)
    );
}
