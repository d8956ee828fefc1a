//! [`QemuLine`]: a QEMU command line someone else built (an xv6 lab Makefile's `$(QEMU)
//! $(QEMUOPTS)`), read for what lockscope needs (the kernel, RAM size, harts, the gdb stub the
//! user asked for) and rewritten to add what lockscope adds (shared RAM, a private gdb stub, a
//! console log), leaving everything else exactly as it was.
//!
//! QEMU's options are `-name` or `--name`, each with one argument or none. Which ones take
//! none is QEMU's table (qemu-options.def); [`NO_ARGUMENT`] is that list for QEMU 7.2 (every
//! option `qemu-system-riscv64 -help` prints without an argument), and every other option
//! takes one, so arguments that look like options (`-append "-s"`) are never misread.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// QEMU's options that take no argument (QEMU 7.2, plus older spellings still accepted).
const NO_ARGUMENT: &[&str] = &[
    "S",
    "s",
    "h",
    "help",
    "version",
    "audio-help",
    "daemonize",
    "enable-kvm",
    "enable-sync-profile",
    "full-screen",
    "mem-prealloc",
    "no-reboot",
    "no-shutdown",
    "no-user-config",
    "nodefaults",
    "nographic",
    "only-migratable",
    "portrait",
    "preconfig",
    "semihosting",
    "singlestep",
    "snapshot",
    "usb",
    "no-hpet",
    "no-acpi",
    "no-fd-bootchk",
    "win2k-hack",
    "curses",
    "no-quit",
    "alt-grab",
    "ctrl-grab",
    "no-frame",
    "xen-attach",
    "enable-fips",
];

/// QEMU's default guest RAM when there is no `-m`.
const DEFAULT_RAM_BYTES: u64 = 128 << 20;
/// The memory backend lockscope adds.
pub const RAM_BACKEND_ID: &str = "lockscope-ram";
/// The console chardev lockscope adds to log the console.
const CONSOLE_ID: &str = "lockscope-console";

/// Why a QEMU command line cannot be watched as it is.
#[derive(Debug, Error)]
pub enum LineError {
    #[error("QEMU option -{option} needs an argument, and the command line ends there")]
    MissingArgument { option: String },
    #[error("cannot read the guest RAM size from `-m {value}`: lockscope understands -m SIZE[K|M|G|T] and -m size=SIZE")]
    BadMemory { value: String },
    #[error("cannot read the number of harts from `-smp {value}`")]
    BadSmp { value: String },
    #[error("the QEMU command line asks for a gdb stub on `{value}`; lockscope can take over tcp::PORT, tcp:HOST:PORT or -s only")]
    UnsupportedGdb { value: String },
    #[error(
        "the QEMU command line has no -kernel: lockscope needs the kernel ELF to read the guest"
    )]
    NoKernel,
    #[error("the QEMU command line already has a memory backend (-machine memory-backend=...); lockscope adds its own shared one and cannot combine them")]
    HasBackend,
}

/// One item of a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    /// `-name [value]`, with the name as written (one or two dashes) and without dashes.
    Opt {
        written: OsString,
        name: String,
        value: Option<OsString>,
    },
    /// A word that is not an option (QEMU takes a lone disk image as `-hda`).
    Word(OsString),
}

/// A QEMU command line: the binary and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuLine {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    /// Relative paths in `args` are relative to this directory.
    pub cwd: PathBuf,
    items: Vec<Item>,
}

/// What lockscope adds to a line it runs.
#[derive(Clone, Debug)]
pub struct Additions<'a> {
    /// Back guest RAM with this file, shared.
    pub ram_file: &'a Path,
    /// Put QEMU's own gdb stub on 127.0.0.1:port (the user's `-gdb` is taken over by the
    /// proxy), held at reset (`-S`) until lockscope continues it.
    pub gdb_port: u16,
    /// Log the console here (only with `-nographic` and no serial or monitor options).
    pub console_log: Option<&'a Path>,
    /// Keep disk images untouched (`snapshot=on` on every `-drive`).
    pub snapshot_drives: bool,
}

fn takes_argument(name: &str) -> bool {
    !NO_ARGUMENT.contains(&name)
}

