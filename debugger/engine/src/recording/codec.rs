//! The payload of a feed chunk: the feed items in order, with every lock event in columns.
//!
//! ```text
//! payload = section(items) section(kinds) section(harts) section(locks) section(pcs)
//!           section(dts) section(dict) time_unit:varint
//! section = len:varint bytes
//! items   = (tag:u8 body)*         1 events: n:varint nlost:varint (hart:varint n:varint)*
//!                                  2 snapshot: len:varint JSON   3 other feed: len:varint JSON
//! kinds   = one byte per event: kind (0 spin, 1 acquired, 2 acquired contended, 3 released)
//!           | hart << 2, hart 63 meaning "in the harts column"
//! locks   = varint per event: 0 when the lock is the predicted one, else lock + 1
//! pcs     = varint per event: 0 when the pc is the last one of this (lock, kind), else
//!           1 + its index in the chunk's pc dictionary
//! dts     = varint per event: zigzag(time - previous time of the same hart) / time_unit
//! dict    = count:varint then each new pc as zigzag delta from the previous entry
//! ```
//!
//! The prediction makes most lock and pc entries zero: a release names the lock the hart took
//! last, a contended acquisition the lock it spun on, and a call site repeats per lock. Columns
//! keep like with like, which is what zstd then squeezes. Every chunk decodes on its own (the
//! predictors start empty), so a damaged chunk costs only itself.

use rustc_hash::FxHashMap;

use super::format::{put_varint, unzigzag, zigzag, Cursor};
use crate::feed::Feed;
use crate::model::{EventKind, HartId, LockEvent, LockId, Snapshot};

const TAG_EVENTS: u8 = 1;
const TAG_SNAPSHOT: u8 = 2;
const TAG_OTHER: u8 = 3;
const HART_ESCAPE: u8 = 63;
/// Harts whose predictor state is kept; others are still encoded, just not predicted.
const PREDICT_HARTS: usize = 64;
/// Held locks remembered per hart for the release prediction.
const PREDICT_DEPTH: usize = 16;
/// A chunk holds at most this many events and items (the writer closes it well before).
pub const MAX_EVENTS: usize = 1 << 20;
pub const MAX_ITEMS: usize = 1 << 20;
/// Losses listed in one batch, at most.
const MAX_LOST: usize = 4096;

#[derive(Clone, Default)]
struct HartPredict {
    time: u64,
    held: Vec<LockId>,
    spin: Option<LockId>,
}

/// The predictor both sides run over the events in order.
#[derive(Default)]
struct Predictor {
    harts: Vec<HartPredict>,
    last_pc: FxHashMap<(LockId, u8), u64>,
}

impl Predictor {
    fn clear(&mut self) {
        for h in &mut self.harts {
            h.time = 0;
            h.held.clear();
            h.spin = None;
        }
        self.last_pc.clear();
    }

    fn hart(&mut self, hart: HartId) -> Option<&mut HartPredict> {
        let h = hart as usize;
        if h >= PREDICT_HARTS {
            return None;
        }
        if self.harts.len() <= h {
            self.harts.resize_with(h + 1, HartPredict::default);
        }
        Some(&mut self.harts[h])
    }

    fn predict_lock(&mut self, hart: HartId, kind: u8) -> Option<LockId> {
        let h = self.hart(hart)?;
        match kind {
            2 => h.spin,
            3 => h.held.last().copied(),
            _ => None,
        }
    }

    fn update(&mut self, hart: HartId, kind: u8, lock: LockId) {
        let Some(h) = self.hart(hart) else { return };
        match kind {
            0 => h.spin = Some(lock),
            1 | 2 => {
                h.spin = None;
                if h.held.len() == PREDICT_DEPTH {
                    h.held.remove(0);
                }
                h.held.push(lock);
            }
            _ => {
                if let Some(p) = h.held.iter().rposition(|&l| l == lock) {
                    h.held.remove(p);
                }
            }
        }
    }
}

