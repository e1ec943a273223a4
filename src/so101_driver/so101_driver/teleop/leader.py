"""Leader-arm teleoperation core, without rclpy: leader bus setup, leader -> follower joint
mapping, the trajectory step sent each tick, and the distance-based takeover detector.

The leader is an SO-101 whose servos are only read: torque stays off the whole time (the
operator moves it by hand). ``configure_leader`` does what LeRobot's ``SOLeader.configure``
does (torque off, return delay 0, maximum acceleration and acceleration 254, the Phase
angle-feedback bit cleared, position mode) and syncs the EEPROM calibration with the file as
LeRobot does on connect; unlike the follower it writes no P/I/D gains and no gripper torque
or current caps. It never writes Torque_Enable = 1.

Mapping (``LeaderToFollower``): without the follower's calibration the leader's joint
angles are sent as they are (radians, ``calibration.ArmCalibration``), clipped to the URDF
limits. With it, the mapping is LeRobot's teleoperation: leader ticks -> LeRobot units
(degrees for body joints, 0..100 for the gripper) -> follower ticks -> follower radians, so
the gripper maps range to range (the leader's trigger spans a different tick range than the
follower's jaw) and targets are clipped to the follower's calibrated range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np

from so101_driver.feetech.bus import FeetechBus
from so101_driver.feetech.calibration import ArmCalibration, MotorCalibration, so101_norm_modes
from so101_driver.joints import JointLimits, urdf_limits


class OverrideMode(str, Enum):
    """Who raises ``teleop/override``."""

    MANUAL = 'manual'  # the operator: ~/set_override service (console, ros2 service call)
    DISTANCE = 'distance'  # the leader moved away from the follower (TakeoverDetector)


def configure_leader(bus: FeetechBus, calibration: Mapping[str, MotorCalibration],
                     write_calibration: bool = True) -> list[str]:
    """Set the leader's servos up as LeRobot's SO leader does; torque is off afterwards.

    Returns a line per calibration register rewritten; raises ``BusError`` if the servos
    disagree with the file and ``write_calibration`` is False.
    """
    bus.set_torque(False)  # torque off and EEPROM unlocked (Lock = 0), as disable_torque()
    changed = bus.sync_calibration(
        calibration, write_calibration, arm='leader',
        recalibrate='re-run lerobot-calibrate --teleop.type=so101_leader')
    for sid in bus.config.ids:  # no P/I/D and no torque caps: the leader is moved by hand
        bus.configure_motor(sid, acceleration=254)
    return changed


class LeaderToFollower:
    """Leader servo ticks -> follower joint targets (radians, ``JOINT_NAMES`` order)."""

    def __init__(self, leader: ArmCalibration, follower: ArmCalibration | None = None):
        self.leader = leader
        self.follower = follower
        self.modes = so101_norm_modes(use_degrees=True)
        urdf = urdf_limits()
        if follower is None:
            self.limits = urdf
        else:
            lo, hi = follower.radians_range()
            self.limits = JointLimits(lower=np.maximum(urdf.lower, lo),
                                      upper=np.minimum(urdf.upper, hi))

    def leader_radians(self, ticks: np.ndarray) -> np.ndarray:
        """The leader's own joint angles (its calibration only)."""
        return self.leader.ticks_to_radians(ticks)

    def target(self, ticks: np.ndarray) -> np.ndarray:
        """Follower joint targets for the leader at ``ticks``, clipped to the limits."""
        if self.follower is None:
            radians = self.leader.ticks_to_radians(ticks)
        else:
            values = self.leader.ticks_to_lerobot(ticks, self.modes)
            radians = self.follower.lerobot_to_radians(values, self.modes)
        return self.limits.clip(radians)


def teleop_points(target: np.ndarray, follower: np.ndarray | None, max_step: float,
                  lookahead_s: float, catchup_velocity: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Points (K x 6) and times from start (K,) of one teleop trajectory.

    One point at ``lookahead_s`` when the target is within ``max_step`` of the follower on
    every joint (or the follower's state is unknown). Otherwise the first point is the
    target clamped to ``follower +/- max_step`` (so the arm's jump check accepts it) and a
    second point reaches the target at ``catchup_velocity`` (rad/s) on the furthest joint.
    """
    target = np.asarray(target, dtype=float)
    if follower is None:
        return target[None, :], np.array([lookahead_s])
    delta = target - follower
    if np.max(np.abs(delta)) <= max_step:
        return target[None, :], np.array([lookahead_s])
    first = follower + np.clip(delta, -max_step, max_step)
    remaining = float(np.max(np.abs(target - first)))
    return (np.vstack([first, target]),
            np.array([lookahead_s, lookahead_s + remaining / catchup_velocity]))


@dataclass
class TakeoverConfig:
    """Distance-mode override thresholds (radians, seconds)."""

    takeover_threshold_rad: float = 0.25  # leader this far from the follower on any joint ...
    leader_motion_threshold_rad: float = 0.05  # ... and moved this much since it last rested
    release_threshold_rad: float = 0.08  # leader within this of the follower on every joint
    release_hold_s: float = 1.0  # ... for this long: override released

    def __post_init__(self):
        if not self.takeover_threshold_rad > 0:
            raise ValueError('takeover_threshold_rad must be > 0, got '
                             f'{self.takeover_threshold_rad}')
        if not 0 < self.release_threshold_rad < self.takeover_threshold_rad:
            raise ValueError(f'release_threshold_rad ({self.release_threshold_rad}) must be > 0 '
                             f'and below takeover_threshold_rad ({self.takeover_threshold_rad})')
        if self.leader_motion_threshold_rad < 0 or self.release_hold_s < 0:
            raise ValueError('leader_motion_threshold_rad and release_hold_s must be >= 0')


class TakeoverDetector:
    """Raises the override when the operator moves the leader away from the follower.

    Takeover: on some joint the leader is more than ``takeover_threshold_rad`` from the
    follower, and the leader itself has moved more than ``leader_motion_threshold_rad`` from
    where it rested when the override was last released (or at start). The second condition
    keeps a policy that moves the follower away from a resting leader from counting as an
    intervention. Release: every joint within ``release_threshold_rad`` of the follower
    for ``release_hold_s`` without a break; the leader's pose then becomes the new rest.
    Without follower state the override stays as it is.
    """

    def __init__(self, config: TakeoverConfig):
        self.config = config
        self.active = False
        self.rest: np.ndarray | None = None
        self.distance = 0.0  # last max |leader - follower|, for diagnostics
        self._within_since: float | None = None

    def update(self, leader: np.ndarray, follower: np.ndarray | None, now: float) -> bool:
        leader = np.asarray(leader, dtype=float)
        if self.rest is None:
            self.rest = leader.copy()
        if follower is None:
            return self.active
        cfg = self.config
        self.distance = float(np.max(np.abs(leader - follower)))
        if not self.active:
            moved = float(np.max(np.abs(leader - self.rest)))
            if self.distance > cfg.takeover_threshold_rad \
                    and moved > cfg.leader_motion_threshold_rad:
                self.active = True
                self._within_since = None
            return self.active
        if self.distance > cfg.release_threshold_rad:
            self._within_since = None
        elif self._within_since is None:
            self._within_since = now
        if self._within_since is not None and now - self._within_since >= cfg.release_hold_s:
            self.active = False
            self._within_since = None
            self.rest = leader.copy()
        return self.active
