"""LeRobot calibration files and every unit conversion of a joint value.

Three units meet here and nowhere else in the suite:

* servo ticks: ``Present_Position`` / ``Goal_Position`` of the STS3215, with the homing
  offset already applied by the servo (0..4095 per turn);
* radians: the URDF joint angle that ROS topics carry (REP-103);
* LeRobot units: what a LeRobot policy was trained on, per ``MotorNormMode``: degrees
  (0 at the middle of the calibrated range), -100..100 over the range, or 0..100 (gripper).

Ticks <-> LeRobot units reproduce ``lerobot.motors.motors_bus.MotorsBus._normalize`` and
``_unnormalize`` exactly (including the clamping and the ``int()`` truncation), so a policy
sees the numbers its training data held. Ticks <-> radians follow the URDF's "new
calibration" convention: a body joint's zero is the middle of its calibrated range, which
makes ``radians == degrees(LeRobot) * pi / 180``; the gripper's zero is its closed end
(``range_min``) placed at the URDF's lower limit, so the jaw angle is physical.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

import numpy as np

from so101_driver.feetech.control_table import RESOLUTION
from so101_driver.joints import GRIPPER, JOINT_NAMES, SERVO_IDS

#: LeRobot divides by the model resolution minus one (4095 for the STS3215).
MAX_RES = RESOLUTION - 1
RAD_PER_TICK = 2.0 * math.pi / MAX_RES

EXPECTED_FORMAT = (
    'a LeRobot calibration JSON object with one entry per joint '
    f'({", ".join(JOINT_NAMES)}), each {{"id": int, "drive_mode": 0 or 1, '
    '"homing_offset": int, "range_min": int, "range_max": int} with '
    '0 <= range_min < range_max <= 4095 (as written by lerobot-calibrate)'
)


class CalibrationError(ValueError):
    """A calibration file is missing or malformed; the message names the file and the fix."""


class NormMode(str, Enum):
    """LeRobot's ``MotorNormMode`` values."""

    DEGREES = 'degrees'
    RANGE_M100_100 = 'range_m100_100'
    RANGE_0_100 = 'range_0_100'


def so101_norm_modes(use_degrees: bool = True) -> tuple[NormMode, ...]:
    """The modes LeRobot's SO-101 follower uses (``use_degrees`` defaults to True in 0.6.1)."""
    body = NormMode.DEGREES if use_degrees else NormMode.RANGE_M100_100
    return tuple(NormMode.RANGE_0_100 if n == GRIPPER else body for n in JOINT_NAMES)


@dataclass(frozen=True)
class MotorCalibration:
    """One servo's entry in a LeRobot calibration file."""

    id: int  # servo id on the bus
    drive_mode: int  # 1 inverts the direction (LeRobot applies it to the range modes)
    homing_offset: int  # written to the servo; Present_Position = actual - homing_offset
    range_min: int  # lowest position reached during calibration, in ticks
    range_max: int  # highest position reached during calibration, in ticks

    @property
    def mid(self) -> float:
        return (self.range_min + self.range_max) / 2


@dataclass(frozen=True)
class JointConvention:
    """How a joint's radians relate to its ticks."""

    direction: int = 1  # +1: radians grow with ticks; -1: the URDF axis is reversed
    reference: Literal['mid', 'min'] = 'mid'  # tick value that maps to ``offset_rad``
    offset_rad: float = 0.0  # radians at the reference tick


#: The URDF's conventions: body joints zero at mid-range, gripper closed at its lower limit.
SO101_CONVENTIONS: dict[str, JointConvention] = {
    **{n: JointConvention() for n in JOINT_NAMES if n != GRIPPER},
    GRIPPER: JointConvention(reference='min', offset_rad=-0.174533),
}


