//! Codec tests: guest images assembled from the ABI structs, decoded back through the reader.

use bytemuck::Zeroable;
use lockscope_abi as abi;

use super::synthetic::*;
use super::*;
use crate::memory::{GuestMemory, MemoryError};
use crate::model::EventKind;

#[test]
fn snapshot_decodes_every_table() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut r = g.open().unwrap();
    let s = r.snapshot(&mut g.image, 1_000).unwrap();
    assert_eq!(s.locks.len(), 3);
    assert_eq!(s.locks[2].meta.name, "bcache.bucket0");
    assert_eq!(s.locks[2].meta.class, "bcache.bucket");
    assert_eq!(s.locks[1].counters.acquires, 200);
    assert_eq!(s.locks[0].counters.wait_total_ns, 5_000);
    assert_eq!(s.locks[0].counters.hold_max_ns, 200);
    assert_eq!(s.harts.len(), 2);
    assert_eq!(s.harts[1].heartbeat, Some(8));
    assert!(s.harts[0].spinning.is_none());
    let kmem = s.kmem.unwrap();
    assert_eq!(kmem.mode, "percpu");
    assert_eq!(kmem.lists[1].free_pages, 2000);
    let b = s.bcache.unwrap();
    assert_eq!(b.buckets[0].lock, Some(2));
    assert_eq!(b.bufs[1].blockno, 11);
    assert_eq!(b.bufs[1].refcnt, 1);
    assert_eq!(s.config.bootargs, "workload=bcachetest");
    assert_eq!(s.config.workload.as_deref(), Some("bcachetest"));
    assert_eq!(s.phase.as_deref(), Some("bcachetest-test0"));
    assert_eq!(s.ticks, Some(42));
    assert!(s.panic.is_none());
}

#[test]
fn held_locks_and_spin_are_reported_with_sites() {
    let mut g = SyntheticKernel::new(2, 8);
    let a = HARTS;
    let mut s: abi::HartState = g.get(a);
    s.depth = 1;
    s.held[0] = abi::HeldLock {
        lock: 2,
        _pad: 0,
        pc: 0x8000_2000,
        since: 10,
    };
    s.spin_lock = 0;
    s.spin_pc = 0x8000_3000;
    s.spin_since = 20;
    g.put(a, &s);
    let mut r = g.open().unwrap();
    let snap = r.snapshot(&mut g.image, 0).unwrap();
    let h = &snap.harts[0];
    assert_eq!(h.held.len(), 1);
    assert_eq!(h.held[0].lock, 2);
    assert_eq!(h.held[0].pc, 0x8000_2000);
    let spin = h.spinning.unwrap();
    assert_eq!((spin.lock, spin.pc, spin.since_ns), (0, 0x8000_3000, 2_000));
}

#[test]
fn panic_record_is_decoded_once_complete() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut p = abi::PanicRecord::zeroed();
    p.state = abi::PANIC_WRITING;
    p.hart = 1;
    p.from_trap = 1;
    p.scause = 0xd;
    p.stval = 0x48;
    p.nframes = 2;
    p.frames[0] = 0x8000_0100;
    p.frames[1] = 0x8000_0200;
    let msg = b"kerneltrap";
    p.msg[..msg.len()].copy_from_slice(msg);
    p.msg_len = msg.len() as u32;
    g.put(PANIC, &p);
    let mut r = g.open().unwrap();
    assert!(
        r.read_panic(&mut g.image).unwrap().is_none(),
        "not done yet"
    );
    p.state = abi::PANIC_DONE;
    g.put(PANIC, &p);
    let s = r.snapshot(&mut g.image, 0).unwrap();
    let panic = s.panic.unwrap();
    assert_eq!(panic.message, "kerneltrap");
    assert_eq!(panic.hart, 1);
    assert_eq!(panic.trap.unwrap().scause, 0xd);
    assert_eq!(panic.frames, vec![0x8000_0100, 0x8000_0200]);
}

