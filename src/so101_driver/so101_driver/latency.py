"""Command-to-servo latency: when an accepted trajectory's first setpoint reached the servos.

The policy stamps every chunk up to its publish (``pi05_policy.stamps``); what happens after
is only visible to the node that drives the joints. ``trajectory.ArmController`` keeps a
``CommandLatencyLog``: on acceptance it notes the trajectory (its header stamp, when its
first point is due, the receipt time), and the next control tick whose goal comes from the
new plan completes the record with the tick's time. Both times are the caller's node clock
(sim time in the simulation, where a trajectory taken between two ticks is applied at the
very sim instant it arrived), so the log also keeps the wall-clock wait (monotonic) between
the two: the executor and lock delay, which sim time cannot show.

The arm and the simulation put ``values()`` into their ``diagnostics``: live p50/p95 per
source and ``command_log``, the last ``LOG_RECORDS`` records as text, so a bag of
``diagnostics`` at 1 Hz holds every record while trajectories come at up to ~60 Hz.
``parse_log`` reads them back (``eval_monitor.latency`` joins them to the policy's chunks).

No rclpy: the controller core, the recorder's offline reader and the tests share it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Records the percentiles are taken over, per source.
HISTORY = 200
#: Records carried by each diagnostics message (``command_log``).
LOG_RECORDS = 64
SOURCES = ('policy', 'teleop')
#: Intervals with live percentiles: name -> (from field, to field).
INTERVALS = {'received_to_applied': ('received', 'applied'),
             'applied_to_first_point': ('applied', 'first_point')}
LOG_KEY = 'command_log'


@dataclass(frozen=True)
class CommandRecord:
    """One accepted trajectory on its way to the servos; seconds on the node clock."""

    seq: int  # records completed before this one (all sources)
    source: str  # 'policy' or 'teleop'
    start: float | None  # header stamp (None: the trajectory starts on receipt)
    first_point: float  # when its first point is due
    received: float  # node clock when the controller accepted it
    applied: float  # node clock of the first control tick whose goal came from it
    wall_s: float  # wall-clock (monotonic) seconds from acceptance to that tick

    def interval(self, name: str) -> float:
        a, b = INTERVALS[name]
        return getattr(self, b) - getattr(self, a)

    def to_text(self) -> str:
        start = '-' if self.start is None else f'{self.start:.6f}'
        return (f'{self.seq} {self.source} {start} {self.first_point:.6f} '
                f'{self.received:.6f} {self.applied:.6f} {self.wall_s * 1e3:.3f}')

    @classmethod
    def from_text(cls, text: str) -> CommandRecord:
        """Inverse of ``to_text``; ValueError for anything else."""
        parts = text.split()
        if len(parts) != 7:
            raise ValueError(f'a command record has 7 fields, got {len(parts)}: {text!r}')
        seq, source, start, first, received, applied, wall_ms = parts
        return cls(seq=int(seq), source=source, start=None if start == '-' else float(start),
                   first_point=float(first), received=float(received), applied=float(applied),
                   wall_s=float(wall_ms) * 1e-3)


def parse_log(text: str) -> tuple[list[CommandRecord], int]:
    """The records of a ``command_log`` value, and how many entries could not be read."""
    records, bad = [], 0
    for entry in filter(None, (e.strip() for e in text.split(';'))):
        try:
            records.append(CommandRecord.from_text(entry))
        except ValueError:
            bad += 1
    return records, bad


def percentiles_ms(values: Iterable[float]) -> tuple[str, str]:
    """(p50, p95) in ms as diagnostics strings; '' for no values."""
    values = list(values)
    if not values:
        return '', ''
    p50, p95 = np.percentile(values, [50, 95])
    return f'{p50 * 1e3:.2f}', f'{p95 * 1e3:.2f}'


class CommandLatencyLog:
    """Pending trajectory plus the completed records (thread-safe: a control loop writes,
    a diagnostics timer on another thread reads)."""

    def __init__(self, history: int = HISTORY, log_records: int = LOG_RECORDS):
        self._lock = threading.Lock()
        self._pending: tuple[str, float | None, float, float, float] | None = None
        self._recent: deque[CommandRecord] = deque(maxlen=log_records)
        self._history = {s: deque(maxlen=history) for s in SOURCES}
        self.completed = 0  # records made
        self.superseded = 0  # accepted, then replaced before any tick applied it
        self.dropped = 0  # accepted, then thrown away by a hold (override edge, reconnect)

    def accepted(self, source: str, start: float | None, first_point: float,
                 received: float) -> None:
        """A trajectory was spliced into the plan at ``received`` (node clock)."""
        with self._lock:
            if self._pending is not None:
                self.superseded += 1
            self._pending = (source, start, first_point, received, time.monotonic())

    def drop_pending(self) -> None:
        """The plan was replaced by a hold before the pending trajectory ran."""
        with self._lock:
            if self._pending is not None:
                self.dropped += 1
                self._pending = None

    def applied(self, now: float) -> CommandRecord | None:
        """A control tick at ``now`` sent a goal from the current plan: completes the
        pending record (cheap when none is pending: one attribute test, no lock)."""
        if self._pending is None:
            return None
        with self._lock:
            if self._pending is None:
                return None
            source, start, first, received, wall = self._pending
            self._pending = None
            record = CommandRecord(seq=self.completed, source=source, start=start,
                                   first_point=first, received=received, applied=now,
                                   wall_s=time.monotonic() - wall)
            self.completed += 1
            self._recent.append(record)
            self._history.setdefault(source, deque(maxlen=HISTORY)).append(record)
        return record

    def records(self) -> list[CommandRecord]:
        """The last ``LOG_RECORDS`` records, oldest first."""
        with self._lock:
            return list(self._recent)

    def values(self) -> dict[str, str]:
        """Diagnostics keys: counters, p50/p95 per source and interval (node clock, and the
        wall-clock wait as ``received_to_applied_wall``), and ``command_log``."""
        with self._lock:
            history = {s: list(h) for s, h in self._history.items()}
            recent = list(self._recent)
            out = {'command_records': str(self.completed),
                   'command_superseded': str(self.superseded),
                   'command_dropped': str(self.dropped)}
        for source, records in history.items():
            prefix = f'command_{source}_'
            for name in INTERVALS:
                p50, p95 = percentiles_ms(r.interval(name) for r in records)
                out[f'{prefix}{name}_p50_ms'], out[f'{prefix}{name}_p95_ms'] = p50, p95
            p50, p95 = percentiles_ms(r.wall_s for r in records)
            out[f'{prefix}received_to_applied_wall_p50_ms'] = p50
            out[f'{prefix}received_to_applied_wall_p95_ms'] = p95
        out[LOG_KEY] = ';'.join(r.to_text() for r in recent)
        return out
