"""Joint-trajectory execution and command arbitration, without rclpy.

Semantics (DESIGN.md, "Trajectory semantics"): a trajectory starts at its start time (None
means on receipt). It replaces the part of the current plan that has not run yet, from
``max(start, now)`` on, as ros2_control's JointTrajectoryController does; the plan keeps its
value at that instant as an anchor, so the setpoint never jumps and a new action chunk
blends in without a stop. Points whose time has passed are skipped. Between knots the
setpoint is interpolated linearly at whatever rate ``setpoint()`` is called; after the last
knot it holds. A trajectory is validated whole before anything changes: one bad point
rejects it and the plan stays as it was.

Every goal is then clamped per tick to ``present +/- max_relative_target`` and to the joint
limits (LeRobot's ``max_relative_target`` idea), so no plan, however wrong, can ask a servo
for more than a bounded step from where it really is.

``ArmController`` adds the operator override on top: while override is active only teleop
trajectories are executed and policy trajectories are ignored (counted); each edge of the
override makes the arm hold where its setpoint is, so neither source's stale plan carries on.
The arm node and the simulation node both drive their joints through it.

It also keeps ``latency`` (``so101_driver.latency.CommandLatencyLog``): every accepted
trajectory is noted, and the first ``goal()`` after it (the control tick that sends a setpoint
of the new plan to the servos) completes its record, so the arm and the sim report
command-to-servo latency by putting ``latency.values()`` into their diagnostics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from so101_driver.joints import JOINT_NAMES, JointLimits
from so101_driver.latency import CommandLatencyLog


class RejectReason(str, Enum):
    """Why a trajectory was refused; also the diagnostics counter key."""

    EMPTY = 'empty'
    UNKNOWN_JOINT = 'unknown_joint'
    MISSING_JOINT = 'missing_joint'
    DUPLICATE_JOINT = 'duplicate_joint'
    BAD_SHAPE = 'bad_shape'
    NON_FINITE = 'non_finite'
    TIME_NOT_INCREASING = 'time_not_increasing'
    OUT_OF_LIMITS = 'out_of_limits'
    JUMP_TOO_LARGE = 'jump_too_large'
    ALL_IN_PAST = 'all_points_in_past'
    NO_STATE = 'no_joint_state'


class TrajectoryRejected(ValueError):
    """A trajectory failed validation; nothing about the current plan changed."""

    def __init__(self, reason: RejectReason, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Trajectory:
    """A ROS-independent JointTrajectory: times relative to ``start``, seconds."""

    joint_names: tuple[str, ...]  # order of the columns of ``positions``
    start: float | None  # absolute start time (s, node clock); None: on receipt
    time_from_start: np.ndarray  # (K,) seconds
    positions: np.ndarray  # (K, len(joint_names)) radians


@dataclass
class ExecutorConfig:
    """Safety limits of the executor (radians, seconds)."""

    limits: JointLimits  # position limits; trajectories outside are rejected, goals clipped
    max_jump: np.ndarray | float = 0.35  # max |first point - present| per joint
    max_relative_target: np.ndarray | float = 0.2  # max |goal - present| per joint per tick
    joint_names: tuple[str, ...] = JOINT_NAMES  # executor's own column order

    def __post_init__(self):
        n = len(self.joint_names)
        self.max_jump = np.broadcast_to(np.asarray(self.max_jump, dtype=float), (n,)).copy()
        self.max_relative_target = np.broadcast_to(
            np.asarray(self.max_relative_target, dtype=float), (n,)).copy()
        if np.any(self.max_jump <= 0) or np.any(self.max_relative_target <= 0):
            raise ValueError('max_jump and max_relative_target must be positive')


class TrajectoryExecutor:
    """Holds the plan (absolute-time knots) and turns it into clamped servo goals."""

    def __init__(self, config: ExecutorConfig):
        self.config = config
        # (knot times, knot positions), replaced as one tuple so a reader on another thread
        # (a demo, a status printer) never pairs new times with old positions
        self._plan = (np.zeros(0), np.zeros((0, len(config.joint_names))))

    # -- plan ------------------------------------------------------------------
    @property
    def has_plan(self) -> bool:
        return len(self._plan[0]) > 0

    def end_time(self) -> float | None:
        times = self._plan[0]
        return float(times[-1]) if len(times) else None

    def hold(self, position: np.ndarray, now: float) -> None:
        """Drop the plan and hold ``position`` from ``now`` on."""
        self._plan = (np.array([now]), np.asarray(position, dtype=float).reshape(1, -1).copy())

    def clear(self) -> None:
        self._plan = (np.zeros(0), np.zeros((0, len(self.config.joint_names))))

    def setpoint(self, now: float) -> np.ndarray | None:
        """The plan's position at ``now`` (linear between knots, held at the ends)."""
        times, pos = self._plan
        if not len(times):
            return None
        if now <= times[0]:
            return pos[0].copy()
        if now >= times[-1]:
            return pos[-1].copy()
        k = int(np.searchsorted(times, now, side='right'))
        t0, t1 = times[k - 1], times[k]
        a = (now - t0) / (t1 - t0)
        return pos[k - 1] + a * (pos[k] - pos[k - 1])

    def validate(self, traj: Trajectory, present: np.ndarray | None) -> np.ndarray:
        """Check ``traj`` against every rule; return its positions in executor order."""
        names = self.config.joint_names
        got = list(traj.joint_names)
        if len(traj.time_from_start) == 0:
            raise TrajectoryRejected(RejectReason.EMPTY, 'trajectory has no points')
        unknown = [n for n in got if n not in names]
        if unknown:
            raise TrajectoryRejected(RejectReason.UNKNOWN_JOINT,
                                     f'unknown joint names {unknown}; expected {list(names)}')
        if len(set(got)) != len(got):
            raise TrajectoryRejected(RejectReason.DUPLICATE_JOINT,
                                     f'joint names repeat: {got}')
        missing = [n for n in names if n not in got]
        if missing:
            raise TrajectoryRejected(RejectReason.MISSING_JOINT,
                                     f'joints {missing} missing; every trajectory must command '
                                     f'all of {list(names)}')
        pos = np.asarray(traj.positions, dtype=float)
        tfs = np.asarray(traj.time_from_start, dtype=float)
        if pos.ndim != 2 or pos.shape != (len(tfs), len(got)):
            raise TrajectoryRejected(RejectReason.BAD_SHAPE,
                                     f'positions have shape {pos.shape}, expected '
                                     f'({len(tfs)}, {len(got)}): one value per joint per point')
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(tfs))):
            bad = sorted({int(i) for i in np.argwhere(~np.isfinite(pos))[:, 0]}
                         | {int(i) for i in np.flatnonzero(~np.isfinite(tfs))})
            raise TrajectoryRejected(RejectReason.NON_FINITE,
                                     f'NaN or inf in points {bad}')
        if tfs[0] < 0 or np.any(np.diff(tfs) <= 0):
            raise TrajectoryRejected(RejectReason.TIME_NOT_INCREASING,
                                     f'time_from_start must be >= 0 and strictly increasing, '
                                     f'got {np.round(tfs, 4).tolist()[:8]}...')
        order = [got.index(n) for n in names]
        pos = pos[:, order]
        limits = self.config.limits
        outside = (pos < limits.lower - 1e-9) | (pos > limits.upper + 1e-9)
        if np.any(outside):
            k, j = np.argwhere(outside)[0]
            raise TrajectoryRejected(
                RejectReason.OUT_OF_LIMITS,
                f'point {k}: {names[j]} = {pos[k, j]:.4f} rad outside '
                f'[{limits.lower[j]:.4f}, {limits.upper[j]:.4f}]')
        if present is None:
            raise TrajectoryRejected(RejectReason.NO_STATE,
                                     'no joint state yet: cannot check the first point')
        jump = np.abs(pos[0] - present)
        if np.any(jump > self.config.max_jump):
            j = int(np.argmax(jump - self.config.max_jump))
            raise TrajectoryRejected(
                RejectReason.JUMP_TOO_LARGE,
                f'first point is {jump[j]:.3f} rad from the present position of {names[j]} '
                f'(limit {self.config.max_jump[j]:.3f} rad)')
        return pos

    def submit(self, traj: Trajectory, now: float, present: np.ndarray | None) -> int:
        """Validate and splice ``traj`` into the plan; return how many points were kept."""
        pos = self.validate(traj, present)
        start = traj.start if traj.start else now
        times = start + np.asarray(traj.time_from_start, dtype=float)
        cut = max(start, now)
        future = times > cut
        if not np.any(future):
            raise TrajectoryRejected(RejectReason.ALL_IN_PAST,
                                     f'all {len(times)} points lie before now '
                                     f'(last at {times[-1] - now:+.3f} s)')
        anchor = self.setpoint(cut)
        if anchor is None:  # nothing planned yet: start from where the arm is
            anchor = np.asarray(present, dtype=float)
        old_t, old_p = self._plan
        keep = old_t < cut
        self._plan = (np.concatenate([old_t[keep], [cut], times[future]]),
                      np.vstack([old_p[keep], anchor[None, :], pos[future]]))
        return int(np.count_nonzero(future))

    def goal(self, now: float, present: np.ndarray) -> np.ndarray | None:
        """Setpoint clamped to ``present +/- max_relative_target`` and the joint limits."""
        target = self.setpoint(now)
        if target is None:
            return None
        step = self.config.max_relative_target
        clamped = np.clip(target, present - step, present + step)
        return self.config.limits.clip(clamped)


