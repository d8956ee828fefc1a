//! Boot arguments (`/chosen/bootargs`, QEMU `-append`), parsed from one table.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use lockscope_abi::{BcacheMode, Bug, KallocMode, Workload, MAX_HARTS};

/// `panic=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanicAction {
    /// Stop in `lockscope_panic_halt` with interrupts off, for a debugger.
    Halt,
    /// Exit QEMU with a failure code.
    Exit,
}

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub workload: Workload,
    pub kalloc: KallocMode,
    pub bcache: BcacheMode,
    pub bug: Bug,
    /// Harts that run the workload; the others stay parked.
    pub harts: u32,
    pub trace: bool,
    pub panic: PanicAction,
    /// Workload length: kalloc/kfree pairs per hart (`ops=`), or seconds (`secs=`; each
    /// phase's length for the demo). See [`Config::secs`].
    pub ops: Option<u64>,
    pub secs: Option<u64>,
    /// Exit QEMU when the workload ends (`exit=yes`), or stay up idle for a debugger.
    pub exit: bool,
}

pub const DEFAULT: Config = Config {
    workload: Workload::Kalloctest,
    kalloc: KallocMode::Percpu,
    bcache: BcacheMode::Hashed,
    bug: Bug::None,
    harts: MAX_HARTS as u32,
    trace: true,
    panic: PanicAction::Exit,
    ops: None,
    secs: None,
    exit: true,
};

impl Config {
    /// `secs=`, or 2: the length of kalloctest, bcachetest's test0 and mixed.
    pub fn secs(&self) -> u64 {
        self.secs.unwrap_or(2)
    }
}

/// A boot argument that could not be used.
pub enum Error<'a> {
    Unknown(&'a str),
    BadValue {
        key: &'static str,
        value: &'a str,
        valid: &'static str,
    },
}

impl fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unknown(arg) => write!(f, "bootargs: unknown argument '{arg}'"),
            Error::BadValue { key, value, valid } => {
                write!(
                    f,
                    "bootargs: bad value '{value}' for {key}= (valid: {valid})"
                )
            }
        }
    }
}

struct Arg {
    key: &'static str,
    /// The valid values, as shown to the user.
    valid: &'static str,
    help: &'static str,
    /// Applies the value; false if it is not valid.
    set: fn(&mut Config, &str) -> bool,
}

fn number(v: &str, min: u64, max: u64) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

fn on_off(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "1" => Some(true),
        "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Every boot argument. Add new ones here.
const ARGS: &[Arg] = &[
    Arg {
        key: "workload",
        valid: "kalloctest|bcachetest|mixed|demo|idle",
        help: "what every hart runs (default kalloctest; bcachetest with a buffer-cache bug=); demo runs until QEMU stops",
        set: |c, v| Workload::parse(v).map(|w| c.workload = w).is_some(),
    },
    Arg {
        key: "kalloc",
        valid: "percpu|global",
        help: "page allocator: per-hart lists (the lab's solution) or one list (the starter)",
        set: |c, v| KallocMode::parse(v).map(|m| c.kalloc = m).is_some(),
    },
    Arg {
        key: "bcache",
        valid: "hashed|global",
        help: "buffer cache locking (default hashed)",
        set: |c, v| BcacheMode::parse(v).map(|m| c.bcache = m).is_some(),
    },
    Arg {
        key: "harts",
        valid: "1..8",
        help: "harts that run the workload (default all); the rest stay parked",
        set: |c, v| number(v, 1, MAX_HARTS as u64).map(|n| c.harts = n as u32).is_some(),
    },
    Arg {
        key: "trace",
        valid: "on|off",
        help: "record lock events in the rings (counters are kept either way)",
        set: |c, v| on_off(v).map(|b| c.trace = b).is_some(),
    },
    Arg {
        key: "panic",
        valid: "halt|exit",
        help: "after a panic: halt for a debugger, or exit QEMU with a failure code (default exit)",
        set: |c, v| {
            let a = match v {
                "halt" => PanicAction::Halt,
                "exit" => PanicAction::Exit,
                _ => return false,
            };
            c.panic = a;
            true
        },
    },
    Arg {
        key: "bug",
        valid: "none|panic-test|bucket-order|refcnt-leak|double-acquire|null-next|stale-ticks|order-inversion|kmem-steal-race",
        help: "reproduce a student bug",
        set: |c, v| Bug::parse(v).map(|b| c.bug = b).is_some(),
    },
    Arg {
        key: "ops",
        valid: "1..1000000000",
        help: "length per hart: kalloctest kalloc/kfree pairs; bcachetest test0 block reads and test1 operations (overrides secs=)",
        set: |c, v| number(v, 1, 1_000_000_000).map(|n| c.ops = Some(n)).is_some(),
    },
    Arg {
        key: "secs",
        valid: "1..86400",
        help: "length in seconds of kalloctest, bcachetest test0 and mixed (default 2); of each demo phase (default 5)",
        set: |c, v| number(v, 1, 86_400).map(|n| c.secs = Some(n)).is_some(),
    },
    Arg {
        key: "exit",
        valid: "yes|no",
        help: "exit QEMU with the verdict when the workload ends, or stay up idle (default yes)",
        set: |c, v| on_off(v).map(|b| c.exit = b).is_some(),
    },
];

/// Parses space-separated `key=value` arguments over [`DEFAULT`].
pub fn parse(s: &str) -> Result<Config, Error<'_>> {
    let mut cfg = DEFAULT;
    let mut workload_given = false;
    for word in s.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            return Err(Error::Unknown(word));
        };
        let Some(arg) = ARGS.iter().find(|a| a.key == key) else {
            return Err(Error::Unknown(word));
        };
        if !(arg.set)(&mut cfg, value) {
            return Err(Error::BadValue {
                key: arg.key,
                value,
                valid: arg.valid,
            });
        }
        workload_given |= arg.key == "workload";
    }
    // `bug=null-next` alone should show the bug: run the workload that has the code it breaks.
    if !workload_given && cfg.bug.in_bcache() {
        cfg.workload = Workload::Bcachetest;
    }
    Ok(cfg)
}

pub fn print_usage() {
    println!("valid boot arguments (key=value, separated by spaces):");
    for a in ARGS {
        println!("  {}={}  {}", a.key, a.valid, a.help);
    }
}

struct Global(UnsafeCell<Config>);
// SAFETY: written once by hart 0 before SET is published with release; read-only afterwards.
unsafe impl Sync for Global {}

static CONFIG: Global = Global(UnsafeCell::new(DEFAULT));
static SET: AtomicBool = AtomicBool::new(false);

/// Stores the configuration. Hart 0 only, once, before other harts start.
pub fn set_config(c: Config) {
    assert!(!SET.load(Ordering::Relaxed), "set_config twice");
    // SAFETY: only hart 0 runs at this point and nobody reads CONFIG before SET.
    unsafe { *CONFIG.0.get() = c };
    SET.store(true, Ordering::Release);
}

/// The boot configuration ([`DEFAULT`] until hart 0 has parsed the arguments).
pub fn config() -> Config {
    if SET.load(Ordering::Acquire) {
        // SAFETY: CONFIG is no longer written once SET is true.
        unsafe { *CONFIG.0.get() }
    } else {
        DEFAULT
    }
}
