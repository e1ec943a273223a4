"""Calibration file handling and unit conversions, checked against LeRobot's own code."""

import json
import math

import numpy as np
import pytest
from lerobot.motors import Motor, MotorCalibration as LRCalibration, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus

from so101_driver.feetech.calibration import (
    ArmCalibration,
    CalibrationError,
    NormMode,
    load_calibration,
    parse_calibration,
    save_calibration,
    so101_norm_modes,
)
from so101_driver.joints import JOINT_NAMES, urdf_limits

# A calibration as lerobot-calibrate writes it for a real SO-101 (values from a real arm's
# file shape: mid-range near 2048, asymmetric ranges), one joint with drive_mode 1.
CALIBRATION = {
    'shoulder_pan': {'id': 1, 'drive_mode': 0, 'homing_offset': -1470,
                     'range_min': 758, 'range_max': 3292},
    'shoulder_lift': {'id': 2, 'drive_mode': 0, 'homing_offset': 157,
                      'range_min': 812, 'range_max': 3190},
    'elbow_flex': {'id': 3, 'drive_mode': 0, 'homing_offset': 1105,
                   'range_min': 891, 'range_max': 3106},
    'wrist_flex': {'id': 4, 'drive_mode': 1, 'homing_offset': -2036,
                   'range_min': 850, 'range_max': 3254},
    'wrist_roll': {'id': 5, 'drive_mode': 0, 'homing_offset': 1551,
                   'range_min': 128, 'range_max': 4002},
    'gripper': {'id': 6, 'drive_mode': 0, 'homing_offset': 1296,
                'range_min': 2034, 'range_max': 3423},
}

LR_MODES = {NormMode.DEGREES: MotorNormMode.DEGREES,
            NormMode.RANGE_M100_100: MotorNormMode.RANGE_M100_100,
            NormMode.RANGE_0_100: MotorNormMode.RANGE_0_100}


def lerobot_bus(modes):
    """LeRobot's own Feetech bus (never connected) carrying the same calibration."""
    motors = {n: Motor(CALIBRATION[n]['id'], 'sts3215', LR_MODES[m])
              for n, m in zip(JOINT_NAMES, modes)}
    cal = {n: LRCalibration(**CALIBRATION[n]) for n in JOINT_NAMES}
    return FeetechMotorsBus(port='/dev/null', motors=motors, calibration=cal)


@pytest.fixture
def calibration_file(tmp_path):
    path = tmp_path / 'so101.json'
    path.write_text(json.dumps(CALIBRATION, indent=4))
    return path


@pytest.mark.parametrize('use_degrees', [True, False])
def test_ticks_to_lerobot_units_match_lerobot_normalize(calibration_file, use_degrees):
    modes = so101_norm_modes(use_degrees)
    ours = ArmCalibration.from_file(calibration_file)
    bus = lerobot_bus(modes)
    rng = np.random.default_rng(0)
    for _ in range(200):
        ticks = rng.integers(0, 4096, size=6)
        expected = bus._normalize({i + 1: int(t) for i, t in enumerate(ticks)})
        got = ours.ticks_to_lerobot(ticks, modes)
        np.testing.assert_allclose(got, [expected[i + 1] for i in range(6)], rtol=0, atol=1e-9,
                                   err_msg=f'ticks {ticks.tolist()}')


@pytest.mark.parametrize('use_degrees', [True, False])
def test_lerobot_units_to_ticks_match_lerobot_unnormalize(calibration_file, use_degrees):
    modes = so101_norm_modes(use_degrees)
    ours = ArmCalibration.from_file(calibration_file)
    bus = lerobot_bus(modes)
    rng = np.random.default_rng(1)
    for _ in range(200):
        values = np.where([m is NormMode.DEGREES for m in modes],
                          rng.uniform(-120, 120, 6), rng.uniform(-110, 110, 6))
        expected = bus._unnormalize({i + 1: float(v) for i, v in enumerate(values)})
        got = ours.lerobot_to_ticks(values, modes)
        assert got.tolist() == [expected[i + 1] for i in range(6)], f'values {values}'


