"""End-to-end latency per chunk from a bag: camera -> command -> servo -> motion (no rclpy).

Every chunk's stamps come from four topics, joined by the time its first point is due (the
one instant all of them know exactly):

* ``policy/status`` (``pi05_policy.stamps``, published right after each chunk): capture stamp
  of the oldest image, joint-state stamp, inference start and end, publish, first point due;
* ``joint_trajectory``: the chunk itself (its points, for the motion test) and the bag's log
  time, i.e. when the recorder received it (``recorded``);
* ``diagnostics`` of the arm or the sim (``so101_driver.latency``, key ``command_log``): when
  the driver accepted the chunk (``received``) and the control tick that sent its first
  setpoint to the servos (``applied``), plus the wall-clock wait between the two;
* ``joint_states``: ``motion`` is the first sample after the first point is due whose position
  moved toward the chunk by more than ``threshold_rad``: projected on the direction from
  the position at the due time to the chunk's first point farther than that from it.

Stages are differences of these stamps, each on its node's clock (sim time in simulation);
between two hosts (publish -> received) they include the offset of the two clocks. A stage
that cannot be measured for a chunk says why (``ChunkLatency.missing``), and the percentiles
count only the chunks that have it. ``python -m eval_monitor.latency BAG`` prints the table;
``so101 eval`` puts it in the report (``report.latency_section``) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from so101_driver.joints import JOINT_NAMES, measured_positions
from so101_driver.latency import LOG_KEY, CommandRecord, parse_log

STATUS, TRAJECTORY, DIAGNOSTICS, JOINT_STATES = ('policy/status', 'joint_trajectory',
                                                 'diagnostics', 'joint_states')
#: Stamps of a chunk in chain order (``motion`` last); ``recorded`` is the bag's receipt.
STAMPS = ('image', 'state', 'inference_start', 'inference_end', 'publish', 'recorded',
          'received', 'applied', 'first_point', 'motion')
#: First points closer than this are the same chunk (status prints microseconds).
MATCH_S = 2e-4


@dataclasses.dataclass(frozen=True)
class Stage:
    key: str
    label: str
    start: str  # stamp name
    end: str


#: The chain, stage by stage.
STAGES = (
    Stage('image_to_inference_start', 'image capture → inference start', 'image',
          'inference_start'),
    Stage('inference', 'inference start → end', 'inference_start', 'inference_end'),
    Stage('inference_end_to_publish', 'inference end → publish', 'inference_end', 'publish'),
    Stage('publish_to_received', 'publish → received by the arm/sim', 'publish', 'received'),
    Stage('received_to_applied', 'received → first setpoint at the servos', 'received',
          'applied'),
    Stage('applied_to_first_point', 'applied → first point due (lead)', 'applied',
          'first_point'),
    Stage('first_point_to_motion', 'first point due → motion', 'first_point', 'motion'),
)
#: Spans over several stages, and the recorder's view.
TOTALS = (
    Stage('image_to_publish', 'camera → command (image capture → publish)', 'image', 'publish'),
    Stage('state_to_publish', 'joint state → publish', 'state', 'publish'),
    Stage('publish_to_first_point', 'publish → first point due', 'publish', 'first_point'),
    Stage('publish_to_applied', 'command → servo (publish → applied)', 'publish', 'applied'),
    Stage('image_to_motion', 'camera → motion (image capture → motion)', 'image', 'motion'),
    Stage('publish_to_recorded', 'publish → recorded (bag log time)', 'publish', 'recorded'),
)
WALL_KEY = 'received_to_applied_wall'
WALL_LABEL = 'received → applied, wall clock (executor and lock wait)'


@dataclasses.dataclass
class MotionConfig:
    threshold_rad: float = 0.005  # above encoder noise (1 tick = 0.0015 rad) and sag
    grace_s: float = 0.2  # look for motion until the chunk's last point + this


@dataclasses.dataclass
class ChunkLatency:
    """One chunk's stamps (seconds, node clocks) and, for each missing one, why."""

    seq: int
    stamps: dict[str, float]
    missing: dict[str, str]  # stamp -> reason (the same words for the same cause: counted)
    wall_s: float | None = None  # driver's wall-clock wait from receipt to the servo write
    details: dict[str, str] = dataclasses.field(default_factory=dict)  # stamp -> figures

    def interval(self, stage: Stage) -> float | None:
        a, b = self.stamps.get(stage.start), self.stamps.get(stage.end)
        return None if a is None or b is None else b - a

    def why(self, stage: Stage) -> str:
        return self.missing.get(stage.start) or self.missing.get(stage.end) or 'not measured'


