"""The simulated operator: when to take over an episode and what to do then (no rclpy).

It stands where a person with a leader arm would. It watches the episode (the monitor's
events in the demo: failed grasps and drops; or an in-process expert's attempts) and takes
over *inside* the episode after ``rescue_after_failures`` failed attempts, or when the
episode has gone ``stall_s`` without a grasp success. Then, with the override on, it
either sets the arm up for the next try (``mode='assist'``: jaws wide open, above the
cube where it lies now) or does the pick-and-place itself (``mode='place'``, a noiseless
scripted attempt), and hands back ``hand_back_s`` after its motion. At most
``max_per_episode`` takeovers per episode. Trajectories are what the leader arm would
publish on ``teleop/joint_trajectory``: chunks starting at the measured position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from so101_driver.eval_topics import SimTruth
from so101_driver.arm.trajectory import Trajectory
from so101_driver.sim.expert import AttemptOutcome, ExpertConfig, ScriptedExpert
from so101_driver.sim.kinematics import Kinematics
from so101_driver.sim.motion import Phase, Plan, Segment, sample

MODES = ('assist', 'place')
_NOT_FAILURES = (AttemptOutcome.SUCCESS, AttemptOutcome.INTERRUPTED)


@dataclass
class OperatorConfig:
    """Settings of the simulated operator (seconds of sim time)."""

    rescue_after_failures: int = 4  # failed attempts in an episode before taking over; 0 = never
    stall_s: float = 0.0  # take over after this long in an episode without a grasp success; 0 = never
    mode: str = 'assist'  # 'assist' (set the arm up, hand back) or 'place' (do it, hand back)
    max_per_episode: int = 1  # takeovers per episode
    move_s: float = 2.0  # duration of the assist move
    hand_back_s: float = 0.5  # hold after the move before handing back
    approach_height_m: float = 0.07  # assist: grasp point this far above the cube
    chunk_horizon_s: float = 1.0
    chunk_dt_s: float = 0.05

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f'operator mode must be one of {MODES}, got {self.mode!r}')
        if self.rescue_after_failures < 0 or self.stall_s < 0 or self.max_per_episode < 0:
            raise ValueError('rescue_after_failures, stall_s and max_per_episode must be >= 0')


class SimOperator:
    """Takeover decisions and teleop chunks (see the module docstring)."""

    def __init__(self, config: OperatorConfig | None = None):
        self.config = config or OperatorConfig()
        self.kin = Kinematics()
        self.episode: int | None = None
        self.episode_start = 0.0
        self.failures = 0  # failed attempts seen in this episode
        self.last_progress = 0.0  # episode start or the last grasp success
        self.takeovers = 0  # in this episode
        self.total = 0  # takeovers in all
        self.active = False
        self.reason = ''
        self._plan = Plan()
        self._helper: ScriptedExpert | None = None  # mode 'place'
        self._hand_back_at = math.inf
        self._judged = 0  # drive(): attempts of the in-process expert already counted

    # -- what the operator sees ----------------------------------------------------
    def episode_started(self, now: float, episode: int | None = None) -> None:
        self.episode, self.episode_start, self.last_progress = episode, now, now
        self.failures = self.takeovers = 0

    def failure(self, now: float) -> None:
        """A failed grasp or a drop was seen."""
        self.failures += 1

    def progress(self, now: float) -> None:
        """A grasp success was seen."""
        self.last_progress = now

    # -- what the operator does ----------------------------------------------------
    def wants_takeover(self, now: float) -> str:
        """Why the operator takes over now ('' = it does not)."""
        c = self.config
        if self.active or self.episode is None or self.takeovers >= c.max_per_episode:
            return ''
        if c.rescue_after_failures and self.failures >= c.rescue_after_failures:
            return f'{self.failures} failed attempts'
        if c.stall_s and now - self.last_progress > c.stall_s:
            return f'no grasp success for {now - self.last_progress:.0f} s'
        return ''

    def step(self, now: float, truth: SimTruth | None,
             present: np.ndarray | None) -> tuple[bool | None, Trajectory | None]:
        """(override edge to publish or None, teleop chunk to publish or None)."""
        if present is None or truth is None:
            return None, None
        if not self.active:
            reason = self.wants_takeover(now)
            if not reason:
                return None, None
            self.active, self.reason = True, reason
            self.takeovers += 1
            self.total += 1
            self._start(now, truth, present)
            return True, self._chunk(now, present)
        if self._helper is not None:
            self._helper.observe(truth)
            traj = self._helper.act(now, present)
            if self._helper.finished and self._hand_back_at == math.inf:
                self._hand_back_at = now + self.config.hand_back_s
            if now < self._hand_back_at:
                return None, traj
        elif now < self._plan.end + self.config.hand_back_s:
            return None, self._chunk(now, present)
        self.active = False
        self.failures = 0
        self.last_progress = now
        return False, None

    def _start(self, now: float, truth: SimTruth, present: np.ndarray) -> None:
        c = self.config
        self._hand_back_at = math.inf
        if c.mode == 'place':
            self._helper = ScriptedExpert(ExpertConfig(chunk_horizon_s=c.chunk_horizon_s,
                                                       chunk_dt_s=c.chunk_dt_s))
            self._helper.observe(truth)
            self._plan = Plan()
            return
        self._helper = None
        q0 = np.array(present, dtype=float)
        quat = truth.extra.get('cube_quat_wxyz', (1.0, 0.0, 0.0, 0.0))
        jaw_yaw = self.kin.jaw_yaw_for(2 * math.atan2(quat[3], quat[0]), q0)
        above = np.array(truth.cube_position) + np.array([0.0, 0.0, c.approach_height_m])
        self._plan = sample(self.kin, [Segment(Phase.REACH, c.move_s, above, 0.9)], now, q0,
                            jaw_yaw, c.chunk_dt_s)

    def _chunk(self, now: float, present: np.ndarray) -> Trajectory | None:
        if self._helper is not None:
            return self._helper.act(now, present)
        c = self.config
        return self._plan.chunk(now, present, c.chunk_horizon_s, c.chunk_dt_s, self.kin.lower,
                                self.kin.upper)

    # -- in-process use (sim.expert.run_episodes) ----------------------------------
    def drive(self, cell, expert: ScriptedExpert, truth: SimTruth, listener=None) -> None:
        """Watch ``expert``'s attempts in ``cell`` and take over through the cell."""
        from so101_driver.arm.trajectory import CommandSource

        now = cell.time
        if truth.episode != self.episode:
            self.episode_started(now, truth.episode)
        while self._judged < len(expert.attempts) and expert.attempts[self._judged].outcome:
            if expert.attempts[self._judged].outcome not in _NOT_FAILURES:
                self.failure(now)
            self._judged += 1
        edge, traj = self.step(now, truth, cell.present())
        if edge is not None:
            cell.set_override(edge)
            expert.set_override(edge, now)
        if traj is not None:
            cell.submit(CommandSource.TELEOP, traj)
            if getattr(listener, 'trajectory', None) is not None:
                listener.trajectory(now, 'teleop')
