"""Chunk mode rtc: LeRobot's Real-Time Chunking through the node, the delay rule, the leftover.

The node tests run the reduced Pi0.5 over DDS and record what LeRobot's own code receives:
``PI05Policy.predict_action_chunk`` (the kwargs and the model-space chunk it returns) and
``RTCProcessor.denoise_step`` (the guidance inside the flow integration), so the checks are
on LeRobot's inputs, not on a flag of ours.
"""

import math
import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter

from pi05_policy.chunking import ChunkMode
from pi05_policy.rtc import LATENCY_WINDOW, RtcPlanner, RtcSettings
from pi05_policy.runtime import CheckpointError, PolicyRuntime, RuntimeConfig, command_limits
from pi05_policy.tiny_checkpoints import DEMO_TASK
from so101_driver import qos
from so101_driver.feetech.calibration import ArmCalibration
from so101_driver.ros_io import to_seconds
from tests.helpers import wait_for
from tests.pi05_policy.test_node import (  # noqa: F401 - fixtures used by name
    FPS,
    check_trajectory,
    make_policy,
    make_robot,
    pi05_node,
)

STAGES = ('state', 'inference_start', 'inference_end', 'publish', 'first_point')


# ------------------------------------------------------------------ planner (no ROS, no model)

def test_delay_is_the_ceiling_of_the_recent_maximum_latency_bounded_by_the_chunk():
    planner = RtcPlanner(fps=30.0)
    assert planner.delay() == (0, 0.0), 'no measurement yet: LeRobot starts with delay 0'
    for latency in (0.05, 0.12, 0.08):
        planner.record_latency(latency)
    assert planner.delay() == (4, 0.12), 'ceil(0.12 s * 30 Hz) = ceil(3.6) = 4'
    planner.record_latency(0.1)  # exactly 3 periods: no rounding up past a whole step
    planner.record_latency(-1.0)  # a clock going backwards is no latency
    assert planner.delay()[0] == 4
    for _ in range(LATENCY_WINDOW):  # the 0.12 s spike leaves the window
        planner.record_latency(0.05)
    assert planner.delay() == (2, 0.05), 'the maximum is over the recent inferences only'
    planner.record_chunk(0.0, np.zeros((20, 6)))
    planner.record_latency(5.0)  # 150 steps: more than a chunk
    assert planner.delay()[0] == 20, 'the delay is bounded by the chunk length'


def test_leftover_is_the_previous_chunk_from_the_new_observation_on():
    planner = RtcPlanner(fps=10.0)
    chunk = np.arange(20 * 6, dtype=np.float32).reshape(20, 6)
    assert planner.leftover(1.0) == (None, None), 'no chunk: no guidance (first inference)'
    planner.record_chunk(100.0, chunk)
    # the next observation 0.7 s later: actions 0..6 were due before it, 7.. still to run
    leftover, start = planner.leftover(100.7)
    assert start == 7.0
    np.testing.assert_array_equal(leftover, chunk[7:])
    # between two actions: the chunk as the arm executes it (linear between knots)
    leftover, start = planner.leftover(100.725)
    assert start == pytest.approx(7.25) and len(leftover) == 12
    np.testing.assert_allclose(leftover, chunk[7:19] + 0.25 * (chunk[8:20] - chunk[7:19]))
    np.testing.assert_array_equal(planner.leftover(101.9)[0], chunk[19:])
    assert planner.leftover(102.0) == (None, None), 'the chunk is over: nothing left'
    assert planner.leftover(99.9) == (None, None), 'an observation before the chunk'
    planner.forget_chunk()  # override / stale input: the arm no longer executes it
    assert planner.request(100.7).prev_chunk_left_over is None


def test_rtc_settings_default_to_lerobots_rtc_config():
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    ours, theirs = RtcSettings.lerobot_defaults().to_lerobot(), RTCConfig()
    assert (ours.execution_horizon, ours.max_guidance_weight,
            ours.prefix_attention_schedule) == (theirs.execution_horizon,
                                                theirs.max_guidance_weight,
                                                theirs.prefix_attention_schedule)
    with pytest.raises(ValueError, match='prefix_attention_schedule'):
        RtcSettings(10, 10.0, 'cubic')


# -------------------------------------------------------------------- through the node (DDS)

