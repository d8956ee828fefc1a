//! Recorded traces: a session's [`Feed`] stream written to a file and read back.
//!
//! Layout: the 8-byte magic `LSTRACE1`, then records `[kind: u8][len: u32 LE][payload; len]`.
//! Kind 1 is the JSON [`TraceHeader`] (first record), kind 2 a JSON [`Feed`] that is not an event
//! batch, kind 3 an event batch in a packed binary form (events dominate a trace's size: JSON
//! would be five times larger). Every record is validated before anything is allocated for it.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::feed::Feed;
use crate::model::{EventKind, LockEvent};

const MAGIC: &[u8; 8] = b"LSTRACE1";
const KIND_HEADER: u8 = 1;
const KIND_FEED: u8 = 2;
const KIND_EVENTS: u8 = 3;
/// Largest record accepted: a snapshot is a few hundred KiB at most, an event batch is capped by
/// the writer at [`MAX_BATCH`] events.
const MAX_RECORD: u32 = 64 << 20;
const MAX_BATCH: usize = 1 << 20;
const EVENT_BYTES: usize = 24;

/// Describes where a trace came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// lockscope ABI version of the kernel that was traced.
    pub abi_version: u32,
    /// The kernel ELF used to symbolize it, as given when recording.
    pub kernel: Option<PathBuf>,
    /// [`crate::symbols::Symbols::fingerprint`] of that ELF.
    #[serde(default)]
    pub kernel_fingerprint: Option<String>,
    /// QEMU harts.
    pub smp: u32,
    pub bootargs: String,
    /// How the data was read: `shared-ram`, `gdb`, or `fixture`.
    pub source: String,
}

/// Why a trace could not be read or written.
#[derive(Debug, Error)]
pub enum TraceError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a lockscope trace (it does not start with LSTRACE1): pass a file written by `lockscope run --record`")]
    NotATrace { path: PathBuf },
    #[error("{path} is truncated at byte {offset}: the recording was cut short; the {records} records before it are intact")]
    Truncated {
        path: PathBuf,
        offset: u64,
        records: u64,
    },
    #[error("{path}: record {record} at byte {offset} is corrupt: {problem}")]
    Corrupt {
        path: PathBuf,
        record: u64,
        offset: u64,
        problem: String,
    },
}

/// Writes a trace.
pub struct TraceWriter<W: Write> {
    out: W,
    path: PathBuf,
    scratch: Vec<u8>,
}

impl TraceWriter<BufWriter<std::fs::File>> {
    pub fn create(path: &Path, header: &TraceHeader) -> Result<Self, TraceError> {
        let file = std::fs::File::create(path).map_err(|source| TraceError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::new(BufWriter::new(file), path, header)
    }
}

impl<W: Write> TraceWriter<W> {
    pub fn new(mut out: W, path: &Path, header: &TraceHeader) -> Result<Self, TraceError> {
        let io = |source| TraceError::Io {
            path: path.to_owned(),
            source,
        };
        out.write_all(MAGIC).map_err(io)?;
        let mut w = Self {
            out,
            path: path.to_owned(),
            scratch: Vec::new(),
        };
        let json = serde_json::to_vec(header).expect("a header always serializes");
        w.record(KIND_HEADER, &json)?;
        Ok(w)
    }

    fn record(&mut self, kind: u8, payload: &[u8]) -> Result<(), TraceError> {
        let io = |source| TraceError::Io {
            path: self.path.clone(),
            source,
        };
        self.out.write_all(&[kind]).map_err(io)?;
        self.out
            .write_all(&(payload.len() as u32).to_le_bytes())
            .map_err(io)?;
        self.out.write_all(payload).map_err(io)
    }

    pub fn write(&mut self, feed: &Feed) -> Result<(), TraceError> {
        match feed {
            Feed::Events { events, lost } => {
                // Split huge batches so every record stays under the reader's limit.
                let mut chunks = events.chunks(MAX_BATCH).peekable();
                if chunks.peek().is_none() {
                    return self.write_batch(&[], lost);
                }
                let mut first = true;
                for chunk in chunks {
                    self.write_batch(chunk, if first { lost } else { &[] })?;
                    first = false;
                }
                Ok(())
            }
            other => {
                let json = serde_json::to_vec(other).expect("feeds always serialize");
                self.record(KIND_FEED, &json)
            }
        }
    }

