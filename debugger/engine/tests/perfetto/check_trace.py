"""Checks a lockscope Perfetto export with Perfetto's own schema (perfetto_trace_pb2).

usage: check_trace.py TRACE.pftrace EXPECTED.json

EXPECTED has, from the engine's own decoding of the recording: "holds" (spinlock acquisitions
per lock name), "spins" (spins per hart), and optionally "sleep_holds" and "rw_holds" (slices
under the Sleeplocks and Reader-writer locks roots), "instants" (names that must appear as
instant events) and "arg_contains" (a string some instant's argument must contain). Prints what it
found as JSON; exits 1 with the reasons when anything is off.
"""

import json
import sys
from collections import defaultdict

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

TE = pb.TrackEvent


def main():
    trace_path, expected_path = sys.argv[1], sys.argv[2]
    trace = pb.Trace()
    with open(trace_path, "rb") as f:
        trace.ParseFromString(f.read())
    with open(expected_path) as f:
        expected = json.load(f)

    errors = []
    tracks = {}
    events = defaultdict(list)
    for i, p in enumerate(trace.packet):
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            parent = d.parent_uuid if d.HasField("parent_uuid") else None
            if d.uuid in tracks:
                errors.append(f"track {d.uuid} declared twice")
            tracks[d.uuid] = (d.name, parent, d.HasField("counter"))
        elif p.HasField("track_event"):
            if not p.HasField("timestamp"):
                errors.append(f"packet {i}: a track event without a timestamp")
            events[p.track_event.track_uuid].append((p.timestamp, i, p.track_event))

    def root_of(uuid):
        seen = 0
        while tracks.get(uuid, (None, None))[1] is not None and seen < 8:
            uuid = tracks[uuid][1]
            seen += 1
        return tracks.get(uuid, ("?",))[0]

    for uuid in events:
        if uuid not in tracks:
            errors.append(f"events on undeclared track {uuid}")

    holds = defaultdict(int)
    spins = defaultdict(int)
    mode_holds = defaultdict(int)
    flows_out, flows_in = set(), set()
    instants = []
    for uuid, evs in events.items():
        name, _, is_counter = tracks.get(uuid, ("?", None, False))
        root = root_of(uuid)
        evs.sort(key=lambda e: (e[0], e[1]))
        open_since = None
        last_end = 0
        for ts, i, e in evs:
            flows_out.update(e.flow_ids)
            flows_in.update(e.terminating_flow_ids)
            if is_counter:
                if e.type != TE.TYPE_COUNTER:
                    errors.append(f"{name}: a non-counter event on a counter track")
                continue
            if e.type == TE.TYPE_COUNTER:
                errors.append(f"{name}: a counter event on a slice track")
            elif e.type == TE.TYPE_INSTANT:
                instants.append(e)
            elif e.type == TE.TYPE_SLICE_BEGIN:
                if open_since is not None:
                    errors.append(f"{name}: a slice at {ts} overlaps the one open since {open_since}")
                if ts < last_end:
                    errors.append(f"{name}: a slice at {ts} starts before the last ended ({last_end})")
                open_since = ts
                if root == "Locks":
                    holds[name] += 1
                elif root == "Harts":
                    spins[name.removeprefix("hart ")] += 1
                elif root in ("Sleeplocks", "Reader-writer locks"):
                    mode_holds[root] += 1
            elif e.type == TE.TYPE_SLICE_END:
                if open_since is None:
                    errors.append(f"{name}: a slice ends at {ts} with none open")
                else:
                    last_end = ts
                    open_since = None
        if open_since is not None:
            errors.append(f"{name}: a slice open since {open_since} never ends")

    if dict(holds) != expected["holds"]:
        diff = {k: (holds.get(k, 0), expected["holds"].get(k, 0))
                for k in set(holds) | set(expected["holds"])
                if holds.get(k, 0) != expected["holds"].get(k, 0)}
        errors.append(f"holds per lock (trace, engine) differ: {diff}")
    if dict(spins) != expected["spins"]:
        errors.append(f"spins per hart differ: trace {dict(spins)}, engine {expected['spins']}")
    for key, root in (("sleep_holds", "Sleeplocks"), ("rw_holds", "Reader-writer locks")):
        if key in expected and mode_holds[root] != expected[key]:
            errors.append(f"{key}: trace {mode_holds[root]}, engine {expected[key]}")
    if not flows_in <= flows_out:
        errors.append(f"flows end that never began: {sorted(flows_in - flows_out)[:5]}")
    names = [e.name for e in instants]
    for want in expected.get("instants", []):
        if not any(n.startswith(want) for n in names):
            errors.append(f"no instant event named {want!r} (have {names[:10]})")
    needle = expected.get("arg_contains")
    if needle and not any(needle in a.string_value for e in instants for a in e.debug_annotations):
        errors.append(f"no instant argument contains {needle!r}")
    counters = sum(1 for u, evs in events.items() if tracks.get(u, (0, 0, False))[2] for _ in evs)
    print(json.dumps({
        "packets": len(trace.packet),
        "tracks": len(tracks),
        "holds": sum(holds.values()),
        "spins": sum(spins.values()),
        "sleep_holds": mode_holds["Sleeplocks"],
        "rw_holds": mode_holds["Reader-writer locks"],
        "flows": len(flows_in),
        "counter_values": counters,
        "instants": names,
    }))
    if errors:
        print("\n".join(errors[:20]), file=sys.stderr)
        sys.exit(1)


main()
