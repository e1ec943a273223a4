"""Motion plans of the scripted expert and the simulated operator: segments -> joint knots.

A plan is a list of ``Segment``\\ s (a grasp-point target reached along a straight line with
the approach axis down, or a joint-space move), sampled every ``dt`` with a smoothstep
profile into absolute-time joint knots by ``sample``; ``Plan.at`` interpolates them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from so101_driver.arm.trajectory import Trajectory
from so101_driver.joints import JOINT_NAMES
from so101_driver.sim.kinematics import Kinematics


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


@dataclass
class Segment:
    phase: Phase
    duration: float
    goal: np.ndarray | None  # grasp-point target (m) at the end; None = joint-space move
    gripper: float  # jaw angle at the end of the segment
    joints: np.ndarray | None = None  # joint-space target (for REACH/RETREAT to home)


@dataclass
class Plan:
    """Absolute-time joint knots and the start time of each phase."""

    times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, len(JOINT_NAMES))))
    phases: list[tuple[float, Phase]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not len(self.times)

    @property
    def end(self) -> float:
        return float(self.times[-1]) if len(self.times) else -math.inf

    def at(self, t: float) -> np.ndarray:
        return np.array([np.interp(t, self.times, self.positions[:, j])
                         for j in range(self.positions.shape[1])])

    def chunk(self, now: float, present: np.ndarray, horizon_s: float, dt_s: float,
              lower: np.ndarray, upper: np.ndarray) -> Trajectory:
        """The plan from ``now`` for ``horizon_s`` as a trajectory chunk.

        The first point is where the arm was measured (within the limits): by the time the
        chunk arrives it lies in the past and is skipped, but it is what the executor's
        max_jump check compares, so a chunk is never refused because the arm lags the plan
        (a jaw blocked by the cube always does) or the message was late."""
        n = max(2, round(horizon_s / dt_s) + 1)
        tfs = np.arange(n) * dt_s
        points = np.array([self.at(now + t) for t in tfs])
        points[0] = np.clip(present, lower, upper)
        return Trajectory(joint_names=JOINT_NAMES, start=now, time_from_start=tfs,
                          positions=points)

    def phase(self, t: float) -> Phase | None:
        current = None
        for start, phase in self.phases:
            if t >= start:
                current = phase
        return current

    def phase_end(self, phase: Phase) -> float:
        """End of the last segment of ``phase`` (inf if the plan has none)."""
        ends = [self.phases[i + 1][0] if i + 1 < len(self.phases) else self.end
                for i, (_, p) in enumerate(self.phases) if p is phase]
        return ends[-1] if ends else math.inf

    def phase_start(self, phase: Phase) -> float:
        """Start of the first segment of ``phase`` (inf if the plan has none)."""
        starts = [t for t, p in self.phases if p is phase]
        return starts[0] if starts else math.inf


def smooth(s: np.ndarray) -> np.ndarray:
    """Smoothstep: zero velocity at both ends of a segment."""
    return s * s * (3 - 2 * s)


def sample(kin: Kinematics, segments: list[Segment], now: float, q0: np.ndarray,
           jaw_yaw: float, dt: float, close_shift: float = 0.0) -> Plan:
    """Sample the segments into absolute-time joint knots starting at ``now`` from ``q0``.

    ``close_shift`` moves the start of the CLOSE segment: early (overlapping the previous
    segment, negative) or late (a pause, positive): the expert's timing noise."""
    times, rows, phases = [now], [q0.copy()], []
    q = q0.copy()
    t = now
    for k, seg in enumerate(segments):
        if seg.phase is Phase.CLOSE and k > 0 and close_shift:
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
        start_pos, _, _ = kin.forward(start_q)
        if seg.joints is not None:
            joint_goal = np.clip(seg.joints, kin.lower, kin.upper)
        for i in range(1, n + 1):
            s = float(smooth(np.array(i / n)))
            if seg.goal is None:
                q = start_q + s * (joint_goal - start_q)
            else:
                target = start_pos + s * (seg.goal - start_pos)
                q, _ = kin.solve(target, jaw_yaw, q)
                q[-1] = start_q[-1] + s * (seg.gripper - start_q[-1])
            times.append(t + seg.duration * i / n)
            rows.append(q.copy())
        t += seg.duration
    return Plan(np.array(times), np.clip(np.array(rows), kin.lower, kin.upper), phases)