impl QemuLine {
    /// Reads `args`; an option missing its argument is an error.
    pub fn new(
        binary: impl Into<PathBuf>,
        args: Vec<OsString>,
        cwd: impl Into<PathBuf>,
    ) -> Result<Self, LineError> {
        let mut items = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let s = a.to_string_lossy();
            let name = match s.strip_prefix("--").or_else(|| s.strip_prefix('-')) {
                Some(n) if !n.is_empty() => n.to_string(),
                _ => {
                    items.push(Item::Word(a.clone()));
                    continue;
                }
            };
            let value = if takes_argument(&name) {
                Some(
                    it.next()
                        .cloned()
                        .ok_or_else(|| LineError::MissingArgument {
                            option: name.clone(),
                        })?,
                )
            } else {
                None
            };
            items.push(Item::Opt {
                written: a.clone(),
                name,
                value,
            });
        }
        Ok(QemuLine {
            binary: binary.into(),
            args,
            cwd: cwd.into(),
            items,
        })
    }

    fn opts(&self) -> impl Iterator<Item = (&str, Option<&OsStr>)> {
        self.items.iter().filter_map(|i| match i {
            Item::Opt { name, value, .. } => Some((name.as_str(), value.as_deref())),
            Item::Word(_) => None,
        })
    }

    fn last_value(&self, names: &[&str]) -> Option<String> {
        self.opts()
            .filter(|(n, _)| names.contains(n))
            .filter_map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
            .last()
    }

    fn has(&self, name: &str) -> bool {
        self.opts().any(|(n, _)| n == name)
    }

    /// True when QEMU would only print something and exit (`-help`, `--version`,
    /// `-machine help`, `-device virtio-blk-device,help`, `-cpu ?`...).
    pub fn is_query(&self) -> bool {
        self.opts().any(|(n, v)| {
            matches!(n, "h" | "help" | "version" | "audio-help" | "?")
                || v.is_some_and(|v| {
                    let v = v.to_string_lossy();
                    v == "help"
                        || v == "?"
                        || v.ends_with(",help")
                        || v.ends_with(",?")
                        || v.starts_with("help,")
                })
        })
    }

    /// The kernel ELF (`-kernel`), resolved against [`QemuLine::cwd`].
    pub fn kernel(&self) -> Option<PathBuf> {
        let k = self
            .opts()
            .filter(|(n, _)| *n == "kernel")
            .filter_map(|(_, v)| v)
            .last()?;
        Some(self.cwd.join(k))
    }

    /// Guest RAM in bytes (`-m`; QEMU's default 128 MiB without it).
    pub fn memory_bytes(&self) -> Result<u64, LineError> {
        let Some(v) = self.last_value(&["m"]) else {
            return Ok(DEFAULT_RAM_BYTES);
        };
        let bad = || LineError::BadMemory { value: v.clone() };
        let size = v
            .split(',')
            .find_map(|p| match p.split_once('=') {
                Some(("size", s)) => Some(s),
                Some(_) => None,
                None => Some(p),
            })
            .ok_or_else(bad)?;
        parse_size_mib(size).ok_or_else(bad)
    }

    /// Harts (`-smp N` or `-smp cpus=N,...`; QEMU's default 1).
    pub fn smp(&self) -> Result<u32, LineError> {
        let Some(v) = self.last_value(&["smp"]) else {
            return Ok(1);
        };
        let bad = || LineError::BadSmp { value: v.clone() };
        let mut cpus = None;
        let mut product = 1u32;
        let mut has_topology = false;
        for p in v.split(',') {
            match p.split_once('=') {
                None => cpus = Some(p.parse::<u32>().map_err(|_| bad())?),
                Some(("cpus", n)) => cpus = Some(n.parse::<u32>().map_err(|_| bad())?),
                Some(("sockets" | "dies" | "clusters" | "cores" | "threads", n)) => {
                    has_topology = true;
                    product = product.saturating_mul(n.parse::<u32>().map_err(|_| bad())?);
                }
                Some(_) => {}
            }
        }
        match cpus {
            Some(n) if n > 0 => Ok(n),
            None if has_topology && product > 0 => Ok(product),
            _ => Err(bad()),
        }
    }

    /// The gdb stub the line asks for, as QEMU spells it (`tcp::26000`; `-s` is
    /// `tcp::1234`), or `None`.
    pub fn gdb(&self) -> Result<Option<String>, LineError> {
        let mut spec = None;
        for (n, v) in self.opts() {
            match n {
                "s" => spec = Some("tcp::1234".to_string()),
                "gdb" => spec = v.map(|v| v.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        match spec {
            Some(s) if s == "none" => Ok(None),
            Some(s) if s.starts_with("tcp:") || s.parse::<u16>().is_ok() => Ok(Some(s)),
            Some(s) => Err(LineError::UnsupportedGdb { value: s }),
            None => Ok(None),
        }
    }

    /// `-S`: the guest waits at reset for a debugger (or the monitor) to continue it.
    pub fn held(&self) -> bool {
        self.has("S")
    }

    /// The console is QEMU's stdio (`-nographic` with no serial or monitor options), so
    /// lockscope can log it with a chardev of its own without changing what the user sees.
    pub fn console_on_stdio(&self) -> bool {
        self.has("nographic")
            && !["serial", "chardev", "mon", "monitor", "qmp", "qmp-pretty"]
                .iter()
                .any(|o| self.has(o))
    }

    /// The line's arguments with lockscope's additions: shared RAM (a
    /// `memory-backend-file` the size of `-m`), QEMU's gdb stub moved to a private port and
    /// held at reset, the console logged, and drives snapshotted when asked.
    pub fn with_additions(&self, add: &Additions) -> Result<Vec<OsString>, LineError> {
        if self.opts().any(|(n, v)| {
            matches!(n, "machine" | "M")
                && v.is_some_and(|v| v.to_string_lossy().contains("memory-backend="))
        }) {
            return Err(LineError::HasBackend);
        }
        let ram = self.memory_bytes()?;
        let mut out: Vec<OsString> = Vec::with_capacity(self.args.len() + 12);
        for item in &self.items {
            match item {
                Item::Opt { name, .. } if matches!(name.as_str(), "gdb" | "s" | "S") => {}
                Item::Opt {
                    written,
                    name,
                    value: Some(v),
                } if name == "drive" && add.snapshot_drives => {
                    out.push(written.clone());
                    let mut v = v.clone();
                    if !v
                        .to_string_lossy()
                        .split(',')
                        .any(|p| p.starts_with("snapshot="))
                    {
                        v.push(",snapshot=on");
                    }
                    out.push(v);
                }
                Item::Opt { written, value, .. } => {
                    out.push(written.clone());
                    out.extend(value.iter().cloned());
                }
                Item::Word(w) => out.push(w.clone()),
            }
        }
        let mut backend = OsString::from(format!(
            "memory-backend-file,id={RAM_BACKEND_ID},size={ram},share=on,mem-path="
        ));
        backend.push(escape_commas(add.ram_file.as_os_str()));
        out.extend([
            "-object".into(),
            backend,
            "-machine".into(),
            format!("memory-backend={RAM_BACKEND_ID}").into(),
        ]);
        if let Some(log) = add.console_log.filter(|_| self.console_on_stdio()) {
            // What -nographic's `mon:stdio` is, with a log of the output: the terminal sees no
            // difference (raw mode, Ctrl-A commands, Ctrl-C to the guest).
            let mut chardev =
                OsString::from(format!("stdio,id={CONSOLE_ID},mux=on,signal=off,logfile="));
            chardev.push(escape_commas(log.as_os_str()));
            out.extend([
                "-chardev".into(),
                chardev,
                "-serial".into(),
                format!("chardev:{CONSOLE_ID}").into(),
                "-mon".into(),
                format!("chardev={CONSOLE_ID},mode=readline").into(),
            ]);
        }
        out.extend([
            "-gdb".into(),
            format!("tcp:127.0.0.1:{}", add.gdb_port).into(),
            "-S".into(),
        ]);
        Ok(out)
    }

    /// The command line as a shell would show it.
    pub fn display(&self) -> String {
        display_words(&self.binary, &self.args)
    }
}

/// `binary args...`, quoting words with spaces.
pub fn display_words(binary: &Path, args: &[OsString]) -> String {
    let mut s = binary.display().to_string();
    for a in args {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains([' ', '\'', '"']) {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// QEMU's option syntax doubles a comma inside a value.
fn escape_commas(s: &OsStr) -> OsString {
    s.to_string_lossy().replace(',', ",,").into()
}

/// A size as QEMU's `-m` reads it: MiB without a suffix, else B/K/M/G/T (any case).
fn parse_size_mib(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "M"),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "B" => 0,
        "K" | "KB" => 10,
        "M" | "MB" => 20,
        "G" | "GB" => 30,
        "T" | "TB" => 40,
        _ => return None,
    };
    let value: f64 = num.parse().ok()?;
    let bytes = value * (1u64 << shift) as f64;
    (bytes >= 1.0 && bytes < (1u64 << 50) as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> QemuLine {
        QemuLine::new(
            "qemu-system-riscv64",
            s.split_whitespace().map(OsString::from).collect(),
            "/tree",
        )
        .unwrap()
    }

    fn strings(v: &[OsString]) -> String {
        v.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    const LAB: &str = "-machine virt -bios none -kernel kernel/kernel -m 128M -smp 3 -nographic \
        -global virtio-mmio.force-legacy=false -drive file=fs.img,if=none,format=raw,id=x0 \
        -device virtio-blk-device,drive=x0,bus=virtio-mmio-bus.0";

    #[test]
    fn a_lab_line_is_read() {
        let l = line(&format!("{LAB} -S -gdb tcp::25000"));
        assert_eq!(l.kernel().unwrap(), Path::new("/tree/kernel/kernel"));
        assert_eq!(l.memory_bytes().unwrap(), 128 << 20);
        assert_eq!(l.smp().unwrap(), 3);
        assert_eq!(l.gdb().unwrap().as_deref(), Some("tcp::25000"));
        assert!(l.held());
        assert!(l.console_on_stdio());
        assert!(!l.is_query());
        let l = line("-kernel k -s -smp cpus=4,sockets=1 -m size=1G");
        assert_eq!(l.gdb().unwrap().as_deref(), Some("tcp::1234"));
        assert_eq!(l.smp().unwrap(), 4);
        assert_eq!(l.memory_bytes().unwrap(), 1 << 30);
        assert_eq!(line("-kernel k -m 256").memory_bytes().unwrap(), 256 << 20);
        assert_eq!(line("-kernel k").memory_bytes().unwrap(), 128 << 20);
        assert_eq!(line("-kernel k --smp 2").smp().unwrap(), 2);
        assert_eq!(line("-kernel k").smp().unwrap(), 1);
    }

    #[test]
    fn queries_are_told_from_boots() {
        for q in [
            "-help",
            "--help",
            "-h",
            "-version",
            "--version",
            "-machine help",
            "-M ?",
            "-device help",
            "-device virtio-blk-device,help",
            "-cpu help",
        ] {
            assert!(line(q).is_query(), "{q}");
        }
        assert!(!line(LAB).is_query());
        // An argument that looks like an option is an argument.
        let l = line("-kernel k -append -help");
        assert!(!l.is_query());
        assert!(line("-append -s -kernel k").gdb().unwrap().is_none());
    }

    #[test]
    fn additions_keep_the_line_and_add_shared_ram_a_private_stub_and_a_console_log() {
        let l = line(&format!("{LAB} -S -gdb tcp::25000"));
        let a = l
            .with_additions(&Additions {
                ram_file: Path::new("/run/ram,1"),
                gdb_port: 4321,
                console_log: Some(Path::new("/tmp/console.log")),
                snapshot_drives: false,
            })
            .unwrap();
        let s = strings(&a);
        assert!(s.starts_with(
            "-machine virt -bios none -kernel kernel/kernel -m 128M -smp 3 -nographic -global virtio-mmio.force-legacy=false -drive file=fs.img,if=none,format=raw,id=x0 -device"
        ), "{s}");
        assert!(!s.contains("tcp::25000"), "{s}");
        assert!(s.contains(
            "-object memory-backend-file,id=lockscope-ram,size=134217728,share=on,mem-path=/run/ram,,1 -machine memory-backend=lockscope-ram"
        ), "{s}");
        assert!(s.contains("-chardev stdio,id=lockscope-console,mux=on,signal=off,logfile=/tmp/console.log -serial chardev:lockscope-console -mon chardev=lockscope-console,mode=readline"), "{s}");
        assert!(s.ends_with("-gdb tcp:127.0.0.1:4321 -S"), "{s}");
        assert_eq!(s.matches("-S").count(), 1, "{s}");

        let snap = l
            .with_additions(&Additions {
                ram_file: Path::new("/r"),
                gdb_port: 1,
                console_log: None,
                snapshot_drives: true,
            })
            .unwrap();
        let s = strings(&snap);
        assert!(
            s.contains("file=fs.img,if=none,format=raw,id=x0,snapshot=on"),
            "{s}"
        );
        assert!(!s.contains("-chardev"), "{s}");
    }

    #[test]
    fn a_line_with_its_own_serial_keeps_it_and_gets_no_console_log() {
        let l = line("-kernel k -nographic -serial mon:stdio");
        assert!(!l.console_on_stdio());
        let a = l
            .with_additions(&Additions {
                ram_file: Path::new("/r"),
                gdb_port: 1,
                console_log: Some(Path::new("/c")),
                snapshot_drives: false,
            })
            .unwrap();
        assert!(!strings(&a).contains("chardev"));
    }

    #[test]
    fn bad_lines_are_refused_with_what_to_do() {
        let e = QemuLine::new("q", vec!["-kernel".into()], "/").unwrap_err();
        assert!(e.to_string().contains("-kernel needs an argument"), "{e}");
        let e = line("-kernel k -m lots").memory_bytes().unwrap_err();
        assert!(e.to_string().contains("-m SIZE"), "{e}");
        let e = line("-kernel k -gdb unix:/tmp/s").gdb().unwrap_err();
        assert!(e.to_string().contains("tcp::PORT"), "{e}");
        assert!(line("-kernel k -smp x").smp().is_err());
        let e = line("-kernel k -machine virt,memory-backend=m")
            .with_additions(&Additions {
                ram_file: Path::new("/r"),
                gdb_port: 1,
                console_log: None,
                snapshot_drives: false,
            })
            .unwrap_err();
        assert!(matches!(e, LineError::HasBackend));
    }
}
