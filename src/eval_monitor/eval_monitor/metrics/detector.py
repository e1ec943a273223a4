"""The grasp/drop detector: the gripper state machine behind attempts, grasps, drops, places.

:class:`GraspDetector` implements the package docstring's "Gripper" definitions. The engine
feeds it every valid gripper sample and every sim truth message, and tells it where episodes
start and end (:meth:`GraspDetector.boundary`: no hold crosses one). It makes its events
through the :class:`~eval_monitor.metrics.episodes.EpisodeLog` it is given, which assigns
the episode and notes a running intervention, and keeps the successful holds for the truth
agreement and the plots.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np

from eval_monitor.metrics.definitions import DetectorConfig, EvalEvent, EventKind, jsonable
from eval_monitor.metrics.episodes import EpisodeLog
from so101_driver.eval_topics import SimTruth


class GripperState(Enum):
    """Detector state."""

    UNKNOWN = 'unknown'  # no sample yet
    OPEN = 'open'  # armed: the next close is an attempt
    CLOSING = 'closing'  # below open, waiting for rest
    HOLD_PENDING = 'hold_pending'  # at rest short of empty, waiting hold_s
    HOLDING = 'holding'  # a successful grasp
    CLOSED = 'closed'  # closed (empty, failed or after a hold): must open first


@dataclass
class Hold:
    """A successful grasp's span, for truth agreement and plots."""

    start: float  # attempt stamp
    success: float  # stamp of the success decision
    end: float | None = None  # drop / place / boundary / stream end
    ended_by: str = ''
    # after a release: the jaws closed to empty-closed before opening to open_rad (a grip
    # that relaxed and closed again: the cube fell out), False: opened first; None: unknown
    reclosed: bool | None = None


