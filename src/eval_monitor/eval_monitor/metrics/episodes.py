"""Bookkeeping of the stream: input counts, episode spans, the event log, interventions.

The layer under the detector and the summary. It knows which episode a stamp falls in and
stamps every event with it when the event is made; because a mark can arrive after the
joint states of its episode, :attr:`EpisodeLog.events` assigns them again from the final
spans (package docstring, "Which episode an event belongs to"). It also holds the open
intervention (events made during one say so) and the trajectory stamps, counted per episode
by the summary. It knows nothing of the gripper.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field, replace

from eval_monitor.metrics.definitions import (EpisodeOrderError, EvalEvent, EventKind,
                                              TrajectorySource, jsonable)
from so101_driver.eval_topics import EpisodeMark


@dataclass
class InputLog:
    """What came in per topic: counts, the last stamp, out-of-order and malformed messages."""

    last_stamp: dict[str, float] = field(default_factory=dict)
    messages: Counter[str] = field(default_factory=Counter)
    out_of_order: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    finished_at: float | None = None  # stamp of MetricEngine.finish, None before it

    def in_order(self, topic: str, stamp: float) -> bool:
        """Count a message; False (and counted) when stamped before the previous one."""
        self.messages[topic] += 1
        if not math.isfinite(stamp):
            self.problems[f'{topic}: non-finite stamp'] += 1
            return False
        last = self.last_stamp.get(topic)
        if last is not None and stamp < last:
            self.out_of_order[topic] += 1
            return False
        self.last_stamp[topic] = stamp
        return True


@dataclass
class Episode:
    index: int
    start: float
    end: float | None = None
    success: bool | None = None
    source: str = ''
    note: str = ''
    held_at_end: bool = False


class EpisodeLog:
    """Episode spans, every event with its anchor, the open intervention, trajectory stamps.

    Episode marks are split in a check (raises :class:`EpisodeOrderError`, changes nothing)
    and the change itself, so the engine can end the detector's holds in between: those
    events must be made before the span opens or closes.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[EvalEvent, float]] = []  # (event, anchor stamp)
        self.episodes: list[Episode] = []
        self._starts: list[float] = []  # episode start stamps (sorted), for bisect
        self.override_active = False  # an intervention is open
        self.override_start: float | None = None
        self.trajectories: list[tuple[float, TrajectorySource]] = []

    def episode_of(self, anchor: float) -> int | None:
        """1-based index of the episode whose [start, end] holds ``anchor`` (later wins)."""
        i = bisect.bisect_right(self._starts, anchor) - 1
        if i < 0:
            return None
        ep = self.episodes[i]
        if ep.end is None or anchor <= ep.end:
            return ep.index
        return None

    def emit(self, out: list[EvalEvent], kind: EventKind, stamp: float,
             data: dict | None = None, anchor: float | None = None) -> None:
        """Make an event (episode from its anchor, intervention noted), log it, add to out."""
        anchor = stamp if anchor is None else anchor
        data = dict(data or {})
        if self.override_active:
            data.setdefault('during_intervention', True)
        self.record(out, EvalEvent(kind, float(stamp), self.episode_of(anchor), jsonable(data)),
                    anchor)

    def record(self, out: list[EvalEvent], event: EvalEvent, anchor: float) -> None:
        """Log an event made elsewhere (a place decided later keeps its own data)."""
        self.entries.append((event, anchor))
        out.append(event)

    @property
    def events(self) -> list[EvalEvent]:
        """All events so far, episodes assigned from the final spans (package docstring)."""
        result = []
        for event, anchor in self.entries:
            episode = self.episode_of(anchor)
            result.append(event if episode == event.episode else replace(event, episode=episode))
        return result

    # ------------------------------------------------------------------------------------
    # episodes
    def check_start(self, t: float) -> None:
        """Raise EpisodeOrderError if an episode cannot start at ``t``."""
        current = self.episodes[-1] if self.episodes else None
        if current is not None and current.end is None:
            raise EpisodeOrderError(
                f'episode start at t={t:.3f} s while episode {current.index} (started at '
                f't={current.start:.3f} s) is still open; end it first')
        if current is not None and t < current.end:
            raise EpisodeOrderError(
                f'episode start at t={t:.3f} s is before the end of episode '
                f'{current.index} at t={current.end:.3f} s')

    def start(self, out: list[EvalEvent], t: float, mark: EpisodeMark) -> None:
        """Open the next episode at ``t`` (after check_start)."""
        ep = Episode(index=len(self.episodes) + 1, start=t, source=mark.source, note=mark.note)
        self.episodes.append(ep)
        self._starts.append(t)
        self.emit(out, EventKind.EPISODE_START, t,
                  {'source': mark.source, 'note': mark.note, 'mark_episode': mark.episode})

    def check_end(self, t: float) -> Episode:
        """The open episode, which can end at ``t``; else raise EpisodeOrderError."""
        current = self.episodes[-1] if self.episodes else None
        if current is None or current.end is not None:
            last = (f'; the last episode, {current.index}, ended at t={current.end:.3f} s'
                    if current is not None else '; no episode was started')
            raise EpisodeOrderError(f'episode end at t={t:.3f} s without a start (no episode '
                                    f'is open{last})')
        if t < current.start:
            raise EpisodeOrderError(f'episode end at t={t:.3f} s is before the start of '
                                    f'episode {current.index} at t={current.start:.3f} s')
        return current

    def end(self, out: list[EvalEvent], t: float, mark: EpisodeMark) -> None:
        """Close the open episode at ``t`` with the mark's success (after check_end)."""
        current = self.episodes[-1]
        current.end, current.success = t, bool(mark.success)
        if mark.note:
            current.note = (current.note + '; ' if current.note else '') + mark.note
        self.emit(out, EventKind.EPISODE_END, t,
                  {'success': current.success, 'duration_s': t - current.start,
                   'source': mark.source, 'note': mark.note, 'mark_episode': mark.episode},
                  anchor=current.start)

    # ------------------------------------------------------------------------------------
    # interventions
    def override(self, out: list[EvalEvent], stamp: float, active: bool,
                 start_data: dict) -> None:
        """One override value: a rising edge starts an intervention (with start_data), a
        falling edge ends it; a repeated value is no edge."""
        if active and not self.override_active:
            self.emit(out, EventKind.INTERVENTION_START, stamp, start_data)
            self.override_active, self.override_start = True, float(stamp)
        elif not active and self.override_active:
            self.end_intervention(out, float(stamp), 'falling_edge')

    def end_intervention(self, out: list[EvalEvent], t: float, closed_by: str) -> None:
        start = self.override_start
        self.override_active, self.override_start = False, None
        self.emit(out, EventKind.INTERVENTION_END, t,
                  {'duration_s': t - start, 'start_stamp': start, 'closed_by': closed_by},
                  anchor=start)
