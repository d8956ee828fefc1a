//! A few source lines around a location, when the file is on disk.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::dwarf::Location;
use super::elf::Symbols;

/// Source files larger than this are not read: kernel sources are a few KiB.
const MAX_SOURCE_SIZE: u64 = 8 << 20;
/// Longer lines are cut (with `…`) so a minified or generated file cannot flood the view.
const MAX_LINE_CHARS: usize = 400;

/// Lines `first_line..first_line + lines.len()` of `path`; `focus` is the line of interest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceContext {
    pub path: PathBuf,
    pub first_line: u32,
    pub focus: u32,
    pub lines: Vec<String>,
}

impl SourceContext {
    /// Reads up to `radius` lines either side of line `focus` (1-based) of `path`. `None` when
    /// the file is missing, unreadable, too large, or shorter than `focus`: a view then simply
    /// shows no source.
    pub fn read(path: &Path, focus: u32, radius: u32) -> Option<SourceContext> {
        if focus == 0 {
            return None;
        }
        let file = std::fs::File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() > MAX_SOURCE_SIZE {
            return None;
        }
        let first_line = focus.saturating_sub(radius).max(1);
        let last_line = focus.saturating_add(radius);
        let mut reader = BufReader::new(file.take(MAX_SOURCE_SIZE));
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        for n in 1..=last_line {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).ok()? == 0 {
                break;
            }
            if n >= first_line {
                lines.push(clean_line(&buf));
            }
        }
        let have = first_line as u64 + lines.len() as u64;
        (u64::from(focus) < have).then(|| SourceContext {
            path: path.to_owned(),
            first_line,
            focus,
            lines,
        })
    }

    /// The focus line's text.
    pub fn focus_text(&self) -> Option<&str> {
        let i = self.focus.checked_sub(self.first_line)? as usize;
        self.lines.get(i).map(String::as_str)
    }
}

fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    match text.char_indices().nth(MAX_LINE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

impl Symbols {
    /// Up to `radius` lines either side of `location`'s line, when its file is on disk.
    pub fn source_context(&self, location: &Location, radius: u32) -> Option<SourceContext> {
        SourceContext::read(&location.file, location.line?, radius)
    }
}