    fn write_batch(&mut self, events: &[LockEvent], lost: &[(u32, u64)]) -> Result<(), TraceError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&(lost.len() as u32).to_le_bytes());
        for (h, n) in lost {
            buf.extend_from_slice(&h.to_le_bytes());
            buf.extend_from_slice(&n.to_le_bytes());
        }
        buf.extend_from_slice(&(events.len() as u32).to_le_bytes());
        for e in events {
            buf.extend_from_slice(&e.time_ns.to_le_bytes());
            buf.extend_from_slice(&e.pc.to_le_bytes());
            buf.extend_from_slice(&e.lock.to_le_bytes());
            buf.extend_from_slice(&(e.hart as u16).to_le_bytes());
            let (kind, flag) = match e.kind {
                EventKind::Spin => (1u8, 0u8),
                EventKind::Acquired { contended } => (2, contended as u8),
                EventKind::Released => (3, 0),
            };
            buf.push(kind);
            // The mode and trylock flag above the contended bit (0 for spinlocks, as before).
            buf.push(flag | e.mode_bits() << 1);
        }
        let r = self.record(KIND_EVENTS, &buf);
        self.scratch = buf;
        r
    }

    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(|source| TraceError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Reads a trace back, record by record.
pub struct TraceReader<R: Read> {
    input: R,
    path: PathBuf,
    header: TraceHeader,
    offset: u64,
    records: u64,
    /// Bytes left in the file, when known: no record may claim more.
    remaining: Option<u64>,
}

impl TraceReader<BufReader<std::fs::File>> {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let io = |source| TraceError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Self::new(BufReader::new(file), path, Some(len))
    }
}

impl<R: Read> TraceReader<R> {
    pub fn new(mut input: R, path: &Path, len: Option<u64>) -> Result<Self, TraceError> {
        let mut magic = [0u8; 8];
        if read_exact_or_eof(&mut input, &mut magic, path)? != 8 || &magic != MAGIC {
            return Err(TraceError::NotATrace {
                path: path.to_owned(),
            });
        }
        let mut r = Self {
            input,
            path: path.to_owned(),
            header: TraceHeader {
                abi_version: 0,
                kernel: None,
                kernel_fingerprint: None,
                smp: 0,
                bootargs: String::new(),
                source: String::new(),
            },
            offset: 8,
            records: 0,
            remaining: len.map(|l| l.saturating_sub(8)),
        };
        match r.next_record()? {
            Some((KIND_HEADER, payload)) => {
                r.header =
                    serde_json::from_slice(&payload).map_err(|e| r.corrupt(&e.to_string()))?;
            }
            Some(_) => return Err(r.corrupt("the first record is not the trace header")),
            None => {
                return Err(TraceError::Truncated {
                    path: path.to_owned(),
                    offset: r.offset,
                    records: 0,
                })
            }
        }
        Ok(r)
    }

    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    fn corrupt(&self, problem: &str) -> TraceError {
        TraceError::Corrupt {
            path: self.path.clone(),
            record: self.records,
            offset: self.offset,
            problem: problem.to_owned(),
        }
    }

    fn truncated(&self) -> TraceError {
        TraceError::Truncated {
            path: self.path.clone(),
            offset: self.offset,
            records: self.records,
        }
    }

    fn next_record(&mut self) -> Result<Option<(u8, Vec<u8>)>, TraceError> {
        let mut head = [0u8; 5];
        match read_exact_or_eof(&mut self.input, &mut head, &self.path)? {
            0 => return Ok(None),
            5 => {}
            _ => return Err(self.truncated()),
        }
        let kind = head[0];
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
        if !(KIND_HEADER..=KIND_EVENTS).contains(&kind) {
            return Err(self.corrupt(&format!("unknown record kind {kind}")));
        }
        if len > MAX_RECORD {
            return Err(self.corrupt(&format!(
                "claims {len} bytes, more than the {MAX_RECORD}-byte limit of any record"
            )));
        }
        if let Some(rem) = self.remaining {
            if 5 + len as u64 > rem {
                return Err(self.truncated());
            }
        }
        let mut payload = vec![0u8; len as usize];
        if read_exact_or_eof(&mut self.input, &mut payload, &self.path)? != len as usize {
            return Err(self.truncated());
        }
        self.offset += 5 + len as u64;
        if let Some(rem) = self.remaining.as_mut() {
            *rem -= 5 + len as u64;
        }
        self.records += 1;
        Ok(Some((kind, payload)))
    }

    /// The next feed item, or `None` at a clean end of file.
    pub fn next_feed(&mut self) -> Result<Option<Feed>, TraceError> {
        let start = self.offset;
        let Some((kind, payload)) = self.next_record()? else {
            return Ok(None);
        };
        let bad = |problem: String| TraceError::Corrupt {
            path: self.path.clone(),
            record: self.records - 1,
            offset: start,
            problem,
        };
        match kind {
            KIND_FEED => serde_json::from_slice(&payload)
                .map(Some)
                .map_err(|e| bad(e.to_string())),
            KIND_EVENTS => decode_batch(&payload).map(Some).map_err(bad),
            _ => Err(bad("a second trace header".into())),
        }
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Feed, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_feed().transpose()
    }
}

