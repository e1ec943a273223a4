"""Top-down inverse kinematics of the gripper's grasp point on a private copy of the arm model.

The scripted expert and the simulated operator plan with it; nothing is shared with the
simulator's own model (``mjcf/so101.xml`` is loaded again here).
"""

from __future__ import annotations

import math
from pathlib import Path

import mujoco
import numpy as np

from so101_driver.joints import JOINT_NAMES, JointLimits, package_root, urdf_limits

ARM = 5  # body joints; index 5 is the gripper


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
