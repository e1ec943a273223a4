"""Fuzz: the policy node takes any message on its inputs (issue 12 item 7; the generators and
the harness are in tests/test_fuzz_nodes.py).

Images and compressed images whose encoding, size, step or data lie, joint states that are
no measurement, tasks of any size, the override toggled fast, among the fake robot's good
streams. The node's executor and inference worker stay alive and it keeps publishing
``policy/status``; what it cannot use is refused and counted there; no chunk is ever computed
from an unusable joint state (Pi0.5 turns even a NaN state into a finite chunk, which the arm
could follow); every chunk it publishes is well formed; and from good inputs it commands again.
"""

from __future__ import annotations

import numpy as np
import pytest

from pi05_policy.runtime import REDUCED_PI05_LOADER, command_limits
from pi05_policy.tiny_checkpoints import DEMO_TASK
from so101_driver import qos
from so101_driver.feetech.calibration import ArmCalibration
from so101_driver.joints import JOINT_NAMES
from so101_driver.ros_io import to_seconds
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from tests.helpers import wait_for
from tests.pi05_policy.test_node import FPS, FakeRobot, policy_node
from tests.test_fuzz_nodes import (
    SEED,
    Blaster,
    Deliveries,
    blast,
    compressed_images,
    flips,
    images,
    joint_states,
    spinning,
    strings,
    task_payloads,
    unusable_joint_states,
)

pytestmark = pytest.mark.slow


class PausableRobot(FakeRobot):
    """The fake robot, whose joint-state stream can be paused (then the adversary's states are
    the only ones the policy gets)."""

    def __init__(self, *args, **kwargs):
        self.states_on = True
        super().__init__(*args, **kwargs)

    def _tick_state(self):
        if self.states_on:
            super()._tick_state()


def refused(node) -> int:
    with node._lock:
        return node.counters['inference_errors'] + node.counters['nonfinite_chunks']


def from_a_good_state(start: float, stamps: list[float]) -> bool:
    """Whether a chunk starting at ``start`` was computed from one of ``stamps``: its start is
    an observation stamp plus whole 1/fps steps (chunking.time_chunk)."""
    steps = (start - np.asarray(stamps)) * FPS
    steps = steps[(steps > -1.5) & (steps < 300)]
    return bool(np.any(np.abs(steps - np.round(steps)) < 1e-3))


def status_line(status: dict) -> dict:
    keys = ('state', 'reason', 'last_problem', 'inference_errors', 'nonfinite_chunks',
            'chunks_published', 'tasks_refused', 'rejected_messages', 'last_rejected_message')
    return {k: status.get(k) for k in keys}


def check_chunk(msg, limits) -> None:
    assert list(msg.joint_names) == list(JOINT_NAMES), f'joint names {msg.joint_names}'
    pos = np.array([p.positions for p in msg.points])
    tfs = np.array([to_seconds(p.time_from_start) for p in msg.points])
    assert pos.ndim == 2 and pos.shape[1] == 6 and len(pos) >= 1, f'points {pos.shape}'
    assert np.all(np.isfinite(pos)), 'non-finite positions'
    assert tfs[0] > 0 and np.all(np.diff(tfs) > 0), f'time_from_start {tfs}'
    inside = (pos >= limits.lower - 1e-9) & (pos <= limits.upper + 1e-9)
    assert inside.all(), f'positions outside the joint limits at {np.argwhere(~inside)[:3]}'


@pytest.mark.parametrize('policy, compressed, mode', [('tiny_pi05', False, 'async'),
                                                       ('tiny_act', True, 'sync')])
def test_policy_takes_any_input_and_never_infers_from_an_unusable_state(
        request, ros_context, spinner, started, offline_tokenizer, calibration_file, policy,
        compressed, mode):
    robot = started(PausableRobot(ros_context, compressed=compressed))
    robot.send_task(DEMO_TASK)
    loader = REDUCED_PI05_LOADER if policy == 'tiny_pi05' else ''
    node = started(policy_node(ros_context, request.getfixturevalue(policy), calibration_file,
                               offline_tokenizer, use_compressed=compressed, chunk_mode=mode,
                               model_loader=loader, max_state_age_s=1.0, max_image_age_s=1.0))
    blaster = started(Blaster(ros_context))
    wait_for(lambda: robot.count() >= 2, 60, message='2 chunks from good inputs')
    alive = lambda: spinning(spinner, node) and node._worker.is_alive()  # noqa: E731
    deliveries = Deliveries(node)
    limits = command_limits(ArmCalibration.from_file(calibration_file))
    rng = np.random.default_rng(SEED + 7)
    states = blaster.publisher(JointState, 'joint_states', qos.STREAM_PUB)

    # 1. the adversary's unusable states alone: each is refused, none becomes a chunk
    robot.states_on = False
    for label, msg in unusable_joint_states():
        before, published = refused(node), robot.count()
        blast(states, [(label, msg)], deliveries.counter('/joint_states'), 1, alive,
              lossy=True)
        wait_for(lambda: refused(node) > before or robot.count() > published or not alive(),
                 20, message=f'the policy to refuse {label} (or to publish a chunk)')
    with robot.lock:
        chunks, stamps = list(robot.trajectories), list(robot.state_stamps)
    robot.states_on = True
    for _, msg in chunks:
        assert from_a_good_state(to_seconds(msg.header.stamp), stamps), (
            f'a chunk starting at {to_seconds(msg.header.stamp):.4f} was computed from an '
            f'unusable joint state (status: {status_line(robot.status())})')
    phase_1 = len(chunks)

    # 2. everything at once, among the good streams
    kind, suffix = (CompressedImage, '/compressed') if compressed else (Image, '')
    frames = compressed_images(rng, 30) if compressed else images(rng, 30)
    plan = [
        (kind, f'cameras/front/image_raw{suffix}', qos.STREAM_PUB, frames,
         4 if compressed else 1, compressed),
        (JointState, 'joint_states', qos.STREAM_PUB, joint_states(rng, 60), 4, True),
        (String, 'policy/task', qos.LATCHED, strings(task_payloads(rng, 30)), 1, False),
        (Bool, 'teleop/override', qos.LATCHED, flips(40, last=False), 1, False),
        (kind, f'cameras/handeye/image_raw{suffix}', qos.STREAM_PUB, frames,
         4 if compressed else 1, compressed),
    ]
    for msg_type, topic, profile, messages, batch, lossy in plan:
        pub = blaster.publisher(msg_type, topic, profile)
        took = blast(pub, messages, deliveries.counter('/' + topic), batch, alive, lossy=lossy)
        assert took >= (0.9 if lossy else 1.0) * len(messages), (topic, took, len(messages))
    assert alive(), 'the policy\'s executor or inference worker died'

    # 3. good inputs again: it commands again, and it counted what it refused
    robot.send_task(DEMO_TASK)
    robot.send_override(False)
    n = robot.count()
    wait_for(lambda: robot.count() >= n + 2 or not alive(), 60,
             message=f'2 chunks after the fuzz (status: {status_line(robot.status())})')
    status = robot.wait_state('running')
    assert int(status['inference_errors']) > 0 and int(status['tasks_refused']) > 0, status
    with robot.lock:
        chunks = list(robot.trajectories)
    for _, msg in chunks:
        check_chunk(msg, limits)
    print(f'policy {policy}: {phase_1} chunks before and {len(chunks) - phase_1} during and '
          f'after the fuzz; inference_errors {status["inference_errors"]}, nonfinite_chunks '
          f'{status["nonfinite_chunks"]}, tasks_refused {status["tasks_refused"]}, guard '
          f'{status["rejected_messages"]}')
