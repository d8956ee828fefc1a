//! The buffer cache, bucket by bucket, the buffers of the selected bucket, and the page
//! allocator beside them.

use lockscope_engine::analysis::{BcacheView, KmemView};
use lockscope_engine::View;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::block;
use crate::app::App;
use crate::format;
use crate::theme::Theme;

pub(super) fn render(frame: &mut Frame, area: Rect, app: &App, view: &View) {
    let wide = area.width >= 120;
    let (buckets_a, bufs_a, kmem_a) = if wide {
        let [l, r] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
            .areas(area);
        let [b, k] =
            Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(r);
        (l, b, k)
    } else {
        let n = view
            .report
            .bcache
            .as_ref()
            .map_or(1, |b| b.buckets.len() as u16);
        let [top, bottom] = Layout::vertical([
            Constraint::Length((n + 4).min(area.height / 2).max(5)),
            Constraint::Min(0),
        ])
        .areas(area);
        let [b, k] = Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
            .areas(bottom);
        (top, b, k)
    };
    match &view.report.bcache {
        Some(bc) if !bc.buckets.is_empty() => {
            let sel = app.bucket_selected.min(bc.buckets.len() - 1);
            if view.detail.bcache_counts_unavailable {
                render_buckets_uncounted(frame, buckets_a, app, view, bc, sel);
            } else {
                render_buckets(frame, buckets_a, app, bc, sel);
            }
            render_bufs(frame, bufs_a, app, view, bc, sel);
        }
        _ => {
            let t = &app.theme;
            let blk = block(t, " Buffer cache ");
            frame.render_widget(
                Paragraph::new(vec![
                    Line::styled("This kernel reports no buffer cache.", t.dim),
                    Line::styled(
                        "It appears with workload=bcachetest or workload=mixed.",
                        t.dim,
                    ),
                ])
                .block(blk),
                buckets_a,
            );
            frame.render_widget(block(t, " Buffers "), bufs_a);
        }
    }
    if view.detail.pages_at_start.is_some() || !view.detail.kmem_paths.is_empty() {
        render_free_lists(frame, kmem_a, &app.theme, view);
    } else {
        render_kmem(frame, kmem_a, &app.theme, view.report.kmem.as_ref());
    }
}