class GraspDetector:
    """Turns gripper samples (and sim truth, for places) into grasp events and holds."""

    def __init__(self, config: DetectorConfig, log: EpisodeLog):
        self.config = config
        self._log = log
        self.state = GripperState.UNKNOWN
        self.empty_closed = config.empty_closed_rad  # configured, or learned
        self.learned_from: list[float] = []
        self._rest_start: float | None = None
        self._rest_efforts: list[float] = []
        self._rest_judged = False
        self.partial_closes = 0
        self._rest_min = self._rest_max = 0.0
        self._attempt_stamp: float | None = None
        self._hold_min = 0.0
        self._hold_efforts: list[float] = []
        self.holds: list[Hold] = []
        self.samples = 0  # valid gripper angles fed
        self.effort_seen = False  # a non-zero gripper effort was fed
        self._pending_release: dict | None = None
        self._truth_last: SimTruth | None = None
        self._trace_t: list[float] = []
        self._trace_q: list[float] = []
        self._open_peak: float | None = None  # peak of the current or last opening
        self._opening = False  # inside an opening (reached open_rad, not closed since)
        self._watch: tuple[Hold, float] | None = None  # released hold, release stamp

    @property
    def _empty_limit(self) -> float:
        return self.empty_closed + self.config.empty_margin_rad

    @property
    def holding(self) -> bool:
        """Whether a grasp is held or waiting for its hold time."""
        return self.state in (GripperState.HOLDING, GripperState.HOLD_PENDING)

    @property
    def trace(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps, gripper rad) decimated to at most ``trace_rate_hz``."""
        return np.asarray(self._trace_t, dtype=float), np.asarray(self._trace_q, dtype=float)

    def effort_used(self) -> bool:
        """Whether effort takes part in the decisions (published and use_effort on)."""
        return self.config.use_effort and self.effort_seen

    # ------------------------------------------------------------------------------------
    # inputs
    def sample(self, out: list[EvalEvent], t: float, q: float, v: float | None,
               e: float | None) -> None:
        """One gripper sample: angle (rad), velocity (rad/s) and effort (N·m) if reported."""
        self.samples += 1
        if e is not None and e != 0.0:
            self.effort_seen = True
        # 1e-6 s of slack: stamps like i * 0.01 are not exact in binary floating point
        if (not self._trace_t
                or t - self._trace_t[-1] >= 1.0 / self.config.trace_rate_hz - 1e-6):
            self._trace_t.append(t)
            self._trace_q.append(q)
        self._track_opening(q)
        self._step(out, t, q, v, e)

    def truth(self, out: list[EvalEvent], t: float, truth: SimTruth) -> None:
        """One sim truth message: the cube position for places, in_bowl for a pending one."""
        self._truth_last = truth
        pending = self._pending_release
        if pending is not None and t >= pending['stamp']:
            if truth.in_bowl:
                self._resolve_release(out, True, 'in_bowl (sim truth)')
            elif truth.dropped:
                self._resolve_release(out, False, 'dropped (sim truth)')
            elif t - pending['stamp'] > self.config.place_window_s:
                self._resolve_release(out, False, 'not_in_bowl (sim truth)')

    def boundary(self, out: list[EvalEvent], t: float, success: bool | None) -> bool:
        """An episode starts (success None) or ends: no hold crosses it (package docstring).

        Returns whether a held grasp ended here (at an episode end: ``held_at_end``).
        """
        self._watch = None
        if self._pending_release is not None and success is not None:
            in_bowl = self._truth_last is not None and self._truth_last.in_bowl
            self._resolve_release(out, in_bowl or success,
                                  'in_bowl (sim truth)' if in_bowl else
                                  ('episode_success' if success else 'not_in_bowl_at_end'))
        if self.state is GripperState.HOLD_PENDING:
            self._fail(out, t, 'episode_boundary', None)
        elif self.state is GripperState.HOLDING:
            self._end_hold(t, 'episode_end' if success is not None else 'episode_start')
            self.state = GripperState.CLOSED
            return True
        return False

    def finish(self, out: list[EvalEvent], t: float) -> None:
        """End of stream: decide a pending place, end the hold (no state change after)."""
        if self._pending_release is not None:
            self._resolve_release(out, True, 'unconfirmed (stream ended)')
        if self.state is GripperState.HOLD_PENDING:
            self._fail(out, t, 'stream_end', None)
        elif self.state is GripperState.HOLDING:
            self._end_hold(t, 'stream_end')

    def describe(self) -> dict:
        """The summary's ``detector`` entry: config, empty-closed angle and its source."""
        cfg = jsonable(asdict(self.config))
        learned = len(self.learned_from) >= self.config.learn_closes
        source = 'learned' if learned else 'configured'
        if self.config.learn_empty_closed and not learned:
            source = (f'configured (learning saw {len(self.learned_from)} of '
                      f'{self.config.learn_closes} empty closes outside episodes)')
        return {'config': cfg, 'empty_closed_rad': self.empty_closed,
                'empty_closed_source': source, 'learned_from_rad': list(self.learned_from),
                'effort_used': self.effort_used(),
                'partial_closes': self.partial_closes}

    # ------------------------------------------------------------------------------------
    # state machine
    def _step(self, out: list[EvalEvent], t: float, q: float, v: float | None,
              e: float | None) -> None:
        cfg = self.config
        state = self.state
        if state is GripperState.UNKNOWN:
            self.state = GripperState.OPEN if q >= cfg.open_rad else GripperState.CLOSED
        elif state is GripperState.OPEN:
            if q < cfg.open_rad - cfg.open_hysteresis_rad:
                self.state = GripperState.CLOSING
                self._rest_start = None
                self._at_rest(t, q, v, e)
        elif state is GripperState.CLOSING:
            if q >= cfg.open_rad:
                self.state = GripperState.OPEN  # reopened before resting: no attempt
            elif self._at_rest(t, q, v, e) and not self._rest_judged:
                self._rest_judged = True
                self._judge_rest(out, t, q)
        elif state is GripperState.HOLD_PENDING:
            self._hold_min = min(self._hold_min, q)
            if q <= self._empty_limit:
                self._fail(out, t, 'closed_to_empty', q)
            elif q >= self._hold_min + cfg.release_delta_rad or q >= cfg.open_rad:
                self._fail(out, t, 'reopened', q)
                self.state = GripperState.OPEN if q >= cfg.open_rad else GripperState.CLOSED
            else:
                if e is not None:
                    self._hold_efforts.append(abs(e))
                if t - self._attempt_stamp >= cfg.hold_s:
                    self._decide_hold(out, t, q)
        elif state is GripperState.HOLDING:
            self._hold_min = min(self._hold_min, q)
            if q <= self._empty_limit:
                self._closed_to_empty(out, t, q)
                self.state = GripperState.CLOSED
            elif q >= self._hold_min + cfg.release_delta_rad:
                self._release(out, t, q)
                self.state = GripperState.OPEN if q >= cfg.open_rad else GripperState.CLOSED
                self._watch = (self.holds[-1], t)
                self._watch_release(t, q)
        elif state is GripperState.CLOSED:
            self._watch_release(t, q)
            if q >= cfg.open_rad:
                self.state = GripperState.OPEN

    def _watch_release(self, t: float, q: float) -> None:
        """After a release: did the jaws close to empty-closed (``Hold.reclosed``) before
        opening to open_rad, within place_window_s?"""
        if self._watch is None:
            return
        hold, since = self._watch
        if q <= self._empty_limit:
            hold.reclosed, self._watch = True, None
        elif q >= self.config.open_rad or t - since > self.config.place_window_s:
            hold.reclosed, self._watch = False, None

    def _track_opening(self, q: float) -> None:
        """The peak of each opening: from reaching open_rad (after a close) to the next close
        below open_rad - open_hysteresis_rad; the attempt after it reports it as open_rad."""
        cfg = self.config
        if q >= cfg.open_rad:
            if not self._opening:
                self._opening, self._open_peak = True, q
            else:
                self._open_peak = max(self._open_peak, q)
        elif q < cfg.open_rad - cfg.open_hysteresis_rad:
            self._opening = False

    def _at_rest(self, t: float, q: float, v: float | None, e: float | None) -> bool:
        """Whether the gripper has been at rest for settle_s (band + reported velocity).

        A new rest window (after movement) clears the efforts collected over the window and
        the flag saying this rest was already judged.
        """
        cfg = self.config
        moving = v is not None and abs(v) > cfg.rest_velocity_rad_s
        if moving:
            self._rest_start = None
            return False
        if (self._rest_start is None
                or max(self._rest_max, q) - min(self._rest_min, q) > cfg.rest_band_rad):
            self._rest_start, self._rest_min, self._rest_max = t, q, q
            self._rest_efforts = []
            self._rest_judged = False
        else:
            self._rest_min, self._rest_max = min(self._rest_min, q), max(self._rest_max, q)
        if e is not None:
            self._rest_efforts.append(abs(e))
        return t - self._rest_start >= cfg.settle_s

    def _learning_close(self, t: float, q: float) -> bool:
        cfg = self.config
        return (cfg.learn_empty_closed and len(self.learned_from) < cfg.learn_closes
                and self._log.episode_of(t) is None
                and abs(q - cfg.empty_closed_rad) <= cfg.learn_window_rad)

    def _judge_rest(self, out: list[EvalEvent], t: float, q: float) -> None:
        """The gripper came to rest after a close: an attempt, or only a partial close."""
        cfg = self.config
        if (not self._learning_close(t, q) and q > self._empty_limit
                and self.effort_used() and self._rest_efforts
                and statistics.median(self._rest_efforts) < cfg.effort_threshold_nm):
            # stopped short of closed without squeezing anything: a gripper commanded to a
            # half-open pose, not a grasp; keep watching for the rest of the close
            self.partial_closes += 1
            return
        self._attempt(out, t, q)

    def _attempt(self, out: list[EvalEvent], t: float, q: float) -> None:
        cfg = self.config
        self._attempt_stamp = t
        learning = self._learning_close(t, q)
        data = {'gripper_rad': q, 'rest_since': self._rest_start, 'open_rad': self._open_peak}
        if learning:
            data['learning'] = True
        self._log.emit(out, EventKind.GRASP_ATTEMPT, t, data)
        if learning:
            self.learned_from.append(q)
            if len(self.learned_from) == cfg.learn_closes:
                self.empty_closed = float(statistics.median(self.learned_from))
            self._fail(out, t, 'learning', q, learning=True)
        elif q <= self._empty_limit:
            self._fail(out, t, 'empty_close', q)
        else:
            self.state = GripperState.HOLD_PENDING
            self._hold_min = q
            self._hold_efforts = []

    def _fail(self, out: list[EvalEvent], t: float, reason: str, q: float | None,
              learning: bool = False) -> None:
        data = {'reason': reason, 'gripper_rad': q, 'attempt_stamp': self._attempt_stamp,
                'empty_closed_rad': self.empty_closed}
        if learning:
            data['learning'] = True
        self._log.emit(out, EventKind.GRASP_FAILED, t, data, anchor=self._attempt_stamp)
        self.state = GripperState.CLOSED

    def _decide_hold(self, out: list[EvalEvent], t: float, q: float) -> None:
        cfg = self.config
        effort = (float(statistics.median(self._hold_efforts))
                  if self.effort_seen and self._hold_efforts else None)
        if self.effort_used() and effort is not None and effort < cfg.effort_threshold_nm:
            self._fail(out, t, 'no_grip_effort', q)
            return
        signal = 'angle+effort' if self.effort_used() and effort is not None else 'angle'
        self._log.emit(out, EventKind.GRASP_SUCCESS, t,
                       {'gripper_rad': q, 'effort_nm': effort, 'signal': signal,
                        'attempt_stamp': self._attempt_stamp,
                        'empty_closed_rad': self.empty_closed}, anchor=self._attempt_stamp)
        self.holds.append(Hold(start=self._attempt_stamp, success=t))
        self.state = GripperState.HOLDING

    def _end_hold(self, t: float, ended_by: str) -> None:
        if self.holds and self.holds[-1].end is None:
            self.holds[-1].end = t
            self.holds[-1].ended_by = ended_by

    def _release(self, out: list[EvalEvent], t: float, q: float) -> None:
        """Opening while holding: place or drop, decided where the cube is (docstring)."""
        cfg = self.config
        attempt = self._attempt_stamp
        base = {'gripper_rad': q, 'attempt_stamp': attempt}
        truth = self._truth_last
        if cfg.bowl_center_xy is not None and truth is not None:
            self._end_hold(t, 'release')
            dx = truth.cube_position[0] - cfg.bowl_center_xy[0]
            dy = truth.cube_position[1] - cfg.bowl_center_xy[1]
            inside = math.hypot(dx, dy) <= cfg.bowl_radius_m
            base['location'] = 'bowl_region' if inside else 'outside_bowl_region'
            if inside:
                self._log.emit(out, EventKind.PLACE, t, base, anchor=attempt)
            else:
                self._log.emit(out, EventKind.DROP, t,
                               {**base, 'reason': 'released_outside_bowl'}, anchor=attempt)
        elif truth is not None:
            self._end_hold(t, 'release')
            self._pending_release = {**base, 'stamp': t,
                                     'during_intervention': self._log.override_active or None}
        else:
            self._end_hold(t, 'release')
            self._log.emit(out, EventKind.PLACE, t, {**base, 'location': 'unknown'},
                           anchor=attempt)

    def _closed_to_empty(self, out: list[EvalEvent], t: float, q: float) -> None:
        """The jaws closed to empty while holding: the object left them. A drop, unless the
        sim truth shows the cube landing in the bowl (it slid out over the bowl: a place),
        decided like a release (package docstring)."""
        attempt = self._attempt_stamp
        base = {'gripper_rad': q, 'attempt_stamp': attempt, 'reason': 'closed_to_empty'}
        self._end_hold(t, 'drop')
        if self._truth_last is not None and self.config.bowl_center_xy is None:
            self._pending_release = {**base, 'stamp': t,
                                     'during_intervention': self._log.override_active or None}
            return
        self._log.emit(out, EventKind.DROP, t, base, anchor=attempt)

    def _resolve_release(self, out: list[EvalEvent], place: bool, location: str) -> None:
        pending, self._pending_release = self._pending_release, None
        t = pending.pop('stamp')
        if not pending.get('during_intervention'):
            pending.pop('during_intervention', None)
        kind = EventKind.PLACE if place else EventKind.DROP
        reason = pending.pop('reason', 'released_outside_bowl')
        data = {**pending, 'location': location}
        if not place:
            data['reason'] = reason
        anchor = pending['attempt_stamp']
        event = EvalEvent(kind, t, self._log.episode_of(anchor), jsonable(data))
        self._log.record(out, event, anchor)
