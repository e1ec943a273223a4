"""A scripted pick-and-place expert for the simulated cell, without rclpy.

This is a scripted demonstrator that reads the simulator's ground truth; it is not the
policy and never stands in for one. Given ``SimTruth`` (cube and bowl positions) and the
present joint angles it plans, with inverse kinematics on its OWN MuJoCo model of the arm
(``mjcf/so101.xml``, nothing shared with the simulator), a top-down grasp: reach above the
cube, descend, close, lift, carry over the bowl, lower, open, retreat. It streams the plan
as ``Trajectory`` chunks (start = now; first point = the measured position, so the
executor's ``max_jump`` check passes), through exactly the checks a policy's chunks meet.

Noise makes a run realistic (all seeded): ``grasp_xy_noise_m`` / ``grasp_z_noise_m`` shift
the grasp point (a shift towards the fixed jaw lands a pad on the cube: a miss; a high grasp
pinches the cube's top edge: it may slip out on the way: a drop); ``close_timing_noise_s``
moves the moment the jaws close relative to the end of the descent; ``speed_noise`` scales
segment durations. ``reaction_delay_s``: the expert sees ground truth that old, so it
notices a miss or a drop late, as a person would.

An attempt ends with an ``AttemptOutcome``: success (cube in the bowl), miss (not held
after the lift), drop (held, then lost before the release), not_in_bowl, or timeout.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import mujoco
import numpy as np

from so101_driver.eval_topics import SimTruth
from so101_driver.joints import JOINT_NAMES, JointLimits, package_root, urdf_limits
from so101_driver.arm.trajectory import Trajectory

ARM = 5  # body joints; index 5 is the gripper


class Phase(str, Enum):
    REACH = 'reach'
    DESCEND = 'descend'
    CLOSE = 'close'
    LIFT = 'lift'
    CARRY = 'carry'
    LOWER = 'lower'
    RELEASE = 'release'
    RETREAT = 'retreat'
    ABORT = 'abort'  # open and back off after a miss or a drop


class AttemptOutcome(str, Enum):
    SUCCESS = 'success'
    MISS = 'miss'
    DROP = 'drop'
    NOT_IN_BOWL = 'not_in_bowl'
    TIMEOUT = 'timeout'


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
    model_path: str = ''  # arm MJCF for IK; '' = the packaged mjcf/so101.xml

    def __post_init__(self):
        for name in ('grasp_xy_noise_m', 'grasp_z_noise_m', 'close_timing_noise_s',
                     'speed_noise', 'reaction_delay_s'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if not 0 < self.chunk_dt_s <= self.chunk_horizon_s:
            raise ValueError(f'need 0 < chunk_dt_s ({self.chunk_dt_s}) <= chunk_horizon_s '
                             f'({self.chunk_horizon_s})')
        for name in ('reach_s', 'descend_s', 'close_s', 'lift_s', 'carry_s', 'lower_s',
                     'release_s', 'retreat_s', 'attempt_timeout_s'):
            if getattr(self, name) <= 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')


class Kinematics:
    """Top-down inverse kinematics of the grasp point on a private copy of the arm model."""

    def __init__(self, model_path: str = ''):
        path = Path(model_path) if model_path else package_root() / 'mjcf' / 'so101.xml'
        if not path.is_file():
            raise FileNotFoundError(f'arm MJCF {path} does not exist (expert model_path)')
        self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in JOINT_NAMES])
        self._dof = np.array([m.jnt_dofadr[m.joint(n).id] for n in JOINT_NAMES])[:ARM]
        self._site = m.site('grasp_center').id
        self._tool = m.site('gripperframe').id  # its x axis is the approach direction
        self._body = m.body('gripper').id  # its x axis is the jaw-opening direction
        limits: JointLimits = urdf_limits()
        self.lower, self.upper = limits.lower, limits.upper

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(grasp point, approach axis, jaw axis) in the world frame for joint angles ``q``."""
        self.data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # cdof, needed by mj_jacSite
        return (self.data.site_xpos[self._site].copy(),
                self.data.site_xmat[self._tool].reshape(3, 3)[:, 0].copy(),
                self.data.xmat[self._body].reshape(3, 3)[:, 0].copy())

    def jaw_yaw_for(self, cube_yaw: float, q_seed: np.ndarray) -> float:
        """The cube-face direction (cube yaw + k * 90 deg) nearest the jaws' present yaw."""
        _, _, jaw = self.forward(q_seed)
        now = math.atan2(jaw[1], jaw[0])
        options = cube_yaw + np.arange(-4, 5) * (math.pi / 2)
        return float(options[np.argmin(np.abs(np.angle(np.exp(1j * (options - now)))))])

    def solve(self, target: np.ndarray, jaw_yaw: float, q_seed: np.ndarray,
              iterations: int = 60, tolerance: float = 5e-4) -> tuple[np.ndarray, float]:
        """Joint angles putting the grasp point at ``target`` with the approach axis down and
        the jaws opening along ``jaw_yaw``; damped least squares from ``q_seed``. Returns the
        angles (gripper copied from the seed) and the remaining position error (m)."""
        q = np.array(q_seed, dtype=float)
        want_approach = np.array([0.0, 0.0, -1.0])
        want_jaw = np.array([math.cos(jaw_yaw), math.sin(jaw_yaw), 0.0])
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        err_pos = np.inf
        for _ in range(iterations):
            pos, approach, jaw = self.forward(q)
            e_pos = np.asarray(target) - pos
            e_rot = 0.5 * (np.cross(approach, want_approach) + np.cross(jaw, want_jaw))
            err_pos = float(np.linalg.norm(e_pos))
            if err_pos < tolerance and np.linalg.norm(e_rot) < 5 * tolerance:
                break
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self._site)
            jac = np.vstack([jacp[:, self._dof], 0.15 * jacr[:, self._dof]])
            err = np.concatenate([e_pos, 0.15 * e_rot])
            step = jac.T @ np.linalg.solve(jac @ jac.T + 1e-5 * np.eye(6), err)
            q[:ARM] = np.clip(q[:ARM] + np.clip(step, -0.2, 0.2), self.lower[:ARM],
                              self.upper[:ARM])
        return q, err_pos


