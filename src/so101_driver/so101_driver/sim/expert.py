"""A scripted pick-and-place expert for the simulated cell, without rclpy.

This is a scripted demonstrator that reads the simulator's ground truth; it is not the
policy and never stands in for one. Given ``SimTruth`` (cube and bowl positions) and the
present joint angles it plans, with inverse kinematics on its OWN MuJoCo model of the arm
(``sim.kinematics``, nothing shared with the simulator), a top-down grasp: reach above the
cube, descend, close, lift, carry over the bowl, lower, open, retreat. It streams the plan
as ``Trajectory`` chunks (start = now; first point = the measured position, so the
executor's ``max_jump`` check passes), through exactly the checks a policy's chunks meet.

Episodes, as a policy lives them: after a failed attempt (a miss, a slip, a drop, a cube
released outside the bowl) the expert opens, rises and tries again from the cube's CURRENT
pose, until the cube is in the bowl, ``max_attempts`` attempts were made (0 = no limit) or
``episode_timeout_s`` has passed (0 = none). Then the episode is finished (``finished``;
``outcome`` is its last attempt's). Every attempt is kept in ``attempts``
(``AttemptRecord``: episode, start, end, injected failure, outcome).

Noise makes a run realistic (all seeded): ``grasp_xy_noise_m`` / ``grasp_z_noise_m`` shift
the grasp point; ``close_timing_noise_s`` moves the moment the jaws close relative to the
end of the descent; ``speed_noise`` scales segment durations. ``reaction_delay_s``: the
expert sees ground truth that old, so it notices a miss or a drop late, as a person would.

Failure modes, one drawn per attempt with the configured rates (``FailureMode``), each made
by what the arm does, never by editing the truth: ``miss`` (the grasp point off the cube
across the jaws), ``narrow_open`` (the jaws open only to ``narrow_open_rad``, the "insufficient
gripper opening amplitude" of a real evaluation: a pad may land on the cube), ``knock`` (a
pad comes down on the cube's edge and pushes it away), ``slip`` (the grip relaxes to
``slip_open_rad`` during the lift), ``transport_drop`` (the same half way to the bowl),
``release_outside`` (the release point ``release_outside_m`` short of the bowl). The
physics decides what each does; ``AttemptOutcome`` is what ground truth says happened.

Operator takeover (``set_override``): while the override is on the expert sends nothing and
judges nothing (the attempt under way ends as ``interrupted``); when it ends the expert
looks again: cube in the bowl -> the episode succeeded (rescued); otherwise a new attempt
from where the operator left the arm (without an injected failure when
``clean_after_assist``: the operator set the arm up well). The takeover's duration is added
to the episode's time limit.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum

import numpy as np

from so101_driver.eval_topics import SimTruth
from so101_driver.arm.trajectory import Trajectory
from so101_driver.sim.kinematics import ARM, Kinematics
from so101_driver.sim.motion import Phase, Plan, Segment, sample

__all__ = ['ARM', 'AttemptOutcome', 'AttemptRecord', 'ExpertConfig', 'FailureMode',
           'Kinematics', 'Phase', 'ScriptedExpert', 'run_episodes']


class AttemptOutcome(str, Enum):
    """What ground truth says an attempt came to."""

    SUCCESS = 'success'  # the cube rests in the bowl
    MISS = 'miss'  # never held, the cube stayed where it was
    KNOCKED = 'knocked'  # never held, the cube was pushed away (> 1 cm)
    SLIP = 'slip'  # held, lost before the lift ended
    DROP = 'drop'  # held after the lift, lost before the release
    NOT_IN_BOWL = 'not_in_bowl'  # released, the cube is not in the bowl
    TIMEOUT = 'timeout'  # the attempt (or the episode) ran out of time
    INTERRUPTED = 'interrupted'  # the operator took over during the attempt


class FailureMode(str, Enum):
    """A failure the expert makes on purpose in one attempt (rates in ExpertConfig)."""

    NONE = 'none'
    MISS = 'miss'
    NARROW_OPEN = 'narrow_open'
    KNOCK = 'knock'
    SLIP = 'slip'
    TRANSPORT_DROP = 'transport_drop'
    RELEASE_OUTSIDE = 'release_outside'


#: ExpertConfig field holding each mode's rate.
FAILURE_RATES = {FailureMode.MISS: 'miss_rate', FailureMode.NARROW_OPEN: 'narrow_open_rate',
                 FailureMode.KNOCK: 'knock_rate', FailureMode.SLIP: 'slip_rate',
                 FailureMode.TRANSPORT_DROP: 'transport_drop_rate',
                 FailureMode.RELEASE_OUTSIDE: 'release_outside_rate'}


@dataclass
class ExpertConfig:
    """Scripted expert settings (metres, radians, seconds of sim time)."""

    seed: int = 0  # seeds every noise draw
    grasp_xy_noise_m: float = 0.0  # std of the horizontal grasp-point error (m)
    grasp_z_noise_m: float = 0.0  # std of the grasp height error (m)
    close_timing_noise_s: float = 0.0  # std of the jaw-close start relative to descent end (s)
    speed_noise: float = 0.0  # relative std of each segment's duration
    reaction_delay_s: float = 0.0  # age of the ground truth the expert acts on (s)
    chunk_horizon_s: float = 1.0  # length of each published chunk (s)
    chunk_dt_s: float = 0.05  # spacing of the points in a chunk (s)
    approach_height_m: float = 0.06  # grasp point above the cube centre before descending
    carry_height_m: float = 0.09  # grasp point height while carrying (top-down reach ends ~0.11)
    release_height_m: float = 0.08  # grasp point height above the bowl at release
    grasp_depth_m: float = 0.0  # grasp point below the cube centre (+) or above (-)
    gripper_open: float = 0.9  # jaw angle while approaching (rad, ~70 mm between pads)
    gripper_closed: float = -0.17  # jaw angle commanded to pinch (rad; the cube stops it)
    reach_s: float = 2.0  # nominal segment durations (s)
    descend_s: float = 1.2
    close_s: float = 0.8
    lift_s: float = 1.0
    carry_s: float = 2.0
    lower_s: float = 0.8
    release_s: float = 0.6
    retreat_s: float = 1.2
    settle_s: float = 0.8  # wait after the plan before judging the outcome
    attempt_timeout_s: float = 25.0  # give up an attempt after this long
    max_attempts: int = 1  # attempts per episode; 0 = until episode_timeout_s
    episode_timeout_s: float = 0.0  # end the episode (failed) after this long; 0 = never
    retry_pause_s: float = 0.4  # after backing off, wait this long before the next attempt
    clean_after_assist: bool = True  # the attempt after an operator takeover injects nothing
    miss_rate: float = 0.0  # per-attempt probability of each failure mode (FailureMode)
    narrow_open_rate: float = 0.0
    knock_rate: float = 0.0
    slip_rate: float = 0.0
    transport_drop_rate: float = 0.0
    release_outside_rate: float = 0.0
    miss_offset_m: float = 0.035  # grasp point this far across the jaws from the cube (miss)
    knock_offset_m: float = 0.036  # grasp point this far along the jaws (knock: a pad on it)
    narrow_open_rad: float = 0.5  # jaw opening of a narrow_open attempt (a cube holds 0.29)
    slip_open_rad: float = 0.36  # the grip relaxes to this jaw angle (slip, transport_drop)
    release_outside_m: float = 0.15  # release this far short of the bowl (release_outside)
    model_path: str = ''  # arm MJCF for IK; '' = the packaged mjcf/so101.xml

    def __post_init__(self):
        for name in ('grasp_xy_noise_m', 'grasp_z_noise_m', 'close_timing_noise_s',
                     'speed_noise', 'reaction_delay_s', 'episode_timeout_s', 'retry_pause_s',
                     *FAILURE_RATES.values()):
            if not getattr(self, name) >= 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        rates = sum(getattr(self, name) for name in FAILURE_RATES.values())
        if rates > 1.0 + 1e-9:
            raise ValueError(f'the failure rates ({", ".join(FAILURE_RATES.values())}) add up '
                             f'to {rates:.3f}; they are per-attempt probabilities of one mode '
                             'each and must add up to at most 1')
        if self.max_attempts < 0:
            raise ValueError(f'max_attempts must be >= 0 (0 = no limit), got '
                             f'{self.max_attempts}')
        if self.max_attempts == 0 and self.episode_timeout_s == 0:
            raise ValueError('max_attempts 0 (no limit) needs an episode_timeout_s > 0, or '
                             'an episode could go on forever')
        if not 0 < self.chunk_dt_s <= self.chunk_horizon_s:
            raise ValueError(f'need 0 < chunk_dt_s ({self.chunk_dt_s}) <= chunk_horizon_s '
                             f'({self.chunk_horizon_s})')
        for name in ('reach_s', 'descend_s', 'close_s', 'lift_s', 'carry_s', 'lower_s',
                     'release_s', 'retreat_s', 'attempt_timeout_s'):
            if getattr(self, name) <= 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')


@dataclass
class AttemptRecord:
    """One attempt: who planned what, and what ground truth says came of it."""

    episode: int  # the sim episode
    start: float  # sim time the attempt was planned
    mode: FailureMode  # the failure injected (NONE: a clean attempt)
    end: float | None = None  # sim time its outcome was known
    outcome: AttemptOutcome | None = None
    after_assist: bool = False  # the first attempt after an operator takeover


class ScriptedExpert:
    """Plans and streams pick-and-place attempts from ground truth (see module doc)."""

    def __init__(self, config: ExpertConfig | None = None,
                 home: tuple[float, ...] | None = None):
        from so101_driver.sim.cell import HOME

        self.config = config or ExpertConfig()
        self.kin = Kinematics(self.config.model_path)
        self.home = np.array(home if home is not None else HOME, dtype=float)
        self._rng = np.random.default_rng(self.config.seed)
        self._truths: deque[SimTruth] = deque(maxlen=2000)
        self.episode: int | None = None  # the sim episode being worked on
        self.outcome: AttemptOutcome | None = None  # the episode's last attempt, once finished
        self.outcomes: list[AttemptOutcome] = []  # every attempt's outcome, in order
        self.attempts: list[AttemptRecord] = []
        self.finished = False  # the episode is over: success, out of attempts or of time
        self.rescued = False  # the episode ended with the cube placed by the operator
        self._attempt: AttemptRecord | None = None  # running attempt (None between attempts)
        self._episode_attempts = 0
        self._deadline = math.inf  # sim time the episode ends, failed
        self._paused_at: float | None = None  # override on since
        self._assisted = False  # the next attempt follows an operator takeover
        self._plan = Plan()
        self._t0 = 0.0
        self._verified_hold = False
        self._seen_held = False
        self._cube_at_start = np.zeros(3)

    # -- inputs --------------------------------------------------------------------
    def observe(self, truth: SimTruth) -> None:
        """Store a ground-truth sample; ``act`` uses the newest one older than the delay."""
        self._truths.append(truth)

    def _view(self, now: float) -> SimTruth | None:
        cutoff = now - self.config.reaction_delay_s + 1e-9
        seen = None
        # the newest that arrived old enough; no early stop at the first too new one: a single
        # sample stamped in the future (or NaN) would hide every later one for 2000 samples
        for truth in self._truths:
            if truth.stamp <= cutoff:
                seen = truth
        return seen

    def set_override(self, active: bool, now: float) -> None:
        """The operator takes over (True) or hands back (False) at sim time ``now``."""
        if active and self._paused_at is None:
            self._paused_at = now
            if self._attempt is not None:
                self._end_attempt(now, AttemptOutcome.INTERRUPTED)
        elif not active and self._paused_at is not None:
            self._deadline += max(0.0, now - self._paused_at)
            self._paused_at = None
            self._assisted = True
            self._plan = Plan()  # forget the old plan; act() re-plans from the present

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def phase(self, now: float) -> Phase | None:
        return self._plan.phase(now)

    # -- episodes and attempts -----------------------------------------------------
    def _new_episode(self, now: float) -> None:
        c = self.config
        self.finished = self.rescued = False
        self.outcome = None
        self._attempt = None
        self._episode_attempts = 0
        self._deadline = now + c.episode_timeout_s if c.episode_timeout_s else math.inf
        self._assisted = False
        self._plan = Plan()

    def _draw_mode(self) -> FailureMode:
        rates = [getattr(self.config, name) for name in FAILURE_RATES.values()]
        draw = float(self._rng.random())  # always drawn: the same seed, the same sequence
        for mode, edge in zip(FAILURE_RATES, np.cumsum(rates), strict=True):
            if draw < edge:
                return mode
        return FailureMode.NONE

    def _end_attempt(self, now: float, outcome: AttemptOutcome) -> None:
        record = self._attempt
        self._attempt = None
        if record is not None:
            record.end, record.outcome = now, outcome
        self.outcomes.append(outcome)
        self.outcome = outcome
        if outcome is AttemptOutcome.SUCCESS or not self._may_retry(now):
            self.finished = True

    def _may_retry(self, now: float) -> bool:
        c = self.config
        return ((c.max_attempts == 0 or self._episode_attempts < c.max_attempts)
                and now < self._deadline)

    # -- planning ------------------------------------------------------------------
    def _start_attempt(self, truth: SimTruth, now: float, present: np.ndarray) -> None:
        c = self.config
        rng = self._rng
        mode = self._draw_mode()
        if self._assisted and c.clean_after_assist:
            mode = FailureMode.NONE
        self._attempt = AttemptRecord(truth.episode, now, mode, after_assist=self._assisted)
        self.attempts.append(self._attempt)
        self._episode_attempts += 1
        self._assisted = False
        self._verified_hold = self._seen_held = False
        cube = np.array(truth.cube_position)
        self._cube_at_start = cube.copy()
        bowl = np.array(truth.extra.get('bowl_position', (0.14, 0.2, 0.0)))
        quat = truth.extra.get('cube_quat_wxyz', (1.0, 0.0, 0.0, 0.0))
        cube_yaw = 2 * math.atan2(quat[3], quat[0])  # cube rests flat: rotation about z
        q0 = np.array(present, dtype=float)
        jaw_yaw = self.kin.jaw_yaw_for(cube_yaw, q0)
        along = np.array([math.cos(jaw_yaw), math.sin(jaw_yaw), 0.0])  # jaw opening axis
        across = np.array([-along[1], along[0], 0.0])
        sign = 1.0 if rng.random() < 0.5 else -1.0
        grasp = cube + np.array([*rng.normal(0.0, c.grasp_xy_noise_m, 2),
                                 rng.normal(0.0, c.grasp_z_noise_m) - c.grasp_depth_m])
        if mode is FailureMode.MISS:
            grasp = grasp + sign * c.miss_offset_m * across
        elif mode is FailureMode.KNOCK:
            grasp = grasp + sign * c.knock_offset_m * along
        opening = c.narrow_open_rad if mode is FailureMode.NARROW_OPEN else c.gripper_open
        above = grasp + np.array([0.0, 0.0, c.approach_height_m])
        lift = np.array([grasp[0], grasp[1], c.carry_height_m])
        target = bowl[:2].copy()
        if mode is FailureMode.RELEASE_OUTSIDE:  # short of the bowl, on the cube's side
            towards = target - cube[:2]
            target = target - c.release_outside_m * towards / max(np.linalg.norm(towards), 1e-6)
        over_bowl = np.array([target[0], target[1], c.carry_height_m])
        release = np.array([target[0], target[1], c.release_height_m])

        def dur(nominal: float) -> float:
            return max(0.3 * nominal, nominal * (1.0 + rng.normal(0.0, c.speed_noise)))

        close_shift = float(rng.normal(0.0, c.close_timing_noise_s))
        closed = c.gripper_closed
        lift_segments = [Segment(Phase.LIFT, dur(c.lift_s), lift, closed)]
        carry_segments = [Segment(Phase.CARRY, dur(c.carry_s), over_bowl, closed)]
        if mode is FailureMode.SLIP:  # the grip relaxes on the way up, then closes again
            d = lift_segments[0].duration
            lift_segments = [Segment(Phase.LIFT, 0.4 * d, (grasp + lift) / 2, c.slip_open_rad),
                             Segment(Phase.LIFT, 0.6 * d, lift, c.slip_open_rad),
                             Segment(Phase.LIFT, 0.4 * d, lift, closed)]
        elif mode is FailureMode.TRANSPORT_DROP:  # the same, half way to the bowl
            d = carry_segments[0].duration
            carry_segments = [Segment(Phase.CARRY, 0.5 * d, (lift + over_bowl) / 2, closed),
                              Segment(Phase.CARRY, 0.3 * d, (lift + over_bowl) / 2,
                                      c.slip_open_rad),
                              Segment(Phase.CARRY, 0.5 * d, over_bowl, closed)]
        segments = [
            Segment(Phase.REACH, dur(c.reach_s), above, opening),
            Segment(Phase.DESCEND, dur(c.descend_s), grasp, opening),
            Segment(Phase.CLOSE, dur(c.close_s), grasp, closed),
            *lift_segments, *carry_segments,
            Segment(Phase.LOWER, dur(c.lower_s), release, closed),
            Segment(Phase.RELEASE, dur(c.release_s), release, c.gripper_open),
            Segment(Phase.RETREAT, dur(c.retreat_s), None, self.home[-1], joints=self.home),
        ]
        self._t0 = now
        self._plan = sample(self.kin, segments, now, q0, jaw_yaw, c.chunk_dt_s, close_shift)

    def _abort(self, now: float, outcome: AttemptOutcome) -> None:
        """Open the jaws and rise from wherever the plan is now; home if no retry follows."""
        self._end_attempt(now, outcome)
        q = self._plan.at(now)
        pos, _, jaw = self.kin.forward(q)
        up = np.array([pos[0], pos[1], max(pos[2], self.config.carry_height_m)])
        segments = [Segment(Phase.ABORT, 0.5, pos, self.config.gripper_open),
                    Segment(Phase.ABORT, 0.8, up, self.config.gripper_open)]
        if self.finished:
            segments.append(Segment(Phase.RETREAT, self.config.retreat_s, None,
                                    self.home[-1], joints=self.home))
        self._plan = sample(self.kin, segments, now, q, math.atan2(jaw[1], jaw[0]),
                            self.config.chunk_dt_s)

    # -- output --------------------------------------------------------------------
    def act(self, now: float, present: np.ndarray) -> Trajectory | None:
        """The next chunk to send at sim time ``now`` (None: nothing to do yet)."""
        c = self.config
        view = self._view(now)
        if view is None or self.paused:
            return None
        if view.episode != self.episode:
            self.episode = view.episode
            self._new_episode(now)
        if not self.finished:
            if self._attempt is not None:
                self._judge(view, now)
            elif view.in_bowl and self._episode_attempts:
                # between attempts with the cube in the bowl: placed by the operator (no plan
                # since the hand-back) or it got there after the last attempt was judged
                if self._plan.empty:
                    self.rescued = True
                elif self.attempts and self.attempts[-1].episode == self.episode:
                    self.attempts[-1].outcome = AttemptOutcome.SUCCESS
                self._end_attempt(now, AttemptOutcome.SUCCESS)
            elif now >= self._plan.end + c.retry_pause_s:
                if self._may_retry(now) or not self._episode_attempts:
                    self._start_attempt(view, now, present)
                else:
                    self.finished = True
        if self._plan.empty or now > self._plan.end + c.chunk_horizon_s:
            return None  # plan done: the executor holds the last point
        return self._plan.chunk(now, present, c.chunk_horizon_s, c.chunk_dt_s, self.kin.lower,
                                self.kin.upper)

    def _judge(self, view: SimTruth, now: float) -> None:
        c = self.config
        plan = self._plan
        if view.held:
            self._seen_held = True
        if now >= self._deadline:
            self._abort(now, AttemptOutcome.TIMEOUT)
            return
        if not self._verified_hold and view.stamp >= plan.phase_end(Phase.LIFT):
            if view.held:
                self._verified_hold = True
            elif self._seen_held:
                self._abort(now, AttemptOutcome.SLIP)
                return
            else:
                moved = np.linalg.norm(np.array(view.cube_position[:2])
                                       - self._cube_at_start[:2])
                self._abort(now, AttemptOutcome.KNOCKED if moved > 0.01 else
                            AttemptOutcome.MISS)
                return
        if self._verified_hold and view.stamp < plan.phase_start(Phase.RELEASE) and (
                view.dropped or not view.held):
            self._abort(now, AttemptOutcome.DROP)
            return
        if view.stamp >= plan.end + c.settle_s:
            if view.in_bowl:
                self._end_attempt(now, AttemptOutcome.SUCCESS)
            else:
                self._abort(now, AttemptOutcome.NOT_IN_BOWL)
            return
        if now - self._t0 > c.attempt_timeout_s:
            self._abort(now, AttemptOutcome.TIMEOUT)


def run_episodes(cell, expert: ScriptedExpert, episodes: int, chunk_period_s: float = 0.25,
                 operator=None, listener=None) -> list[AttemptOutcome]:
    """Drive ``cell`` (a ``sim.SimCell``) with ``expert`` in-process at physics speed for
    ``episodes`` episodes, resetting the cell after each; returns each episode's last
    attempt outcome (``expert.attempts`` has them all).

    ``operator``: a ``sim.operator.SimOperator`` that may take over through the cell's
    override. ``listener``: gets what a monitor would see, with optional methods
    ``tick(cell, truth)`` (every control tick, before it), ``episode(stamp, success)``
    (success None: a start), ``override(stamp, active)`` and ``trajectory(stamp, source)``.
    """
    from so101_driver.arm.trajectory import CommandSource, Outcome

    def tell(name, *args):
        method = getattr(listener, name, None)
        if method is not None:
            method(*args)

    outcomes: list[AttemptOutcome] = []
    every = max(1, round(chunk_period_s / cell.dt))
    tell('episode', cell.time, None)
    while len(outcomes) < episodes:
        truth = cell.truth()
        expert.observe(truth)
        tell('tick', cell, truth)
        if cell.counters.ticks % every == 0:
            if operator is not None:
                was = cell.controller.override
                operator.drive(cell, expert, truth, listener)
                if cell.controller.override != was:
                    tell('override', cell.time, cell.controller.override)
            traj = expert.act(cell.time, cell.present())
            if traj is not None and not expert.paused:
                result, text = cell.submit(CommandSource.POLICY, traj)
                if result is not Outcome.ACCEPTED:
                    raise RuntimeError(f'the sim refused an expert chunk: {text}')
                tell('trajectory', cell.time, 'policy')
            if expert.finished and expert.episode == cell.episode:
                outcomes.append(expert.outcome)
                success, _ = cell.reset()
                tell('episode', cell.time, success)
                if len(outcomes) < episodes:
                    tell('episode', cell.time, None)
                expert.observe(cell.truth())
        cell.step()
    return outcomes
