"""The simulated pick-and-place cell (MuJoCo), without rclpy.

``SimCell`` holds the SO-101 on a table with a ~3 cm red cube and a gray bowl
(``mjcf/scene.xml``). Its joint angles are the URDF's radians (same zero, same direction),
so the policy's and the arm's conventions carry over unchanged. Commands go through the
same ``trajectory.ArmController`` as the real arm, run at ``control_rate_hz`` in sim time;
each control tick sends the clamped goal to MuJoCo position actuators and steps the physics
until the next tick. Time is the cell's own clock (seconds since start, never reset), so
every stamp a node derives from it is sim time.

Ground truth (``SimTruth``): ``held`` when both jaw pads touch the cube and the cube
rests on nothing (neither table nor bowl) (released only after ``release_ticks`` ticks without both pads, so
contact chatter is not a release); ``lifted`` when the cube's lowest corner is more than
``lift_threshold_m`` above the table; ``in_bowl`` when the cube rests inside the bowl's wall
below its rim and is not held; ``dropped`` is true once, in the first ``truth()`` after a
held cube is let go anywhere but over the bowl.

Rendering (``renderer.SimRenderer``) is separate because an OpenGL context belongs to the thread
that made it; use one renderer per thread (``MUJOCO_GL=egl`` on a machine without display).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from so101_driver.eval_topics import SimTruth
from so101_driver.joints import JOINT_NAMES, JointLimits, package_root, urdf_limits
from so101_driver.arm.trajectory import (
    ArmController,
    CommandSource,
    ExecutorConfig,
    Outcome,
    Trajectory,
)

CAMERA_NAMES: tuple[str, ...] = ('front', 'handeye')
CUBE_HALF = 0.015  # m, half the cube's edge (mjcf/scene.xml)
BOWL_INNER_RADIUS = 0.064  # m, wall ring radius minus wall half-thickness (mjcf/scene.xml)
BOWL_RIM_HEIGHT = 0.045  # m
#: Ready pose above the table, gripper pointing down and slightly open (radians).
HOME = (0.0, -1.0, 0.7, 1.5, 0.0, 0.3)


def default_model_path() -> Path:
    return package_root() / 'mjcf' / 'scene.xml'


@dataclass
class SimConfig:
    """Settings of the simulated cell (metres, radians, seconds of sim time)."""

    model_path: str = ''  # MJCF scene; '' = the packaged mjcf/scene.xml
    seed: int = 0  # seeds the cube placement of every reset
    control_rate_hz: float = 100.0  # ArmController rate, in sim time
    max_jump: float = 0.35  # max |first trajectory point - present| per joint (rad)
    max_relative_target: float = 0.2  # max |goal - present| per joint per tick (rad)
    limit_margin: float = 0.0  # shrink the URDF limits on each side (rad)
    cube_x_range: tuple[float, float] = (0.17, 0.26)  # cube centre x at reset (m, base frame)
    cube_y_range: tuple[float, float] = (-0.12, 0.06)  # cube centre y at reset (m)
    cube_yaw_range: tuple[float, float] = (-0.6, 0.6)  # cube yaw at reset (rad)
    bowl_xy: tuple[float, float] = (0.14, 0.2)  # bowl centre on the table (m)
    home: tuple[float, ...] = HOME  # arm pose after a reset (rad, JOINT_NAMES order)
    lift_threshold_m: float = 0.008  # cube lowest corner above the table that counts as lifted
    release_ticks: int = 3  # ticks without both pads before a held cube counts as let go

    def __post_init__(self):
        if self.control_rate_hz <= 0:
            raise ValueError(f'control_rate_hz must be > 0, got {self.control_rate_hz}')
        for name in ('cube_x_range', 'cube_y_range', 'cube_yaw_range'):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f'{name} must be (low, high) with low <= high, got {(lo, hi)}')
            setattr(self, name, (float(lo), float(hi)))
        if len(self.home) != len(JOINT_NAMES):
            raise ValueError(f'home needs {len(JOINT_NAMES)} joint values, got {len(self.home)}')
        if len(self.bowl_xy) != 2:
            raise ValueError(f'bowl_xy needs 2 values (x, y), got {self.bowl_xy}')
        cx = np.array(self.cube_x_range)
        cy = np.array(self.cube_y_range)
        nearest = np.hypot(np.clip(self.bowl_xy[0], *cx) - self.bowl_xy[0],
                           np.clip(self.bowl_xy[1], *cy) - self.bowl_xy[1])
        if nearest < BOWL_INNER_RADIUS + 2 * CUBE_HALF:
            raise ValueError(f'the cube range x {self.cube_x_range} y {self.cube_y_range} '
                             f'reaches into the bowl at {self.bowl_xy}')
        if self.release_ticks < 1:
            raise ValueError(f'release_ticks must be >= 1, got {self.release_ticks}')


@dataclass
class JointSample:
    """One joint-state reading, JOINT_NAMES order."""

    stamp: float  # sim time (s)
    position: np.ndarray  # rad
    velocity: np.ndarray  # rad/s
    effort: np.ndarray  # N·m, the position actuators' force (saturates at their force range)


@dataclass
class SimCounters:
    ticks: int = 0  # control ticks stepped
    resets: int = 0
    drops: int = 0
    episode_success: list[bool] = field(default_factory=list)  # per finished episode


class SimCell:
    """The MuJoCo cell plus the arm's trajectory executor, stepped one control tick at a time."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        path = Path(self.config.model_path) if self.config.model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f'MJCF scene {path} does not exist (parameter model_path)')
        self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in JOINT_NAMES])
        self._vadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in JOINT_NAMES])
        self._act = np.array([m.actuator(n).id for n in JOINT_NAMES])
        cube_joint = m.joint('cube').id
        self._cube_qadr = int(m.jnt_qposadr[cube_joint])
        self._cube_vadr = int(m.jnt_dofadr[cube_joint])
        self._cube_body = m.body('cube').id
        self._cube_geom = m.geom('cube').id
        self._table_geom = m.geom('table').id
        self._pads = (m.geom('fixed_jaw_pad').id, m.geom('moving_jaw_pad').id)
        self._bowl_body = m.body('bowl').id
        self._supports = {self._table_geom} | {g for g in range(m.ngeom)
                                                if m.geom_bodyid[g] == self._bowl_body}
        m.body_pos[self._bowl_body][:2] = self.config.bowl_xy

        self.limits = self._limits()
        self.controller = ArmController(ExecutorConfig(
            limits=self.limits, max_jump=self.config.max_jump,
            max_relative_target=self.config.max_relative_target))
        self.dt = 1.0 / self.config.control_rate_hz
        self.substeps = max(1, round(self.dt / m.opt.timestep))
        self.time = 0.0  # sim clock: seconds since start, continues across resets
        self.episode = 0
        self.counters = SimCounters()
        self._rng = np.random.default_rng(self.config.seed)
        self._held = False
        self._no_touch_ticks = 0
        self._drop_pending = False
        self._place_arm(np.array(self.config.home))
        self._place_cube(*self._random_cube())

    # -- setup -------------------------------------------------------------------
    def _limits(self) -> JointLimits:
        """URDF limits (the MJCF's joint ranges are the same) minus the margin."""
        urdf = urdf_limits()
        margin = self.config.limit_margin
        return JointLimits(lower=urdf.lower + margin, upper=urdf.upper - margin)

    def _random_cube(self) -> tuple[float, float, float]:
        c = self.config
        return (float(self._rng.uniform(*c.cube_x_range)),
                float(self._rng.uniform(*c.cube_y_range)),
                float(self._rng.uniform(*c.cube_yaw_range)))

    def _place_arm(self, q: np.ndarray) -> None:
        q = self.limits.clip(np.asarray(q, dtype=float))
        self.data.qpos[self._qadr] = q
        self.data.qvel[self._vadr] = 0.0
        self.data.ctrl[self._act] = q
        self.controller.hold_present(q, self.time)
        mujoco.mj_forward(self.model, self.data)

    def _place_cube(self, x: float, y: float, yaw: float) -> None:
        a = self._cube_qadr
        self.data.qpos[a:a + 3] = (x, y, CUBE_HALF + 1e-4)
        self.data.qpos[a + 3:a + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        self.data.qvel[self._cube_vadr:self._cube_vadr + 6] = 0.0
        self._held = False
        self._no_touch_ticks = 0
        self._drop_pending = False
        mujoco.mj_forward(self.model, self.data)

    # -- control -----------------------------------------------------------------
    def present(self) -> np.ndarray:
        return self.data.qpos[self._qadr].copy()

    def submit(self, source: CommandSource, traj: Trajectory) -> tuple[Outcome, str]:
        """Hand a trajectory to the executor at the current sim time (same rules as the arm)."""
        return self.controller.on_trajectory(source, traj, self.time, self.present())

    def set_override(self, active: bool) -> bool:
        return self.controller.on_override(active, self.time, self.present())

    def step(self) -> None:
        """One control tick: send the clamped goal to the actuators, step the physics."""
        goal = self.controller.goal(self.time, self.present())
        if goal is not None:
            self.data.ctrl[self._act] = goal
        mujoco.mj_step(self.model, self.data, nstep=self.substeps)
        self.time = (self.counters.ticks + 1) * self.dt  # no float drift over long runs
        self.counters.ticks += 1
        self._update_grasp()

    def run(self, seconds: float) -> None:
        for _ in range(max(0, round(seconds / self.dt))):
            self.step()

    def joint_sample(self) -> JointSample:
        return JointSample(stamp=self.time, position=self.present(),
                           velocity=self.data.qvel[self._vadr].copy(),
                           effort=self.data.actuator_force[self._act].copy())

    # -- ground truth --------------------------------------------------------------
    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Cube centre (m) and orientation quaternion (w, x, y, z) in the world frame."""
        a = self._cube_qadr
        return self.data.qpos[a:a + 3].copy(), self.data.qpos[a + 3:a + 7].copy()

    def cube_bottom(self) -> float:
        """Height of the cube's lowest corner above the table (m)."""
        centre = self.data.xpos[self._cube_body]
        rot = self.data.xmat[self._cube_body].reshape(3, 3)
        return float(centre[2] - CUBE_HALF * np.abs(rot[2]).sum())

    def _touching(self) -> tuple[bool, bool]:
        """(both pads touch the cube, the cube rests on something: the table or the bowl).

        A cube resting on the bowl's rim with both open pads brushing it is not held."""
        pads = set()
        supported = False
        cube = self._cube_geom
        for i in range(self.data.ncon):
            c = self.data.contact[i]
            if cube not in (c.geom1, c.geom2):
                continue
            other = c.geom2 if c.geom1 == cube else c.geom1
            if other in self._pads:
                pads.add(other)
            elif other in self._supports:
                supported = True
        return len(pads) == 2, supported

    def over_bowl(self) -> bool:
        pos = self.data.xpos[self._cube_body]
        bowl = self.data.xpos[self._bowl_body]
        return bool(np.hypot(*(pos[:2] - bowl[:2])) < BOWL_INNER_RADIUS)

    def _update_grasp(self) -> None:
        both, on_table = self._touching()
        if both and not on_table:
            self._held = True
            self._no_touch_ticks = 0
        elif self._held and not both:
            self._no_touch_ticks += 1
            if self._no_touch_ticks >= self.config.release_ticks:
                self._held = False
                self._no_touch_ticks = 0
                if not self.over_bowl():
                    self._drop_pending = True
                    self.counters.drops += 1

    def in_bowl(self) -> bool:
        return (not self._held and self.over_bowl()
                and self.cube_bottom() < BOWL_RIM_HEIGHT - CUBE_HALF)

    def truth(self) -> SimTruth:
        """Ground truth now; ``dropped`` is reported once, by the first call after a drop."""
        dropped, self._drop_pending = self._drop_pending, False
        pos, quat = self.cube_pose()
        return SimTruth(
            stamp=self.time, cube_position=tuple(float(v) for v in pos), held=self._held,
            lifted=self.cube_bottom() > self.config.lift_threshold_m, in_bowl=self.in_bowl(),
            dropped=dropped, episode=self.episode,
            extra={'bowl_position': [float(v) for v in self.data.xpos[self._bowl_body]],
                   'cube_quat_wxyz': [float(v) for v in quat],
                   'gripper_effort_nm': float(self.data.actuator_force[self._act[-1]])})

    # -- episodes ------------------------------------------------------------------
    def reset(self) -> tuple[bool, tuple[float, float, float]]:
        """End the running episode and start the next: arm home, cube at a new seeded spot.

        Returns whether the ended episode succeeded (cube in the bowl) and the new cube
        (x, y, yaw). The sim clock keeps running."""
        success = self.in_bowl()
        self.counters.episode_success.append(success)
        self.counters.resets += 1
        self.episode += 1
        cube = self._random_cube()
        self._place_arm(np.array(self.config.home))
        self._place_cube(*cube)
        return success, cube