def load_calibration(path: str | Path) -> dict[str, MotorCalibration]:
    """Read and validate a LeRobot calibration file; every problem names the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CalibrationError(
            f'calibration file {path} does not exist; expected {EXPECTED_FORMAT}. '
            'Run lerobot-calibrate, or point the calibration_file parameter at its output '
            '(~/.cache/huggingface/lerobot/calibration/robots/so_follower/<id>.json).'
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CalibrationError(f'calibration file {path} is not valid JSON ({err}); '
                               f'expected {EXPECTED_FORMAT}') from err
    return parse_calibration(raw, source=str(path))


def parse_calibration(raw: object, source: str = '<dict>') -> dict[str, MotorCalibration]:
    """Validate an already-parsed calibration mapping (see ``load_calibration``)."""
    if not isinstance(raw, Mapping):
        raise CalibrationError(f'calibration {source} is a {type(raw).__name__}; '
                               f'expected {EXPECTED_FORMAT}')
    missing = [n for n in JOINT_NAMES if n not in raw]
    unknown = [k for k in raw if k not in JOINT_NAMES]
    if missing or unknown:
        raise CalibrationError(f'calibration {source}: missing joints {missing}, unknown '
                               f'entries {unknown}; expected {EXPECTED_FORMAT}')
    result = {}
    for name in JOINT_NAMES:
        entry = raw[name]
        fields = ('id', 'drive_mode', 'homing_offset', 'range_min', 'range_max')
        if not isinstance(entry, Mapping) or any(
            not isinstance(entry.get(f), int) or isinstance(entry.get(f), bool) for f in fields
        ):
            raise CalibrationError(f'calibration {source}: entry {name!r} = {entry!r} must hold '
                                   f'integer fields {list(fields)}; expected {EXPECTED_FORMAT}')
        cal = MotorCalibration(**{f: entry[f] for f in fields})
        if not 0 <= cal.range_min < cal.range_max <= MAX_RES:
            raise CalibrationError(
                f'calibration {source}: {name} has range_min={cal.range_min}, '
                f'range_max={cal.range_max}; need 0 <= range_min < range_max <= {MAX_RES} '
                '(re-run lerobot-calibrate and move every joint through its full range)')
        if cal.drive_mode not in (0, 1):
            raise CalibrationError(f'calibration {source}: {name} drive_mode={cal.drive_mode}, '
                                   'expected 0 or 1')
        if cal.id != SERVO_IDS[name]:
            raise CalibrationError(f'calibration {source}: {name} has id {cal.id}, the SO-101 '
                                   f'uses id {SERVO_IDS[name]} (ids 1..6 in joint order)')
        result[name] = cal
    return result


def save_calibration(path: str | Path, calibration: Mapping[str, MotorCalibration]) -> None:
    """Write a calibration in LeRobot's file format (indent 4, joint order)."""
    data = {n: asdict(calibration[n]) for n in JOINT_NAMES}
    Path(path).write_text(json.dumps(data, indent=4) + '\n')