@pytest.fixture
def lerobot_calls(monkeypatch):
    """Record what LeRobot receives: predict_action_chunk's kwargs and output, RTC guidance
    steps, and the observation stamp of each rtc request (in call order; one worker thread)."""
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.rtc.modeling_rtc import RTCProcessor

    record = {'predict': [], 'guided_steps': [], 'requests': []}
    lock = threading.Lock()
    predict, denoise, request = (PI05Policy.predict_action_chunk, RTCProcessor.denoise_step,
                                 RtcPlanner.request)

    def recording_predict(self, batch, **kwargs):
        out = predict(self, batch, **kwargs)
        leftover = kwargs.get('prev_chunk_left_over')
        with lock:
            record['predict'].append({
                'kwargs': set(kwargs), 'delay': kwargs.get('inference_delay'),
                'leftover': None if leftover is None else leftover.detach().cpu().numpy(),
                'output': out[0].detach().float().cpu().numpy().copy()})
        return out

    def recording_denoise(self, x_t, prev_chunk_left_over, inference_delay, *args, **kwargs):
        if prev_chunk_left_over is not None:
            with lock:
                record['guided_steps'].append(inference_delay)
        return denoise(self, x_t, prev_chunk_left_over, inference_delay, *args, **kwargs)

    def recording_request(self, observation_stamp):
        with lock:
            record['requests'].append(observation_stamp)
        return request(self, observation_stamp)

    monkeypatch.setattr(PI05Policy, 'predict_action_chunk', recording_predict)
    monkeypatch.setattr(RTCProcessor, 'denoise_step', recording_denoise)
    monkeypatch.setattr(RtcPlanner, 'request', recording_request)
    return record


def expected_leftover(previous: np.ndarray, t_prev: float, t_new: float) -> np.ndarray:
    """The previous chunk's actions on the new chunk's time grid, from ``t_new`` on."""
    due_prev = t_prev + np.arange(len(previous)) / FPS
    due_new = t_new + np.arange(len(previous)) / FPS
    due_new = due_new[due_new <= due_prev[-1] + 1e-9]
    return np.stack([np.interp(due_new, due_prev, previous[:, j])
                     for j in range(previous.shape[1])], axis=1)


def test_rtc_is_the_default_for_pi05_and_lerobot_gets_the_leftover_and_the_delay(
        pi05_node, make_robot, lerobot_calls, calibration_file):
    robot = make_robot()
    robot.send_task(DEMO_TASK)
    node = pi05_node(rtc_execution_horizon=8, max_image_age_s=2.0, max_state_age_s=2.0)
    assert node.chunking.mode is ChunkMode.RTC, 'auto must pick rtc for a pi05 checkpoint'
    wait_for(lambda: robot.count() >= 7, timeout=60, message='7 trajectories in rtc mode')
    with node._lock:  # a consistent snapshot: no chunk is half-recorded
        calls = list(lerobot_calls['predict'])
        requests = list(lerobot_calls['requests'])
        stamps = node.stamps.chunks()
        counters = dict(node.counters)
    with robot.lock:
        trajectories, state_stamps = list(robot.trajectories), list(robot.state_stamps)

    # valid chunks, as in the other modes
    limits = command_limits(ArmCalibration.from_file(calibration_file))
    for received, msg in trajectories:
        check_trajectory(msg, received, state_stamps, limits)
    # the node's rtc parameters are what LeRobot's policy was built with
    rtc_config = node.runtime.policy.config.rtc_config
    assert rtc_config is not None and rtc_config.enabled and rtc_config.execution_horizon == 8

    assert counters['stale_results_dropped'] == 0 and counters['chunks_all_past'] == 0, counters
    n = min(len(calls), len(requests), len(stamps))
    assert n >= 6, f'{len(calls)} calls, {len(requests)} requests, {len(stamps)} chunks'
    assert all(c['kwargs'] == {'inference_delay', 'prev_chunk_left_over'} for c in calls)
    assert calls[0]['leftover'] is None, 'the first chunk has nothing to continue'
    latencies = [s.inference_end + node.chunking.min_lead_s - s.state for s in stamps]
    for i in range(1, n):
        call, previous = calls[i], calls[i - 1]['output']
        assert stamps[i].state == requests[i], 'requests and chunks out of step'
        # the leftover: the previous chunk from this inference's observation on
        assert call['leftover'] is not None, f'inference {i} got no leftover'
        np.testing.assert_allclose(
            call['leftover'], expected_leftover(previous, requests[i - 1], requests[i]),
            atol=1e-4, err_msg=f'inference {i}: leftover is not the unexecuted previous chunk')
        assert requests[i] <= stamps[i].inference_start, 'the observation follows the start'
        # the delay: LeRobot's rule over the measured latencies of the chunks before it
        recent = latencies[max(0, i - LATENCY_WINDOW):i]
        want = min(math.ceil(max(recent) * FPS - 1e-9), len(previous))
        assert call['delay'] == want, (f'inference {i}: delay {call["delay"]}, expected '
                                       f'ceil({max(recent):.4f} s * {FPS}) = {want}')
        # LeRobot's guidance really ran, and pinned the actions that execute meanwhile
        d = min(call['delay'], len(call['leftover']))
        assert d >= 1
        np.testing.assert_allclose(call['output'][:d], call['leftover'][:d], atol=0.05,
                                   err_msg=f'inference {i}: the first {d} actions do not '
                                           'follow the leftover: RTC guidance did not act')
    steps = node.runtime.policy.config.num_inference_steps
    assert len(lerobot_calls['guided_steps']) >= (n - 1) * steps, 'RTCProcessor not reached'
    assert set(lerobot_calls['guided_steps']) <= {c['delay'] for c in calls}
    status = wait_for(lambda: robot.status() if robot.status().get('chunk_mode') == 'rtc'
                      and int(robot.status().get('rtc_guided_chunks') or 0) >= 1 else None,
                      message='rtc in policy/status')
    assert status['rtc_execution_horizon'] == '8' and status['rtc_inference_delay'] != ''


