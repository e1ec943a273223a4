"""The policy node over real DDS: fake cameras and joint states in, trajectories out."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory

from pi05_policy.policy_node import PolicyNode
from pi05_policy.runtime import REDUCED_PI05_LOADER, CheckpointError, command_limits
from pi05_policy.tiny_checkpoints import DEMO_TASK
from so101_driver import qos
from so101_driver.feetech.calibration import ArmCalibration
from so101_driver.images import numpy_to_image, rgb_to_compressed
from so101_driver.joints import JOINT_NAMES
from so101_driver.ros_io import joint_state_msg, time_msg, to_seconds
from tests.helpers import wait_for
from tests.pi05_policy.conftest import IMAGE_SHAPE

FPS = 30.0
SIM_T0 = 1000.0  # sim time at the start of a use_sim_time test


class FakeRobot(Node):
    """Publishes joint states (50 Hz) and camera images (15 Hz); records what the policy says."""

    def __init__(self, context, compressed=False, sim_time=False):
        super().__init__('fake_robot', context=context)
        self.compressed = compressed
        self.sim_time = sim_time
        self._t0 = time.monotonic()
        self.lock = threading.Lock()
        self.cameras_on = {'front': True, 'handeye': True}
        self.state_stamps: list[float] = []
        self.trajectories: list[tuple[float, JointTrajectory]] = []  # (receipt time, msg)
        self.statuses: list[dict] = []
        self.pub_state = self.create_publisher(JointState, 'joint_states', qos.STREAM_PUB)
        kind, suffix = (CompressedImage, '/compressed') if compressed else (Image, '')
        self.pub_images = {n: self.create_publisher(kind, f'cameras/{n}/image_raw{suffix}',
                                                    qos.STREAM_PUB) for n in self.cameras_on}
        self.pub_task = self.create_publisher(String, 'policy/task', qos.LATCHED)
        self.pub_override = self.create_publisher(Bool, 'teleop/override', qos.LATCHED)
        self.pub_clock = self.create_publisher(Clock, 'clock', qos.STREAM_PUB)
        self.create_subscription(JointTrajectory, 'joint_trajectory', self._on_traj, qos.COMMAND)
        self.create_subscription(DiagnosticArray, 'policy/status', self._on_status,
                                 qos.STREAM_SUB)
        rng = np.random.default_rng(0)
        self.frame = rng.integers(0, 255, (IMAGE_SHAPE[1], IMAGE_SHAPE[2], 3), dtype=np.uint8)
        self.create_timer(0.02, self._tick_state)
        self.create_timer(1 / 15, self._tick_images)

    def now(self) -> float:
        if self.sim_time:  # a simulated clock running from SIM_T0, published on /clock
            return SIM_T0 + time.monotonic() - self._t0
        return self.get_clock().now().nanoseconds * 1e-9

    def _tick_state(self):
        stamp = self.now()
        if self.sim_time:
            self.pub_clock.publish(Clock(clock=time_msg(stamp)))
        self.pub_state.publish(joint_state_msg(time_msg(stamp), np.zeros(len(JOINT_NAMES))))
        with self.lock:
            self.state_stamps.append(stamp)

    def _tick_images(self):
        stamp = time_msg(self.now())
        for name, pub in self.pub_images.items():
            if self.cameras_on[name]:
                pub.publish(rgb_to_compressed(self.frame, stamp=stamp) if self.compressed
                            else numpy_to_image(self.frame, stamp=stamp))

    def _on_traj(self, msg):
        with self.lock:
            self.trajectories.append((self.now(), msg))

    def _on_status(self, msg):
        values = {kv.key: kv.value for kv in msg.status[0].values}
        values['level'] = msg.status[0].level[0]
        values['message'] = msg.status[0].message
        with self.lock:
            self.statuses.append(values)

    def send_task(self, text: str):
        self.pub_task.publish(String(data=text))

    def send_override(self, active: bool):
        self.pub_override.publish(Bool(data=active))

    def count(self) -> int:
        with self.lock:
            return len(self.trajectories)

    def status(self) -> dict:
        with self.lock:
            return self.statuses[-1] if self.statuses else {}

    def wait_state(self, state: str, timeout=15.0) -> dict:
        return wait_for(lambda: self.status() if self.status().get('state') == state else None,
                        timeout=timeout, message=f'policy/status state {state!r} '
                                                 f'(last: {self.status()})')


def policy_node(context, checkpoint: Path, calibration_file: Path,
                tokenizer: Path | None = None, **params) -> PolicyNode:
    values = {'checkpoint': str(checkpoint), 'calibration_file': str(calibration_file),
              'status_rate_hz': 10.0, 'control_fps': FPS, **params}
    if tokenizer:
        values['tokenizer_path'] = str(tokenizer)
    return PolicyNode(context=context,
                      parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


@pytest.fixture
def make_robot(spinner):
    """Start a FakeRobot; destroyed after the test so its latched task cannot leak into the
    next test (DDS keeps a participant until its node is destroyed)."""
    robots = []

    def make(**kwargs):
        robot = FakeRobot(spinner.executor.context, **kwargs)
        robots.append(robot)
        return spinner.add(robot)

    yield make
    for robot in robots:
        spinner.executor.remove_node(robot)
        robot.destroy_node()


@pytest.fixture
def make_policy(spinner):
    """Start policy nodes on the spinner; destroyed (worker thread joined) after the test."""
    nodes = []

    def make(checkpoint, calibration_file, tokenizer=None, **params):
        params = {'max_state_age_s': 1.0, 'max_image_age_s': 1.0, **params}
        node = policy_node(spinner.executor.context, checkpoint, calibration_file, tokenizer,
                           **params)
        nodes.append(node)
        return spinner.add(node)

    yield make
    for node in nodes:
        spinner.executor.remove_node(node)
        node.destroy_node()


@pytest.fixture
def pi05_node(make_policy, tiny_pi05, offline_tokenizer, calibration_file):
    return lambda **params: make_policy(tiny_pi05, calibration_file, offline_tokenizer,
                                        model_loader=REDUCED_PI05_LOADER, **params)


def check_trajectory(msg: JointTrajectory, received: float, state_stamps: list[float],
                     limits) -> None:
    assert list(msg.joint_names) == list(JOINT_NAMES), f'joint names {msg.joint_names}'
    pos = np.array([p.positions for p in msg.points])
    tfs = np.array([to_seconds(p.time_from_start) for p in msg.points])
    assert pos.shape[1] == 6 and len(pos) >= 1, f'points of shape {pos.shape}'
    assert np.all(np.isfinite(pos)), 'non-finite positions'
    assert tfs[0] > 0 and np.all(np.diff(tfs) > 0), f'time_from_start not increasing: {tfs}'
    np.testing.assert_allclose(np.diff(tfs), 1 / FPS, atol=1e-6,
                               err_msg='points must be 1/fps apart')
    inside = (pos >= limits.lower - 1e-9) & (pos <= limits.upper + 1e-9)
    assert inside.all(), f'positions outside the joint limits at {np.argwhere(~inside)[:3]}'
    start = to_seconds(msg.header.stamp)
    # the start is t_obs + (k0 - 1) / fps for the joint-state stamp the chunk was computed from
    steps = [(start - t) * FPS for t in state_stamps if t <= start + 1e-6]
    assert any(abs(s - round(s)) < 1e-3 for s in steps), (
        f'start {start:.4f} is not an observation stamp plus whole 1/fps steps')
    assert start + tfs[0] > received - 0.15, (
        f'first point {start + tfs[0]:.3f} long before the chunk arrived at {received:.3f}')


@pytest.mark.parametrize('policy, compressed, mode', [('tiny_pi05', False, 'async'),
                                                       ('tiny_act', True, 'sync')])
def test_node_publishes_valid_trajectory_chunks(request, make_robot, make_policy,
                                                offline_tokenizer, calibration_file, policy,
                                                compressed, mode):
    robot = make_robot(compressed=compressed)
    robot.send_task(DEMO_TASK)
    checkpoint = request.getfixturevalue(policy)
    loader = REDUCED_PI05_LOADER if policy == 'tiny_pi05' else ''
    node = make_policy(checkpoint, calibration_file, offline_tokenizer,
                       use_compressed=compressed, chunk_mode=mode, model_loader=loader)
    wait_for(lambda: robot.count() >= 4, timeout=30, message='4 trajectories')
    limits = command_limits(ArmCalibration.from_file(calibration_file))
    with robot.lock:
        trajectories, stamps = list(robot.trajectories), list(robot.state_stamps)
    for received, msg in trajectories:
        check_trajectory(msg, received, stamps, limits)
    status = wait_for(lambda: robot.status() if int(robot.status().get('chunks_published', 0))
                      >= 4 else None, message='status counting 4 chunks')
    assert status['state'] == 'running', f'status {status}'
    for stage in ('image_conversion', 'preprocess', 'model', 'postprocess', 'publish'):
        assert float(status[f'{stage}_ms']) >= 0, f'no {stage} latency in {status}'
    assert node.counters['nonfinite_chunks'] == 0


def test_async_chunks_follow_each_other_without_a_gap(pi05_node, make_robot):
    robot = make_robot()
    robot.send_task(DEMO_TASK)
    pi05_node(chunk_mode='async', async_threshold=0.5)
    wait_for(lambda: robot.count() >= 6, timeout=30, message='6 trajectories')
    with robot.lock:
        chunks = list(robot.trajectories)
    for (_, prev), (received, nxt) in zip(chunks, chunks[1:]):
        prev_end = to_seconds(prev.header.stamp) + to_seconds(prev.points[-1].time_from_start)
        assert received < prev_end, (f'chunk arrived at {received:.3f}, after the previous one '
                                     f'ended at {prev_end:.3f}: the arm would have stopped')


def test_override_pauses_publishing_and_handback_starts_from_the_present(pi05_node, make_robot):
    robot = make_robot()
    robot.send_task(DEMO_TASK)
    pi05_node()
    wait_for(lambda: robot.count() >= 2, timeout=30, message='first trajectories')
    robot.send_override(True)
    robot.wait_state('override')
    settled = time.monotonic()
    before = robot.count()
    # status keeps coming at 10 Hz: wait for 5 more reports while the operator is in control
    n_status = len(robot.statuses)
    wait_for(lambda: len(robot.statuses) >= n_status + 5, message='5 status reports')
    assert robot.count() <= before + 1, (
        f'{robot.count() - before} trajectories published during the override')
    assert time.monotonic() - settled > 0.3
    handback = robot.now()
    robot.send_override(False)
    wait_for(lambda: robot.count() > before + 1, timeout=15, message='chunks after hand-back')
    with robot.lock:
        _, fresh = robot.trajectories[-1]
    assert to_seconds(fresh.header.stamp) >= handback - 0.1, (
        'the first chunk after the hand-back must come from an observation after it')


def test_stale_camera_stops_commanding_and_status_names_it(pi05_node, make_robot):
    robot = make_robot()
    robot.send_task(DEMO_TASK)
    pi05_node(max_image_age_s=0.3)
    wait_for(lambda: robot.count() >= 1, timeout=30, message='first trajectory')
    robot.cameras_on['front'] = False
    status = robot.wait_state('stale_input')
    assert 'cameras/front' in status['reason'], f'reason {status["reason"]!r}'
    assert status['level'] == 1, f'expected WARN level, got {status["level"]}'
    count = robot.count()
    n_status = len(robot.statuses)
    wait_for(lambda: len(robot.statuses) >= n_status + 5, message='5 status reports')
    assert robot.count() <= count + 1, 'trajectories published with a stale camera'
    robot.cameras_on['front'] = True
    robot.wait_state('running')


def test_empty_task_is_refused_and_reported(pi05_node, make_robot):
    robot = make_robot()
    pi05_node()
    robot.wait_state('no_task')
    robot.send_task('   ')
    status = wait_for(lambda: robot.status() if robot.status().get('tasks_refused') == '1'
                      else None, message='the refusal in policy/status')
    assert status['state'] == 'no_task' and 'empty task refused' in status['reason'], status
    assert robot.count() == 0, 'published without a task'


def test_non_finite_chunks_are_dropped_counted_and_reported(make_robot, make_policy, tiny_act,
                                                           checkpoint_copy, calibration_file):
    from safetensors.torch import load_file, save_file

    folder = checkpoint_copy(tiny_act)
    weights = load_file(folder / 'model.safetensors')
    weights['model.action_head.bias'][:] = float('nan')
    save_file(weights, folder / 'model.safetensors', metadata={'format': 'pt'})
    robot = make_robot()
    robot.send_task(DEMO_TASK)
    make_policy(folder, calibration_file)
    status = wait_for(lambda: robot.status() if int(robot.status().get('nonfinite_chunks') or 0)
                      >= 2 else None, timeout=30, message='2 non-finite chunks reported')
    assert status['level'] == 1 and 'non-finite' in status['last_problem'], status
    assert robot.count() == 0, 'a non-finite chunk was published'


def test_sim_time_stamps_chunks_on_the_simulated_clock(pi05_node, make_robot):
    robot = make_robot(sim_time=True)
    robot.send_task(DEMO_TASK)
    pi05_node(use_sim_time=True)
    wait_for(lambda: robot.count() >= 2, timeout=30, message='trajectories on sim time')
    with robot.lock:
        received, msg = robot.trajectories[-1]
    start = to_seconds(msg.header.stamp)
    assert SIM_T0 <= start <= received + 1.0, (
        f'start {start:.3f} is not on the sim clock (now {received:.3f})')


def test_bad_checkpoint_fails_node_construction_with_the_reason(ros_context, tmp_path,
                                                                calibration_file):
    (tmp_path / 'config.json').write_text('{"type": "act"}')
    with pytest.raises(CheckpointError, match=r"missing \['model\.safetensors'"):
        policy_node(ros_context, tmp_path, calibration_file)


def test_reduced_checkpoint_without_its_loader_fails_node_construction(ros_context, tiny_pi05,
                                                                       calibration_file):
    with pytest.raises(CheckpointError, match='reduced-size test checkpoint') as err:
        policy_node(ros_context, tiny_pi05, calibration_file)
    assert REDUCED_PI05_LOADER in str(err.value), f'the loader is not named: {err.value}'