/// Buckets of a cache that keeps no hit, miss or steal counts (xv6): occupancy only, and the
/// layout lockscope found.
fn render_buckets_uncounted(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    view: &View,
    bc: &BcacheView,
    sel: usize,
) {
    let t = &app.theme;
    let layout = view
        .detail
        .bcache_layout
        .as_deref()
        .map_or(String::new(), |l| format!(" · {l}"));
    let blk = block(
        t,
        format!(
            " Buffer cache ({}): {} buckets, {} bufs, {} in use{layout} ",
            bc.mode,
            bc.buckets.len(),
            bc.nbuf,
            bc.in_use,
        ),
    );
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    if inner.height < 3 {
        return;
    }
    frame.render_widget(
        Paragraph::new(Span::styled(
            "this kernel keeps no hit, miss or steal counts: occupancy as the bucket lists hold it",
            t.dim,
        )),
        Rect::new(inner.x, inner.y, inner.width, 1),
    );
    let inner = Rect::new(inner.x, inner.y + 1, inner.width, inner.height - 1);
    let rows_h = inner.height as usize - 1;
    app.page.set(rows_h.max(1));
    let offset = (sel + 1).saturating_sub(rows_h);
    app.hits.borrow_mut().list = Some((
        Rect::new(inner.x, inner.y + 1, inner.width, inner.height - 1),
        offset,
    ));
    let max_nbuf = bc.buckets.iter().map(|b| b.nbuf).max().unwrap_or(0) as u64;
    let lock_w = bc
        .buckets
        .iter()
        .filter_map(|b| b.lock.and_then(|l| view.detail.lock(l)))
        .filter_map(|d| d.path.as_ref().map(|p| p.len()))
        .max()
        .unwrap_or(4)
        .clamp(4, 28) as u16;
    let bar_w = (inner.width as usize)
        .saturating_sub(4 + 5 + 5 + 7 + lock_w as usize + 5)
        .min(40);
    let rows: Vec<Row> = bc
        .buckets
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_h)
        .map(|(i, b)| {
            let mut bar = String::new();
            format::bar(b.in_use as u64, max_nbuf, bar_w, &mut bar);
            let mut rest = String::new();
            format::bar(b.nbuf as u64, max_nbuf, bar_w, &mut rest);
            let shade: String =
                "░".repeat(rest.chars().count().saturating_sub(bar.chars().count()));
            let held = b
                .lock
                .and_then(|l| view.report.locks.iter().find(|r| r.id == l))
                .and_then(|r| r.holder)
                .map_or("-".to_string(), |h| format!("hart{h}"));
            let lock = b
                .lock
                .and_then(|l| view.detail.lock(l))
                .and_then(|d| d.path.clone())
                .or_else(|| b.lock_name.clone())
                .unwrap_or_else(|| "-".into());
            let row = Row::new(vec![
                right(b.index.to_string()),
                right(b.nbuf.to_string()),
                right(b.in_use.to_string()),
                right(held),
                Cell::from(lock),
                Cell::from(Line::from(vec![
                    Span::styled(bar, t.bar),
                    Span::styled(shade, t.dim),
                ])),
            ]);
            if i == sel {
                row.style(t.selected)
            } else {
                row
            }
        })
        .collect();
    let header =
        Row::new(["Bkt", "Bufs", "InUse", "Held", "Lock", "In use / bufs"]).style(t.table_header);
    let widths = [
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(lock_w),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

/// The allocator's free lists as walked in memory (xv6): each list's variable and free pages,
/// and the total against what the kernel started with.
fn render_free_lists(frame: &mut Frame, area: Rect, t: &Theme, view: &View) {
    let Some(k) = view.report.kmem.as_ref() else {
        frame.render_widget(
            Paragraph::new(Span::styled("No page allocator state yet.", t.dim))
                .block(block(t, " Page allocator ")),
            area,
        );
        return;
    };
    let d = &view.detail;
    if view.source == lockscope_engine::SourceKind::GdbPoll && d.kmem_incomplete {
        frame.render_widget(
            Paragraph::new(vec![
                Line::styled(
                    "The free lists are not walked through the gdb stub: each page is a round trip while the guest is stopped.",
                    t.dim,
                ),
                Line::styled(
                    "With lockscope qemu (shared RAM) they are counted.",
                    t.dim,
                ),
            ])
            .wrap(ratatui::widgets::Wrap { trim: true })
            .block(block(t, format!(" Free pages ({}) ", k.mode))),
            area,
        );
        return;
    }
    let start = d.pages_at_start.map_or(String::new(), |s| {
        format!(" of {} at boot", format::count(s))
    });
    let partial = if d.kmem_incomplete {
        " (a walk stopped early: at least)"
    } else {
        ""
    };
    let blk = block(
        t,
        format!(
            " Free pages ({}): {}{start}{partial} ",
            k.mode,
            format::count(k.free_pages)
        ),
    );
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    let max = k.lists.iter().map(|l| l.free_pages).max().unwrap_or(0);
    let path_w = d
        .kmem_paths
        .iter()
        .map(|p| p.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 24) as u16;
    let bar_w = (inner.width as usize)
        .saturating_sub(path_w as usize + 8 + 2)
        .min(40);
    let rows: Vec<Row> = k
        .lists
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut bar = String::new();
            format::bar(l.free_pages, max, bar_w, &mut bar);
            let path = d
                .kmem_paths
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("list {i}"));
            Row::new(vec![
                Cell::from(path),
                right(format::count(l.free_pages)),
                Cell::from(Span::styled(bar, t.bar)),
            ])
        })
        .collect();
    let header = Row::new(["List", "Free", ""]).style(t.table_header);
    let widths = [
        Constraint::Length(path_w),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

fn right(s: String) -> Cell<'static> {
    Cell::from(Text::from(Line::from(s).right_aligned()))
}