fn kind_code(k: EventKind) -> u8 {
    match k {
        EventKind::Spin => 0,
        EventKind::Acquired { contended: false } => 1,
        EventKind::Acquired { contended: true } => 2,
        EventKind::Released => 3,
    }
}

fn code_kind(c: u8) -> EventKind {
    match c & 3 {
        0 => EventKind::Spin,
        1 => EventKind::Acquired { contended: false },
        2 => EventKind::Acquired { contended: true },
        _ => EventKind::Released,
    }
}

/// Accumulates one chunk's feed items. Buffers are reused from chunk to chunk: nothing is
/// allocated per event once they have grown.
#[derive(Default)]
pub struct ChunkEncoder {
    items: Vec<u8>,
    kinds: Vec<u8>,
    /// [`LockEvent::mode_bits`] per event; written only when one is not 0.
    modes: Vec<u8>,
    harts: Vec<u8>,
    locks: Vec<u8>,
    pcs: Vec<u8>,
    /// Raw time deltas, divided by their common unit when the chunk closes.
    dts: Vec<i64>,
    dict: Vec<u8>,
    dict_index: FxHashMap<u64, u32>,
    dict_last: u64,
    predict: Predictor,
    pub n_items: u32,
    pub n_events: u64,
    pub t0: u64,
    pub t1: u64,
    json: Vec<u8>,
}

impl ChunkEncoder {
    pub fn is_empty(&self) -> bool {
        self.n_items == 0
    }

    /// Bytes the chunk holds so far, before compression (about).
    pub fn raw_len(&self) -> usize {
        self.items.len()
            + self.kinds.len()
            + self.harts.len()
            + self.locks.len()
            + self.pcs.len()
            + self.dts.len() * 2
            + self.dict.len()
    }

    fn note_time(&mut self, t: u64) {
        if self.n_events == 0 && self.t0 == 0 && self.t1 == 0 {
            self.t0 = t;
            self.t1 = t;
        } else {
            self.t0 = self.t0.min(t);
            self.t1 = self.t1.max(t);
        }
    }

    pub fn push(&mut self, feed: &Feed) {
        self.n_items += 1;
        match feed {
            Feed::Events { events, lost } => {
                self.items.push(TAG_EVENTS);
                put_varint(&mut self.items, events.len() as u64);
                put_varint(&mut self.items, lost.len() as u64);
                for &(h, n) in lost {
                    put_varint(&mut self.items, h as u64);
                    put_varint(&mut self.items, n);
                }
                for e in events {
                    self.push_event(e);
                }
            }
            Feed::Snapshot(s) => {
                self.note_time(s.time_ns);
                self.json.clear();
                serde_json::to_writer(&mut self.json, s).expect("a snapshot always serializes");
                self.items.push(TAG_SNAPSHOT);
                put_varint(&mut self.items, self.json.len() as u64);
                self.items.extend_from_slice(&self.json);
            }
            other => {
                self.json.clear();
                serde_json::to_writer(&mut self.json, other).expect("a feed always serializes");
                self.items.push(TAG_OTHER);
                put_varint(&mut self.items, self.json.len() as u64);
                self.items.extend_from_slice(&self.json);
            }
        }
    }

