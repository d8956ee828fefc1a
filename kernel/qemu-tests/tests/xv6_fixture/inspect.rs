//! Reading what the fixture produced: the lab's statistics on the console, and the kernel
//! ELF's DWARF (unit versions, struct layouts, inlined frames).

use crate::harness::{tool, Tree};
use std::process::Command;

/// The lab's statistics block: `(name, #test-and-set, #acquire())` per kmem/bcache line, the
/// top-5 lines, and `tot=`.
pub struct Stats {
    pub locks: Vec<(String, i64, i64)>,
    pub top: Vec<(String, i64, i64)>,
    pub tot: i64,
}

fn lock_line(line: &str) -> Option<(String, i64, i64)> {
    let rest = line.strip_prefix("lock: ")?;
    let (name, rest) = rest.split_once(": #test-and-set ")?;
    let (nts, n) = rest.split_once(" #acquire() ")?;
    Some((
        name.to_string(),
        nts.trim().parse().ok()?,
        n.trim().parse().ok()?,
    ))
}

/// The first statistics block after `title` (e.g. `test0 results:`), checked line by line
/// against the lab's format.
pub fn stats_after(out: &str, title: &str) -> Stats {
    let start = out
        .find(title)
        .unwrap_or_else(|| panic!("no `{title}` in:\n{out}"));
    let mut lines = out[start..]
        .lines()
        .skip(1)
        .map(|l| l.trim_end_matches('\r'));
    assert_eq!(
        lines.next(),
        Some("--- lock kmem/bcache stats"),
        "after `{title}`:\n{out}"
    );
    let mut stats = Stats {
        locks: Vec::new(),
        top: Vec::new(),
        tot: -1,
    };
    let mut in_top = false;
    for line in lines {
        if line == "--- top 5 contended locks:" {
            in_top = true;
        } else if let Some(t) = line.strip_prefix("tot= ") {
            stats.tot = t.parse().unwrap_or_else(|_| panic!("bad `{line}`"));
            break;
        } else {
            let l = lock_line(line)
                .unwrap_or_else(|| panic!("not a lab stats line: `{line}` in:\n{out}"));
            if in_top {
                stats.top.push(l);
            } else {
                stats.locks.push(l);
            }
        }
    }
    assert!(
        in_top && stats.tot >= 0,
        "incomplete stats after `{title}`:\n{out}"
    );
    assert!(
        !stats.top.is_empty() && stats.top.len() <= 5,
        "top 5 after `{title}`:\n{out}"
    );
    // statslock's tot is the kmem/bcache locks' #test-and-set summed.
    assert_eq!(
        stats.tot,
        stats.locks.iter().map(|l| l.1).sum::<i64>(),
        "tot after `{title}`"
    );
    stats
}

pub fn count_named(stats: &Stats, name: &str) -> usize {
    stats.locks.iter().filter(|l| l.0 == name).count()
}

pub fn uid() -> u32 {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric uid")
}

pub fn dwarf_versions(tree: &Tree) -> Vec<u32> {
    let info = tool(
        "riscv64-unknown-elf-readelf",
        &["--debug-dump=info"],
        &tree.kernel(),
    );
    info.lines()
        .filter_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().parse().expect("a DWARF version"))
        .collect()
}

/// The innermost function at `pc` and its callers, inlined frames included.
pub fn frames(tree: &Tree, pc: u64) -> Vec<String> {
    let loader = addr2line::Loader::new(tree.kernel()).expect("DWARF in the fixture kernel");
    let mut names = Vec::new();
    let mut it = loader.find_frames(pc).expect("frames");
    while let Ok(Some(f)) = it.next() {
        if let Some(func) = f.function {
            names.push(func.demangle().map(|n| n.into_owned()).unwrap_or_default());
        }
    }
    names
}

/// A struct's name, size, and members with their offsets.
pub type Layout = (&'static str, u64, &'static [(&'static str, u64)]);

/// Size and member offsets of `struct name`, from the kernel's DWARF (either version).
pub fn struct_layout(tree: &Tree, name: &str) -> (u64, Vec<(String, u64)>) {
    use addr2line::gimli;
    use object::{Object, ObjectSection};
    let data = std::fs::read(tree.kernel()).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let dwarf = gimli::Dwarf::load(|id| -> Result<_, gimli::Error> {
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(gimli::EndianSlice::new(bytes, gimli::RunTimeEndian::Little))
    })
    .unwrap();
    let text = |unit: &gimli::Unit<_>, e: &gimli::DebuggingInformationEntry<_>| {
        e.attr_value(gimli::DW_AT_name)
            .and_then(|v| dwarf.attr_string(unit, v).ok())
            .map(|s| s.to_string_lossy().into_owned())
    };
    let mut units = dwarf.units();
    while let Some(header) = units.next().unwrap() {
        let unit = dwarf.unit(header).unwrap();
        let mut entries = unit.entries_tree(None).unwrap();
        let mut top = entries.root().unwrap().children();
        while let Some(node) = top.next().unwrap() {
            let e = node.entry();
            let size = e
                .attr_value(gimli::DW_AT_byte_size)
                .and_then(|v| v.udata_value());
            if e.tag() != gimli::DW_TAG_structure_type || text(&unit, e).as_deref() != Some(name) {
                continue;
            }
            let Some(size) = size else { continue }; // a declaration
            let mut members = Vec::new();
            let mut children = node.children();
            while let Some(m) = children.next().unwrap() {
                let m = m.entry();
                let offset = match m.attr_value(gimli::DW_AT_data_member_location) {
                    Some(gimli::AttributeValue::Exprloc(e)) => {
                        // DWARF 2: DW_OP_plus_uconst N
                        let bytes = e.0.slice();
                        assert_eq!(bytes[0], 0x23, "{name}: member location {bytes:?}");
                        let mut r =
                            gimli::EndianSlice::new(&bytes[1..], gimli::RunTimeEndian::Little);
                        gimli::leb128::read::unsigned(&mut r).unwrap()
                    }
                    Some(v) => v.udata_value().expect("a constant member offset"),
                    None => continue,
                };
                members.push((text(&unit, m).unwrap_or_default(), offset));
            }
            return (size, members);
        }
    }
    panic!("no struct {name} in the fixture's DWARF");
}
