"""Leader node on the STS3215 bus emulator (real scservo_sdk, real FeetechBus), over DDS,
against a fake follower publishing joint_states; plus the teleop core without ROS."""

from __future__ import annotations

import json
import threading
import time
from unittest import mock

import numpy as np
import pytest

from so101_driver.feetech import control_table as ct
from so101_driver.feetech.calibration import RAD_PER_TICK, ArmCalibration, parse_calibration
from so101_driver.joints import JOINT_NAMES
from tests.helpers import wait_for

#: A leader arm's calibration as lerobot-calibrate writes it (leader trigger: short range).
LEADER_CALIBRATION = {
    'shoulder_pan': {'id': 1, 'drive_mode': 0, 'homing_offset': -1200,
                     'range_min': 800, 'range_max': 3300},
    'shoulder_lift': {'id': 2, 'drive_mode': 0, 'homing_offset': 300,
                      'range_min': 850, 'range_max': 3200},
    'elbow_flex': {'id': 3, 'drive_mode': 0, 'homing_offset': 900,
                   'range_min': 900, 'range_max': 3100},
    'wrist_flex': {'id': 4, 'drive_mode': 0, 'homing_offset': -1800,
                   'range_min': 870, 'range_max': 3250},
    'wrist_roll': {'id': 5, 'drive_mode': 0, 'homing_offset': 1400,
                   'range_min': 0, 'range_max': 4095},
    'gripper': {'id': 6, 'drive_mode': 0, 'homing_offset': 1100,
                'range_min': 2000, 'range_max': 2600},
}
CAL = ArmCalibration(parse_calibration(LEADER_CALIBRATION))
MID = {c['id']: (c['range_min'] + c['range_max']) // 2 for c in LEADER_CALIBRATION.values()}


def mid_ticks() -> np.ndarray:
    return np.array([MID[i + 1] for i in range(6)])


@pytest.fixture(scope='module')
def emulator():
    from so101_driver.feetech.emulator import EmulatorProcess

    emu = EmulatorProcess(ids=(1, 2, 3, 4, 5, 6))
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def leader_bus(emulator, tmp_path):
    """Fresh factory bus with the leader's calibration preloaded, servos at mid-range."""
    emulator.call('reset')
    emulator.call('load_calibration', {c['id']: (c['homing_offset'], c['range_min'],
                                                 c['range_max'])
                                       for c in LEADER_CALIBRATION.values()})
    path = tmp_path / 'leader.json'
    path.write_text(json.dumps(LEADER_CALIBRATION))
    return emulator, str(path)


class FakeFollower:
    """Publishes joint_states at 50 Hz at a settable position (radians, joint order)."""

    def __init__(self, ros_context, position):
        from rclpy.node import Node
        from sensor_msgs.msg import JointState
        from so101_driver.qos import STREAM_PUB

        self.node = Node('fake_follower', context=ros_context)
        self.position = np.asarray(position, dtype=float)
        self._pub = self.node.create_publisher(JointState, 'joint_states', STREAM_PUB)
        self.node.create_timer(0.02, self._publish)

    def _publish(self):
        from sensor_msgs.msg import JointState

        msg = JointState(name=list(JOINT_NAMES), position=self.position.tolist())
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(msg)


class Probe:
    """Records teleop/override and teleop/joint_trajectory with receipt times."""

    def __init__(self, ros_context, name='teleop_probe'):
        from rclpy.node import Node
        from so101_driver.qos import COMMAND, LATCHED
        from std_msgs.msg import Bool
        from trajectory_msgs.msg import JointTrajectory

        self.node = Node(name, context=ros_context)
        self.lock = threading.Lock()
        self.overrides: list[tuple[float, bool]] = []
        self.trajectories: list[tuple[float, object]] = []
        self.node.create_subscription(Bool, 'teleop/override', self._on_override, LATCHED)
        self.node.create_subscription(JointTrajectory, 'teleop/joint_trajectory',
                                      self._on_trajectory, COMMAND)

    def _on_override(self, msg):
        with self.lock:
            self.overrides.append((time.monotonic(), bool(msg.data)))

    def _on_trajectory(self, msg):
        with self.lock:
            self.trajectories.append((time.monotonic(), msg))

    def last_override(self):
        with self.lock:
            return self.overrides[-1][1] if self.overrides else None

    def trajectories_since(self, t0: float):
        with self.lock:
            return [m for t, m in self.trajectories if t >= t0]


def make_leader(ros_context, port, calibration_file, **params):
    from rclpy.parameter import Parameter
    from so101_driver.teleop.leader_node import LeaderNode

    # 100 ms reply timeout: the emulator shares two loaded cores with the test (as the arm
    # node tests do); the 20 ms default is for a real adapter
    params = {'port': port, 'calibration_file': calibration_file, 'packet_timeout_ms': 100.0,
              **params}
    return LeaderNode(context=ros_context,
                      parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.fixture
def leader_factory(ros_context, spinner):
    """Makes spun leader nodes; stops their read threads before the context goes away."""
    made = []

    def factory(port, calibration_file, **params):
        node = spinner.add(make_leader(ros_context, port, calibration_file, **params))
        made.append(node)
        return node

    def destroy(node):
        made.remove(node)
        spinner.executor.remove_node(node)
        node.destroy_node()
    factory.destroy = destroy
    yield factory
    for node in list(made):
        destroy(node)


def set_leader(emulator, ticks):
    for sid, tick in enumerate(ticks, start=1):
        emulator.call('set_position', sid, int(tick))


def positions(msg, k=0) -> np.ndarray:
    assert list(msg.joint_names) == list(JOINT_NAMES), f'joint order: got {msg.joint_names}'
    return np.array(msg.points[k].positions)


def test_distance_override_rises_when_leader_moves_away_and_falls_after_it_returns(
        ros_context, spinner, leader_bus, leader_factory):
    emulator, cal_file = leader_bus
    home = CAL.ticks_to_radians(mid_ticks())
    spinner.add(FakeFollower(ros_context, home).node)
    probe = Probe(ros_context)
    spinner.add(probe.node)
    leader = leader_factory(emulator.port, cal_file, override_mode='distance',
                            release_hold_s=0.5, takeover_threshold_rad=0.25,
                            release_threshold_rad=0.08)
    wait_for(lambda: probe.last_override() is False, timeout=10,
             message='override false at start')
    wait_for(lambda: leader.detector.rest is not None and leader.counters['reads'] >= 5
             and leader._fresh_follower() is not None,
             timeout=10, message='leader read at rest with the follower known')
    assert leader.detector.distance < 1e-9, \
        f'leader and follower start at the same pose, distance {leader.detector.distance}'
    assert not probe.trajectories_since(0), 'no teleop trajectory may be sent without override'

    away = mid_ticks()
    away[0] += round(0.6 / RAD_PER_TICK)  # shoulder_pan 0.6 rad away from the follower
    moved_at = time.monotonic()
    set_leader(emulator, away)
    wait_for(lambda: probe.last_override() is True, timeout=5,
             message='override true after the leader moved 0.6 rad away')
    wait_for(lambda: probe.trajectories_since(moved_at), timeout=5,
             message='teleop trajectory after takeover')
    msg = probe.trajectories_since(moved_at)[-1]
    target = CAL.ticks_to_radians(away)
    first = positions(msg, 0)
    assert np.max(np.abs(first - home)) <= 0.3 + 1e-9, \
        f'first point must lie within max_jump 0.3 of the follower, got {first - home}'
    assert np.allclose(positions(msg, len(msg.points) - 1), target, atol=1e-9), \
        f'last point must be the leader pose {target}, got {positions(msg, -1)}'
    assert len(msg.points) == 2, f'a far leader needs a catch-up point, got {len(msg.points)}'

    back_at = time.monotonic()  # before the move: the hold cannot start earlier
    set_leader(emulator, mid_ticks())
    wait_for(lambda: probe.last_override() is False, timeout=5,
             message='override false after the leader came back')
    with probe.lock:
        released_at = probe.overrides[-1][0]
    assert released_at - back_at >= 0.5 - 0.02, \
        f'release must wait release_hold_s=0.5 s, came after {released_at - back_at:.2f} s'


def test_teleop_trajectory_follows_the_leader_through_its_calibration(
        ros_context, spinner, leader_bus, leader_factory):
    from std_srvs.srv import SetBool

    emulator, cal_file = leader_bus
    follower = FakeFollower(ros_context, CAL.ticks_to_radians(mid_ticks()))
    spinner.add(follower.node)
    probe = Probe(ros_context)
    spinner.add(probe.node)
    leader = leader_factory(emulator.port, cal_file, lookahead_s=0.1)
    client = probe.node.create_client(SetBool, 'so101_leader/set_override')
    assert client.wait_for_service(timeout_sec=10), 'so101_leader/set_override not offered'
    wait_for(lambda: leader._fresh_follower() is not None, timeout=10,
             message='follower joint_states at the leader')
    response = client.call(SetBool.Request(data=True), timeout_sec=5)
    assert response is not None and response.success, f'set_override refused: {response}'
    wait_for(lambda: probe.last_override() is True, timeout=5, message='override on')

    for offsets in ([40, -60, 80, -100, 500, 300], [-90, 120, -30, 60, -700, 100]):
        ticks = mid_ticks() + np.array(offsets)
        expected = CAL.ticks_to_radians(ticks)
        follower.position = expected  # the arm keeps up: one point straight to the leader
        t0 = time.monotonic()
        set_leader(emulator, ticks)

        def matches():
            for msg in probe.trajectories_since(t0):
                if len(msg.points) == 1 and np.allclose(positions(msg), expected, atol=1e-9):
                    return msg
            return None
        msg = wait_for(matches, timeout=5,
                       message=f'a trajectory to the leader pose {expected.round(4)}')
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        now = leader.get_clock().now().nanoseconds * 1e-9
        assert 0 <= now - stamp < 1.0, f'trajectory must be stamped at send time, {now - stamp} s'
        tfs = msg.points[0].time_from_start
        assert tfs.sec + tfs.nanosec * 1e-9 == pytest.approx(0.1), 'first point at lookahead_s'

    response = client.call(SetBool.Request(data=False), timeout_sec=5)
    assert response.success
    wait_for(lambda: probe.last_override() is False, timeout=5, message='override off')


def test_override_is_latched_and_resent_and_refused_by_hand_in_distance_mode(
        ros_context, spinner, leader_bus, leader_factory):
    from std_srvs.srv import SetBool

    emulator, cal_file = leader_bus
    leader_factory(emulator.port, cal_file, override_mode='distance', override_period_s=0.1)
    late = Probe(ros_context, name='late_probe')  # joins after the first publication
    spinner.add(late.node)
    wait_for(lambda: late.last_override() is False, timeout=10,
             message='latched override value for a late subscriber')
    with late.lock:
        first_count = len(late.overrides)
    wait_for(lambda: len(late.overrides) >= first_count + 3, timeout=5,
             message='override re-sent every override_period_s')

    client = late.node.create_client(SetBool, 'so101_leader/set_override')
    assert client.wait_for_service(timeout_sec=10)
    response = client.call(SetBool.Request(data=True), timeout_sec=5)
    assert response is not None and not response.success and 'distance' in response.message, \
        f'distance mode must refuse a manual override, got {response}'


def test_leader_torque_is_never_enabled_and_no_follower_gains_are_written(
        ros_context, spinner, leader_bus, leader_factory):
    from std_srvs.srv import SetBool
    from so101_driver.feetech.bus import FeetechBus

    emulator, cal_file = leader_bus
    emulator.call('set_register', 2, 'phase', 0x1C)  # angle-feedback bit set: must be cleared
    torque_writes = []
    original = FeetechBus.write_register

    def spy(bus, sid, reg, value):
        if reg == ct.TORQUE_ENABLE:
            torque_writes.append((sid, value))
        return original(bus, sid, reg, value)

    probe = Probe(ros_context)
    spinner.add(probe.node)
    with mock.patch.object(FeetechBus, 'write_register', autospec=True, side_effect=spy):
        leader = leader_factory(emulator.port, cal_file)
        client = probe.node.create_client(SetBool, 'so101_leader/set_override')
        assert client.wait_for_service(timeout_sec=10)
        assert client.call(SetBool.Request(data=True), timeout_sec=5).success
        hand = mid_ticks() + 150
        set_leader(emulator, hand)  # the operator moves the leader by hand
        wait_for(lambda: len(probe.trajectories_since(0)) >= 5, timeout=5,
                 message='teleop trajectories while override is on')
        state = emulator.call('state')
        leader_factory.destroy(leader)  # closing the bus writes torque off once more

    assert torque_writes and all(value == 0 for _, value in torque_writes), \
        f'only torque-off writes expected on the leader, got {torque_writes}'
    for sid, servo in state['servos'].items():
        regs = servo['registers']
        assert regs['torque_enable'] == 0, f'id {sid}: torque_enable {regs["torque_enable"]}'
        assert regs['present_position'] == hand[sid - 1], \
            f'id {sid}: a hand-moved leader must stay put, expected {hand[sid - 1]}, got ' \
            f'{regs["present_position"]}'
        assert regs['p_coefficient'] == 32 and regs['d_coefficient'] == 32, \
            f'id {sid}: the leader keeps factory P/D (32/32), got ' \
            f'{regs["p_coefficient"]}/{regs["d_coefficient"]}'
        assert (regs['return_delay_time'], regs['maximum_acceleration'],
                regs['acceleration']) == (0, 254, 254), f'id {sid}: LeRobot leader config'
        assert not regs['phase'] & ct.PHASE_ANGLE_FEEDBACK_BIT, f'id {sid}: phase bit 4 set'
    assert state['servos'][6]['registers']['max_torque_limit'] == 1000, \
        'the follower-only gripper torque cap must not be written on the leader'


def test_vanished_leader_port_stops_teleop_keeps_override_and_reconnects(
        ros_context, spinner, leader_bus, leader_factory):
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_srvs.srv import SetBool

    emulator, cal_file = leader_bus
    probe = Probe(ros_context)
    spinner.add(probe.node)
    leader = leader_factory(emulator.port, cal_file, reconnect_period_s=0.2)
    client = probe.node.create_client(SetBool, 'so101_leader/set_override')
    assert client.wait_for_service(timeout_sec=10)
    assert client.call(SetBool.Request(data=True), timeout_sec=5).success
    wait_for(lambda: len(probe.trajectories_since(0)) >= 3, timeout=5,
             message='teleop trajectories before the port vanishes')

    emulator.call('vanish')
    wait_for(lambda: leader.diagnostics().status[0].level == DiagnosticStatus.ERROR,
             timeout=5, message='ERROR diagnostics after the leader port vanished')
    lost_at = time.monotonic()
    wait_for(lambda: leader.counters['reconnects'] == 0 and
             'reconnect failed' in leader.diagnostics().status[0].message, timeout=5,
             message='a failed re-open attempt while the port is gone')
    assert not [m for m in probe.trajectories_since(lost_at + 0.1)], \
        'no teleop trajectory may be sent while the leader cannot be read'
    assert probe.last_override() is True, 'the override keeps its value while the leader is lost'

    emulator.call('reappear')
    wait_for(lambda: leader.counters['reconnects'] == 1, timeout=10,
             message='leader re-opened after the port came back')
    back_at = time.monotonic()
    wait_for(lambda: probe.trajectories_since(back_at), timeout=5,
             message='teleop trajectories again after the reconnect')
    assert leader.diagnostics().status[0].level == DiagnosticStatus.OK


def test_missing_leader_port_fails_at_start_naming_it(ros_context, tmp_path):
    from so101_driver.feetech.bus import PortLost

    cal = tmp_path / 'leader.json'
    cal.write_text(json.dumps(LEADER_CALIBRATION))
    with pytest.raises(PortLost, match='/dev/so101-no-such-leader'):
        make_leader(ros_context, '/dev/so101-no-such-leader', str(cal))


# -- core, no ROS -------------------------------------------------------------------------
def test_takeover_needs_the_leader_to_move_not_just_the_follower():
    from so101_driver.teleop.leader import TakeoverConfig, TakeoverDetector

    det = TakeoverDetector(TakeoverConfig(takeover_threshold_rad=0.25,
                                          leader_motion_threshold_rad=0.05,
                                          release_threshold_rad=0.08, release_hold_s=1.0))
    rest = np.zeros(6)
    assert not det.update(rest, np.zeros(6), 0.0)
    policy_moved = np.array([0.6, 0, 0, 0, 0, 0])
    assert not det.update(rest, policy_moved, 0.1), \
        'a policy moving the follower away from a resting leader is no takeover'
    assert det.update(np.array([0, 0.3, 0, 0, 0, 0]), np.zeros(6), 0.2), \
        'leader moved 0.3 rad away from the follower: takeover'
    assert det.update(np.full(6, 0.01), np.zeros(6), 0.3), 'within release: hold starts'
    assert det.update(np.full(6, 0.01), np.zeros(6), 1.2), 'released too early (0.9 s < 1 s)'
    assert det.update(np.full(6, 0.2), np.zeros(6), 1.25), 'outside release threshold'
    assert det.update(np.full(6, 0.01), np.zeros(6), 1.3), 'hold restarts'
    assert not det.update(np.full(6, 0.01), np.zeros(6), 2.35), 'held over 1 s: released'


def test_teleop_points_clamp_the_first_point_to_max_jump_and_catch_up_at_the_velocity():
    from so101_driver.teleop.leader import teleop_points

    follower = np.zeros(6)
    near = np.array([0.1, -0.2, 0, 0, 0, 0])
    pts, times = teleop_points(near, follower, 0.3, 0.1, 1.0)
    assert pts.shape == (1, 6) and np.allclose(pts[0], near) and times.tolist() == [0.1]
    far = np.array([1.0, -0.5, 0, 0, 0, 0.1])
    pts, times = teleop_points(far, follower, 0.3, 0.1, 1.0)
    assert np.allclose(pts[0], [0.3, -0.3, 0, 0, 0, 0.1]) and np.allclose(pts[1], far)
    assert times.tolist() == pytest.approx([0.1, 0.1 + 0.7]), f'got {times}'


def test_follower_calibration_maps_the_gripper_range_to_range():
    from so101_driver.teleop.leader import LeaderToFollower

    follower_cal = {**LEADER_CALIBRATION,
                    'gripper': {'id': 6, 'drive_mode': 0, 'homing_offset': 0,
                                'range_min': 2000, 'range_max': 3400}}
    mapping = LeaderToFollower(CAL, ArmCalibration(parse_calibration(follower_cal)))
    ticks = mid_ticks()
    ticks[5] = 2300  # half-way through the leader's gripper range 2000..2600
    target = mapping.target(ticks)
    expected_gripper = -0.174533 + (2700 - 2000) * RAD_PER_TICK  # half of 2000..3400
    assert target[5] == pytest.approx(expected_gripper, abs=2 * RAD_PER_TICK), \
        f'gripper at half range must map to half of the follower range, got {target[5]}'
    assert np.allclose(target[:5], CAL.ticks_to_radians(ticks)[:5], atol=2 * RAD_PER_TICK)


def test_config_file_parameters_are_all_declared_with_matching_types(
        ros_context, leader_bus, leader_factory):
    from pathlib import Path

    import yaml

    emulator, cal_file = leader_bus
    path = Path(__file__).resolve().parents[2] / 'config' / 'so101_leader.yaml'
    params = yaml.safe_load(path.read_text())['so101_leader']['ros__parameters']
    params.update(port=emulator.port, calibration_file=cal_file)
    leader = leader_factory(**params)  # a wrong type or an undeclared name raises here
    undeclared = [name for name in params if not leader.has_parameter(name)]
    assert not undeclared, f'{path} sets parameters the node does not declare: {undeclared}'
