"""The evaluation metric engine: episodes, grasps, drops, places, interventions (no rclpy).

The monitor node (live) and the offline evaluator (over a recorded bag) feed the same
:class:`MetricEngine` one message at a time and get the same events and the same
:class:`Summary` for the same messages. Definitions (DESIGN.md, "Evaluation definitions"),
as implemented here:

Gripper (from ``joint_states``, joint ``gripper``, radians, larger = more open)
    *Attempt*: the gripper was open (at or above ``open_rad``), falls below
    ``open_rad - open_hysteresis_rad`` (a close) and comes to rest: its angle stays inside
    ``rest_band_rad`` for ``settle_s`` (and, when the message carries a velocity,
    ``|velocity| <= rest_velocity_rad_s``). One attempt per close; a close that reopens
    before resting is no attempt. The attempt is stamped when rest is confirmed. With
    effort in use (below), a close that comes to rest short of empty-closed *without* grip
    effort is no attempt either: the gripper was commanded to a half-open pose (the sim's
    home pose, 0.3 rad, is one) and squeezes nothing; the detector keeps watching that
    close (``detector.partial_closes`` counts them).

    *Failed grasp*: at rest at or below the empty-closed angle plus ``empty_margin_rad``
    (nothing between the jaws); also an attempt that closes to empty, reopens, or loses its
    grip effort before ``hold_s`` has passed.

    *Grasp success*: at rest short of empty-closed (above it by more than the margin) and
    staying short of it, without reopening, for ``hold_s`` after the attempt. The angle is
    the primary signal; effort confirms it. Effort is *in use* when ``use_effort`` is on and
    the stream carries a gripper effort (an effort channel that has been exactly 0.0
    throughout counts as absent: drivers fill zeros when they have no estimate). Then the
    median ``|effort|`` over the rest window must reach ``effort_threshold_nm`` for the rest
    to be an attempt at all, and the median over the hold must reach it for the success;
    a hold whose grip fades fails with reason ``no_grip_effort``. Without effort the angle
    alone decides (``detector.effort_used`` in the summary says which applied), and any
    rest short of empty-closed is an attempt.

    *Drop*: while holding, the gripper reaches the empty-closed angle (+ margin).

    *Place / release*: while holding, the gripper opens by ``release_delta_rad`` above the
    smallest held angle. Where the place happened decides place or drop:
    with a bowl region configured and a sim truth cube position known, release with the
    cube inside the region is a place, outside it a drop; with sim truth but no region,
    the decision waits for truth up to ``place_window_s`` after the release (``in_bowl`` ->
    place, ``dropped`` or not in the bowl by then -> drop); without either, opening while
    holding is a place (a release, never a drop). At an episode end a pending decision is
    taken at once: place if the cube is in the bowl or the episode succeeded, else drop.

    Holds do not cross episode boundaries: at an episode start or end a held grasp ends
    without an event (an episode that ends with the cube held is not a drop; the
    per-episode row says ``held_at_end``), a grasp still within ``hold_s`` fails with reason
    ``episode_boundary``, and the gripper must open again before the next attempt.

    *Empty-closed angle*: ``empty_closed_rad`` (default: URDF gripper lower limit), or with
    ``learn_empty_closed`` the median rest angle of the first ``learn_closes`` closes that
    rest *outside* episodes within ``learn_window_rad`` of the configured angle (the
    operator closes the empty gripper fully a few times before the first episode); those
    calibration closes are reported as failed attempts with reason ``learning`` and
    ``data.learning = true`` and are left out of every count.

    SO-101 figures behind the defaults (MuJoCo cell of this suite, 3 cm cube): an empty
    close rests at the URDF lower limit, -0.1745 rad; the cube holds the jaws at ~0.29 rad
    with ~3.3 N·m of actuator effort; the approach opens to ~0.9 rad; a half-open pose
    without load shows ~0.01 N·m. The real arm's effort is load x stall torque (1.96 N·m).

Interventions (``teleop/override``, std_msgs/Bool)
    A rising edge starts one; it lasts until the falling edge, across an episode end if the
    operator keeps control (it counts in the episode where it started), or until
    :meth:`MetricEngine.finish` at stream end (``closed_by: stream_end``). Repeated ``true``
    messages (the topic is re-sent periodically) are not edges.

Episodes (``eval/episode``, EpisodeMark JSON)
    Start and end marks; success from the end mark. An end without a start or a start while
    one is open raises :class:`EpisodeOrderError` (nothing changes).

Which episode an event belongs to
    Episode ``k`` spans ``[start_k, end_k]`` (stamps; when one ends where the next starts,
    the shared stamp belongs to the new one). An event belongs to the episode containing
    its *anchor*: its own stamp, except grasp outcomes, drops and places (anchored to their
    attempt) and intervention ends (anchored to their start), so an attempt and its
    outcome always count together. Assignment is redone from the final spans in
    :attr:`MetricEngine.events` and :meth:`MetricEngine.summary`, so a mark that arrives
    after the joint states of its episode still gets them.

How the summary treats events outside episodes
    When the stream has episode marks, the headline counts and rates cover completed
    episodes only; events outside every episode are counted in ``outside_episodes`` and an
    episode still open at the end of the stream is listed (``open: true``) but left out of
    every rate. Without any episode mark (``scope: stream``), grasp, drop and intervention
    counts cover the whole stream and the per-episode metrics are unavailable.

Timing
    Stamps, never arrival order, drive every duration. Per topic, a message stamped earlier
    than the previous one is counted (``input.out_of_order``) and ignored; equal stamps are
    processed in the order fed (durations of zero are fine). Across topics the engine
    depends only on stamps, except that an episode boundary acts on the detector state
    when its mark is fed.
"""