    #[inline]
    fn push_event(&mut self, e: &LockEvent) {
        self.note_time(e.time_ns);
        self.n_events += 1;
        self.modes.push(e.mode_bits());
        let kind = kind_code(e.kind);
        if e.hart < HART_ESCAPE as u32 {
            self.kinds.push(kind | (e.hart as u8) << 2);
        } else {
            self.kinds.push(kind | HART_ESCAPE << 2);
            put_varint(&mut self.harts, e.hart as u64);
        }
        let predicted = self.predict.predict_lock(e.hart, kind);
        if predicted == Some(e.lock) {
            self.locks.push(0);
        } else {
            put_varint(&mut self.locks, e.lock as u64 + 1);
        }
        self.predict.update(e.hart, kind, e.lock);
        match self.predict.last_pc.insert((e.lock, kind), e.pc) {
            Some(pc) if pc == e.pc => self.pcs.push(0),
            _ => {
                let next = self.dict_index.len() as u32;
                let ix = *self.dict_index.entry(e.pc).or_insert_with(|| {
                    put_varint(
                        &mut self.dict,
                        zigzag(e.pc.wrapping_sub(self.dict_last) as i64),
                    );
                    self.dict_last = e.pc;
                    next
                });
                put_varint(&mut self.pcs, ix as u64 + 1);
            }
        }
        let prev = match self.predict.hart(e.hart) {
            Some(h) => std::mem::replace(&mut h.time, e.time_ns),
            None => 0,
        };
        self.dts.push(e.time_ns.wrapping_sub(prev) as i64);
    }

    /// Writes the payload into `out` and starts a new chunk.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.clear();
        // Target time often ticks in steps (QEMU's timer is 10 MHz: 100 ns).
        let unit = self
            .dts
            .iter()
            .fold(0u64, |g, &d| gcd(g, d.unsigned_abs()))
            .max(1);
        let mut dts = Vec::with_capacity(self.dts.len() * 2);
        for &d in &self.dts {
            // d / unit is exact; i64::MIN / 1 is the one value that stays itself.
            put_varint(&mut dts, zigzag(d.wrapping_div(unit as i64)));
        }
        let mut dict = Vec::with_capacity(self.dict.len() + 5);
        put_varint(&mut dict, self.dict_index.len() as u64);
        dict.extend_from_slice(&self.dict);
        for section in [
            &self.items,
            &self.kinds,
            &self.harts,
            &self.locks,
            &self.pcs,
            &dts,
            &dict,
        ] {
            put_varint(out, section.len() as u64);
            out.extend_from_slice(section);
        }
        put_varint(out, unit);
        // Reader-writer, sleeplock and trylock events: a trailing column, absent (as in
        // recordings from before it) when every event is a plain spinlock event.
        if self.modes.iter().any(|&m| m != 0) {
            put_varint(out, self.modes.len() as u64);
            out.extend_from_slice(&self.modes);
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.items.clear();
        self.kinds.clear();
        self.modes.clear();
        self.harts.clear();
        self.locks.clear();
        self.pcs.clear();
        self.dts.clear();
        self.dict.clear();
        self.dict_index.clear();
        self.dict_last = 0;
        self.predict.clear();
        self.n_items = 0;
        self.n_events = 0;
        self.t0 = 0;
        self.t1 = 0;
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Decodes a feed chunk's payload. `items` is the header's count; everything is bounded by it
/// and by the payload's own size.
pub fn decode(payload: &[u8], items: u32) -> Result<Vec<Feed>, String> {
    if items as usize > MAX_ITEMS {
        return Err(format!("claims {items} items, at most {MAX_ITEMS}"));
    }
    let mut c = Cursor::new(payload);
    let mut section = |name: &str| -> Result<&[u8], String> {
        let n = c.count(payload.len() as u64, &format!("bytes of {name}"))?;
        c.bytes(n)
    };
    let item_bytes = section("items")?;
    let kinds = section("kinds")?;
    let harts = section("harts")?;
    let locks = section("locks")?;
    let pcs = section("pcs")?;
    let dts = section("times")?;
    let dict_bytes = section("pc dictionary")?;
    let unit = c.varint()?.max(1);
    let modes = if c.remaining() != 0 {
        let n = c.count(payload.len() as u64, "bytes of modes")?;
        let m = c.bytes(n)?;
        if m.len() != kinds.len() {
            return Err(format!(
                "{} event modes for {} events",
                m.len(),
                kinds.len()
            ));
        }
        m
    } else {
        &[]
    };
    if c.remaining() != 0 {
        return Err(format!("{} stray bytes after the columns", c.remaining()));
    }
    if kinds.len() > MAX_EVENTS {
        return Err(format!(
            "claims {} events, at most {MAX_EVENTS}",
            kinds.len()
        ));
    }
    let mut dc = Cursor::new(dict_bytes);
    let ndict = dc.count(dict_bytes.len() as u64, "pc dictionary entries")?;
    let mut dict = Vec::with_capacity(ndict);
    let mut last = 0u64;
    for _ in 0..ndict {
        last = last.wrapping_add(unzigzag(dc.varint()?) as u64);
        dict.push(last);
    }

    let mut ev = EventColumns {
        kinds,
        modes,
        next: 0,
        harts: Cursor::new(harts),
        locks: Cursor::new(locks),
        pcs: Cursor::new(pcs),
        dts: Cursor::new(dts),
        dict,
        unit,
        predict: Predictor::default(),
    };
    let mut ic = Cursor::new(item_bytes);
    let mut out = Vec::with_capacity(items as usize);
    for _ in 0..items {
        let tag = *ic.bytes(1)?.first().expect("1 byte");
        match tag {
            TAG_EVENTS => {
                let n = ic.count((ev.kinds.len() - ev.next) as u64, "events")?;
                let nlost = ic.count(MAX_LOST as u64, "loss entries")?;
                let mut lost = Vec::with_capacity(nlost);
                for _ in 0..nlost {
                    let h = ic.varint()?;
                    let k = ic.varint()?;
                    lost.push((
                        u32::try_from(h).map_err(|_| format!("hart {h} out of range"))?,
                        k,
                    ));
                }
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    events.push(ev.next_event()?);
                }
                out.push(Feed::Events { events, lost });
            }
            TAG_SNAPSHOT => {
                let n = ic.count(item_bytes.len() as u64, "snapshot bytes")?;
                let s: Snapshot =
                    serde_json::from_slice(ic.bytes(n)?).map_err(|e| format!("snapshot: {e}"))?;
                out.push(Feed::Snapshot(Box::new(s)));
            }
            TAG_OTHER => {
                let n = ic.count(item_bytes.len() as u64, "feed bytes")?;
                let f: Feed =
                    serde_json::from_slice(ic.bytes(n)?).map_err(|e| format!("feed: {e}"))?;
                out.push(f);
            }
            t => return Err(format!("unknown item tag {t}")),
        }
    }
    if ev.next != ev.kinds.len() || ic.remaining() != 0 {
        return Err("the items and the event columns disagree".into());
    }
    Ok(out)
}

struct EventColumns<'a> {
    kinds: &'a [u8],
    /// Empty when every event is a plain spinlock event.
    modes: &'a [u8],
    next: usize,
    harts: Cursor<'a>,
    locks: Cursor<'a>,
    pcs: Cursor<'a>,
    dts: Cursor<'a>,
    dict: Vec<u64>,
    unit: u64,
    predict: Predictor,
}