fn decode_batch(p: &[u8]) -> Result<Feed, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = p
            .get(at..at + n)
            .ok_or_else(|| format!("event batch ends early at byte {at}"))?;
        at += n;
        Ok(s)
    };
    let nlost = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
    if nlost > 4096 || nlost * 12 > p.len() {
        return Err(format!("claims {nlost} loss entries"));
    }
    let mut lost = Vec::with_capacity(nlost);
    for _ in 0..nlost {
        let h = u32::from_le_bytes(take(4)?.try_into().expect("4"));
        let n = u64::from_le_bytes(take(8)?.try_into().expect("8"));
        lost.push((h, n));
    }
    let n = u32::from_le_bytes(take(4)?.try_into().expect("4")) as usize;
    if n > MAX_BATCH || n * EVENT_BYTES > p.len() {
        return Err(format!("claims {n} events in {} bytes", p.len()));
    }
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let b = take(EVENT_BYTES)?;
        let kind = match (b[22], b[23] & 1) {
            (1, 0) => EventKind::Spin,
            (2, f) => EventKind::Acquired { contended: f == 1 },
            (3, 0) => EventKind::Released,
            (k, f) => return Err(format!("unknown event kind {k}/{f}")),
        };
        let e = LockEvent::new(
            u64::from_le_bytes(b[0..8].try_into().expect("8")),
            u16::from_le_bytes(b[20..22].try_into().expect("2")) as u32,
            u32::from_le_bytes(b[16..20].try_into().expect("4")),
            kind,
            u64::from_le_bytes(b[8..16].try_into().expect("8")),
        );
        let e = e
            .with_mode_bits(b[23] >> 1)
            .ok_or_else(|| format!("unknown event flags {:#x}", b[23]))?;
        events.push(e);
    }
    if at != p.len() {
        return Err(format!("{} stray bytes after the events", p.len() - at));
    }
    Ok(Feed::Events { events, lost })
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8], path: &Path) -> Result<usize, TraceError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(TraceError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Ending;
    use proptest::prelude::*;

    fn header() -> TraceHeader {
        TraceHeader {
            abi_version: 1,
            kernel: Some("k.elf".into()),
            kernel_fingerprint: Some("0123456789abcdef".into()),
            smp: 4,
            bootargs: "workload=mixed".into(),
            source: "fixture".into(),
        }
    }

    fn encode(feeds: &[Feed]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = TraceWriter::new(&mut out, Path::new("t"), &header()).unwrap();
        for f in feeds {
            w.write(f).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Vec<Feed>, TraceError> {
        let r = TraceReader::new(bytes, Path::new("t"), Some(bytes.len() as u64))?;
        r.collect()
    }

    fn ev(i: u64) -> LockEvent {
        LockEvent {
            time_ns: i * 100,
            hart: (i % 8) as u32,
            lock: (i % 50) as u32,
            kind: match i % 4 {
                0 => EventKind::Spin,
                1 => EventKind::Acquired { contended: true },
                2 => EventKind::Acquired { contended: false },
                _ => EventKind::Released,
            },
            pc: 0x8000_0000 + i,
            mode: None,
            trylock: false,
        }
        .with_mode_bits((i % 11 % 8) as u8)
        .expect("under 8")
    }

    #[test]
    fn feeds_round_trip() {
        let feeds = vec![
            Feed::Console("hart 1 starting\n".into()),
            Feed::Events {
                events: (0..100).map(ev).collect(),
                lost: vec![(3, 17)],
            },
            Feed::Pause { nanos: 1234 },
            Feed::End(Ending::Exited { status: 0 }),
        ];
        let bytes = encode(&feeds);
        assert_eq!(decode(&bytes).unwrap(), feeds);
        let r = TraceReader::new(&bytes[..], Path::new("t"), None).unwrap();
        assert_eq!(r.header(), &header());
    }

    #[test]
    fn truncation_is_reported_with_the_intact_count() {
        let bytes = encode(&[
            Feed::Console("a".into()),
            Feed::Events {
                events: (0..10).map(ev).collect(),
                lost: vec![],
            },
        ]);
        let cut = &bytes[..bytes.len() - 7];
        let err = decode(cut).unwrap_err();
        assert!(
            matches!(err, TraceError::Truncated { records: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("cut short"));
    }

    #[test]
    fn a_length_claiming_gigabytes_is_refused_before_allocating() {
        let mut bytes = encode(&[Feed::Console("a".into())]);
        let at = bytes.len()
            - (5 + serde_json::to_vec(&Feed::Console("a".into()))
                .unwrap()
                .len());
        bytes[at + 1..at + 5].copy_from_slice(&0xF000_0000u32.to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        // Within the limit but beyond the file: truncated, not allocated.
        bytes[at + 1..at + 5].copy_from_slice(&(32u32 << 20).to_le_bytes());
        assert!(matches!(
            decode(&bytes).unwrap_err(),
            TraceError::Truncated { .. }
        ));
    }

    #[test]
    fn not_a_trace() {
        let err = decode(b"\x7fELF....").unwrap_err();
        assert!(err.to_string().contains("not a lockscope trace"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = encode(&[]);
            bytes.extend_from_slice(&tail);
            let _ = decode(&bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(pos in 0usize..600, val in any::<u8>()) {
            let mut bytes = encode(&[Feed::Events { events: (0..20).map(ev).collect(), lost: vec![(1, 2)] }]);
            let p = pos % bytes.len();
            bytes[p] = val;
            let _ = decode(&bytes);
        }
    }
}
