//! The post-mortem gdb server and core files, on a real stop: the real kernel with
//! `bug=refcnt-leak` panics with `bget: no buffers` in real QEMU; lockscope's client captures
//! every hart's registers and the RAM (shared-RAM file); QEMU is killed; then real
//! gdb-multiarch debugs the saved stop through the server and through a core file.

#[path = "gdbserver_util.rs"]
mod util;

use std::net::SocketAddr;
use std::time::Duration;

use lockscope_engine::gdb::{Config, GdbClient};
use lockscope_engine::gdbserver::{capture_stop, write_core, PostMortemServer, PostMortemStop};
use lockscope_engine::memory::ByteImage;
use lockscope_engine::qemu::RAM_BASE;
use lockscope_engine::symbols::Symbols;
use util::*;

struct Captured {
    ram: Vec<u8>,
    focus: u32,
    sps: Vec<(u32, u64)>,
}

/// Boots `bug=refcnt-leak panic=halt`, waits for the panic, captures it, kills QEMU.
fn capture(syms: &Symbols) -> (PostMortemStop, Captured) {
    let q = Qemu::boot(4, "bug=refcnt-leak panic=halt", true, true);
    let halt = syms.symbol("lockscope_panic_halt").unwrap().address;
    let mut c = GdbClient::connect_addr(q.addr(), Config::default()).unwrap();
    c.insert_breakpoint(halt).unwrap();
    assert!(c.resume().unwrap().is_none());
    let stop = poll_until("the kernel to panic", Duration::from_secs(120), || {
        c.wait_stop(Duration::from_millis(100)).unwrap()
    });
    assert!(stop.hit_breakpoint(), "{stop:?}");
    let ram = std::fs::read(q.ram_file()).unwrap();
    let range = RAM_BASE..RAM_BASE + ram.len() as u64;
    let image = ByteImage {
        base: RAM_BASE,
        bytes: ram.clone(),
    };
    let stop = capture_stop(&mut c, Box::new(image), range, "panic").unwrap();
    drop(c);
    drop(q);
    let focus = stop.focus.expect("the stop names a hart");
    let sps = stop.harts.iter().map(|h| (h.hart, h.regs.x(2))).collect();
    assert!(
        stop.console_hint_ok(),
        "capture holds every register of every hart"
    );
    (stop, Captured { ram, focus, sps })
}

trait Check {
    fn console_hint_ok(&self) -> bool;
}

impl Check for PostMortemStop {
    fn console_hint_ok(&self) -> bool {
        self.harts.len() == 4
            && self
                .harts
                .iter()
                .all(|h| h.regs.x.len() == 32 && h.regs.csr(0x180).is_some())
    }
}

fn word(ram: &[u8], addr: u64) -> u64 {
    let o = (addr - RAM_BASE) as usize;
    u64::from_le_bytes(ram[o..o + 8].try_into().unwrap())
}

/// What both ways of opening the stop must show.
fn check_common(out: &str, c: &Captured, kpt_addr: u64) {
    println!("{out}");
    // The panicking hart's backtrace reaches bget and its caller bread, with lines.
    let bget = out
        .lines()
        .find(|l| l.contains("lockscope_kernel::bio::bget ") && l.contains("src/bio.rs:"));
    assert!(bget.is_some(), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("lockscope_kernel::bio::bread") && l.contains("src/bio.rs:")),
        "{out}"
    );
    // Every hart is a thread.
    assert!(out.matches("Thread ").count() >= 4, "{out}");
    // `p` and `x` of a global match the saved RAM.
    let kpt = word(&c.ram, kpt_addr);
    assert!(out.contains(&format!("value: {kpt:#x}")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("KPAGETABLE") && l.ends_with(&format!("{kpt:#018x}"))),
        "{out}"
    );
}