class ArmCalibration:
    """Vectorised conversions for the six joints, in ``JOINT_NAMES`` order."""

    def __init__(self, motors: Mapping[str, MotorCalibration],
                 conventions: Mapping[str, JointConvention] = SO101_CONVENTIONS):
        self.motors = {n: motors[n] for n in JOINT_NAMES}
        cals = [self.motors[n] for n in JOINT_NAMES]
        convs = [conventions[n] for n in JOINT_NAMES]
        self.range_min = np.array([c.range_min for c in cals], dtype=float)
        self.range_max = np.array([c.range_max for c in cals], dtype=float)
        self.mid = (self.range_min + self.range_max) / 2
        self.drive_mode = np.array([bool(c.drive_mode) for c in cals])
        # radians = offset + sign * (ticks - reference) * RAD_PER_TICK; sign is public so
        # signed quantities (velocity, load) can follow the same axis direction
        self.sign = np.array([v.direction for v in convs], dtype=float) * np.where(
            self.drive_mode, -1.0, 1.0)
        self._reference = np.where([v.reference == 'min' for v in convs], self.range_min, self.mid)
        self._offset = np.array([v.offset_rad for v in convs], dtype=float)

    @classmethod
    def from_file(cls, path: str | Path) -> ArmCalibration:
        return cls(load_calibration(path))

    # ticks <-> radians (ROS side)
    def ticks_to_radians(self, ticks: Sequence[float] | np.ndarray) -> np.ndarray:
        ticks = np.asarray(ticks, dtype=float)
        return self._offset + self.sign * (ticks - self._reference) * RAD_PER_TICK

    def radians_to_ticks(self, radians: Sequence[float] | np.ndarray) -> np.ndarray:
        """Nearest tick (integer array) for each joint angle."""
        radians = np.asarray(radians, dtype=float)
        return np.rint(self._reference + (radians - self._offset) / (self.sign * RAD_PER_TICK)
                       ).astype(np.int64)

    def tick_rate_to_radians(self, ticks_per_s: Sequence[float] | np.ndarray) -> np.ndarray:
        return self.sign * np.asarray(ticks_per_s, dtype=float) * RAD_PER_TICK

    def radians_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint angles at range_min and range_max, ordered low to high."""
        a = self.ticks_to_radians(self.range_min)
        b = self.ticks_to_radians(self.range_max)
        return np.minimum(a, b), np.maximum(a, b)

    # ticks <-> LeRobot units (policy side), LeRobot's formulas exactly
    def ticks_to_lerobot(self, ticks: Sequence[float] | np.ndarray,
                         modes: Sequence[NormMode]) -> np.ndarray:
        out = np.empty(len(JOINT_NAMES))
        for i, (val, mode) in enumerate(zip(np.asarray(ticks, dtype=float), modes, strict=True)):
            lo, hi = self.range_min[i], self.range_max[i]
            bounded = min(hi, max(lo, val))
            if mode is NormMode.RANGE_M100_100:
                norm = ((bounded - lo) / (hi - lo)) * 200 - 100
                out[i] = -norm if self.drive_mode[i] else norm
            elif mode is NormMode.RANGE_0_100:
                norm = ((bounded - lo) / (hi - lo)) * 100
                out[i] = 100 - norm if self.drive_mode[i] else norm
            else:  # DEGREES: unbounded, drive mode not applied (as LeRobot)
                out[i] = (val - self.mid[i]) * 360 / MAX_RES
        return out

    def lerobot_to_ticks(self, values: Sequence[float] | np.ndarray,
                         modes: Sequence[NormMode]) -> np.ndarray:
        out = np.empty(len(JOINT_NAMES), dtype=np.int64)
        for i, (val, mode) in enumerate(zip(np.asarray(values, dtype=float), modes, strict=True)):
            lo, hi = self.range_min[i], self.range_max[i]
            if mode is NormMode.RANGE_M100_100:
                val = -val if self.drive_mode[i] else val
                out[i] = int(((min(100.0, max(-100.0, val)) + 100) / 200) * (hi - lo) + lo)
            elif mode is NormMode.RANGE_0_100:
                val = 100 - val if self.drive_mode[i] else val
                out[i] = int((min(100.0, max(0.0, val)) / 100) * (hi - lo) + lo)
            else:
                out[i] = int((val * MAX_RES / 360) + self.mid[i])
        return out

    # radians <-> LeRobot units: through ticks, so both directions agree with LeRobot
    def radians_to_lerobot(self, radians: Sequence[float] | np.ndarray,
                           modes: Sequence[NormMode]) -> np.ndarray:
        radians = np.asarray(radians, dtype=float)
        ticks = self._reference + (radians - self._offset) / (self.sign * RAD_PER_TICK)
        return self.ticks_to_lerobot(ticks, modes)

    def lerobot_to_radians(self, values: Sequence[float] | np.ndarray,
                           modes: Sequence[NormMode]) -> np.ndarray:
        return self.ticks_to_radians(self.lerobot_to_ticks(values, modes))