def test_radians_are_lerobot_degrees_for_body_joints(calibration_file):
    """The URDF's zero is the mid-range, so radians = LeRobot degrees * pi / 180."""
    ours = ArmCalibration.from_file(calibration_file)
    bus = lerobot_bus(so101_norm_modes(True))
    ticks = np.array([1000, 2000, 3000, 1500, 3900, 2500])
    degrees = bus._normalize({i + 1: int(t) for i, t in enumerate(ticks)})
    rad = ours.ticks_to_radians(ticks)
    for i, name in enumerate(JOINT_NAMES[:5]):
        sign = -1 if CALIBRATION[name]['drive_mode'] else 1
        assert rad[i] == pytest.approx(sign * math.radians(degrees[i + 1]), abs=1e-12), name


def test_gripper_closed_end_maps_to_urdf_lower_limit(calibration_file):
    ours = ArmCalibration.from_file(calibration_file)
    gmin = CALIBRATION['gripper']['range_min']
    rad = ours.ticks_to_radians([2048, 2048, 2048, 2048, 2048, gmin])
    assert rad[5] == pytest.approx(urdf_limits().lower[5], abs=1e-6)


def test_radian_round_trip_through_ticks_and_lerobot_units(calibration_file):
    ours = ArmCalibration.from_file(calibration_file)
    modes = so101_norm_modes(True)
    ticks = np.array([900, 1000, 2900, 1200, 300, 3000])
    rad = ours.ticks_to_radians(ticks)
    assert ours.radians_to_ticks(rad).tolist() == ticks.tolist()
    lr = ours.radians_to_lerobot(rad, modes)
    np.testing.assert_allclose(lr, ours.ticks_to_lerobot(ticks, modes), atol=1e-9)
    np.testing.assert_allclose(ours.lerobot_to_radians(lr, modes), rad, atol=ours_tick())


def ours_tick():
    return 2 * math.pi / 4095 + 1e-12


def test_save_and_load_round_trip_in_lerobot_format(tmp_path, calibration_file):
    cal = load_calibration(calibration_file)
    out = tmp_path / 'copy.json'
    save_calibration(out, cal)
    assert json.loads(out.read_text()) == CALIBRATION


def test_missing_calibration_file_names_file_and_format(tmp_path):
    path = tmp_path / 'nope.json'
    with pytest.raises(CalibrationError) as err:
        load_calibration(path)
    assert str(path) in str(err.value) and 'range_min' in str(err.value)


@pytest.mark.parametrize('content, needle', [
    ('{not json', 'not valid JSON'),
    ('[1, 2]', 'is a list'),
    (json.dumps({k: v for k, v in CALIBRATION.items() if k != 'gripper'}),
     "missing joints ['gripper']"),
    (json.dumps({**CALIBRATION, 'elbow': CALIBRATION['elbow_flex']}), "unknown entries ['elbow']"),
    (json.dumps({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'range_min': '10'}}),
     "entry 'gripper'"),
    (json.dumps({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'range_min': 3500}}),
     'range_min < range_max'),
    (json.dumps({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'id': 9}}), 'has id 9'),
    (json.dumps({**CALIBRATION, 'gripper': {**CALIBRATION['gripper'], 'drive_mode': 2}}),
     'drive_mode=2'),
])
def test_broken_calibration_file_is_refused_with_the_problem_named(tmp_path, content, needle):
    path = tmp_path / 'bad.json'
    path.write_text(content)
    with pytest.raises(CalibrationError) as err:
        load_calibration(path)
    assert needle in str(err.value), f'expected {needle!r} in {err.value}'
    assert str(path) in str(err.value)


def test_parse_calibration_accepts_a_dict():
    cal = parse_calibration(CALIBRATION)
    assert cal['gripper'].range_max == 3423 and cal['gripper'].mid == (2034 + 3423) / 2
