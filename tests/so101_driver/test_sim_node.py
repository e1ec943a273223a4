"""so101_sim and so101_sim_expert over real rclpy/DDS: arm interface, clock, reset, cameras."""

import itertools
import math
import os
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
from so101_driver.images import image_to_rgb
from so101_driver.joints import JOINT_NAMES, urdf_limits
from so101_driver.ros_io import to_seconds, trajectory_msg
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from so101_driver import qos
from tests.helpers import wait_for


def params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


class Probe(Node):
    """Records what the sim publishes and sends it commands."""

    def __init__(self, context):
        super().__init__('sim_probe', context=context)
        self.lock = threading.Lock()
        self.got = {k: [] for k in ('joint_states', 'clock', 'diag', 'episode', 'cube', 'truth',
                                    'image', 'info', 'description')}
        sub = self.create_subscription
        sub(JointState, 'joint_states', self._keep('joint_states'), qos.STREAM_SUB)
        sub(Clock, '/clock', self._keep('clock'), qos.STREAM_SUB)
        sub(DiagnosticArray, 'diagnostics', self._keep('diag'), qos.STREAM_SUB)
        sub(String, 'eval/episode', self._keep('episode'), qos.COMMAND)
        sub(PoseStamped, 'sim/cube_pose', self._keep('cube'), qos.STREAM_SUB)
        sub(String, 'sim/truth', self._keep('truth'), qos.STREAM_SUB)
        sub(Image, 'cameras/front/image_raw', self._keep('image'), qos.STREAM_SUB)
        sub(CameraInfo, 'cameras/front/camera_info', self._keep('info'), qos.STREAM_SUB)
        sub(String, 'robot_description', self._keep('description'), qos.LATCHED)
        self.pub_traj = self.create_publisher(JointTrajectory, 'joint_trajectory', qos.COMMAND)
        self.pub_override = self.create_publisher(Bool, 'teleop/override', qos.LATCHED)
        self.reset = self.create_client(Trigger, 'sim/reset')

    def _keep(self, key):
        def callback(msg):
            with self.lock:
                self.got[key].append(msg)
                del self.got[key][:-200]
        return callback

    def last(self, key):
        with self.lock:
            return self.got[key][-1] if self.got[key] else None

    def all(self, key):
        with self.lock:
            return list(self.got[key])


def diag_values(msg):
    return {kv.key: kv.value for kv in msg.status[0].values}


@pytest.fixture
def sim(spinner, ros_context):
    from so101_driver.sim.sim_node import SimNode

    def start(**overrides):
        values = {'camera_rate_hz': 0.0, 'real_time_factor': 1.0, 'diagnostics_rate_hz': 5.0}
        values.update(overrides)
        node = spinner.add(SimNode(context=ros_context, parameter_overrides=params(**values)))
        nodes.append(node)
        probe = spinner.add(Probe(ros_context))
        nodes.append(probe)
        wait_for(lambda: probe.last('joint_states') and probe.last('diag'), 20,
                 message='joint_states and diagnostics from so101_sim')
        return node, probe

    nodes = []
    yield start
    for node in nodes:
        spinner.executor.remove_node(node)
        node.destroy_node()


