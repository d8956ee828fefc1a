//! Breakpoints and single steps of the gdb client against a real QEMU 7.2: stepping off a
//! breakpoint, breakpoints seen by every hart, steps that never end, breakpoints left behind by
//! a client that vanished or detached. Each test boots its own QEMU on a free port; they run one
//! at a time.

#[path = "gdb_util.rs"]
mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use lockscope_engine::gdb::codec::encode_packet;
use lockscope_engine::gdb::{Config, GdbClient, GdbError, RunState, StopCause, ThreadId};
use util::*;

fn thread(tid: u64) -> ThreadId {
    ThreadId { pid: Some(1), tid }
}

#[test]
fn resume_steps_off_a_breakpoint_instead_of_hitting_it_again() {
    // One hart, so each hit must be exactly one more loop iteration.
    let q = Qemu::start(1);
    let mut c = q.connect();
    load_program(&mut c, None);
    c.insert_breakpoint(LOOP_ADDI).unwrap();
    c.resume().unwrap();
    let stop = c
        .wait_stop(Duration::from_secs(5))
        .unwrap()
        .expect("the hart reaches the breakpoint");
    assert!(is_breakpoint(stop.cause, LOOP_ADDI), "{stop:?}");
    assert_eq!(stop.at_breakpoints, vec![(thread(1), LOOP_ADDI)]);
    for n in 0..20 {
        assert_eq!(read_counters(&mut c, 1), vec![n]);
        assert_eq!(c.resume().unwrap(), None);
        let stop = c
            .wait_stop(Duration::from_secs(5))
            .unwrap()
            .expect("hit again");
        assert!(is_breakpoint(stop.cause, LOOP_ADDI), "{stop:?}");
    }
    assert_eq!(read_counters(&mut c, 1), vec![20]);
}

#[test]
fn a_hart_interrupted_on_a_breakpoint_reports_it_when_resumed() {
    // What happens when a hart reaches the panic-halt breakpoint just as an interrupt
    // arrives: the interrupt is reported, and the breakpoint right after resuming.
    let q = Qemu::start(1);
    let mut c = q.connect();
    load_program(&mut c, None);
    run_until(&mut c, "the hart runs its loop", |c| {
        (LOOP..DONE).contains(&c.read_core_registers(thread(1)).unwrap().pc)
    });
    assert_eq!(c.last_stop().unwrap().cause, StopCause::Interrupted);
    let pc = c.read_core_registers(thread(1)).unwrap().pc;
    c.insert_breakpoint(pc).unwrap();
    assert_eq!(c.resume().unwrap(), None);
    let stop = c
        .wait_stop(Duration::from_secs(5))
        .unwrap()
        .expect("trapped at once");
    assert!(is_breakpoint(stop.cause, pc), "{stop:?}");
    assert_eq!(c.read_core_registers(thread(1)).unwrap().pc, pc);
    // From a reported breakpoint, resuming moves on.
    let before = read_counters(&mut c, 1)[0];
    c.resume().unwrap();
    let stop = c
        .wait_stop(Duration::from_secs(5))
        .unwrap()
        .expect("next loop");
    assert!(is_breakpoint(stop.cause, pc), "{stop:?}");
    assert_eq!(read_counters(&mut c, 1)[0], before + 1);
}

#[test]
fn breakpoints_on_every_hart_and_removal() {
    let q = Qemu::start(4);
    let mut c = q.connect();
    load_program(&mut c, None);
    // Twice: tracked once, so one removal takes it out of QEMU.
    c.insert_breakpoint(LOOP_ADDI).unwrap();
    c.insert_breakpoint(LOOP_ADDI).unwrap();
    assert_eq!(c.breakpoints().collect::<Vec<_>>(), vec![LOOP_ADDI]);
    c.resume().unwrap();
    let first = c
        .wait_stop(Duration::from_secs(5))
        .unwrap()
        .expect("a hart reaches the breakpoint");
    assert!(is_breakpoint(first.cause, LOOP_ADDI), "{first:?}");
    let t = first.thread.unwrap();
    assert!(first.at_breakpoints.contains(&(t, LOOP_ADDI)));
    assert_eq!(c.read_core_registers(t).unwrap().pc, LOOP_ADDI);
    let mut reporters = std::collections::BTreeSet::new();
    for _ in 0..40 {
        // Another hart may already wait on the breakpoint: then resuming reports it at once.
        let stop = match c.resume().unwrap() {
            Some(stop) => stop,
            None => c
                .wait_stop(Duration::from_secs(5))
                .unwrap()
                .expect("hit again"),
        };
        assert!(is_breakpoint(stop.cause, LOOP_ADDI), "{stop:?}");
        reporters.insert(stop.thread.unwrap());
    }
    // The breakpoint is on every hart, not only the one that inserted it.
    assert!(reporters.len() > 1, "only {reporters:?} ever stopped");
    assert!(read_counters(&mut c, 4).iter().sum::<u64>() >= 20);

    c.remove_breakpoint(LOOP_ADDI).unwrap();
    assert_eq!(c.breakpoints().count(), 0);
    let e = c.remove_breakpoint(LOOP_ADDI).unwrap_err();
    assert!(matches!(e, GdbError::Breakpoint { .. }), "{e}");
    c.resume().unwrap();
    assert_eq!(
        c.wait_stop(Duration::from_millis(300)).unwrap(),
        None,
        "removed breakpoint still hit"
    );
    assert_eq!(c.interrupt().unwrap().cause, StopCause::Interrupted);
}