class StatusProbe(Node):
    """Subscribes to policy/status reliably, as a bag recorder does, and keeps every message."""

    def __init__(self, context):
        super().__init__('status_probe', context=context)
        self.lock = threading.Lock()
        self.values: list[dict] = []
        self.create_subscription(DiagnosticArray, 'policy/status', self._on_status,
                                 qos.STREAM_PUB)

    def _on_status(self, msg):
        with self.lock:
            self.values.append({kv.key: kv.value for kv in msg.status[0].values})


def test_every_chunk_carries_its_stage_stamps_and_status_shows_percentiles(
        pi05_node, make_robot, spinner):
    probe = spinner.add(StatusProbe(spinner.executor.context))
    robot = make_robot()
    robot.send_task(DEMO_TASK)
    pi05_node(status_rate_hz=0.2)  # slower than the chunks: each chunk must bring its own
    wait_for(lambda: robot.count() >= 5, timeout=60, message='5 trajectories')
    wait_for(lambda: any(v.get('chunk_seq') == '3' for v in probe.values), timeout=10,
             message='chunk 3 in policy/status')
    with robot.lock:
        trajectories = [msg for _, msg in robot.trajectories]
    with probe.lock:
        statuses = list(probe.values)
    spinner.executor.remove_node(probe)
    probe.destroy_node()
    by_seq = {int(v['chunk_seq']): v for v in statuses if v.get('chunk_seq')}
    assert set(range(4)) <= set(by_seq), f'chunks without a status: {sorted(by_seq)}'
    for seq in range(4):
        v, msg = by_seq[seq], trajectories[seq]
        t = {stage: float(v[f'chunk_stamp_{stage}']) for stage in STAGES}
        images = [float(v[f'chunk_stamp_image_{name}']) for name in ('front', 'handeye')]
        assert max(images) <= t['inference_start'] and t['state'] <= t['inference_start']
        assert t['inference_start'] <= t['inference_end'] <= t['publish'] < t['first_point']
        first = to_seconds(msg.header.stamp) + to_seconds(msg.points[0].time_from_start)
        assert t['first_point'] == pytest.approx(first, abs=1e-5), (
            f'chunk {seq}: first point due {first:.4f}, status says {t["first_point"]:.4f}')
        # the chunk is anchored to its joint-state stamp: start = t_obs + (k0 - 1) / fps
        steps = (to_seconds(msg.header.stamp) - t['state']) * FPS
        assert abs(steps - round(steps)) < 1e-3, f'chunk {seq} not on its t_obs grid'
    last = statuses[-1]
    for name in ('image_to_publish', 'state_to_publish', 'inference', 'publish_to_first_point',
                 'image_to_first_point'):
        p50, p95 = float(last[f'{name}_p50_ms']), float(last[f'{name}_p95_ms'])
        assert 0 <= p50 <= p95, f'{name}: p50 {p50} ms, p95 {p95} ms'


# ------------------------------------------------------------------------- refused for ACT

def test_rtc_is_refused_for_act_at_start_and_at_runtime(make_policy, tiny_act,
                                                       calibration_file, ros_context):
    from tests.pi05_policy.test_node import policy_node

    with pytest.raises(CheckpointError, match=r"rtc_config.*'act'.*async or sync"):
        policy_node(ros_context, tiny_act, calibration_file, chunk_mode='rtc')
    with pytest.raises(CheckpointError, match='rtc_config'):
        PolicyRuntime(RuntimeConfig(checkpoint=tiny_act, calibration_file=calibration_file,
                                    cameras={'front': 'front', 'handeye': 'handeye'},
                                    rtc=RtcSettings.lerobot_defaults()))
    node = make_policy(tiny_act, calibration_file)
    assert node.chunking.mode is ChunkMode.ASYNC, 'auto must stay async for ACT'
    assert node.runtime.config.rtc is None
    result = node.set_parameters([Parameter('chunk_mode', value='rtc')])[0]
    assert not result.successful and 'rtc_config' in result.reason, result.reason
    assert node.chunking.mode is ChunkMode.ASYNC