def test_every_trajectory_rejection_rule_of_the_arm_holds(sim):
    node, probe = sim()
    # let the arm settle under gravity first (the elbow sags ~0.02 rad in the first second)
    wait_for(lambda: node.cell.time > 1.5, 20, message='1.5 s of sim time')
    present = np.array(probe.last('joint_states').position)
    good = np.vstack([present, present + [0.05, 0, 0, 0, 0, 0]])
    lo = urdf_limits().lower
    bad = {
        'unknown_joint': trajectory_msg(good, [0.0, 0.5], None,
                                        ('elbow',) + JOINT_NAMES[1:]),
        'missing_joint': trajectory_msg(good[:, :5], [0.0, 0.5], None, JOINT_NAMES[:5]),
        'non_finite': trajectory_msg(np.vstack([present, present * math.nan]), [0.0, 0.5], None),
        'time_not_increasing': trajectory_msg(good, [0.5, 0.5], None),
        'out_of_limits': trajectory_msg(np.vstack([present, np.r_[lo[0] - 0.2, present[1:]]]),
                                        [0.0, 0.5], None),
        'jump_too_large': trajectory_msg([present + [0.6, 0, 0, 0, 0, 0]], [0.5], None),
    }
    for msg in bad.values():
        probe.pub_traj.publish(msg)

    def counted():
        values = diag_values(probe.last('diag'))
        return all(values.get(f'rejected_{reason}') == '1' for reason in bad) and values
    values = wait_for(counted, 15, message='one rejection per rule in so101_sim diagnostics')
    assert values['rejected_total'] == str(len(bad))
    # the arm kept holding: nothing moved
    np.testing.assert_allclose(np.array(probe.last('joint_states').position)[:5], present[:5],
                               atol=0.01, err_msg='a rejected trajectory moved the arm')
    # a valid one is accepted and executed, stamped in sim time
    target = present + [0.2, 0, 0, 0, 0, 0]
    probe.pub_traj.publish(trajectory_msg(np.vstack([present, target]), [0.0, 0.5],
                                          node.cell.time))
    wait_for(lambda: abs(probe.last('joint_states').position[0] - target[0]) < 0.02, 15,
             message=f'shoulder_pan to reach {target[0]:.3f}')
    # while the operator overrides, policy trajectories are ignored (counted)
    probe.pub_override.publish(Bool(data=True))
    wait_for(lambda: node.cell.controller.override, 10, message='override to reach the sim')
    probe.pub_traj.publish(trajectory_msg(np.vstack([target, present]), [0.0, 0.5], None))
    wait_for(lambda: diag_values(probe.last('diag')).get('ignored_policy') == '1', 10,
             message='ignored_policy = 1 in diagnostics')


def test_clock_advances_and_joint_states_are_stamped_in_sim_time(sim):
    node, probe = sim(real_time_factor=2.0)
    wait_for(lambda: len(probe.all('clock')) > 20, 10, message='/clock messages')
    clocks = [to_seconds(m.clock) for m in probe.all('clock')]
    assert all(b > a for a, b in itertools.pairwise(clocks)), 'clock must strictly increase'
    assert clocks[-1] < 1e4, f'/clock {clocks[-1]} looks like wall time, expected sim time'
    stamps = [to_seconds(m.header.stamp) for m in probe.all('joint_states')]
    assert 0 < stamps[-1] <= node.cell.time + 1e-9, \
        f'joint_states stamp {stamps[-1]} is not sim time (sim at {node.cell.time})'
    assert probe.last('joint_states').name == list(JOINT_NAMES)
    assert len(probe.last('joint_states').effort) == 6, 'effort (N·m) expected for every joint'
    wait_for(lambda: probe.last('description'), 10, message='latched robot_description')
    assert '<robot name="so101">' in probe.last('description').data


def test_reset_moves_the_cube_and_publishes_end_and_start_marks(sim):
    node, probe = sim(seed=21)
    wait_for(lambda: probe.last('cube'), 10, message='sim/cube_pose')
    before = probe.last('cube').pose.position
    assert probe.reset.wait_for_service(timeout_sec=10), 'sim/reset service not available'
    future = probe.reset.call_async(Trigger.Request())
    wait_for(future.done, 10, message='sim/reset response')
    assert future.result().success, future.result().message
    def marks():
        got = [EpisodeMark.from_json(s.data) for s in probe.all('episode')]
        ends = [m for m in got if m.event is EpisodeEvent.END]
        starts = [m for m in got if m.event is EpisodeEvent.START and m.episode == 1]
        return (ends[0], starts[0]) if ends and starts else None
    end, start = wait_for(marks, 10, message='END and START marks on eval/episode')
    assert (end.event, end.success, end.source, end.episode) == \
        (EpisodeEvent.END, False, 'sim', 0), f'unexpected END mark {end}'
    assert (start.event, start.episode) == (EpisodeEvent.START, 1), f'unexpected START {start}'
    assert 0 < end.stamp <= node.cell.time, f'mark stamp {end.stamp} is not sim time'

    def moved():
        p = probe.last('cube').pose.position
        return math.hypot(p.x - before.x, p.y - before.y) > 1e-3
    wait_for(moved, 10, message='the cube to move on reset')


@pytest.mark.skipif(os.environ.get('MUJOCO_GL') not in ('egl', 'osmesa'),
                    reason='offscreen rendering needs MUJOCO_GL=egl or osmesa')