#[test]
fn step_moves_one_hart_only() {
    let q = Qemu::start(3);
    let mut c = q.connect();
    let pcs = |c: &mut GdbClient| -> Vec<u64> {
        (1..=3)
            .map(|t| c.read_core_registers(thread(t)).unwrap().pc)
            .collect()
    };
    assert_eq!(pcs(&mut c), vec![0x1000; 3]);
    let stop = c.step(thread(2)).unwrap();
    assert_eq!(stop.cause, StopCause::Step);
    assert_eq!(stop.thread, Some(thread(2)));
    assert_eq!(pcs(&mut c), vec![0x1000, 0x1004, 0x1000]);
    c.step(thread(2)).unwrap();
    c.step(thread(3)).unwrap();
    assert_eq!(pcs(&mut c), vec![0x1000, 0x1008, 0x1004]);
}

#[test]
fn a_step_that_never_completes_times_out_and_stops_the_guest() {
    let q = Qemu::start(1);
    let config = Config {
        step_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let mut c = GdbClient::connect(&q.addr_str(), config).unwrap();
    // wfi with no interrupt source: the hart sleeps and the step never ends.
    let wfi_loop = [0x1050_0073u32, 0xffdf_f06f];
    let code: Vec<u8> = wfi_loop.iter().flat_map(|w| w.to_le_bytes()).collect();
    c.write_memory(PROGRAM, &code).unwrap();
    run_until(&mut c, "the hart reaches its wfi loop", |c| {
        let pc = c.read_core_registers(thread(1)).unwrap().pc;
        pc == PROGRAM || pc == PROGRAM + 4
    });
    let mut timed_out = false;
    for _ in 0..3 {
        match c.step(thread(1)) {
            Err(GdbError::Timeout { .. }) => {
                timed_out = true;
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(timed_out, "stepping over wfi should not complete");
    // The client stopped the machine again and still works.
    assert_eq!(c.state(), RunState::Stopped);
    c.read_core_registers(thread(1)).unwrap();
}

/// Talks to the stub by hand, as a client that vanishes without detaching would.
fn raw_client_inserts_breakpoint_and_vanishes(port: u16, addr: u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Connecting stopped the running guest, and QEMU says so first: take that stop reply.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut stop = [0u8; 256];
    let n = s.read(&mut stop).unwrap();
    assert!(
        stop[..n].starts_with(b"$T02"),
        "{}",
        String::from_utf8_lossy(&stop[..n])
    );
    s.write_all(b"+").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut exchange = |payload: &str| -> Vec<u8> {
        s.write_all(&encode_packet(payload.as_bytes())).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while got.iter().filter(|&&c| c == b'#').count() == 0
            || got.len() < got.iter().position(|&c| c == b'#').unwrap() + 3
        {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
        s.write_all(b"+").unwrap();
        got
    };
    exchange("qSupported:multiprocess+");
    let r = exchange(&format!("Z0,{addr:x},4"));
    assert!(r.ends_with(b"$OK#9a"), "{}", String::from_utf8_lossy(&r));
}

#[test]
fn stale_breakpoints_of_a_vanished_client_are_cleared() {
    let q = Qemu::start(4);
    {
        let mut c = q.connect();
        load_program(&mut c, None);
        c.detach().unwrap();
    }
    raw_client_inserts_breakpoint_and_vanishes(q.port, LOOP_ADDI);

    // Control: without the cleanup, the stale breakpoint stops the guest.
    let config = Config {
        clear_stale_breakpoints: false,
        ..Config::default()
    };
    let mut c = GdbClient::connect(&q.addr_str(), config).unwrap();
    c.resume().unwrap();
    let stop = c
        .wait_stop(Duration::from_secs(2))
        .unwrap()
        .expect("the stale breakpoint is hit");
    assert_eq!(
        stop.cause,
        StopCause::Signal(5),
        "not ours, so not a known breakpoint"
    );
    // Close without detaching: the stale breakpoint is not ours, so it stays.
    c.close_paused().unwrap();

    let mut c = GdbClient::connect(&q.addr_str(), Config::default()).unwrap();
    c.resume().unwrap();
    assert_eq!(
        c.wait_stop(Duration::from_millis(500)).unwrap(),
        None,
        "stale breakpoint survived"
    );
    c.interrupt().unwrap();
}

#[test]
fn detach_and_drop_resume_the_guest_and_leave_no_breakpoints() {
    let q = Qemu::start(2);
    let mut c = q.connect();
    load_program(&mut c, None);
    c.insert_breakpoint(LOOP_ADDI).unwrap();
    c.detach().unwrap();

    // Connecting to the running guest stops it (QEMU announces that with an extra T02);
    // detaching lets it run again.
    let (mut c, a) = eventually("the guest runs after detach", || {
        let mut c = q.connect();
        let a = read_counters(&mut c, 2);
        if a.iter().all(|&n| n > 0) {
            return Some((c, a));
        }
        c.detach().unwrap();
        None
    });
    c.resume().unwrap();
    assert_eq!(
        c.wait_stop(Duration::from_millis(300)).unwrap(),
        None,
        "a breakpoint outlived detach"
    );
    c.interrupt().unwrap();
    let b = read_counters(&mut c, 2);
    assert!(b.iter().zip(&a).all(|(b, a)| b > a));
    c.insert_breakpoint(LOOP_ADDI).unwrap();
    drop(c);

    let mut c = eventually("the guest runs after drop", || {
        let mut c = q.connect();
        let d = read_counters(&mut c, 2);
        if d.iter().zip(&b).all(|(d, b)| d > b) {
            return Some(c);
        }
        drop(c);
        None
    });
    c.resume().unwrap();
    assert_eq!(
        c.wait_stop(Duration::from_millis(300)).unwrap(),
        None,
        "a breakpoint outlived drop"
    );
}