fn render_buckets(frame: &mut Frame, area: Rect, app: &App, bc: &BcacheView, sel: usize) {
    let t = &app.theme;
    let blk = block(
        t,
        format!(
            " Buffer cache ({}): {} bufs, {} in use, hit rate {}, steals {} ",
            bc.mode,
            bc.nbuf,
            bc.in_use,
            format::pct(bc.hit_rate.map(|r| r * 100.0)),
            format::count(bc.steals)
        ),
    );
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    if inner.height < 2 {
        return;
    }
    let rows_h = inner.height as usize - 1;
    app.page.set(rows_h);
    let offset = (sel + 1).saturating_sub(rows_h);
    app.hits.borrow_mut().list = Some((
        Rect::new(inner.x, inner.y + 1, inner.width, inner.height - 1),
        offset,
    ));
    let max_nbuf = bc.buckets.iter().map(|b| b.nbuf).max().unwrap_or(0) as u64;
    // Fixed columns take 49; the occupancy bar gets the rest.
    let bar_w = (inner.width as usize).saturating_sub(50).clamp(0, 40);
    let rows: Vec<Row> = bc
        .buckets
        .iter()
        .enumerate()
        .skip(offset)
        .take(rows_h)
        .map(|(i, b)| {
            // In-use buffers solid, the rest of the bucket shaded.
            let mut bar = String::new();
            format::bar(b.in_use as u64, max_nbuf, bar_w, &mut bar);
            let mut rest = String::new();
            format::bar(b.nbuf as u64, max_nbuf, bar_w, &mut rest);
            let shade: String =
                "░".repeat(rest.chars().count().saturating_sub(bar.chars().count()));
            let row = Row::new(vec![
                right(b.index.to_string()),
                right(b.nbuf.to_string()),
                right(b.in_use.to_string()),
                right(format::count(b.hits)),
                right(format::count(b.misses)),
                right(format::count(b.steals)),
                right(format::pct(b.hit_rate.map(|r| r * 100.0))),
                Cell::from(Line::from(vec![
                    Span::styled(bar, t.bar),
                    Span::styled(shade, t.dim),
                ])),
            ]);
            if i == sel {
                row.style(t.selected)
            } else {
                row
            }
        })
        .collect();
    let header = Row::new([
        "Bkt",
        "Bufs",
        "InUse",
        "Hits",
        "Misses",
        "Steals",
        "Hit%",
        "In use / held",
    ])
    .style(t.table_header);
    let widths = [
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

fn render_bufs(frame: &mut Frame, area: Rect, app: &App, view: &View, bc: &BcacheView, sel: usize) {
    let t = &app.theme;
    let b = &bc.buckets[sel];
    let lock = b.lock_name.as_deref().unwrap_or("no lock");
    let blk = block(t, format!(" Bucket {} ({lock}): buffers ", b.index));
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    let bufs: Vec<_> = view
        .bufs
        .iter()
        .filter(|x| x.bucket == Some(b.index))
        .collect();
    if bufs.is_empty() {
        let msg = if view.bufs.is_empty() {
            "The view carries no buffer list."
        } else {
            "No buffers in this bucket."
        };
        frame.render_widget(Paragraph::new(Span::styled(msg, t.dim)), inner);
        return;
    }
    let now = view.ticks;
    let rows: Vec<Row> = bufs
        .iter()
        .take(inner.height.saturating_sub(1) as usize)
        .map(|x| {
            let age = now.map_or("-".into(), |n| {
                format!("{} ticks", n.saturating_sub(x.last_use_ticks))
            });
            let age = match (x.holder_pid, x.disk) {
                // The kernel keeps no age but says who holds the buffer and whether the disk
                // owns it.
                (Some(pid), _) => format!(
                    "pid {pid}{}",
                    if x.disk == Some(true) { ", disk" } else { "" }
                ),
                (None, Some(true)) => "disk".to_string(),
                _ if view.detail.bcache_counts_unavailable && x.last_use_ticks == 0 => "-".into(),
                _ => age,
            };
            let row = Row::new(vec![
                right(x.index.to_string()),
                right(x.blockno.to_string()),
                right(x.refcnt.to_string()),
                Cell::from(if x.valid { "yes" } else { "no" }),
                Cell::from(age),
            ]);
            if x.refcnt > 0 {
                row.style(t.warn)
            } else {
                row
            }
        })
        .collect();
    let last = if view.detail.bcache_counts_unavailable {
        "Holder"
    } else {
        "Age"
    };
    let header = Row::new(["Buf", "Block", "Ref", "Valid", last]).style(t.table_header);
    let widths = [
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Fill(1),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}

fn render_kmem(frame: &mut Frame, area: Rect, t: &Theme, kmem: Option<&KmemView>) {
    let Some(k) = kmem else {
        frame.render_widget(
            Paragraph::new(Span::styled("No page allocator state yet.", t.dim))
                .block(block(t, " Page allocator ")),
            area,
        );
        return;
    };
    let mut title = format!(
        " Pages ({}): {} free, {} steals ",
        k.mode,
        format::count(k.free_pages),
        format::count(k.steals),
    );
    if area.width > 60 {
        title.push_str(&format!("({} pages) ", format::count(k.pages_stolen)));
    }
    let blk = block(t, title);
    let inner = blk.inner(area);
    frame.render_widget(blk, area);
    let max = k.lists.iter().map(|l| l.free_pages).max().unwrap_or(0);
    // Five fixed columns of 6 and their spacing; the bar gets the rest.
    let bar_w = (inner.width as usize).saturating_sub(35).min(40);
    let rows: Vec<Row> = k
        .lists
        .iter()
        .map(|l| {
            let mut bar = String::new();
            format::bar(l.free_pages, max, bar_w, &mut bar);
            let list = if k.mode == "global" {
                "global".to_string()
            } else {
                format!("hart{}", l.hart)
            };
            Row::new(vec![
                Cell::from(list),
                right(format::count(l.free_pages)),
                Cell::from(Span::styled(bar, t.bar)),
                right(format::count(l.allocs)),
                right(format::count(l.steals)),
                right(format::count(l.pages_stolen)),
            ])
        })
        .collect();
    let header = Row::new(["List", "Free", "", "Allocs", "Steals", "Stolen"]).style(t.table_header);
    let widths = [
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        inner,
    );
}
