"""The SO-101 joint set: names, servo ids and limits, read once from the packaged URDF."""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

#: Joint order everywhere in the suite (DESIGN.md): servo ids 1..6 in this order.
JOINT_NAMES: tuple[str, ...] = (
    'shoulder_pan',
    'shoulder_lift',
    'elbow_flex',
    'wrist_flex',
    'wrist_roll',
    'gripper',
)
SERVO_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(JOINT_NAMES)}
GRIPPER = 'gripper'
#: Largest |angle| a measured joint position can have (rad): a servo's 4096 ticks are one turn
#: and the calibration centres them near the joint's zero, so a joint_states value beyond a
#: turn is no measurement but a corrupt or hostile message.
MAX_MEASURED_RAD = 2 * np.pi


def measured_positions(names, positions) -> np.ndarray:
    """``JOINT_NAMES``-ordered positions from a joint_states message's ``name`` and
    ``position`` (any order, other joints ignored). ValueError when a joint is missing, the
    two lengths differ, or a position is not finite or beyond a turn (``MAX_MEASURED_RAD``):
    whoever keeps a measured position (policy, leader, expert) must not take such a one."""
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in JOINT_NAMES if n not in index]
    if missing or len(positions) != len(names):
        raise ValueError(f'joint_states lacks joints {missing} or has {len(positions)} '
                         f'positions for {len(names)} names')
    position = np.array([positions[index[n]] for n in JOINT_NAMES], dtype=float)
    bad = ~(np.abs(position) <= MAX_MEASURED_RAD)  # NaN compares false
    if np.any(bad):
        raise ValueError(f'joint_states positions {position[bad].tolist()} of '
                         f'{[JOINT_NAMES[i] for i in np.flatnonzero(bad)]} are not finite or '
                         f'beyond a turn ({MAX_MEASURED_RAD:.3f} rad): not a measurement')
    return position


@dataclass(frozen=True)
class JointLimits:
    """Position limits in radians, in ``JOINT_NAMES`` order."""

    lower: np.ndarray
    upper: np.ndarray

    def violations(self, positions: np.ndarray, tolerance: float = 1e-6) -> list[str]:
        """Names of the joints whose value in ``positions`` lies outside the limits."""
        bad = (positions < self.lower - tolerance) | (positions > self.upper + tolerance)
        return [JOINT_NAMES[i] for i in np.flatnonzero(bad)]

    def clip(self, positions: np.ndarray) -> np.ndarray:
        return np.clip(positions, self.lower, self.upper)


def package_root() -> Path:
    """Folder holding ``urdf/`` and ``meshes/``: the source tree or the installed share."""
    here = Path(__file__).resolve().parent.parent
    if (here / 'urdf' / 'so101.urdf').is_file():
        return here
    try:  # installed by colcon: share/so101_driver
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory('so101_driver'))
    except Exception:  # noqa: BLE001 - fall back to package data below
        return Path(str(resources.files('so101_driver'))).parent


def urdf_path() -> Path:
    return package_root() / 'urdf' / 'so101.urdf'


@functools.cache
def urdf_text(mesh_uri: str = 'package') -> str:
    """The SO-101 URDF. ``mesh_uri='package'`` keeps ``package://so101_driver/meshes/...``
    (RViz on a ROS install with the package built); ``'file'`` rewrites them to absolute
    ``file://`` URIs so RViz resolves them without the package on its path."""
    text = urdf_path().read_text()
    if mesh_uri == 'file':
        mesh_dir = (package_root() / 'meshes').as_uri() + '/'
        text = text.replace('package://so101_driver/meshes/', mesh_dir)
    elif mesh_uri != 'package':
        raise ValueError(f"mesh_uri must be 'package' or 'file', not {mesh_uri!r}")
    return text


@functools.cache
def urdf_limits() -> JointLimits:
    """Joint position limits from the URDF's ``<limit>`` tags, in ``JOINT_NAMES`` order."""
    root = ET.fromstring(urdf_text())
    found: dict[str, tuple[float, float]] = {}
    for joint in root.iter('joint'):
        limit = joint.find('limit')
        if joint.get('name') in JOINT_NAMES and limit is not None:
            found[joint.get('name')] = (float(limit.get('lower')), float(limit.get('upper')))
    missing = [n for n in JOINT_NAMES if n not in found]
    if missing:
        raise RuntimeError(f'URDF {urdf_path()} has no <limit> for joints {missing}')
    return JointLimits(
        lower=np.array([found[n][0] for n in JOINT_NAMES]),
        upper=np.array([found[n][1] for n in JOINT_NAMES]),
    )