impl EventColumns<'_> {
    #[inline]
    fn next_event(&mut self) -> Result<LockEvent, String> {
        let kh = self.kinds[self.next];
        let mode_bits = self.modes.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        let kind = kh & 3;
        let hart = match kh >> 2 {
            HART_ESCAPE => {
                let h = self.harts.varint()?;
                u32::try_from(h).map_err(|_| format!("hart {h} out of range"))?
            }
            h => h as u32,
        };
        let lock = match self.locks.varint()? {
            0 => self
                .predict
                .predict_lock(hart, kind)
                .ok_or("a predicted lock with nothing to predict from")?,
            l => u32::try_from(l - 1).map_err(|_| format!("lock {l} out of range"))?,
        };
        self.predict.update(hart, kind, lock);
        let pc = match self.pcs.varint()? {
            0 => *self
                .predict
                .last_pc
                .get(&(lock, kind))
                .ok_or("a repeated pc with nothing to repeat")?,
            i => *self
                .dict
                .get(i as usize - 1)
                .ok_or_else(|| format!("pc index {i} beyond the dictionary"))?,
        };
        self.predict.last_pc.insert((lock, kind), pc);
        let d = self.dts.varint()?;
        let delta = unzigzag(d).wrapping_mul(self.unit as i64);
        let time_ns = match self.predict.hart(hart) {
            Some(h) => {
                h.time = h.time.wrapping_add(delta as u64);
                h.time
            }
            None => delta as u64,
        };
        LockEvent::new(time_ns, hart, lock, code_kind(kind), pc)
            .with_mode_bits(mode_bits)
            .ok_or_else(|| format!("unknown event mode {mode_bits:#x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::{Ending, HartStop, StopInfo, StopReason};
    use crate::model::HartRegs;
    use proptest::prelude::*;

    fn round_trip(feeds: &[Feed]) -> Vec<Feed> {
        let mut enc = ChunkEncoder::default();
        for f in feeds {
            enc.push(f);
        }
        let n = enc.n_items;
        let mut out = Vec::new();
        enc.finish(&mut out);
        decode(&out, n).unwrap()
    }

    fn arb_event() -> impl Strategy<Value = LockEvent> {
        (
            any::<u64>(),
            0u32..70,
            0u32..200,
            0u8..4,
            any::<u64>(),
            prop_oneof![Just(0u8), 0u8..8],
        )
            .prop_map(|(time_ns, hart, lock, k, pc, bits)| {
                LockEvent::new(time_ns, hart, lock, code_kind(k), pc)
                    .with_mode_bits(bits)
                    .expect("bits under 8")
            })
    }

    proptest! {
        #[test]
        fn any_events_round_trip(batches in proptest::collection::vec(
            (proptest::collection::vec(arb_event(), 0..60),
             proptest::collection::vec((0u32..100, any::<u64>()), 0..3)), 0..5)) {
            let feeds: Vec<Feed> = batches.into_iter()
                .map(|(events, lost)| Feed::Events { events, lost }).collect();
            prop_assert_eq!(round_trip(&feeds), feeds);
        }

        #[test]
        fn damaged_payloads_never_panic(pos in 0usize..4000, val in any::<u8>()) {
            let mut enc = ChunkEncoder::default();
            enc.push(&Feed::Events { events: (0..100).map(|i| LockEvent {
                time_ns: i * 100, hart: (i % 4) as u32, lock: (i % 7) as u32,
                kind: code_kind((i % 4) as u8), pc: 0x8000_0000 + (i % 5),
                mode: None,
                trylock: false, }).collect(), lost: vec![] });
            enc.push(&Feed::Console("hello".into()));
            let mut out = Vec::new();
            enc.finish(&mut out);
            let p = pos % out.len();
            out[p] = val;
            let _ = decode(&out, 2);
        }
    }

    #[test]
    fn every_feed_kind_round_trips() {
        let feeds = vec![
            Feed::TraceStart { harts: vec![0, 1] },
            Feed::Console("boot\n".into()),
            Feed::Pause { nanos: 5 },
            Feed::Stop(StopInfo {
                reason: StopReason::Panic,
                hart: Some(1),
                harts: vec![HartStop {
                    hart: 1,
                    regs: HartRegs {
                        pc: 0x8000_1000,
                        ..HartRegs::default()
                    },
                    frames: vec![],
                    full: None,
                }],
            }),
            Feed::Resumed,
            Feed::End(Ending::Lost { reason: "x".into() }),
        ];
        assert_eq!(round_trip(&feeds), feeds);
    }

    #[test]
    fn time_unit_divides_deltas_and_keeps_signs() {
        let ev = |t, hart| LockEvent {
            time_ns: t,
            hart,
            lock: 1,
            kind: EventKind::Spin,
            pc: 4,
            mode: None,
            trylock: false,
        };
        let feeds = vec![Feed::Events {
            events: vec![ev(1000, 0), ev(1300, 0), ev(700, 0), ev(100, 1)],
            lost: vec![],
        }];
        assert_eq!(round_trip(&feeds), feeds);
    }
}