#[test]
fn identity_errors_say_what_is_wrong() {
    let mut g = SyntheticKernel::new(2, 8);
    g.edit_root(|r| r.magic = 0x1234);
    let e = g.open().err().unwrap();
    assert!(matches!(e, AbiError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a lockscope kernel"));

    let mut g = SyntheticKernel::new(2, 8);
    g.edit_root(|r| r.version = abi::ABI_VERSION + 1);
    let e = g.open().err().unwrap();
    assert!(e.to_string().contains("rebuild both"), "{e}");

    let mut g = SyntheticKernel::new(2, 8);
    g.edit_root(|r| r.flags = 0);
    assert!(matches!(g.open().err().unwrap(), AbiError::NotReady));

    let mut g = SyntheticKernel::new(2, 8);
    g.edit_root(|r| r.event_size = 32);
    let e = g.open().err().unwrap();
    assert!(e.to_string().contains("Root.event_size"), "{e}");
}

#[test]
fn corrupt_fields_are_named_and_never_allocated() {
    type Corrupt = Box<dyn Fn(&mut SyntheticKernel)>;
    let cases: Vec<(&str, Corrupt)> = vec![
        (
            "Root.nlocks",
            Box::new(|g| g.edit_root(|r| r.nlocks = 1_000_000)),
        ),
        ("Root.locks", Box::new(|g| g.edit_root(|r| r.locks = 0x10))),
        (
            "Root.harts",
            Box::new(|g| {
                let end = RAM + g.ram_size();
                g.edit_root(|r| r.harts = end - 8)
            }),
        ),
        (
            "Root.rings",
            Box::new(|g| g.edit_root(|r| r.rings = u64::MAX - 4)),
        ),
        (
            "Root.ring_entries",
            Box::new(|g| g.edit_root(|r| r.ring_entries = 3)),
        ),
        ("Root.nharts", Box::new(|g| g.edit_root(|r| r.nharts = 99))),
        (
            "Root.timebase_hz",
            Box::new(|g| g.edit_root(|r| r.timebase_hz = 0)),
        ),
        (
            "BcacheHeader.nbuf",
            Box::new(|g| {
                let mut b: abi::BcacheHeader = g.get(BCACHE);
                b.nbuf = u32::MAX; // claims 128 GiB of buffer metadata
                g.put(BCACHE, &b);
            }),
        ),
    ];
    for (field, corrupt) in cases {
        let mut g = SyntheticKernel::new(2, 8);
        corrupt(&mut g);
        let e = g
            .open()
            .err()
            .unwrap_or_else(|| panic!("{field}: accepted"));
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
}

#[test]
fn corrupt_per_hart_fields_fail_the_snapshot_naming_them() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut s: abi::HartState = g.get(HARTS);
    s.spin_lock = 77;
    g.put(HARTS, &s);
    let mut r = g.open().unwrap();
    let e = r.snapshot(&mut g.image, 0).err().unwrap();
    assert!(e.to_string().contains("HartState[0].spin_lock"), "{e}");

    let mut g = SyntheticKernel::new(2, 8);
    let mut p = abi::PanicRecord::zeroed();
    p.state = abi::PANIC_DONE;
    p.msg_len = 100_000;
    g.put(PANIC, &p);
    let mut r = g.open().unwrap();
    let e = r.snapshot(&mut g.image, 0).err().unwrap();
    assert!(e.to_string().contains("PanicRecord.msg_len"), "{e}");
}

#[test]
fn drain_delivers_events_in_order_and_counts_nothing_lost() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut r = g.open().unwrap();
    g.push(0, abi::EventKind::Acquired, 1, 10);
    g.push(0, abi::EventKind::Released, 1, 20);
    g.push(1, abi::EventKind::Spin, 1, 11);
    let mut out = Vec::new();
    let st = r.drain(&mut g.image, 1 << 20, &mut out).unwrap();
    assert_eq!((st.events, st.lost, st.bad), (3, 0, 0));
    assert_eq!(out[0].kind, EventKind::Acquired { contended: false });
    assert_eq!(out[0].time_ns, 1_000);
    assert_eq!(out[1].kind, EventKind::Released);
    assert_eq!(out[2].hart, 1);
    out.clear();
    let st = r.drain(&mut g.image, 1 << 20, &mut out).unwrap();
    assert_eq!(st.events, 0, "nothing new");
}

#[test]
fn a_wrapped_ring_is_copied_in_two_chunks_and_overwritten_events_are_lost() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut r = g.open().unwrap();
    // 13 events into an 8-entry ring: 5 are gone before the first drain.
    for i in 0..13 {
        g.push(0, abi::EventKind::Acquired, 0, i);
    }
    let mut out = Vec::new();
    let st = r.drain(&mut g.image, 1 << 20, &mut out).unwrap();
    assert_eq!(st.lost, 5);
    assert_eq!(st.events, 8);
    let ts: Vec<u64> = out.iter().map(|e| e.time_ns / 100).collect();
    assert_eq!(ts, (5..13).collect::<Vec<_>>());
    assert_eq!(r.lost_events(), 5);
}

