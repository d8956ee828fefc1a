//! Writing a Perfetto trace: one `TracePacket` at a time, with the track, event and
//! annotation helpers the export and its findings use, and the export's error and stats.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use perfetto_protos::counter_descriptor::CounterDescriptor;
use perfetto_protos::debug_annotation::DebugAnnotation;
use perfetto_protos::trace::Trace;
use perfetto_protos::trace_packet::TracePacket;
use perfetto_protos::track_descriptor::TrackDescriptor;
use perfetto_protos::track_event::{track_event, TrackEvent};
use protobuf::Message;
use serde::Serialize;
use thiserror::Error;

use crate::model::HartId;

/// All packets share one sequence; nothing is interned, so no incremental state is needed.
const SEQUENCE: u32 = 0x4c53;

/// The findings track.
pub(crate) const FINDINGS: u64 = 4;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding a Perfetto packet failed: {0}")]
    Encode(#[from] protobuf::Error),
    #[error(transparent)]
    Analysis(#[from] crate::analysis::ConfigError),
}

/// What was written, for the user and for tests that check the trace against the recording.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportStats {
    pub packets: u64,
    pub bytes: u64,
    pub events: u64,
    /// Hold slices per lock track, by lock name.
    pub holds: BTreeMap<String, u64>,
    /// Spin slices per hart.
    pub spins: BTreeMap<HartId, u64>,
    /// Sleeplock hold slices (on process tracks).
    pub sleep_holds: u64,
    /// Reader-writer hold slices (a hart's re-entered read hold counts once).
    pub rw_holds: u64,
    pub flows: u64,
    pub counter_values: u64,
    pub instants: u64,
    /// Holds closed at the next acquisition because their release was not seen (lost events).
    pub holds_cut: u64,
    /// Releases of a lock with no hold open (its acquisition was lost).
    pub unmatched_releases: u64,
    /// Slice starts moved to the end of the previous slice on their track (out-of-order times).
    pub clamped: u64,
}

pub(crate) struct Out {
    pub(crate) w: BufWriter<File>,
    pub(crate) path: PathBuf,
    pub(crate) stats: ExportStats,
    pub(crate) first: bool,
}

impl Out {
    pub(crate) fn packet(&mut self, mut p: TracePacket) -> Result<(), ExportError> {
        p.set_trusted_packet_sequence_id(SEQUENCE);
        if self.first {
            // SEQ_INCREMENTAL_STATE_CLEARED: a fresh sequence.
            p.sequence_flags = Some(1);
            self.first = false;
        }
        let mut t = Trace::new();
        t.packet.push(p);
        let bytes = t.write_to_bytes()?;
        self.w.write_all(&bytes).map_err(|source| ExportError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.stats.packets += 1;
        self.stats.bytes += bytes.len() as u64;
        Ok(())
    }

    pub(crate) fn track(
        &mut self,
        uuid: u64,
        parent: Option<u64>,
        name: &str,
        counter: bool,
    ) -> Result<(), ExportError> {
        let mut d = TrackDescriptor::new();
        d.uuid = Some(uuid);
        d.parent_uuid = parent;
        d.set_name(name.to_owned());
        if counter {
            d.counter = protobuf::MessageField::some(CounterDescriptor::new());
        }
        let mut p = TracePacket::new();
        p.set_track_descriptor(d);
        self.packet(p)
    }

    pub(crate) fn event(&mut self, ts: u64, e: TrackEvent) -> Result<(), ExportError> {
        let mut p = TracePacket::new();
        p.timestamp = Some(ts);
        p.set_track_event(e);
        self.packet(p)
    }
}

pub(crate) fn event(kind: track_event::Type, track: u64) -> TrackEvent {
    let mut e = TrackEvent::new();
    e.set_type(kind);
    e.track_uuid = Some(track);
    e
}

pub(crate) fn arg_str(name: &str, v: impl Into<String>) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name(name.to_owned());
    a.set_string_value(v.into());
    a
}

pub(crate) fn arg_u64(name: &str, v: u64) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name(name.to_owned());
    a.set_uint_value(v);
    a
}

impl Out {
    pub(crate) fn counter(&mut self, ts: u64, track: u64, v: i64) -> Result<(), ExportError> {
        let mut e = event(track_event::Type::TYPE_COUNTER, track);
        e.set_counter_value(v);
        self.stats.counter_values += 1;
        self.event(ts, e)
    }

    pub(crate) fn counter_f(&mut self, ts: u64, track: u64, v: f64) -> Result<(), ExportError> {
        let mut e = event(track_event::Type::TYPE_COUNTER, track);
        e.set_double_counter_value(v);
        self.stats.counter_values += 1;
        self.event(ts, e)
    }

    pub(crate) fn instant(
        &mut self,
        ts: u64,
        name: String,
        args: Vec<DebugAnnotation>,
    ) -> Result<(), ExportError> {
        let mut e = event(track_event::Type::TYPE_INSTANT, FINDINGS);
        e.set_name(name);
        e.debug_annotations = args;
        self.stats.instants += 1;
        self.event(ts, e)
    }
}
