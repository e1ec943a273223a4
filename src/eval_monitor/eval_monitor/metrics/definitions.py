"""Definitions of the evaluation: event kinds, metric names, events, thresholds, the summary.

What every layer of :mod:`eval_monitor.metrics` shares, and what readers of a run directory
(report, comparison) need without running the engine: the ``/eval/events`` JSON of an
:class:`EvalEvent`, the :class:`Metric` names that key a :class:`Summary`'s rates, the topic
names used in unavailability reasons, and :class:`DetectorConfig` with its SO-101 defaults
(the package docstring says what each threshold means).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

import numpy as np

from eval_monitor.stats import Rate
from so101_driver.eval_topics import PayloadError
from so101_driver.joints import GRIPPER, JOINT_NAMES, urdf_limits

#: Format tag of summary.json, bumped when a field changes meaning.
SUMMARY_FORMAT = 'so101-eval-summary/1'

#: Topic names (relative) the engine's users feed; used in unavailability reasons.
TOPIC_JOINT_STATES = 'joint_states'
TOPIC_OVERRIDE = 'teleop/override'
TOPIC_EPISODE = 'eval/episode'
TOPIC_TRUTH = 'sim/truth'


def _default_empty_closed() -> float:
    """The URDF gripper lower limit (-0.1745 rad): where an empty SO-101 gripper closes."""
    return float(urdf_limits().lower[JOINT_NAMES.index(GRIPPER)])


class EventKind(str, Enum):
    """Kinds of evaluation event; values are the ``kind`` field of ``/eval/events`` JSON."""

    EPISODE_START = 'episode_start'
    EPISODE_END = 'episode_end'
    GRASP_ATTEMPT = 'grasp_attempt'
    GRASP_SUCCESS = 'grasp_success'
    GRASP_FAILED = 'grasp_failed'
    DROP = 'drop'
    PLACE = 'place'
    INTERVENTION_START = 'intervention_start'
    INTERVENTION_END = 'intervention_end'


class TrajectorySource(str, Enum):
    """Who sent a joint trajectory (counted only)."""

    POLICY = 'policy'  # joint_trajectory
    TELEOP = 'teleop'  # teleop/joint_trajectory


class Metric(str, Enum):
    """Metric names: keys of ``Summary.rates`` and ``Summary.unavailable``."""

    EPISODES = 'episodes'
    EPISODE_SUCCESS = 'episode_success'
    GRASP_ATTEMPTS = 'grasp_attempts'
    GRASP_SUCCESS = 'grasp_success'
    DROPS = 'drops'
    DROPS_PER_GRASP = 'drops_per_grasp'
    PLACES = 'places'
    INTERVENTIONS = 'interventions'
    INTERVENTIONS_PER_EPISODE = 'interventions_per_episode'
    MEAN_INTERVENTION_S = 'mean_intervention_s'
    MEAN_TIME_TO_SUCCESS_S = 'mean_time_to_success_s'


#: Human labels of the metrics, for reports.
METRIC_LABELS: dict[Metric, str] = {
    Metric.EPISODES: 'Episodes',
    Metric.EPISODE_SUCCESS: 'Episode success',
    Metric.GRASP_ATTEMPTS: 'Grasp attempts',
    Metric.GRASP_SUCCESS: 'Grasp success',
    Metric.DROPS: 'Drops',
    Metric.DROPS_PER_GRASP: 'Drops per held grasp',
    Metric.PLACES: 'Places / releases',
    Metric.INTERVENTIONS: 'Interventions',
    Metric.INTERVENTIONS_PER_EPISODE: 'Interventions per episode',
    Metric.MEAN_INTERVENTION_S: 'Mean intervention duration (s)',
    Metric.MEAN_TIME_TO_SUCCESS_S: 'Mean time to success (s)',
}

#: Rates of a summary, in report order.
RATE_METRICS: tuple[Metric, ...] = (Metric.EPISODE_SUCCESS, Metric.GRASP_SUCCESS,
                                    Metric.DROPS_PER_GRASP, Metric.INTERVENTIONS_PER_EPISODE)


class EpisodeOrderError(ValueError):
    """An episode mark out of order: an end without a start, or a start while one is open."""


def jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples and enums (recursively)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class EvalEvent:
    """One evaluation event, as published on ``/eval/events`` and written to events.jsonl."""

    kind: EventKind  # what happened
    stamp: float  # seconds (message stamp / bag time) of the message that caused it
    episode: int | None  # 1-based index of the episode it falls in, None outside episodes
    data: dict = field(default_factory=dict)  # details: gripper_rad, effort_nm, duration_s...

    def to_json(self) -> str:
        return json.dumps({'kind': self.kind.value, 'stamp': self.stamp,
                           'episode': self.episode, 'data': jsonable(self.data)},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EvalEvent:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise PayloadError(f'eval event is not JSON ({err}): {text[:200]!r}') from err
        if not isinstance(obj, dict):
            raise PayloadError(f'eval event must be a JSON object, got {type(obj).__name__}')
        try:
            kind = EventKind(obj['kind'])
            stamp = float(obj['stamp'])
            episode = obj.get('episode')
            data = obj.get('data') or {}
        except KeyError as err:
            raise PayloadError(f'eval event {text[:200]!r} lacks field {err}; expected '
                               '{"kind", "stamp", "episode", "data"}') from err
        except (TypeError, ValueError) as err:
            raise PayloadError(f'eval event {text[:200]!r}: {err}') from err
        if episode is not None and (not isinstance(episode, int) or episode < 1):
            raise PayloadError(f'eval event {text[:200]!r}: episode must be null or an '
                               f'integer >= 1, got {episode!r}')
        if not isinstance(data, dict):
            raise PayloadError(f'eval event {text[:200]!r}: data must be an object')
        return cls(kind, stamp, episode, data)


@dataclass
class DetectorConfig:
    """Thresholds of the grasp detector, SO-101 defaults (radians, seconds, N·m, metres)."""

    gripper_joint: str = GRIPPER  # JointState name of the gripper joint
    open_rad: float = 0.45  # at or above: open (armed); a held 3 cm cube rests at ~0.29
    open_hysteresis_rad: float = 0.03  # a close starts below open_rad minus this
    rest_velocity_rad_s: float = 0.1  # |reported velocity| at or below: not moving
    rest_band_rad: float = 0.02  # angle staying within this band counts as at rest
    settle_s: float = 0.2  # at rest this long after a close: an attempt
    hold_s: float = 0.5  # short of empty-closed this long after the attempt: a success
    empty_closed_rad: float = field(default_factory=_default_empty_closed)  # empty close rests at
    empty_margin_rad: float = 0.05  # within this above empty-closed: nothing in the jaws
    learn_empty_closed: bool = False  # learn empty_closed_rad from closes before episode 1
    learn_closes: int = 3  # number of empty closes to learn from (median)
    learn_window_rad: float = 0.25  # only closes resting this near empty_closed_rad are learned
    release_delta_rad: float = 0.1  # opening this far above the held angle ends a hold
    use_effort: bool = True  # require grip effort for success when effort is published
    effort_threshold_nm: float = 0.15  # median |effort| over the hold needed for success
    place_window_s: float = 1.5  # sim: wait this long after a release for in_bowl truth
    bowl_center_xy: tuple[float, float] | None = None  # sim: bowl centre, world x, y (m)
    bowl_radius_m: float = 0.07  # sim: release with the cube within this radius: place
    trace_rate_hz: float = 50.0  # max rate of the kept gripper trace (plots)

    def __post_init__(self):
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'DetectorConfig.{name} must be a finite number > 0, '
                                 f'got {value!r}')

        for name in ('rest_velocity_rad_s', 'rest_band_rad', 'settle_s', 'hold_s',
                     'learn_window_rad',
                     'empty_margin_rad', 'release_delta_rad', 'effort_threshold_nm',
                     'place_window_s', 'bowl_radius_m', 'trace_rate_hz'):
            positive(name)
        for name in ('open_rad', 'open_hysteresis_rad', 'empty_closed_rad'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f'DetectorConfig.{name} must be a finite number, got {value!r}')
        if self.open_hysteresis_rad < 0:
            raise ValueError('DetectorConfig.open_hysteresis_rad must be >= 0, got '
                             f'{self.open_hysteresis_rad}')
        close_at = self.open_rad - self.open_hysteresis_rad
        empty_limit = self.empty_closed_rad + self.empty_margin_rad
        if close_at <= empty_limit:
            raise ValueError(
                f'DetectorConfig: open_rad - open_hysteresis_rad ({close_at:.3f} rad) must lie '
                f'above empty_closed_rad + empty_margin_rad ({empty_limit:.3f} rad), or no '
                'close could ever hold an object')
        if not isinstance(self.learn_closes, int) or self.learn_closes < 1:
            raise ValueError(f'DetectorConfig.learn_closes must be an integer >= 1, got '
                             f'{self.learn_closes!r}')
        if not self.gripper_joint:
            raise ValueError('DetectorConfig.gripper_joint must name a joint')
        if self.bowl_center_xy is not None:
            xy = tuple(float(v) for v in self.bowl_center_xy)
            if len(xy) != 2 or not all(math.isfinite(v) for v in xy):
                raise ValueError('DetectorConfig.bowl_center_xy must be two finite numbers '
                                 f'(x, y in metres), got {self.bowl_center_xy!r}')
            self.bowl_center_xy = xy


@dataclass
class Summary:
    """Everything the report and the comparison need; JSON via to_dict()/from_dict().

    Counts are ``None`` (never 0) when the metric is unavailable; ``unavailable`` maps the
    metric name to the reason. Rates are ``Rate.to_dict()`` objects
    ``{'k', 'n', 'rate', 'ci95': [lo, hi], 'method', ...}`` keyed by :class:`Metric` value.
    """

    scope: str = 'episodes'  # 'episodes': counts over completed episodes; 'stream': no marks
    episodes: int | None = None  # completed episodes
    episode_successes: int | None = None
    grasp_attempts: int | None = None
    grasp_successes: int | None = None
    grasp_failures: int | None = None
    drops: int | None = None
    places: int | None = None
    interventions: int | None = None
    interventions_per_episode: float | None = None
    mean_intervention_s: float | None = None
    mean_time_to_success_s: float | None = None  # mean duration of the successful episodes
    rates: dict[str, dict] = field(default_factory=dict)
    per_episode: list[dict] = field(default_factory=list)
    outside_episodes: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    truth_agreement: dict | None = None  # sim: detector vs truth (metrics.truth)
    failure_analysis: dict | None = None  # attempt and episode classes (metrics.analysis)
    detector: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    title: str = ''
    meta: dict = field(default_factory=dict)

    def rate(self, metric: Metric | str) -> Rate | None:
        """The named rate, or None when unavailable or given without counts."""
        data = self.rates.get(Metric(metric).value)
        if not data or data.get('k') is None or data.get('n') is None:
            return None
        return Rate.from_dict(data)

    def to_dict(self) -> dict:
        out = {'format': SUMMARY_FORMAT}
        out.update(jsonable(asdict(self)))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Summary:
        """Rebuild from ``to_dict()`` output; unknown keys are ignored, missing ones default."""
        if not isinstance(d, dict):
            raise ValueError(f'a summary must be a JSON object, got {type(d).__name__}')
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