#[test]
fn the_budget_leaves_events_pending_for_the_next_drain() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut r = g.open().unwrap();
    for i in 0..6 {
        g.push(0, abi::EventKind::Acquired, 0, i);
        g.push(1, abi::EventKind::Acquired, 0, i);
    }
    let mut out = Vec::new();
    let st = r.drain(&mut g.image, 4 * 24, &mut out).unwrap();
    assert_eq!((st.events, st.pending, st.lost), (4, 8, 0));
    assert_eq!(st.per_hart, vec![(2, 0), (2, 0)]);
    let st = r.drain(&mut g.image, 1 << 20, &mut out).unwrap();
    assert_eq!((st.events, st.pending, st.lost), (8, 0, 0));
    let h0: Vec<u64> = out
        .iter()
        .filter(|e| e.hart == 0)
        .map(|e| e.time_ns / 100)
        .collect();
    assert_eq!(h0, (0..6).collect::<Vec<_>>());
}

#[test]
fn a_slot_with_the_wrong_seq_is_rejected_not_delivered() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut r = g.open().unwrap();
    g.push(0, abi::EventKind::Acquired, 0, 1);
    g.push(0, abi::EventKind::Released, 0, 2);
    let mut e: abi::Event = g.get(EVENTS + 24);
    e.seq = 99;
    g.put(EVENTS + 24, &e);
    let mut out = Vec::new();
    let st = r.drain(&mut g.image, 1 << 20, &mut out).unwrap();
    assert_eq!((st.events, st.bad), (1, 1));
}

#[test]
fn a_ring_whose_write_index_goes_backwards_is_an_error() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut r = g.open().unwrap();
    g.push(0, abi::EventKind::Acquired, 0, 1);
    let mut out = Vec::new();
    r.drain(&mut g.image, 1 << 20, &mut out).unwrap();
    let mut h: abi::RingHeader = g.get(RINGS);
    h.write = 0;
    g.put(RINGS, &h);
    let e = r.drain(&mut g.image, 1 << 20, &mut out).err().unwrap();
    assert!(e.to_string().contains("RingHeader[0].write"), "{e}");
}

/// Guest memory whose writer keeps appending while the reader copies: every read of a ring slot
/// lets the kernel write `per_read` more events first.
struct RacingWriter {
    guest: SyntheticKernel,
    per_read: u32,
    ts: u64,
}

impl GuestMemory for RacingWriter {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        if (EVENTS..EVENTS + 0x1000).contains(&addr) {
            for _ in 0..self.per_read {
                self.ts += 1;
                self.guest.push(0, abi::EventKind::Acquired, 0, self.ts);
            }
        }
        self.guest.image.read(addr, buf)
    }

    fn concurrent(&self) -> bool {
        true
    }
}

#[test]
fn events_the_writer_overwrote_during_the_copy_are_dropped_as_lost() {
    let mut g = SyntheticKernel::new(2, 8);
    for ts in 1..=8 {
        g.push(0, abi::EventKind::Acquired, 0, ts);
    }
    let mut r = g.open().unwrap();
    let mut mem = RacingWriter {
        guest: g,
        per_read: 3,
        ts: 8,
    };
    let mut out = Vec::new();
    let st = r.drain(&mut mem, 1 << 20, &mut out).unwrap();
    // Before the copy: events 0..8. During it, 3 more were written (into slots 0, 1, 2); the
    // one being written next (slot 3) is suspect too. So only events 4..8 are intact.
    assert_eq!(st.events + st.lost, 8);
    assert_eq!(st.lost, 4);
    assert_eq!(st.bad, 0);
    let ts: Vec<u64> = out.iter().map(|e| e.time_ns / 100).collect();
    assert_eq!(ts, vec![5, 6, 7, 8]);
    // The three written during the copy arrive next time, intact.
    out.clear();
    mem.per_read = 0;
    let st = r.drain(&mut mem, 1 << 20, &mut out).unwrap();
    assert_eq!((st.events, st.lost), (3, 0));
}

#[test]
fn a_cleared_held_entry_under_the_old_depth_is_a_torn_read_not_corruption() {
    let mut g = SyntheticKernel::new(2, 8);
    let mut s: abi::HartState = g.get(HARTS);
    s.depth = 2;
    s.held[0] = abi::HeldLock {
        lock: 1,
        _pad: 0,
        pc: 0x8000_2000,
        since: 1,
    };
    // The hart released its inner lock: the entry is cleared, `depth` not yet lowered.
    s.held[1].lock = abi::NONE;
    g.put(HARTS, &s);
    let mut r = g.open().unwrap();
    let snap = r.snapshot(&mut g.image, 0).unwrap();
    let held: Vec<u32> = snap.harts[0].held.iter().map(|h| h.lock).collect();
    assert_eq!(held, vec![1]);
}