#[test]
fn postmortem_server_and_core_file_at_bget_no_buffers() {
    let _serial = serial();
    let syms = Symbols::load(kernel()).expect("kernel symbols");
    // LLVM gives this static a `.llvm.N` suffix: find it by its prefix.
    let kpt_addr = syms
        .symbols()
        .iter()
        .find(|s| s.name.starts_with("lockscope_kernel::vm::KPAGETABLE"))
        .expect("KPAGETABLE")
        .address;
    let (mut stop, c) = capture(&syms);
    let dir = tempfile::tempdir().unwrap();

    // The core file first (the server takes the stop).
    let core = dir.path().join("core");
    let summary = write_core(&mut stop, &syms, std::fs::File::create(&core).unwrap()).unwrap();
    assert_eq!(summary.threads, 4);
    let sp = c.sps.iter().find(|(h, _)| *h == c.focus).unwrap().1;
    let out = Gdb::spawn(
        &kernel(),
        &[
            format!("core-file {}", core.display()),
            "info threads".into(),
            "bt".into(),
            "thread apply all bt 4".into(),
            "p/x lockscope_kernel::vm::KPAGETABLE".into(),
            "x/1gx &lockscope_kernel::vm::KPAGETABLE".into(),
            "x/2gx $sp".into(),
        ],
        dir.path(),
    )
    .finish(Duration::from_secs(60));
    check_common(&out, &c, kpt_addr);
    // The focus hart is gdb's current thread: LWP hart+1.
    assert!(
        out.contains(&format!("* 1    LWP {}", c.focus + 1)),
        "{out}"
    );
    assert!(
        out.contains(&format!("{sp:#x}:\t{:#018x}", word(&c.ram, sp))),
        "x/2gx $sp must show the saved stack: {out}"
    );

    // The post-mortem server.
    let mut server =
        PostMortemServer::bind(stop, SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
    let addr = server.local_addr();
    let serving = std::thread::spawn(move || {
        server.serve_one().unwrap();
        server
    });
    let out = Gdb::spawn(
        &kernel(),
        &[
            format!("target remote {addr}"),
            "info threads".into(),
            "bt".into(),
            "thread apply all bt 4".into(),
            "p/x lockscope_kernel::vm::KPAGETABLE".into(),
            "x/1gx &lockscope_kernel::vm::KPAGETABLE".into(),
            "x/8gx $sp".into(),
            "p $priv".into(),
            "p/x $satp".into(),
            "p/x $scause".into(),
            "p/x $mstatus".into(),
            "set language c".into(),
            format!("set var *(unsigned long *){kpt_addr:#x} = 1"),
            "p $pc = 0".into(),
            "set language rust".into(),
            "x/1gx &lockscope_kernel::vm::KPAGETABLE".into(),
            "continue".into(),
            "stepi".into(),
            "detach".into(),
        ],
        dir.path(),
    )
    .finish(Duration::from_secs(60));
    check_common(&out, &c, kpt_addr);
    let server = serving.join().unwrap();
    drop(server);
    assert!(
        out.contains(&format!(
            "* 1    Thread 1.{} (CPU#{} [post-mortem, panic])",
            c.focus + 1,
            c.focus
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{sp:#x}:\t{:#018x}", word(&c.ram, sp))),
        "x/8gx $sp must show the saved stack: {out}"
    );
    // QEMU's register numbering and names: priv is S-mode, satp is Sv39.
    assert!(out.contains("$2 = 1\n"), "priv is S-mode: {out}");
    assert!(out.contains("$3 = 0x8"), "satp in Sv39 mode: {out}");
    assert!(out.contains("$4 = 0x"), "scause: {out}");
    // Running (continue, and stepi) and writing are refused; memory is unchanged.
    assert!(
        out.matches("post-mortem: this target cannot run").count() >= 3,
        "{out}"
    );
    assert!(out.contains("Cannot access memory at address"), "{out}");
    let kpt = word(&c.ram, kpt_addr);
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("KPAGETABLE") && l.ends_with(&format!("{kpt:#018x}")))
            .count(),
        2,
        "{out}"
    );
}