def test_cameras_publish_rgb8_images_with_fovy_intrinsics(sim):
    node, probe = sim(camera_rate_hz=5.0, cameras=['front'], camera_width=160,
                      camera_height=120)
    image = wait_for(lambda: probe.last('image'), 30, message='cameras/front/image_raw')
    info = wait_for(lambda: probe.last('info'), 10, message='cameras/front/camera_info')
    assert (image.encoding, image.width, image.height) == ('rgb8', 160, 120)
    assert image_to_rgb(image).shape == (120, 160, 3)
    assert to_seconds(image.header.stamp) <= node.cell.time
    fovy = math.radians(node.cell.model.cam_fovy[node.cell.model.camera('front').id])
    assert info.k[4] == pytest.approx(60 / math.tan(fovy / 2)), f'fy {info.k[4]}'
    assert (info.k[2], info.k[5]) == (80, 60)
    assert image.header.frame_id == info.header.frame_id == 'front_camera_optical_frame'


def test_expert_node_completes_an_episode_through_the_topics(sim, spinner, ros_context):
    from so101_driver.sim.expert_node import SimExpertNode

    _, probe = sim(real_time_factor=2.0, seed=1)
    expert = spinner.add(SimExpertNode(context=ros_context, parameter_overrides=params(
        use_sim_time=True, seed=1, max_episodes=1, grasp_xy_noise_m=0.0, grasp_z_noise_m=0.0,
        close_timing_noise_s=0.0, speed_noise=0.0, reaction_delay_s=0.0)))
    try:
        wait_for(lambda: expert.episodes_done >= 1, 60, interval=0.1,
                 message='the expert to finish one episode')
        assert dict(expert.outcomes) == {'success': 1}, dict(expert.outcomes)
        ends = wait_for(lambda: [m for m in (EpisodeMark.from_json(s.data)
                                             for s in probe.all('episode'))
                                 if m.event is EpisodeEvent.END], 10,
                        message='END mark after auto reset')
        assert ends[-1].success is True, f'END mark {ends[-1]}'
        values = diag_values(probe.last('diag'))
        assert int(values['accepted_policy']) > 10, values
        assert values['rejected_total'] == '0', values['last_rejection']
    finally:
        spinner.executor.remove_node(expert)
        expert.destroy_node()


def test_sim_without_mujoco_gl_chooses_a_backend_and_publishes_images(spinner, ros_context,
                                                                       tmp_path):
    """A newcomer's shell has no MUJOCO_GL: the sim once logged 'rendering unavailable' and
    published no images, so a policy waited forever. It must pick a backend that renders."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k not in ('MUJOCO_GL', 'PYOPENGL_PLATFORM',
                                                             'DISPLAY')}
    log = open(tmp_path / 'sim.log', 'w')  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'so101_sim'), '--ros-args',
                             '-p', 'camera_rate_hz:=5.0', '-p', 'cameras:=[front]'],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    images = []
    probe = spinner.add(Node('gl_probe', context=ros_context))
    probe.create_subscription(Image, 'cameras/front/image_raw', images.append, qos.IMAGE_SUB)
    try:
        wait_for(lambda: images or proc.poll() is not None, 60, message='an image from the sim')
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        log.close()
    out = (tmp_path / 'sim.log').read_text()
    assert images, f'no image without MUJOCO_GL (exit {code}):\n{out[-3000:]}'
    assert code == 0, out[-3000:]
    assert 'MuJoCo GL backend egl (probed' in out or 'MuJoCo GL backend osmesa (probed' in out, out
    assert image_to_rgb(images[0]).std() > 1.0, 'the image is blank'


def test_gl_choice_falls_back_in_order(monkeypatch):
    from so101_driver.sim import gl

    monkeypatch.delenv('MUJOCO_GL', raising=False)
    monkeypatch.delenv('PYOPENGL_PLATFORM', raising=False)  # restored after the test
    monkeypatch.setattr(gl, 'chosen', None)
    monkeypatch.setattr(gl.sys, 'modules', {k: v for k, v in gl.sys.modules.items()
                                            if k != 'mujoco'})
    tried = []
    monkeypatch.setattr(gl, '_renders', lambda b: tried.append(b) or b == 'osmesa')
    assert gl.choose_backend(('egl', 'osmesa')) == ('osmesa',
                                                    'probed: first that renders of egl, osmesa')
    assert tried == ['egl', 'osmesa'] and os.environ['MUJOCO_GL'] == 'osmesa'
    monkeypatch.setattr(gl, 'chosen', None)
    monkeypatch.setenv('MUJOCO_GL', 'egl')
    assert gl.choose_backend() == ('egl', 'MUJOCO_GL')