def _smooth(s: np.ndarray) -> np.ndarray:
    """Smoothstep: zero velocity at both ends of a segment."""
    return s * s * (3 - 2 * s)


@dataclass
class _Segment:
    phase: Phase
    duration: float
    goal: np.ndarray | None  # grasp-point target (m) at the end; None = joint-space move
    gripper: float  # jaw angle at the end of the segment
    joints: np.ndarray | None = None  # joint-space target (for REACH/RETREAT to home)


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
        self.episode: int | None = None  # the sim episode of the current attempt
        self.outcome: AttemptOutcome | None = None  # set when the attempt has finished
        self.outcomes: list[AttemptOutcome] = []
        self._times = np.zeros(0)  # absolute sim times of the plan's samples
        self._plan = np.zeros((0, len(JOINT_NAMES)))
        self._phases: list[tuple[float, Phase]] = []  # (start time, phase)
        self._t0 = 0.0
        self._lift_end = math.inf
        self._release_start = math.inf
        self._verified_hold = False
        self._seen_held = False

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

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def phase(self, now: float) -> Phase | None:
        current = None
        for start, phase in self._phases:
            if now >= start:
                current = phase
        return current

    # -- planning ------------------------------------------------------------------
    def _start_attempt(self, truth: SimTruth, now: float, present: np.ndarray) -> None:
        c = self.config
        rng = self._rng
        self.episode = truth.episode
        self.outcome = None
        self._verified_hold = False
        self._seen_held = False
        cube = np.array(truth.cube_position)
        bowl = np.array(truth.extra.get('bowl_position', (0.14, 0.2, 0.0)))
        quat = truth.extra.get('cube_quat_wxyz', (1.0, 0.0, 0.0, 0.0))
        cube_yaw = 2 * math.atan2(quat[3], quat[0])  # cube rests flat: rotation about z
        grasp = cube + np.array([*rng.normal(0.0, c.grasp_xy_noise_m, 2),
                                 rng.normal(0.0, c.grasp_z_noise_m) - c.grasp_depth_m])
        above = grasp + np.array([0.0, 0.0, c.approach_height_m])
        lift = np.array([grasp[0], grasp[1], c.carry_height_m])
        over_bowl = np.array([bowl[0], bowl[1], c.carry_height_m])
        release = np.array([bowl[0], bowl[1], c.release_height_m])

        def dur(nominal: float) -> float:
            return max(0.3 * nominal, nominal * (1.0 + rng.normal(0.0, c.speed_noise)))

        close_shift = float(rng.normal(0.0, c.close_timing_noise_s))
        q0 = np.array(present, dtype=float)
        jaw_yaw = self.kin.jaw_yaw_for(cube_yaw, q0)
        segments = [
            _Segment(Phase.REACH, dur(c.reach_s), above, c.gripper_open),
            _Segment(Phase.DESCEND, dur(c.descend_s), grasp, c.gripper_open),
            _Segment(Phase.CLOSE, dur(c.close_s), grasp, c.gripper_closed),
            _Segment(Phase.LIFT, dur(c.lift_s), lift, c.gripper_closed),
            _Segment(Phase.CARRY, dur(c.carry_s), over_bowl, c.gripper_closed),
            _Segment(Phase.LOWER, dur(c.lower_s), release, c.gripper_closed),
            _Segment(Phase.RELEASE, dur(c.release_s), release, c.gripper_open),
            _Segment(Phase.RETREAT, dur(c.retreat_s), None, self.home[-1], joints=self.home),
        ]
        self._build(segments, now, q0, jaw_yaw, close_shift)

    def _build(self, segments: list[_Segment], now: float, q0: np.ndarray, jaw_yaw: float,
               close_shift: float = 0.0) -> None:
        """Sample the segments into absolute-time joint knots starting at ``now``."""
        dt = self.config.chunk_dt_s
        times, rows, phases = [now], [q0.copy()], []
        q = q0.copy()
        t = now
        for k, seg in enumerate(segments):
            if seg.phase is Phase.CLOSE and k > 0 and close_shift:
                # close early (overlapping the descent) or late (a pause): timing noise
                shift = max(-segments[k - 1].duration, close_shift)
                if shift < 0:
                    t += shift
                    keep = np.array(times) <= t + 1e-9
                    times = list(np.array(times)[keep])
                    rows = [r for r, kk in zip(rows, keep, strict=True) if kk]
                    q = rows[-1].copy()
                else:
                    times.append(t + shift)
                    rows.append(q.copy())
                    t += shift
            phases.append((t, seg.phase))
            n = max(1, math.ceil(seg.duration / dt))
            start_q = q.copy()
            start_pos, _, _ = self.kin.forward(start_q)
            if seg.joints is not None:
                joint_goal = self.kin.lower.copy()
                joint_goal[:] = np.clip(seg.joints, self.kin.lower, self.kin.upper)
            for i in range(1, n + 1):
                s = float(_smooth(np.array(i / n)))
                if seg.goal is None:
                    q = start_q + s * (joint_goal - start_q)
                else:
                    target = start_pos + s * (seg.goal - start_pos)
                    q, _ = self.kin.solve(target, jaw_yaw, q)
                    q[-1] = start_q[-1] + s * (seg.gripper - start_q[-1])
                times.append(t + seg.duration * i / n)
                rows.append(q.copy())
            t += seg.duration
            if seg.phase is Phase.LIFT:
                self._lift_end = t
            if seg.phase is Phase.RELEASE:
                self._release_start = phases[-1][0]
        self._t0 = now
        self._times = np.array(times)
        self._plan = np.clip(np.array(rows), self.kin.lower, self.kin.upper)
        self._phases = phases

    def _abort(self, now: float, outcome: AttemptOutcome) -> None:
        """Open the jaws, rise and go home from wherever the plan is now."""
        self.outcome = outcome
        self.outcomes.append(outcome)
        q = self._plan_at(now)
        pos, _, jaw = self.kin.forward(q)
        up = np.array([pos[0], pos[1], max(pos[2], self.config.carry_height_m)])
        segments = [
            _Segment(Phase.ABORT, 0.5, pos, self.config.gripper_open),
            _Segment(Phase.ABORT, 0.8, up, self.config.gripper_open),
            _Segment(Phase.RETREAT, self.config.retreat_s, None, self.home[-1],
                     joints=self.home),
        ]
        self._lift_end = self._release_start = math.inf
        self._build(segments, now, q, math.atan2(jaw[1], jaw[0]))

    def _plan_at(self, t: float) -> np.ndarray:
        return np.array([np.interp(t, self._times, self._plan[:, j])
                         for j in range(self._plan.shape[1])])

    # -- output --------------------------------------------------------------------
    def act(self, now: float, present: np.ndarray) -> Trajectory | None:
        """The next chunk to send at sim time ``now`` (None: nothing to do yet)."""
        c = self.config
        view = self._view(now)
        if view is None:
            return None
        if view.episode != self.episode:
            self._start_attempt(view, now, present)
        elif not self.finished:
            self._judge(view, now)
        if not len(self._times) or now > self._times[-1] + c.chunk_horizon_s:
            return None  # plan done: the executor holds the last point
        n = max(2, round(c.chunk_horizon_s / c.chunk_dt_s) + 1)
        tfs = np.arange(n) * c.chunk_dt_s
        points = np.array([self._plan_at(now + t) for t in tfs])
        # The first point is where the arm was measured (within the limits): by the time the
        # chunk arrives it lies in the past and is skipped, but it is what the executor's
        # max_jump check compares, so a chunk is never refused because the arm lags the plan
        # (a jaw blocked by the cube always does) or the message was late.
        points[0] = np.clip(present, self.kin.lower, self.kin.upper)
        return Trajectory(joint_names=JOINT_NAMES, start=now, time_from_start=tfs,
                          positions=points)

    def _judge(self, view: SimTruth, now: float) -> None:
        c = self.config
        if view.held:
            self._seen_held = True
        if not self._verified_hold and view.stamp >= self._lift_end:
            if view.held:
                self._verified_hold = True
            else:
                self._abort(now, AttemptOutcome.MISS)
                return
        if self._verified_hold and view.stamp < self._release_start and (
                view.dropped or not view.held):
            self._abort(now, AttemptOutcome.DROP)
            return
        if view.stamp >= self._times[-1] + c.settle_s:
            outcome = AttemptOutcome.SUCCESS if view.in_bowl else AttemptOutcome.NOT_IN_BOWL
            self.outcome = outcome
            self.outcomes.append(outcome)
            return
        if now - self._t0 > c.attempt_timeout_s:
            self.outcome = AttemptOutcome.TIMEOUT
            self.outcomes.append(AttemptOutcome.TIMEOUT)


def run_episodes(cell, expert: ScriptedExpert, episodes: int,
                 chunk_period_s: float = 0.25) -> list[AttemptOutcome]:
    """Drive ``cell`` (a ``sim.SimCell``) with ``expert`` in-process at physics speed for
    ``episodes`` attempts, resetting the cell after each; returns the outcomes in order."""
    from so101_driver.arm.trajectory import CommandSource, Outcome

    outcomes: list[AttemptOutcome] = []
    every = max(1, round(chunk_period_s / cell.dt))
    while len(outcomes) < episodes:
        expert.observe(cell.truth())
        if cell.counters.ticks % every == 0:
            traj = expert.act(cell.time, cell.present())
            if traj is not None:
                result, text = cell.submit(CommandSource.POLICY, traj)
                if result is not Outcome.ACCEPTED:
                    raise RuntimeError(f'the sim refused an expert chunk: {text}')
            if expert.finished and expert.episode == cell.episode:
                outcomes.append(expert.outcome)
                cell.reset()
                expert.observe(cell.truth())
        cell.step()
    return outcomes
