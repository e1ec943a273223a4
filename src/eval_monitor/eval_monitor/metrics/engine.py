"""The metric engine: message contents in, evaluation events and a summary out (no rclpy).

:class:`MetricEngine` is the one object the monitor node and offline evaluation feed. It
checks each message's stamp against its topic (package docstring, "Timing"), picks the
gripper out of ``joint_states`` and hands each content to the layer it concerns: the
:class:`~eval_monitor.metrics.detector.GraspDetector` (gripper, sim truth), the
:class:`~eval_monitor.metrics.episodes.EpisodeLog` (marks, override, trajectories) and the
:class:`~eval_monitor.metrics.summary.TruthLog`. Where a message concerns more than one (an
episode boundary ends the detector's holds, an intervention start says whether the gripper
holds, the stream end closes them all), the engine calls them in the order the definitions
need.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from eval_monitor.metrics.definitions import (TOPIC_EPISODE, TOPIC_JOINT_STATES,
                                              TOPIC_OVERRIDE, TOPIC_TRUTH, DetectorConfig,
                                              EvalEvent, Summary, TrajectorySource)
from eval_monitor.metrics.detector import GraspDetector
from eval_monitor.metrics.episodes import EpisodeLog, InputLog
from eval_monitor.metrics.summary import TruthLog, build_summary
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark, SimTruth


def _finite_at(values: Sequence[float] | None, index: int) -> float | None:
    if values is None or len(values) <= index:
        return None
    value = float(values[index])
    return value if math.isfinite(value) else None


class MetricEngine:
    """Turns message contents, fed in time order, into evaluation events and a summary.

    Each feeder takes one message's content and returns the events it caused (see the
    package docstring for the definitions).
    """

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self._inputs = InputLog()
        self._log = EpisodeLog()
        self._detector = GraspDetector(self.config, self._log)
        self._truth = TruthLog()

    # ------------------------------------------------------------------------------------
    # feeders
    def joint_state(self, stamp: float, names: Sequence[str], position: Sequence[float],
                    velocity: Sequence[float] | None = None,
                    effort: Sequence[float] | None = None) -> list[EvalEvent]:
        """One ``joint_states`` message (gripper angle in rad, velocity rad/s, effort N·m)."""
        out: list[EvalEvent] = []
        topic = TOPIC_JOINT_STATES
        if not self._inputs.in_order(topic, stamp):
            return out
        try:
            index = list(names).index(self.config.gripper_joint)
        except ValueError:
            self._inputs.problems[f'{topic}: no joint named {self.config.gripper_joint!r}'] += 1
            return out
        angle = _finite_at(position, index)
        if angle is None:
            self._inputs.problems[f'{topic}: {self.config.gripper_joint} position missing or '
                                  'not finite'] += 1
            return out
        self._detector.sample(out, float(stamp), angle, _finite_at(velocity, index),
                              _finite_at(effort, index))
        return out

    def override(self, stamp: float, active: bool) -> list[EvalEvent]:
        """One ``teleop/override`` message: edges start and end interventions."""
        out: list[EvalEvent] = []
        if not self._inputs.in_order(TOPIC_OVERRIDE, stamp):
            return out
        self._log.override(out, stamp, bool(active),
                           {'holding': self._detector.holding,
                            'gripper_state': self._detector.state.value})
        return out

    def episode(self, mark: EpisodeMark | str) -> list[EvalEvent]:
        """One ``eval/episode`` mark (or its JSON); raises EpisodeOrderError out of order."""
        if isinstance(mark, str):
            mark = EpisodeMark.from_json(mark)
        out: list[EvalEvent] = []
        t = float(mark.stamp)
        if mark.event is EpisodeEvent.START:
            self._log.check_start(t)
            self._inputs.messages[TOPIC_EPISODE] += 1
            self._detector.boundary(out, t, None)
            self._log.start(out, t, mark)
            return out
        current = self._log.check_end(t)
        self._inputs.messages[TOPIC_EPISODE] += 1
        if self._detector.boundary(out, t, bool(mark.success)):
            current.held_at_end = True
        self._log.end(out, t, mark)
        return out

    def truth(self, truth: SimTruth | str) -> list[EvalEvent]:
        """One ``sim/truth`` message: held spans for agreement, in_bowl for places."""
        if isinstance(truth, str):
            truth = SimTruth.from_json(truth)
        out: list[EvalEvent] = []
        t = float(truth.stamp)
        if not self._inputs.in_order(TOPIC_TRUTH, t):
            return out
        self._truth.observe(t, truth)
        self._detector.truth(out, t, truth)
        return out

    def trajectory(self, stamp: float, source: str | TrajectorySource) -> list[EvalEvent]:
        """One joint trajectory from the policy or the teleop (counted per episode only)."""
        try:
            source = TrajectorySource(source)
        except ValueError:
            raise ValueError(f'trajectory source must be one of '
                             f'{[s.value for s in TrajectorySource]}, got {source!r}') from None
        self._inputs.messages[f'trajectory/{source.value}'] += 1
        if math.isfinite(stamp):
            self._log.trajectories.append((float(stamp), source))
        return []

    def finish(self, stamp: float) -> list[EvalEvent]:
        """End of stream: close open spans (intervention, pending place, hold); no episode end."""
        out: list[EvalEvent] = []
        t = float(stamp)
        if self._log.override_active:
            self._log.end_intervention(out, max(t, self._log.override_start), 'stream_end')
        self._detector.finish(out, t)
        self._truth.finish(t)
        self._inputs.finished_at = t
        return out

    # ------------------------------------------------------------------------------------
    # results
    @property
    def events(self) -> list[EvalEvent]:
        """All events so far, episodes assigned from the final spans (package docstring)."""
        return self._log.events

    @property
    def gripper_trace(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps, gripper rad) decimated to at most ``trace_rate_hz`` (50 Hz), for plots."""
        return self._detector.trace

    @property
    def holds(self) -> list[tuple[float, float | None, str]]:
        """Successful grasps as (attempt stamp, end stamp or None, ended_by), for plots."""
        return [(h.start, h.end, h.ended_by) for h in self._detector.holds]

    @property
    def empty_closed_rad(self) -> float:
        """The empty-closed angle in use (configured or learned)."""
        return self._detector.empty_closed

    def summary(self, missing_topics: Iterable[str] = (),
                skipped: Iterable[str] = ()) -> Summary:
        """Counts, rates and per-episode rows (package docstring: scope and availability)."""
        return build_summary(self.config, self._log, self._detector, self._truth,
                             self._inputs, missing_topics, skipped)