class CommandSource(str, Enum):
    POLICY = 'policy'
    TELEOP = 'teleop'


class Outcome(str, Enum):
    ACCEPTED = 'accepted'
    REJECTED = 'rejected'
    IGNORED = 'ignored'  # valid, but its source is not in control


@dataclass
class ControllerCounters:
    accepted: Counter = field(default_factory=Counter)  # per source
    rejected: Counter = field(default_factory=Counter)  # per RejectReason value
    ignored: Counter = field(default_factory=Counter)  # per source
    override_edges: int = 0


class ArmController:
    """Executor plus override arbitration between the policy and the operator."""

    def __init__(self, config: ExecutorConfig):
        self.executor = TrajectoryExecutor(config)
        self.override = False
        self.counters = ControllerCounters()
        self.last_message = ''
        self.latency = CommandLatencyLog()  # accepted trajectory -> first tick applying it

    @property
    def in_control(self) -> CommandSource:
        return CommandSource.TELEOP if self.override else CommandSource.POLICY

    def on_trajectory(self, source: CommandSource, traj: Trajectory, now: float,
                      present: np.ndarray | None) -> tuple[Outcome, str]:
        if source is not self.in_control:
            self.counters.ignored[source.value] += 1
            return Outcome.IGNORED, f'{source.value} trajectory ignored: ' \
                                    f'{self.in_control.value} is in control'
        try:
            kept = self.executor.submit(traj, now, present)
        except TrajectoryRejected as err:
            return Outcome.REJECTED, self.record_rejection(source, err)
        self.counters.accepted[source.value] += 1
        start = traj.start if traj.start else None
        self.latency.accepted(source.value, start,
                              (start or now) + float(traj.time_from_start[0]), now)
        return Outcome.ACCEPTED, f'{source.value} trajectory accepted, {kept} points ahead'

    def record_rejection(self, source: CommandSource, err: TrajectoryRejected) -> str:
        """Count a rejection (also one found while converting the message) and describe it."""
        self.counters.rejected[err.reason.value] += 1
        # cut: a message with 10^5 joint names would otherwise put 1 MB into every log line
        # and diagnostics message
        text = str(err)
        text = text if len(text) <= 300 else text[:300] + f'... ({len(text)} characters)'
        self.last_message = f'{source.value} trajectory rejected ({err.reason.value}): {text}'
        return self.last_message

    def on_override(self, active: bool, now: float, present: np.ndarray | None) -> bool:
        """Apply an override sample; True on an edge (the plan was replaced by a hold)."""
        if active == self.override:
            return False
        self.override = active
        self.counters.override_edges += 1
        self.latency.drop_pending()
        hold = self.executor.setpoint(now)
        if hold is None:
            hold = present
        if hold is not None:
            self.executor.hold(hold, now)
        return True

    def hold_present(self, present: np.ndarray, now: float) -> None:
        """Forget every plan and hold the measured position (start, torque on, reconnect)."""
        self.latency.drop_pending()
        self.executor.hold(present, now)

    def goal(self, now: float, present: np.ndarray) -> np.ndarray | None:
        """The tick's clamped goal; the caller sends it to the servos at once, so a trajectory
        accepted since the last tick counts as applied at ``now``."""
        goal = self.executor.goal(now, present)
        if goal is not None:
            self.latency.applied(now)
        return goal