from __future__ import annotations

import bisect
import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

import numpy as np

from eval_monitor.stats import Rate
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark, PayloadError, SimTruth
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
_GRASP_METRICS = (Metric.GRASP_ATTEMPTS, Metric.GRASP_SUCCESS, Metric.DROPS,
                  Metric.DROPS_PER_GRASP, Metric.PLACES)
_EPISODE_METRICS = (Metric.EPISODES, Metric.EPISODE_SUCCESS, Metric.MEAN_TIME_TO_SUCCESS_S,
                    Metric.INTERVENTIONS_PER_EPISODE)
_INTERVENTION_METRICS = (Metric.INTERVENTIONS, Metric.INTERVENTIONS_PER_EPISODE,
                         Metric.MEAN_INTERVENTION_S)


class EpisodeOrderError(ValueError):
    """An episode mark out of order: an end without a start, or a start while one is open."""


def _jsonable(value: Any) -> Any:
    """Plain JSON types from numpy scalars/arrays, tuples and enums (recursively)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
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
                           'episode': self.episode, 'data': _jsonable(self.data)},
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
    empty_margin_rad: float = 0.08  # within this above empty-closed: nothing in the jaws
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


class _Gripper(Enum):
    """Detector state."""

    UNKNOWN = 'unknown'  # no sample yet
    OPEN = 'open'  # armed: the next close is an attempt
    CLOSING = 'closing'  # below open, waiting for rest
    HOLD_PENDING = 'hold_pending'  # at rest short of empty, waiting hold_s
    HOLDING = 'holding'  # a successful grasp
    CLOSED = 'closed'  # closed (empty, failed or after a hold): must open first


@dataclass
class _Episode:
    index: int
    start: float
    end: float | None = None
    success: bool | None = None
    source: str = ''
    note: str = ''
    held_at_end: bool = False


@dataclass
class _Hold:
    """A successful grasp's span, for truth agreement and plots."""

    start: float  # attempt stamp
    success: float  # stamp of the success decision
    end: float | None = None  # drop / place / boundary / stream end
    ended_by: str = ''


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
    truth_agreement: dict | None = None
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
        out.update(_jsonable(asdict(self)))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Summary:
        """Rebuild from ``to_dict()`` output; unknown keys are ignored, missing ones default."""
        if not isinstance(d, dict):
            raise ValueError(f'a summary must be a JSON object, got {type(d).__name__}')
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _norm_topic(name: str) -> str:
    return name.strip().strip('/')


def _finite_at(values: Sequence[float] | None, index: int) -> float | None:
    if values is None or len(values) <= index:
        return None
    value = float(values[index])
    return value if math.isfinite(value) else None


