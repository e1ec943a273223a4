"""Offscreen rendering of the cell's cameras (MuJoCo's renderer, cheap settings), and the
cameras' pinhole intrinsics and optical frames.

Separate from the physics (``cell``) because an OpenGL context belongs to the thread that
made it: the sim node renders in its own thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from so101_driver.sim.cell import CAMERA_NAMES, SimCell


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of a MuJoCo camera at a given image size (pixels)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def project(self, point_cam: np.ndarray) -> tuple[float, float] | None:
        """Pixel (u, v) of a point in the optical frame (z forward, y down); None if behind."""
        x, y, z = point_cam
        if z <= 0:
            return None
        return self.fx * x / z + self.cx, self.fy * y / z + self.cy


def camera_intrinsics(model: mujoco.MjModel, camera: str, width: int,
                      height: int) -> Intrinsics:
    """Intrinsics from the camera's vertical field of view (MuJoCo: square pixels, centred)."""
    fovy = math.radians(model.cam_fovy[model.camera(camera).id])
    f = 0.5 * height / math.tan(0.5 * fovy)
    return Intrinsics(width, height, f, f, 0.5 * width, 0.5 * height)


def world_to_optical(data: mujoco.MjData, model: mujoco.MjModel, camera: str,
                     point: np.ndarray) -> np.ndarray:
    """A world point in the camera's optical frame (x right, y down, z forward; REP-103
    camera convention; MuJoCo cameras look along their -z with y up)."""
    cam = model.camera(camera).id
    rot = data.cam_xmat[cam].reshape(3, 3)
    local = rot.T @ (np.asarray(point, dtype=float) - data.cam_xpos[cam])
    return np.array([local[0], -local[1], -local[2]])


class SimRenderer:
    """Offscreen renderer of the cell's cameras, cheap settings (no shadows/reflections)."""

    def __init__(self, cell: SimCell, width: int = 224, height: int = 224):
        model = cell.model
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
            model.vis.global_.offheight = max(height, model.vis.global_.offheight)
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        self.cell = cell
        self.width, self.height = width, height
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        flags = self._renderer.scene.flags
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG,
                     mujoco.mjtRndFlag.mjRND_HAZE):
            flags[flag] = 0

    def render(self, camera: str) -> np.ndarray:
        """HxWx3 RGB uint8 image of ``camera`` (one of CAMERA_NAMES)."""
        if camera not in CAMERA_NAMES:
            raise ValueError(f'unknown camera {camera!r}; the cell has {list(CAMERA_NAMES)}')
        self._renderer.update_scene(self.cell.data, camera=camera)
        return self._renderer.render()

    def intrinsics(self, camera: str) -> Intrinsics:
        return camera_intrinsics(self.cell.model, camera, self.width, self.height)

    def close(self) -> None:
        self._renderer.close()
