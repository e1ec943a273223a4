"""The message-to-engine mapping shared by the live monitor node and offline evaluation.

:class:`EngineFeeder` turns one message of an evaluation topic into a
:class:`~eval_monitor.metrics.MetricEngine` call. The live monitor node and the offline
evaluation (``so101-eval``) both use it, so the same messages give the same numbers. Which
time each message gets (the one thing that could differ between live and offline):

- ``joint_states`` and trajectories: their ``header.stamp`` (a trajectory with a zero stamp
  means "on receipt", so it gets the receive time);
- ``eval/episode`` and ``sim/truth``: the ``stamp`` inside the JSON payload (publisher's clock);
- ``teleop/override`` (std_msgs/Bool has no stamp): the receive time. Live that is the
  monitor's node clock in the callback, offline the bag's log time, which the recorder sets
  to its node clock on receipt; the two differ by the delivery latency difference between
  the two subscribers (well under a millisecond on one host).

Messages are fed in arrival order live and in log-time (receive) order offline, which is the
same order. ``detector_config`` builds the detector's settings from ROS parameters or YAML
for both. No rclpy here.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from enum import Enum
from typing import Any

from so101_driver.eval_topics import EpisodeMark, PayloadError, SimTruth

from eval_monitor.metrics import DetectorConfig, EpisodeOrderError, EvalEvent, MetricEngine


#: At most this many unusable messages are described one by one in ``skipped``.
MAX_SKIPPED_NOTES = 50


class EvalTopic(str, Enum):
    """Topics the engine is fed from (relative names, DESIGN.md)."""

    JOINT_STATES = 'joint_states'
    OVERRIDE = 'teleop/override'
    EPISODE = 'eval/episode'
    TRUTH = 'sim/truth'
    TRAJECTORY = 'joint_trajectory'
    TELEOP_TRAJECTORY = 'teleop/joint_trajectory'


#: Topics whose absence makes metrics unavailable: reported as missing when nothing came.
#: sim/truth exists only in simulation and the trajectories are only counted, so their
#: absence is normal and not reported.
REQUIRED_TOPICS = (EvalTopic.JOINT_STATES, EvalTopic.OVERRIDE, EvalTopic.EPISODE)


def stamp_seconds(stamp: Any) -> float:
    """Seconds of a ``builtin_interfaces/Time`` (rclpy or decoded from a bag)."""
    return stamp.sec + stamp.nanosec * 1e-9


class EngineFeeder:
    """Feed messages of the evaluation topics to one engine, counting and noting what fails.

    Not thread safe: the caller serialises calls (the node holds a lock).
    """

    def __init__(self, engine: MetricEngine) -> None:
        self.engine = engine
        self.received: Counter[EvalTopic] = Counter()  # messages per topic, usable or not
        self._notes: list[str] = []
        self._unnoted = 0

    @property
    def skipped(self) -> list[str]:
        """Messages that could not be used, described (for ``Summary.skipped``)."""
        more = [f'... and {self._unnoted} more unusable messages'] if self._unnoted else []
        return self._notes + more

    def missing_topics(self) -> list[str]:
        """Required topics from which nothing was received."""
        return [t.value for t in REQUIRED_TOPICS if not self.received[t]]

    def note(self, text: str) -> None:
        if len(self._notes) < MAX_SKIPPED_NOTES:
            self._notes.append(text)
        else:
            self._unnoted += 1

    def feed(self, topic: EvalTopic, msg: Any, receive_time: float) -> list[EvalEvent]:
        """Feed one message (rclpy message or one decoded from a bag); returns its events.

        ``receive_time`` in seconds: node clock at the callback live, log time offline.
        """
        self.received[topic] += 1
        if topic is EvalTopic.JOINT_STATES:
            stamp = stamp_seconds(msg.header.stamp) or receive_time
            return self.engine.joint_state(stamp, list(msg.name), list(msg.position),
                                           list(msg.velocity) or None, list(msg.effort) or None)
        if topic is EvalTopic.OVERRIDE:
            return self.engine.override(receive_time, bool(msg.data))
        if topic in (EvalTopic.TRAJECTORY, EvalTopic.TELEOP_TRAJECTORY):
            stamp = stamp_seconds(msg.header.stamp) or receive_time
            source = 'teleop' if topic is EvalTopic.TELEOP_TRAJECTORY else 'policy'
            return self.engine.trajectory(stamp, source)
        try:
            if topic is EvalTopic.EPISODE:
                return self.mark(EpisodeMark.from_json(msg.data))
            return self.engine.truth(SimTruth.from_json(msg.data))
        except PayloadError as exc:
            self.note(f'{topic.value} at {receive_time:.3f} s: {exc}')
            return []

    def mark(self, mark: EpisodeMark) -> list[EvalEvent]:
        """Feed an episode mark; an out-of-order one is noted and ignored."""
        try:
            return self.engine.episode(mark)
        except EpisodeOrderError as exc:
            self.note(f'eval/episode {mark.event.value} mark at {mark.stamp:.3f} s '
                      f'(source {mark.source}) ignored: {exc}')
            return []


# ---------------------------------------------------------------------------------------------
# Detector configuration from parameters / YAML
# ---------------------------------------------------------------------------------------------


def detector_defaults() -> dict[str, Any]:
    """``{field: default}`` of the DetectorConfig fields settable from parameters/YAML.

    Booleans, numbers, strings and number lists (ROS parameter types); a number-tuple field
    whose default is None (``bowl_center_xy``) maps to None: unset.
    """
    defaults: dict[str, Any] = {}
    example = DetectorConfig()
    for item in dataclasses.fields(DetectorConfig):
        value = getattr(example, item.name)
        if isinstance(value, bool | int | float | str):
            defaults[item.name] = value
        elif value is None and 'tuple[float' in str(item.type):
            defaults[item.name] = None
        elif isinstance(value, list | tuple) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            defaults[item.name] = [float(v) for v in value]
    return defaults


def detector_config(values: dict[str, Any]) -> DetectorConfig:
    """DetectorConfig from ``{field: value}`` (None: default); unknown fields, wrong types and
    values DetectorConfig refuses raise ValueError naming the field."""
    defaults = detector_defaults()
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f'unknown detector setting(s) {unknown}; known: {sorted(defaults)}')
    kwargs = {}
    for name, value in values.items():
        if value is None:
            continue
        default = defaults[name]
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError('expected true or false')
            elif isinstance(default, int | float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise TypeError('expected a number')
                value = type(default)(value)
            elif isinstance(default, str):
                value = str(value)
            else:  # number list or tuple
                value = tuple(float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'detector setting {name}: {exc}, got {value!r}') from exc
        kwargs[name] = value
    return DetectorConfig(**kwargs)