class MetricEngine:
    """Turns message contents, fed in time order, into evaluation events and a summary.

    Each feeder takes one message's content and returns the events it caused (see the
    module docstring for the definitions).
    """

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self._events: list[tuple[EvalEvent, float]] = []  # (event, anchor stamp)
        self._episodes: list[_Episode] = []
        self._starts: list[float] = []  # episode start stamps (sorted), for bisect
        # gripper detector
        self._state = _Gripper.UNKNOWN
        self._empty_closed = self.config.empty_closed_rad
        self._learned_from: list[float] = []
        self._rest_start: float | None = None
        self._rest_efforts: list[float] = []
        self._rest_judged = False
        self._partial_closes = 0
        self._rest_min = self._rest_max = 0.0
        self._attempt_stamp: float | None = None
        self._hold_min = 0.0
        self._hold_efforts: list[float] = []
        self._holds: list[_Hold] = []
        self._effort_seen = False
        self._pending_release: dict | None = None
        # interventions
        self._override = False
        self._override_start: float | None = None
        # truth
        self._truth_seen = False
        self._truth_last: SimTruth | None = None
        self._truth_held_start: float | None = None
        self._truth_held: list[tuple[float, float]] = []
        self._truth_drops: list[float] = []
        # trajectories
        self._trajectories: list[tuple[float, TrajectorySource]] = []
        # input bookkeeping
        self._last_stamp: dict[str, float] = {}
        self._messages: Counter[str] = Counter()
        self._out_of_order: Counter[str] = Counter()
        self._problems: Counter[str] = Counter()
        self._gripper_messages = 0
        self._trace_t: list[float] = []
        self._trace_q: list[float] = []
        self._finished_at: float | None = None

    # ------------------------------------------------------------------------------------
    # bookkeeping
    def _in_order(self, topic: str, stamp: float) -> bool:
        """Count a message; False (and counted) when stamped before the previous one."""
        self._messages[topic] += 1
        if not math.isfinite(stamp):
            self._problems[f'{topic}: non-finite stamp'] += 1
            return False
        last = self._last_stamp.get(topic)
        if last is not None and stamp < last:
            self._out_of_order[topic] += 1
            return False
        self._last_stamp[topic] = stamp
        return True

    def _episode_of(self, anchor: float) -> int | None:
        """1-based index of the episode whose [start, end] holds ``anchor`` (later wins)."""
        i = bisect.bisect_right(self._starts, anchor) - 1
        if i < 0:
            return None
        ep = self._episodes[i]
        if ep.end is None or anchor <= ep.end:
            return ep.index
        return None

    def _emit(self, out: list[EvalEvent], kind: EventKind, stamp: float,
              data: dict | None = None, anchor: float | None = None) -> None:
        anchor = stamp if anchor is None else anchor
        data = dict(data or {})
        if self._override:
            data.setdefault('during_intervention', True)
        event = EvalEvent(kind, float(stamp), self._episode_of(anchor), _jsonable(data))
        self._events.append((event, anchor))
        out.append(event)

    @property
    def _empty_limit(self) -> float:
        return self._empty_closed + self.config.empty_margin_rad

    # ------------------------------------------------------------------------------------
    # feeders
    def joint_state(self, stamp: float, names: Sequence[str], position: Sequence[float],
                    velocity: Sequence[float] | None = None,
                    effort: Sequence[float] | None = None) -> list[EvalEvent]:
        """One ``joint_states`` message (gripper angle in rad, velocity rad/s, effort N·m)."""
        out: list[EvalEvent] = []
        topic = TOPIC_JOINT_STATES
        if not self._in_order(topic, stamp):
            return out
        try:
            index = list(names).index(self.config.gripper_joint)
        except ValueError:
            self._problems[f'{topic}: no joint named {self.config.gripper_joint!r}'] += 1
            return out
        angle = _finite_at(position, index)
        if angle is None:
            self._problems[f'{topic}: {self.config.gripper_joint} position missing or '
                           'not finite'] += 1
            return out
        self._gripper_messages += 1
        vel = _finite_at(velocity, index)
        eff = _finite_at(effort, index)
        if eff is not None and eff != 0.0:
            self._effort_seen = True
        # 1e-6 s of slack: stamps like i * 0.01 are not exact in binary floating point
        if (not self._trace_t
                or stamp - self._trace_t[-1] >= 1.0 / self.config.trace_rate_hz - 1e-6):
            self._trace_t.append(float(stamp))
            self._trace_q.append(angle)
        self._step(out, float(stamp), angle, vel, eff)
        return out

    def _step(self, out: list[EvalEvent], t: float, q: float, v: float | None,
              e: float | None) -> None:
        cfg = self.config
        state = self._state
        if state is _Gripper.UNKNOWN:
            self._state = _Gripper.OPEN if q >= cfg.open_rad else _Gripper.CLOSED
        elif state is _Gripper.OPEN:
            if q < cfg.open_rad - cfg.open_hysteresis_rad:
                self._state = _Gripper.CLOSING
                self._rest_start = None
                self._at_rest(t, q, v, e)
        elif state is _Gripper.CLOSING:
            if q >= cfg.open_rad:
                self._state = _Gripper.OPEN  # reopened before resting: no attempt
            elif self._at_rest(t, q, v, e) and not self._rest_judged:
                self._rest_judged = True
                self._judge_rest(out, t, q)
        elif state is _Gripper.HOLD_PENDING:
            self._hold_min = min(self._hold_min, q)
            if q <= self._empty_limit:
                self._fail(out, t, 'closed_to_empty', q)
            elif q >= self._hold_min + cfg.release_delta_rad or q >= cfg.open_rad:
                self._fail(out, t, 'reopened', q)
                self._state = _Gripper.OPEN if q >= cfg.open_rad else _Gripper.CLOSED
            else:
                if e is not None:
                    self._hold_efforts.append(abs(e))
                if t - self._attempt_stamp >= cfg.hold_s:
                    self._decide_hold(out, t, q)
        elif state is _Gripper.HOLDING:
            self._hold_min = min(self._hold_min, q)
            if q <= self._empty_limit:
                self._end_hold(t, 'drop')
                self._emit(out, EventKind.DROP, t,
                           {'gripper_rad': q, 'reason': 'closed_to_empty',
                            'attempt_stamp': self._attempt_stamp}, anchor=self._attempt_stamp)
                self._state = _Gripper.CLOSED
            elif q >= self._hold_min + cfg.release_delta_rad:
                self._release(out, t, q)
                self._state = _Gripper.OPEN if q >= cfg.open_rad else _Gripper.CLOSED
        elif state is _Gripper.CLOSED:
            if q >= cfg.open_rad:
                self._state = _Gripper.OPEN

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

    def _effort_channel(self) -> bool:
        """Whether effort takes part in the decisions (published and use_effort on)."""
        return self.config.use_effort and self._effort_seen

    def _learning_close(self, t: float, q: float) -> bool:
        cfg = self.config
        return (cfg.learn_empty_closed and len(self._learned_from) < cfg.learn_closes
                and self._episode_of(t) is None
                and abs(q - cfg.empty_closed_rad) <= cfg.learn_window_rad)

    def _judge_rest(self, out: list[EvalEvent], t: float, q: float) -> None:
        """The gripper came to rest after a close: an attempt, or only a partial close."""
        cfg = self.config
        if (not self._learning_close(t, q) and q > self._empty_limit
                and self._effort_channel() and self._rest_efforts
                and statistics.median(self._rest_efforts) < cfg.effort_threshold_nm):
            # stopped short of closed without squeezing anything: a gripper commanded to a
            # half-open pose, not a grasp; keep watching for the rest of the close
            self._partial_closes += 1
            return
        self._attempt(out, t, q)

    def _attempt(self, out: list[EvalEvent], t: float, q: float) -> None:
        cfg = self.config
        self._attempt_stamp = t
        learning = self._learning_close(t, q)
        data = {'gripper_rad': q, 'rest_since': self._rest_start}
        if learning:
            data['learning'] = True
        self._emit(out, EventKind.GRASP_ATTEMPT, t, data)
        if learning:
            self._learned_from.append(q)
            if len(self._learned_from) == cfg.learn_closes:
                self._empty_closed = float(statistics.median(self._learned_from))
            self._fail(out, t, 'learning', q, learning=True)
        elif q <= self._empty_limit:
            self._fail(out, t, 'empty_close', q)
        else:
            self._state = _Gripper.HOLD_PENDING
            self._hold_min = q
            self._hold_efforts = []

    def _fail(self, out: list[EvalEvent], t: float, reason: str, q: float | None,
              learning: bool = False) -> None:
        data = {'reason': reason, 'gripper_rad': q, 'attempt_stamp': self._attempt_stamp,
                'empty_closed_rad': self._empty_closed}
        if learning:
            data['learning'] = True
        self._emit(out, EventKind.GRASP_FAILED, t, data, anchor=self._attempt_stamp)
        self._state = _Gripper.CLOSED

    def _decide_hold(self, out: list[EvalEvent], t: float, q: float) -> None:
        cfg = self.config
        effort = (float(statistics.median(self._hold_efforts))
                  if self._effort_seen and self._hold_efforts else None)
        if self._effort_channel() and effort is not None and effort < cfg.effort_threshold_nm:
            self._fail(out, t, 'no_grip_effort', q)
            return
        signal = 'angle+effort' if self._effort_channel() and effort is not None else 'angle'
        self._emit(out, EventKind.GRASP_SUCCESS, t,
                   {'gripper_rad': q, 'effort_nm': effort, 'signal': signal,
                    'attempt_stamp': self._attempt_stamp,
                    'empty_closed_rad': self._empty_closed}, anchor=self._attempt_stamp)
        self._holds.append(_Hold(start=self._attempt_stamp, success=t))
        self._state = _Gripper.HOLDING

    def _end_hold(self, t: float, ended_by: str) -> None:
        if self._holds and self._holds[-1].end is None:
            self._holds[-1].end = t
            self._holds[-1].ended_by = ended_by

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
                self._emit(out, EventKind.PLACE, t, base, anchor=attempt)
            else:
                self._emit(out, EventKind.DROP, t, {**base, 'reason': 'released_outside_bowl'},
                           anchor=attempt)
        elif self._truth_seen:
            self._end_hold(t, 'release')
            self._pending_release = {**base, 'stamp': t,
                                     'during_intervention': self._override or None}
        else:
            self._end_hold(t, 'release')
            self._emit(out, EventKind.PLACE, t, {**base, 'location': 'unknown'},
                       anchor=attempt)

    def _resolve_release(self, out: list[EvalEvent], place: bool, location: str) -> None:
        pending, self._pending_release = self._pending_release, None
        t = pending.pop('stamp')
        if not pending.get('during_intervention'):
            pending.pop('during_intervention', None)
        kind = EventKind.PLACE if place else EventKind.DROP
        data = {**pending, 'location': location}
        if not place:
            data['reason'] = 'released_outside_bowl'
        event = EvalEvent(kind, t, self._episode_of(pending['attempt_stamp']), _jsonable(data))
        self._events.append((event, pending['attempt_stamp']))
        out.append(event)

    def _boundary(self, out: list[EvalEvent], t: float, success: bool | None) -> None:
        """An episode starts or ends: no hold crosses it (module docstring)."""
        if self._pending_release is not None and success is not None:
            in_bowl = self._truth_last is not None and self._truth_last.in_bowl
            self._resolve_release(out, in_bowl or success,
                                  'in_bowl (sim truth)' if in_bowl else
                                  ('episode_success' if success else 'not_in_bowl_at_end'))
        if self._state is _Gripper.HOLD_PENDING:
            self._fail(out, t, 'episode_boundary', None)
        elif self._state is _Gripper.HOLDING:
            self._end_hold(t, 'episode_end' if success is not None else 'episode_start')
            if success is not None and self._episodes:
                self._episodes[-1].held_at_end = True
            self._state = _Gripper.CLOSED

    def override(self, stamp: float, active: bool) -> list[EvalEvent]:
        """One ``teleop/override`` message: edges start and end interventions."""
        out: list[EvalEvent] = []
        if not self._in_order(TOPIC_OVERRIDE, stamp):
            return out
        active = bool(active)
        if active and not self._override:
            holding = self._state in (_Gripper.HOLDING, _Gripper.HOLD_PENDING)
            self._emit(out, EventKind.INTERVENTION_START, stamp,
                       {'holding': holding, 'gripper_state': self._state.value})
            self._override, self._override_start = True, float(stamp)
        elif not active and self._override:
            self._end_intervention(out, float(stamp), 'falling_edge')
        return out

    def _end_intervention(self, out: list[EvalEvent], t: float, closed_by: str) -> None:
        start = self._override_start
        self._override, self._override_start = False, None
        self._emit(out, EventKind.INTERVENTION_END, t,
                   {'duration_s': t - start, 'start_stamp': start, 'closed_by': closed_by},
                   anchor=start)

    def episode(self, mark: EpisodeMark | str) -> list[EvalEvent]:
        """One ``eval/episode`` mark (or its JSON); raises EpisodeOrderError out of order."""
        if isinstance(mark, str):
            mark = EpisodeMark.from_json(mark)
        out: list[EvalEvent] = []
        t = float(mark.stamp)
        current = self._episodes[-1] if self._episodes else None
        if mark.event is EpisodeEvent.START:
            if current is not None and current.end is None:
                raise EpisodeOrderError(
                    f'episode start at t={t:.3f} s while episode {current.index} (started at '
                    f't={current.start:.3f} s) is still open; end it first')
            if current is not None and t < current.end:
                raise EpisodeOrderError(
                    f'episode start at t={t:.3f} s is before the end of episode '
                    f'{current.index} at t={current.end:.3f} s')
            self._messages[TOPIC_EPISODE] += 1
            self._boundary(out, t, None)
            ep = _Episode(index=len(self._episodes) + 1, start=t, source=mark.source,
                          note=mark.note)
            self._episodes.append(ep)
            self._starts.append(t)
            self._emit(out, EventKind.EPISODE_START, t,
                       {'source': mark.source, 'note': mark.note, 'mark_episode': mark.episode})
            return out
        if current is None or current.end is not None:
            last = (f'; the last episode, {current.index}, ended at t={current.end:.3f} s'
                    if current is not None else '; no episode was started')
            raise EpisodeOrderError(f'episode end at t={t:.3f} s without a start (no episode '
                                    f'is open{last})')
        if t < current.start:
            raise EpisodeOrderError(f'episode end at t={t:.3f} s is before the start of '
                                    f'episode {current.index} at t={current.start:.3f} s')
        self._messages[TOPIC_EPISODE] += 1
        self._boundary(out, t, bool(mark.success))
        current.end, current.success = t, bool(mark.success)
        if mark.note:
            current.note = (current.note + '; ' if current.note else '') + mark.note
        self._emit(out, EventKind.EPISODE_END, t,
                   {'success': current.success, 'duration_s': t - current.start,
                    'source': mark.source, 'note': mark.note, 'mark_episode': mark.episode},
                   anchor=current.start)
        return out

    def truth(self, truth: SimTruth | str) -> list[EvalEvent]:
        """One ``sim/truth`` message: held spans for agreement, in_bowl for places."""
        if isinstance(truth, str):
            truth = SimTruth.from_json(truth)
        out: list[EvalEvent] = []
        t = float(truth.stamp)
        if not self._in_order(TOPIC_TRUTH, t):
            return out
        self._truth_seen = True
        self._truth_last = truth
        if truth.held and self._truth_held_start is None:
            self._truth_held_start = t
        elif not truth.held and self._truth_held_start is not None:
            self._truth_held.append((self._truth_held_start, t))
            self._truth_held_start = None
        if truth.dropped:
            self._truth_drops.append(t)
        pending = self._pending_release
        if pending is not None and t >= pending['stamp']:
            if truth.in_bowl:
                self._resolve_release(out, True, 'in_bowl (sim truth)')
            elif truth.dropped:
                self._resolve_release(out, False, 'dropped (sim truth)')
            elif t - pending['stamp'] > self.config.place_window_s:
                self._resolve_release(out, False, 'not_in_bowl (sim truth)')
        return out

    def trajectory(self, stamp: float, source: str | TrajectorySource) -> list[EvalEvent]:
        """One joint trajectory from the policy or the teleop (counted per episode only)."""
        try:
            source = TrajectorySource(source)
        except ValueError:
            raise ValueError(f'trajectory source must be one of '
                             f'{[s.value for s in TrajectorySource]}, got {source!r}') from None
        self._messages[f'trajectory/{source.value}'] += 1
        if math.isfinite(stamp):
            self._trajectories.append((float(stamp), source))
        return []

    def finish(self, stamp: float) -> list[EvalEvent]:
        """End of stream: close open spans (intervention, pending place, hold); no episode end."""
        out: list[EvalEvent] = []
        t = float(stamp)
        if self._override:
            self._end_intervention(out, max(t, self._override_start), 'stream_end')
        if self._pending_release is not None:
            self._resolve_release(out, True, 'unconfirmed (stream ended)')
        if self._state is _Gripper.HOLD_PENDING:
            self._fail(out, t, 'stream_end', None)
        elif self._state is _Gripper.HOLDING:
            self._end_hold(t, 'stream_end')
        if self._truth_held_start is not None:
            self._truth_held.append((self._truth_held_start, t))
            self._truth_held_start = None
        self._finished_at = t
        return out

    # ------------------------------------------------------------------------------------
    # results
    @property
    def events(self) -> list[EvalEvent]:
        """All events so far, episodes assigned from the final spans (module docstring)."""
        result = []
        for event, anchor in self._events:
            episode = self._episode_of(anchor)
            result.append(event if episode == event.episode else replace(event, episode=episode))
        return result

    @property
    def gripper_trace(self) -> tuple[np.ndarray, np.ndarray]:
        """(stamps, gripper rad) decimated to at most ``trace_rate_hz`` (50 Hz), for plots."""
        return np.asarray(self._trace_t, dtype=float), np.asarray(self._trace_q, dtype=float)

    @property
    def holds(self) -> list[tuple[float, float | None, str]]:
        """Successful grasps as (attempt stamp, end stamp or None, ended_by), for plots."""
        return [(h.start, h.end, h.ended_by) for h in self._holds]

    @property
    def empty_closed_rad(self) -> float:
        """The empty-closed angle in use (configured or learned)."""
        return self._empty_closed

    def summary(self, missing_topics: Iterable[str] = (),
                skipped: Iterable[str] = ()) -> Summary:
        """Counts, rates and per-episode rows (module docstring: scope and availability)."""
        missing = sorted({_norm_topic(m) for m in missing_topics})
        events = self.events
        completed = [ep for ep in self._episodes if ep.end is not None]
        done = {ep.index for ep in completed}
        scope = 'episodes' if self._episodes else 'stream'

        def counted(ev: EvalEvent) -> bool:
            if ev.data.get('learning'):
                return False
            return scope == 'stream' or ev.episode in done

        tally: Counter[tuple[int | None, EventKind]] = Counter()
        durations: dict[int | None, list[float]] = {}
        for ev in events:
            if ev.data.get('learning'):
                continue
            tally[ev.episode, ev.kind] += 1
            if ev.kind is EventKind.INTERVENTION_END:
                durations.setdefault(ev.episode, []).append(float(ev.data['duration_s']))

        def total(kind: EventKind) -> int:
            return sum(1 for ev in events if ev.kind is kind and counted(ev))

        s = Summary(scope=scope, missing_topics=missing, skipped=[str(x) for x in skipped])
        unavailable = s.unavailable
        grasp_reason = self._grasp_unavailable(missing)
        if grasp_reason:
            unavailable.update({m.value: grasp_reason for m in _GRASP_METRICS})
        if TOPIC_OVERRIDE in missing:
            reason = f'topic {TOPIC_OVERRIDE} missing from the recording'
            unavailable.update({m.value: reason for m in _INTERVENTION_METRICS})
        if not completed:
            reason = (f'topic {TOPIC_EPISODE} missing from the recording'
                      if TOPIC_EPISODE in missing else
                      'no completed episode (no eval/episode start and end marks)')
            unavailable.update({m.value: reason for m in _EPISODE_METRICS})

        def available(metric: Metric) -> bool:
            return metric.value not in unavailable

        if available(Metric.EPISODES):
            s.episodes = len(completed)
            s.episode_successes = sum(1 for ep in completed if ep.success)
            s.rates[Metric.EPISODE_SUCCESS.value] = Rate.proportion(
                s.episode_successes, s.episodes).to_dict()
            successful = [ep.end - ep.start for ep in completed if ep.success]
            if successful:
                s.mean_time_to_success_s = float(np.mean(successful))
        if available(Metric.GRASP_ATTEMPTS):
            s.grasp_attempts = total(EventKind.GRASP_ATTEMPT)
            s.grasp_successes = total(EventKind.GRASP_SUCCESS)
            s.grasp_failures = total(EventKind.GRASP_FAILED)
            s.drops = total(EventKind.DROP)
            s.places = total(EventKind.PLACE)
            s.rates[Metric.GRASP_SUCCESS.value] = Rate.proportion(
                s.grasp_successes, s.grasp_attempts).to_dict()
            s.rates[Metric.DROPS_PER_GRASP.value] = Rate.proportion(
                s.drops, s.grasp_successes).to_dict()
        if available(Metric.INTERVENTIONS):
            s.interventions = total(EventKind.INTERVENTION_START)
            spans = [float(ev.data['duration_s']) for ev in events
                     if ev.kind is EventKind.INTERVENTION_END and counted(ev)]
            if spans:
                s.mean_intervention_s = float(np.mean(spans))
            if available(Metric.INTERVENTIONS_PER_EPISODE):
                rate = Rate.per_unit(s.interventions, s.episodes)
                s.interventions_per_episode = rate.value
                s.rates[Metric.INTERVENTIONS_PER_EPISODE.value] = rate.to_dict()

        traj: Counter[tuple[int | None, str]] = Counter(
            (self._episode_of(t), src.value) for t, src in self._trajectories)
        for ep in self._episodes:
            row = {'episode': ep.index, 'start': ep.start, 'end': ep.end,
                   'duration_s': None if ep.end is None else ep.end - ep.start,
                   'success': ep.success, 'open': ep.end is None,
                   'held_at_end': ep.held_at_end, 'source': ep.source, 'note': ep.note,
                   'trajectories': {src.value: traj[ep.index, src.value]
                                    for src in TrajectorySource}}
            row.update(self._row_counts(tally, durations, ep.index, grasp_reason is None,
                                        TOPIC_OVERRIDE not in missing))
            s.per_episode.append(row)
        if scope == 'episodes':
            s.outside_episodes = self._row_counts(tally, durations, None,
                                                  grasp_reason is None,
                                                  TOPIC_OVERRIDE not in missing)
            s.outside_episodes['trajectories'] = {src.value: traj[None, src.value]
                                                  for src in TrajectorySource}
        open_eps = [ep.index for ep in self._episodes if ep.end is None]
        if open_eps:
            s.notes.append(f'episode {open_eps[0]} has no end mark (stream ended inside it); '
                           'it is listed but left out of every rate')
        if not self._messages[TOPIC_OVERRIDE] and TOPIC_OVERRIDE not in missing:
            s.notes.append(f'no {TOPIC_OVERRIDE} messages: no intervention was seen')
        if self._effort_seen is False and self._gripper_messages and self.config.use_effort:
            s.notes.append('no gripper effort in joint_states: grasp success decided by the '
                           'gripper angle alone')
        s.truth_agreement = self._truth_agreement() if self._truth_seen else None
        s.detector = self._detector_dict()
        s.input = {'messages': dict(sorted(self._messages.items())),
                   'out_of_order': dict(sorted(self._out_of_order.items())),
                   'problems': dict(sorted(self._problems.items())),
                   'finished_at': self._finished_at}
        return s

    def _grasp_unavailable(self, missing: list[str]) -> str | None:
        if TOPIC_JOINT_STATES in missing:
            return f'topic {TOPIC_JOINT_STATES} missing from the recording'
        if not self._messages[TOPIC_JOINT_STATES]:
            return f'no {TOPIC_JOINT_STATES} messages'
        if not self._gripper_messages:
            return (f'{TOPIC_JOINT_STATES} never carried a valid '
                    f'{self.config.gripper_joint!r} position')
        return None

    @staticmethod
    def _row_counts(tally: Counter, durations: dict, episode: int | None, grasps: bool,
                    interventions: bool) -> dict:
        row: dict[str, Any] = {}
        for key, kind in (('grasp_attempts', EventKind.GRASP_ATTEMPT),
                          ('grasp_successes', EventKind.GRASP_SUCCESS),
                          ('drops', EventKind.DROP), ('places', EventKind.PLACE)):
            row[key] = tally[episode, kind] if grasps else None
        row['interventions'] = tally[episode, EventKind.INTERVENTION_START] if interventions \
            else None
        row['intervention_s'] = (float(sum(durations.get(episode, []))) if interventions
                                 else None)
        return row

    def _truth_agreement(self) -> dict:
        """Detected holds vs sim truth ``held`` spans over the whole stream."""
        end_default = self._finished_at if self._finished_at is not None else (
            self._last_stamp.get(TOPIC_JOINT_STATES, 0.0))
        truth_spans = list(self._truth_held)
        if self._truth_held_start is not None:
            truth_spans.append((self._truth_held_start,
                                max(end_default, self._truth_held_start)))
        detected = [(h.start, h.end if h.end is not None else max(end_default, h.success))
                    for h in self._holds]

        def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
            return a[0] <= b[1] and b[0] <= a[1]

        real = [span for span in truth_spans if span[1] - span[0] >= self.config.hold_s]
        true_pos = sum(1 for d in detected if any(overlaps(d, r) for r in truth_spans))
        found = sum(1 for r in real if any(overlaps(d, r) for d in detected))
        return {
            'scope': 'whole stream',
            'detected_grasp_successes': len(detected),
            'truth_held_spans': len(real),
            'precision': Rate.proportion(true_pos, len(detected)).to_dict(),
            'recall': Rate.proportion(found, len(real)).to_dict(),
            'detected_drops': sum(1 for ev, _ in self._events if ev.kind is EventKind.DROP),
            'truth_drops': len(self._truth_drops),
            'note': (f'a detected success is a true positive when its hold overlaps a truth '
                     f'held span; truth spans shorter than hold_s ({self.config.hold_s} s) '
                     'are not counted for recall'),
        }

    def _detector_dict(self) -> dict:
        cfg = _jsonable(asdict(self.config))
        learned = len(self._learned_from) >= self.config.learn_closes
        source = 'learned' if learned else 'configured'
        if self.config.learn_empty_closed and not learned:
            source = (f'configured (learning saw {len(self._learned_from)} of '
                      f'{self.config.learn_closes} empty closes outside episodes)')
        return {'config': cfg, 'empty_closed_rad': self._empty_closed,
                'empty_closed_source': source, 'learned_from_rad': list(self._learned_from),
                'effort_used': self._effort_channel(),
                'partial_closes': self._partial_closes}