@dataclasses.dataclass
class StageStats:
    key: str
    label: str
    n: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    missing: dict[str, int]  # reason -> chunks without this stage

    @classmethod
    def of(cls, key: str, label: str, values: Sequence[float], missing: Counter) -> StageStats:
        if not values:
            return cls(key, label, 0, None, None, None, dict(missing))
        p50, p95 = np.percentile(values, [50, 95])
        return cls(key, label, len(values), float(p50) * 1e3, float(p95) * 1e3,
                   float(np.max(values)) * 1e3, dict(missing))


@dataclasses.dataclass
class LatencyReport:
    chunks: list[ChunkLatency]
    stages: list[StageStats]
    reporters: list[str]  # diagnostics statuses that carried command records
    notes: list[str]
    unavailable: str | None = None  # why there is no analysis at all

    def stage(self, key: str) -> StageStats | None:
        return next((s for s in self.stages if s.key == key), None)

    def to_dict(self) -> dict:
        """``summary.json``'s ``latency``: the stage table (per-chunk rows: latency.csv)."""
        return {'chunks': len(self.chunks), 'unavailable': self.unavailable,
                'reporters': self.reporters, 'notes': self.notes,
                'stages': {s.key: dataclasses.asdict(s) for s in self.stages}}


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _values(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@dataclasses.dataclass
class _Trajectory:
    times: np.ndarray  # (K,) absolute, node clock
    recorded: float
    positions: np.ndarray  # (K, 6) JOINT_NAMES order

    @property
    def first_point(self) -> float:
        return float(self.times[0])

    @property
    def last_point(self) -> float:
        return float(self.times[-1])

    def at(self, times: np.ndarray) -> np.ndarray:
        """The commanded positions at ``times`` (linear between points, held at the ends)."""
        return np.stack([np.interp(times, self.times, self.positions[:, j])
                         for j in range(self.positions.shape[1])], axis=1)


class LatencyCollector:
    """Fed a bag's messages in log-time order (``feed``); ``report()`` joins them."""

    def __init__(self, namespace: str = '/', motion: MotionConfig | None = None):
        prefix = '/' + namespace.strip('/')
        prefix = prefix.rstrip('/')
        self.topics = {f'{prefix}/{t}': t for t in (STATUS, TRAJECTORY, DIAGNOSTICS,
                                                    JOINT_STATES)}
        self.motion = motion or MotionConfig()
        self.counts: Counter[str] = Counter()
        self._chunks: dict[tuple[int, float], dict[str, str]] = {}  # (seq, publish) -> values
        self._bad_chunks = 0
        self._trajectories: list[_Trajectory] = []
        self._records: dict[tuple[str, int, float], CommandRecord] = {}
        self._reporters: set[str] = set()
        self._last_diag = -np.inf
        self._bad_records = 0
        self._state_t: list[float] = []
        self._state_q: list[np.ndarray] = []

    def feed(self, topic: str, log_time_ns: int, msg: Any) -> None:
        kind = self.topics.get(topic)
        if kind is None:
            return
        self.counts[kind] += 1
        log_time = log_time_ns * 1e-9
        if kind == STATUS:
            for status in msg.status:
                values = _values(status)
                if not values.get('chunk_seq'):
                    continue
                try:  # every status after a chunk repeats its stamps: keep one
                    key = (int(values['chunk_seq']), float(values['chunk_stamp_publish']))
                except (KeyError, ValueError):
                    self._bad_chunks += 1
                    continue
                self._chunks.setdefault(key, values)
        elif kind == TRAJECTORY:
            self._feed_trajectory(msg, log_time)
        elif kind == DIAGNOSTICS:
            self._last_diag = max(self._last_diag, _seconds(msg.header.stamp))
            for status in msg.status:
                values = _values(status)
                if LOG_KEY not in values:
                    continue
                self._reporters.add(status.name)
                records, bad = parse_log(values[LOG_KEY])
                self._bad_records += bad
                for r in records:
                    self._records.setdefault((status.name, r.seq, r.received), r)
        else:
            try:
                q = measured_positions(list(msg.name), list(msg.position))
            except ValueError:
                return
            stamp = _seconds(msg.header.stamp)
            self._state_t.append(stamp if stamp > 0 else log_time)
            self._state_q.append(q)

    def _feed_trajectory(self, msg: Any, log_time: float) -> None:
        start = _seconds(msg.header.stamp)
        if start <= 0 or not msg.points:  # no stamp: its first point is not known here
            return
        names = list(msg.joint_names)
        try:
            positions = np.array([measured_positions(names, list(p.positions))
                                  for p in msg.points])
        except ValueError:
            return
        times = start + np.array([_seconds(p.time_from_start) for p in msg.points])
        self._trajectories.append(_Trajectory(times, log_time, positions))

    # -- joining ---------------------------------------------------------------------------
    def report(self) -> LatencyReport:
        if not self._chunks:
            why = ('policy/status not in the bag' if not self.counts[STATUS] else
                   'policy/status carries no chunk stamps (a policy node without them, or '
                   'no chunk was published)')
            return LatencyReport([], [], sorted(self._reporters), [], unavailable=why)
        trajectories = _ByTime(self._trajectories, lambda t: t.first_point)
        records = _ByTime([r for r in self._records.values() if r.source == 'policy'],
                          lambda r: r.first_point)
        order = np.argsort(self._state_t, kind='stable')
        state_t = np.asarray(self._state_t)[order]
        state_q = np.asarray(self._state_q).reshape(-1, len(JOINT_NAMES))[order]
        built = [self._chunk(key[0], self._chunks[key], trajectories, records)
                 for key in sorted(self._chunks, key=lambda k: k[1])]
        chunks = [chunk for chunk, _ in built]
        # motion of the chunks that ran, each until the next one took over
        ran = [(c, t) for c, t in built if t is not None and 'motion' not in c.missing]
        previous = None
        for i, (chunk, traj) in enumerate(ran):
            after = ran[i + 1][0].stamps if i + 1 < len(ran) else {}
            takeover = after.get('applied', after.get('publish', np.inf))
            motion = self._motion(traj, state_t, state_q, previous, takeover)
            if isinstance(motion, tuple):
                chunk.missing['motion'], chunk.details['motion'] = motion
            else:
                chunk.stamps['motion'] = motion
            previous = traj
        stages = []
        for stage in (*STAGES, *TOTALS):
            values, missing = [], Counter()
            for chunk in chunks:
                value = chunk.interval(stage)
                if value is None:
                    missing[chunk.why(stage)] += 1
                else:
                    values.append(value)
            stages.append(StageStats.of(stage.key, stage.label, values, missing))
        walls = [c.wall_s for c in chunks if c.wall_s is not None]
        stages.append(StageStats.of(WALL_KEY, WALL_LABEL, walls, Counter(
            c.missing.get('applied', 'not measured') for c in chunks if c.wall_s is None)))
        return LatencyReport(chunks, stages, sorted(self._reporters), self._notes())

    def _notes(self) -> list[str]:
        notes = []
        seqs = sorted({r.seq for r in self._records.values()})
        lost = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
        if lost:
            notes.append(f'{lost} driver records fell between two diagnostics messages '
                         '(raise diagnostics_rate_hz)')
        if self._bad_records:
            notes.append(f'{self._bad_records} unreadable command_log entries skipped')
        if self._bad_chunks:
            notes.append(f'{self._bad_chunks} policy/status messages with unreadable chunk '
                         'stamps skipped')
        return notes

    def _chunk(self, seq: int, values: dict[str, str], trajectories: _ByTime,
               records: _ByTime) -> tuple[ChunkLatency, _Trajectory | None]:
        """The chunk's stamps but motion; ``missing['motion']`` set where it did not run."""
        stamps: dict[str, float] = {}
        missing: dict[str, str] = {}
        images = [v for k, v in values.items() if k.startswith('chunk_stamp_image_')]
        try:
            stamps['image'] = min(float(v) for v in images)
        except ValueError:  # none, or one that is no number
            missing['image'] = 'no image stamps in policy/status'
        for name in ('state', 'inference_start', 'inference_end', 'publish', 'first_point'):
            text = values.get(f'chunk_stamp_{name}', '')
            try:
                stamps[name] = float(text)
            except ValueError:
                missing[name] = f'chunk_stamp_{name} missing in policy/status'
        chunk = ChunkLatency(seq, stamps, missing)
        first = stamps.get('first_point')
        if first is None:
            for name in ('recorded', 'received', 'applied', 'motion'):
                missing[name] = 'no first point stamp to find the chunk by'
            return chunk, None
        traj = trajectories.at(first)
        if traj is not None:
            stamps['recorded'] = traj.recorded
        else:
            missing['recorded'] = ('joint_trajectory not in the bag' if not
                                   self.counts[TRAJECTORY] else
                                   'no joint_trajectory with this first point in the bag')
        record = records.at(first)
        if record is not None:
            stamps['received'], stamps['applied'] = record.received, record.applied
            chunk.wall_s = record.wall_s
        else:
            why = self._why_no_record(stamps.get('publish', first))
            missing['received'] = missing['applied'] = why
        if traj is None:
            missing['motion'] = 'the chunk\'s points are not in the bag (joint_trajectory)'
        elif record is None and self._reporters:
            missing['motion'] = 'not applied by the arm/sim (no driver record)'
        return chunk, traj

    def _why_no_record(self, publish: float) -> str:
        if not self.counts[DIAGNOSTICS]:
            return 'diagnostics not in the bag'
        if not self._reporters:
            return ('no command_log in the arm/sim diagnostics (a driver without '
                    'command-to-servo records)')
        if publish > self._last_diag:
            return 'published after the last diagnostics message of the bag'
        return ('no arm/sim record: rejected (see rejected_* in diagnostics), superseded or '
                'dropped by a hold before a control tick (command_superseded, '
                'command_dropped), or lost between two diagnostics messages')

    def _motion(self, traj: _Trajectory, state_t: np.ndarray, state_q: np.ndarray,
                previous: _Trajectory | None, takeover: float) -> float | tuple[str, str]:
        """The first sample after the first point is due, before ``takeover`` (the next
        chunk applied) and the last point + grace, that moved toward the chunk; or why none."""
        if not len(state_t):
            return 'joint_states not in the bag', ''
        threshold = self.motion.threshold_rad
        # a sample at the due instant (to the status' microseconds) is the reference
        k = int(np.searchsorted(state_t, traj.first_point + 1e-6, side='right'))
        if k == 0:
            return 'no joint_states sample before the first point was due', ''
        q_ref = state_q[k - 1]
        far = np.linalg.norm(traj.positions - q_ref, axis=1) > threshold
        if not np.any(far):
            return f'the chunk holds position (no point {threshold} rad from the arm)', ''
        direction = traj.positions[int(np.argmax(far))] - q_ref
        direction /= np.linalg.norm(direction)
        if takeover <= traj.first_point:
            return 'the next chunk took over before the first point was due', ''
        until = min(traj.last_point + self.motion.grace_s, takeover)
        end = int(np.searchsorted(state_t, until, side='right'))
        moved = np.flatnonzero((state_q[k:end] - q_ref) @ direction > threshold)
        if len(moved):
            return float(state_t[k + int(moved[0])])
        # say how much the chunk asked for: an arm resting a tracking error away from a
        # chunk that repeats the previous one has no reason to move
        gap = float(np.linalg.norm(traj.positions[0] - q_ref))
        change = ('' if previous is None else ', it changes the command by at most '
                  f'{np.linalg.norm(traj.positions - previous.at(traj.times), axis=1).max():.3f}'
                  ' rad')
        return (f'no motion toward the chunk until the next one or its last point + '
                f'{self.motion.grace_s} s', f'the arm stays {gap:.3f} rad from its first '
                f'point{change}')


class _ByTime:
    """Items found by a time (their first point) to within ``MATCH_S``."""

    def __init__(self, items: list, key):
        self._items = sorted(items, key=key)
        self._keys = [key(i) for i in self._items]

    def at(self, t: float) -> Any:
        j = bisect.bisect_left(self._keys, t - MATCH_S)
        ok = j < len(self._items) and abs(self._keys[j] - t) <= MATCH_S
        return self._items[j] if ok else None


def analyse_bag(bag: str | Path, namespace: str = '/',
                motion: MotionConfig | None = None) -> LatencyReport:
    """Read only the latency topics of a bag and join them."""
    from eval_monitor.bag import BagReader

    collector = LatencyCollector(namespace, motion)
    reader = BagReader(bag)
    for name, _, log_time, msg in reader.messages(topics=collector.topics):
        collector.feed(name, log_time, msg)
    return collector.report()


def table_rows(report: LatencyReport) -> list[list[str]]:
    """``[stage, chunks, p50 ms, p95 ms, max ms, missing]`` rows (report and command line)."""
    def ms(value):
        return '—' if value is None else f'{value:.1f}'
    rows = []
    for s in report.stages:
        why = '; '.join(f'{n}× {reason}' for reason, n in s.missing.items())
        rows.append([s.label, str(s.n), ms(s.p50_ms), ms(s.p95_ms), ms(s.max_ms),
                     why if s.n else f'n/a ({why or "no chunks"})'])
    return rows


def write_csv(path: Path, report: LatencyReport) -> Path:
    """One row per chunk: its stamps (s) and the driver's wall-clock wait (ms)."""
    lines = [','.join(['seq', *STAMPS, 'wall_ms'])]
    for chunk in report.chunks:
        cells = [f'{chunk.stamps[s]:.6f}' if s in chunk.stamps else '' for s in STAMPS]
        wall = '' if chunk.wall_s is None else f'{chunk.wall_s * 1e3:.3f}'
        lines.append(','.join([str(chunk.seq), *cells, wall]))
    path.write_text('\n'.join(lines) + '\n')
    return path


HEADER = ['Stage', 'Chunks', 'p50 (ms)', 'p95 (ms)', 'max (ms)', 'Missing']


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m eval_monitor.latency BAG``: the latency table of a bag."""
    parser = argparse.ArgumentParser(prog='python -m eval_monitor.latency',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('bag', type=Path)
    parser.add_argument('--namespace', default='/')
    parser.add_argument('--threshold-rad', type=float, default=MotionConfig.threshold_rad,
                        help='motion counts above this (rad, toward the chunk)')
    args = parser.parse_args(argv)
    try:
        report = analyse_bag(args.bag, args.namespace, MotionConfig(args.threshold_rad))
    except FileNotFoundError as exc:
        print(f'latency: {exc}', file=sys.stderr)
        return 2
    if report.unavailable:
        print(f'latency unavailable: {report.unavailable}')
        return 0
    print(f'{len(report.chunks)} chunks; driver records from {report.reporters or "none"}')
    for row in table_rows(report):
        print(f'{row[0]:<58} n={row[1]:>5}  p50 {row[2]:>8}  p95 {row[3]:>8}  max {row[4]:>8}'
              + (f'  {row[5]}' if row[5] else ''))
    for note in report.notes:
        print(f'note: {note}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
