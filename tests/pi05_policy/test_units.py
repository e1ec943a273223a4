"""Joint radians <-> LeRobot units in the runtime, checked against LeRobot's own bus code."""

import json

import numpy as np
import pytest
from lerobot.motors import Motor, MotorCalibration, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus

from pi05_policy.runtime import REDUCED_PI05_LOADER, PolicyRuntime, RuntimeConfig
from so101_driver.feetech.calibration import NormMode
from so101_driver.joints import JOINT_NAMES

LR_MODES = {NormMode.DEGREES: MotorNormMode.DEGREES,
            NormMode.RANGE_M100_100: MotorNormMode.RANGE_M100_100,
            NormMode.RANGE_0_100: MotorNormMode.RANGE_0_100}


@pytest.fixture(params=[True, False], ids=['degrees', 'range_m100_100'])
def runtime_and_bus(request, tiny_pi05, calibration_file):
    runtime = PolicyRuntime(RuntimeConfig(
        checkpoint=tiny_pi05, calibration_file=calibration_file,
        cameras={'front': 'front', 'handeye': 'handeye'}, use_degrees=request.param,
        model_loader=REDUCED_PI05_LOADER))
    raw = json.loads(calibration_file.read_text())
    motors = {n: Motor(raw[n]['id'], 'sts3215', LR_MODES[m])
              for n, m in zip(JOINT_NAMES, runtime.modes, strict=True)}
    bus = FeetechMotorsBus(port='/dev/null', motors=motors,
                           calibration={n: MotorCalibration(**raw[n]) for n in JOINT_NAMES})
    return runtime, bus


def test_state_from_ros_radians_equals_what_lerobot_recorded(runtime_and_bus):
    # A servo at tick T: the arm node publishes ticks_to_radians(T); LeRobot's dataset held
    # bus._normalize(T). The policy node must hand the policy the latter.
    runtime, bus = runtime_and_bus
    rng = np.random.default_rng(0)
    lo, hi = runtime.calibration.range_min, runtime.calibration.range_max
    for _ in range(200):
        ticks = rng.integers(lo, hi + 1)
        radians = runtime.calibration.ticks_to_radians(ticks)
        expected = bus._normalize({i + 1: int(t) for i, t in enumerate(ticks)})
        got = runtime.state_to_policy(radians)
        np.testing.assert_allclose(got, [expected[i + 1] for i in range(6)], atol=1e-6,
                                   err_msg=f'ticks {ticks.tolist()}')


def test_actions_to_radians_command_the_ticks_lerobot_would_write(runtime_and_bus):
    runtime, bus = runtime_and_bus
    rng = np.random.default_rng(1)
    degrees = np.array([m is NormMode.DEGREES for m in runtime.modes])
    gripper = np.array([m is NormMode.RANGE_0_100 for m in runtime.modes])
    actions = np.where(degrees, rng.uniform(-90, 90, (100, 6)),
                       np.where(gripper, rng.uniform(0, 100, (100, 6)),
                                rng.uniform(-100, 100, (100, 6))))
    radians = runtime.actions_to_radians(actions)
    for action, rad in zip(actions, radians, strict=True):
        expected = bus._unnormalize({i + 1: float(v) for i, v in enumerate(action)})
        got = runtime.calibration.radians_to_ticks(rad)
        assert got.tolist() == [expected[i + 1] for i in range(6)], (
            f'action {action.round(3).tolist()}: expected ticks {expected}, got {got.tolist()}')


def test_radians_round_trip_through_lerobot_units_within_one_tick(runtime_and_bus):
    runtime, _ = runtime_and_bus
    lo, hi = runtime.calibration.radians_range()
    radians = np.random.default_rng(2).uniform(lo, hi, (100, 6))
    back = runtime.actions_to_radians(np.stack([runtime.state_to_policy(r) for r in radians]))
    err = np.abs(back - radians).max()
    assert err <= 2 * np.pi / 4095 + 1e-9, f'round trip error {err:.2e} rad exceeds one tick'
