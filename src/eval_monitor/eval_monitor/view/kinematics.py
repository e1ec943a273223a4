"""Forward kinematics of the SO-101 from its URDF, and the URDF copy rerun's loader reads.

The viewer draws a commanded chunk as the path the gripper tip would take, so it needs the
tip position for every point of every chunk: a vectorised chain product over the URDF joints
from the root link to ``gripper_frame_link`` (the frame between the jaw tips). The URDF is
parsed with the standard library as ``so101_driver.joints`` does, so the kinematics the view
shows is the one the driver's limits come from. rerun's own URDF loader draws the meshes; its
per-joint transforms and this chain agree (tests/eval_monitor/test_view.py checks).

No rclpy and no rerun here.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from so101_driver.joints import JOINT_NAMES, urdf_text

#: The link whose origin is "the gripper tip" (URDF ``gripper_frame_joint``).
TIP_LINK = 'gripper_frame_link'


class KinematicsError(ValueError):
    """The URDF lacks what the chain needs; the message names the link or joint."""


@dataclass(frozen=True)
class ChainJoint:
    """One URDF joint on the way from the root to the tip."""

    name: str
    kind: str  # revolute, continuous, prismatic or fixed
    origin: np.ndarray  # 4x4 parent-link -> joint frame at zero
    axis: np.ndarray  # unit axis in the joint frame


def _floats(text: str | None, default: str) -> np.ndarray:
    return np.array([float(v) for v in (text or default).split()], dtype=float)


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw: ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _axis_rotations(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations by ``angles`` about the unit ``axis`` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    s, c = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    return np.eye(3) + s * k + (1.0 - c) * (k @ k)


class TipKinematics:
    """Gripper-tip positions (root-link frame, metres) for batches of joint vectors."""

    def __init__(self, urdf: str, tip: str = TIP_LINK,
                 joint_names: tuple[str, ...] = JOINT_NAMES):
        root = ET.fromstring(urdf)
        by_child = {}
        for joint in root.iter('joint'):
            child = joint.find('child')
            if child is not None:
                by_child[child.get('link')] = joint
        chain: list[ChainJoint] = []
        link = tip
        while link in by_child:
            joint = by_child[link]
            origin = joint.find('origin')
            frame = np.eye(4)
            if origin is not None:
                frame[:3, :3] = rpy_matrix(*_floats(origin.get('rpy'), '0 0 0'))
                frame[:3, 3] = _floats(origin.get('xyz'), '0 0 0')
            axis_el = joint.find('axis')
            axis = _floats(axis_el.get('xyz') if axis_el is not None else None, '1 0 0')
            norm = np.linalg.norm(axis)
            chain.append(ChainJoint(joint.get('name'), joint.get('type', 'fixed'), frame,
                                    axis / norm if norm > 0 else axis))
            link = joint.find('parent').get('link')
        if not chain:
            raise KinematicsError(f'URDF has no joint chain to link {tip!r}')
        self.root_link = link
        self.chain = tuple(reversed(chain))
        moving = [j.name for j in self.chain if j.kind != 'fixed']
        unknown = [n for n in moving if n not in joint_names]
        if unknown:
            raise KinematicsError(f'joints {unknown} on the way to {tip!r} are not among '
                                  f'{list(joint_names)}')
        self.joint_names = tuple(joint_names)
        self._column = {n: self.joint_names.index(n) for n in moving}

    def tip(self, positions: np.ndarray) -> np.ndarray:
        """(N, 3) tip positions for (N, len(joint_names)) joint values (one vector: (3,))."""
        q = np.asarray(positions, dtype=float)
        single = q.ndim == 1
        q = np.atleast_2d(q)
        pose = np.broadcast_to(np.eye(4), (len(q), 4, 4)).copy()
        for joint in self.chain:
            pose = pose @ joint.origin
            if joint.kind in ('revolute', 'continuous'):
                motion = np.broadcast_to(np.eye(4), (len(q), 4, 4)).copy()
                motion[:, :3, :3] = _axis_rotations(joint.axis, q[:, self._column[joint.name]])
                pose = pose @ motion
            elif joint.kind == 'prismatic':
                motion = np.broadcast_to(np.eye(4), (len(q), 4, 4)).copy()
                motion[:, :3, 3] = joint.axis * q[:, self._column[joint.name], None]
                pose = pose @ motion
        points = pose[:, :3, 3]
        return points[0] if single else points


@functools.cache
def so101_kinematics() -> TipKinematics:
    """The packaged SO-101 URDF's chain (parsed once)."""
    return TipKinematics(urdf_text())


def viewer_urdf(folder: Path) -> Path:
    """Write the URDF rerun's loader reads into ``folder`` and return its path.

    Two changes to the packaged file: meshes as absolute ``file://`` URIs (the loader
    resolves ``package://`` only through ROS_PACKAGE_PATH/AMENT_PREFIX_PATH, which a PyPI
    install has not), and no ``<collision>`` elements (they repeat the visual meshes, which
    would double the recording's size for geometry the view hides anyway).
    """
    root = ET.fromstring(urdf_text('file'))
    for link in root.iter('link'):
        for collision in link.findall('collision'):
            link.remove(collision)
    path = Path(folder) / 'so101_view.urdf'
    path.write_text(ET.tostring(root, encoding='unicode'))
    return path
