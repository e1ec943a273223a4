"""eval_monitor over real DDS: live counts equal offline counts of the recorded bag; services."""

from __future__ import annotations

import json
import time

import pytest

from eval_monitor.offline import evaluate_bag
from tests.eval_monitor.test_offline import EXPECTED, counts, script, step_message
from tests.helpers import wait_for


def _call(node, client, request, timeout=10.0):
    """Call a service from the test thread (the spinner runs the callbacks)."""
    assert client.wait_for_service(timeout_sec=timeout), f'{client.srv_name} not available'
    future = client.call_async(request)
    wait_for(future.done, timeout, message=f'{client.srv_name} to answer')
    return future.result()


class Collector:
    def __init__(self):
        self.items = []

    def __call__(self, msg):
        self.items.append(msg)


@pytest.mark.slow
def test_live_counts_equal_offline_counts_of_the_recorded_bag(ros_context, spinner, tmp_path):
    """The scripted stream goes to the monitor and the recorder at once; so101-eval on the
    bag must give the monitor's numbers (durations within a few ms of receive-time jitter)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState
    from so101_driver.qos import COMMAND, EPISODE_MARKS, LATCHED, STREAM_PUB, STREAM_SUB
    from std_msgs.msg import Bool, String
    from std_srvs.srv import SetBool, Trigger
    from trajectory_msgs.msg import JointTrajectory
    from visualization_msgs.msg import Marker, MarkerArray

    from eval_monitor.monitor_node import MonitorNode
    from eval_monitor.recorder_node import RecorderNode

    monitor = spinner.add(MonitorNode(context=ros_context, parameter_overrides=[
        Parameter('run_dir', value=str(tmp_path / 'live')),
        Parameter('status_period_s', value=0.2)]))
    topics = ['joint_states', 'teleop/override', 'eval/episode', 'joint_trajectory',
              'teleop/joint_trajectory']
    recorder = spinner.add(RecorderNode(context=ros_context, parameter_overrides=[
        Parameter('output', value=str(tmp_path / 'bag')), Parameter('topics', value=topics),
        Parameter('discovery_period_s', value=0.05)]))
    source = spinner.add(Node('test_source', context=ros_context))
    pubs = {
        'joint_states': source.create_publisher(JointState, 'joint_states', STREAM_PUB),
        'teleop/override': source.create_publisher(Bool, 'teleop/override', LATCHED),
        'eval/episode': source.create_publisher(String, 'eval/episode', EPISODE_MARKS),
        'joint_trajectory': source.create_publisher(JointTrajectory, 'joint_trajectory', COMMAND),
        'teleop/joint_trajectory': source.create_publisher(JointTrajectory,
                                                           'teleop/joint_trajectory', COMMAND),
    }
    events, statuses, markers = Collector(), Collector(), Collector()
    outputs = [source.create_subscription(String, 'eval/events', events, COMMAND),
               source.create_subscription(DiagnosticArray, 'eval/status', statuses, STREAM_SUB),
               source.create_subscription(MarkerArray, 'eval/markers', markers, STREAM_SUB)]
    start = source.create_client(Trigger, 'eval/start_episode')
    end = source.create_client(SetBool, 'eval/end_episode')
    save = source.create_client(Trigger, 'eval/save_report')

    wait_for(lambda: set(recorder.recorded_topics) == {'/' + t for t in topics}, 15.0,
             message='the recorder to subscribe to every topic')
    wait_for(lambda: all(p.get_subscription_count() >= 2 for p in pubs.values()), 15.0,
             message='monitor and recorder to match every publisher')
    wait_for(lambda: all(sub.get_publisher_count() for sub in outputs), 15.0,
             message='the monitor\'s outputs to match the test subscriptions')

    clock = source.get_clock()
    t_start = time.monotonic()
    previous = None
    for step in script(marks_by_service=True):
        delay = t_start + step.t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if step.topic == 'eval/episode' and step.value[2] == 'service':
            event, success, _ = step.value
            if event == 'start':
                response = _call(source, start, Trigger.Request())
            else:
                response = _call(source, end, SetBool.Request(data=success))
            assert response.success, f'{event} refused: {response.message}'
            continue
        msg = step_message(step, clock.now().nanoseconds * 1e-9, previous)
        if step.topic == 'joint_states':
            previous = step.value
        pubs[step.topic].publish(msg)

    wait_for(lambda: monitor.summary().episodes == 2, 10.0, message='episode 2 to end live')
    wait_for(lambda: recorder.received_counts.get('/joint_states') == 900, 10.0,
             message='the recorder to get all 900 joint states')
    response = _call(source, save, Trigger.Request())
    assert response.success, response.message
    live = json.loads((tmp_path / 'live' / 'summary.json').read_text())
    spinner.executor.remove_node(recorder)
    recorder.destroy_node()

    offline = evaluate_bag(tmp_path / 'bag', tmp_path / 'offline')
    assert offline.skipped == [] and live['skipped'] == [], (offline.skipped, live['skipped'])
    got_live = {name: live[name] for name in EXPECTED}
    assert got_live == EXPECTED, f'live: expected {EXPECTED}, got {got_live}'
    assert counts(offline.summary) == got_live, 'offline counts differ from live'
    for name in ('mean_intervention_s', 'mean_time_to_success_s', 'interventions_per_episode'):
        assert getattr(offline.summary, name) == pytest.approx(live[name], abs=0.02), \
            f'{name}: live {live[name]}, offline {getattr(offline.summary, name)}'
    assert live['mean_intervention_s'] == pytest.approx(0.8, abs=0.05)
    live_rows = [{k: r[k] for k in ('success', 'grasp_attempts', 'drops', 'interventions')}
                 for r in live['per_episode']]
    offline_rows = [{k: r[k] for k in ('success', 'grasp_attempts', 'drops', 'interventions')}
                    for r in offline.summary.per_episode]
    assert offline_rows == live_rows
    live_kinds = [json.loads(line)['kind'] for line in
                  (tmp_path / 'live' / 'events.jsonl').read_text().splitlines()]
    assert [e.kind.value for e in offline.engine.events] == live_kinds

    # What the monitor published while it counted.
    wait_for(lambda: len(events.items) == len(live_kinds), 5.0, message='all events published')
    assert [json.loads(m.data)['kind'] for m in events.items] == live_kinds
    status = wait_for(lambda: next((s for s in reversed(statuses.items)
                                    if {kv.key: kv.value for kv in s.status[0].values}
                                    .get('grasp_successes') == '2'), None), 5.0,
                      message='eval/status to show 2 grasp successes')
    values = {kv.key: kv.value for kv in status.status[0].values}
    assert (values['episodes'], values['drops'], values['interventions']) == ('2', '1', '1')
    latest = markers.items[-1].markers
    assert latest[0].type == Marker.TEXT_VIEW_FACING and 'grasps 2/3' in latest[0].text
    spheres = [m for m in latest if m.type == Marker.SPHERE]
    assert len(spheres) == 5, f'one sphere per grasp outcome/drop/place, got {len(spheres)}'
    assert all(m.header.frame_id == 'base_link' and 0.05 < m.pose.position.z < 0.6
               for m in spheres), 'spheres belong near the gripper, above the base'


def test_out_of_order_episode_calls_are_refused_and_publish_nothing(ros_context, spinner,
                                                                    tmp_path):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.time import Time
    from rosgraph_msgs.msg import Clock
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
    from so101_driver.qos import COMMAND, EPISODE_MARKS
    from std_msgs.msg import String
    from std_srvs.srv import SetBool, Trigger

    from eval_monitor.monitor_node import MonitorNode

    monitor = spinner.add(MonitorNode(context=ros_context, parameter_overrides=[
        Parameter('run_dir', value=str(tmp_path / 'run')),
        Parameter('use_sim_time', value=True)]))
    source = spinner.add(Node('test_source', context=ros_context))
    clock_pub = source.create_publisher(Clock, '/clock', 10)
    marks = Collector()
    marks_sub = source.create_subscription(String, 'eval/episode', marks, COMMAND)
    episode_pub = source.create_publisher(String, 'eval/episode', EPISODE_MARKS)
    start = source.create_client(Trigger, 'eval/start_episode')
    end = source.create_client(SetBool, 'eval/end_episode')
    wait_for(lambda: clock_pub.get_subscription_count() >= 1, 10.0)
    wait_for(lambda: marks_sub.get_publisher_count() >= 2, 10.0)
    clock_pub.publish(Clock(clock=Time(seconds=1000).to_msg()))
    wait_for(lambda: monitor.get_clock().now().nanoseconds == 1000 * 10**9, 10.0,
             message='the monitor to follow /clock (use_sim_time)')

    refused = _call(source, end, SetBool.Request(data=True))
    assert not refused.success and 'without a start' in refused.message, refused.message
    assert _call(source, start, Trigger.Request()).success
    refused = _call(source, start, Trigger.Request())
    assert not refused.success and 'still open' in refused.message, refused.message
    assert _call(source, end, SetBool.Request(data=False)).success
    wait_for(lambda: len(marks.items) >= 2, 10.0, message='the two accepted marks')
    published = [EpisodeMark.from_json(m.data) for m in marks.items]
    assert [(m.event, m.success, m.stamp) for m in published] == [
        (EpisodeEvent.START, None, 1000.0), (EpisodeEvent.END, False, 1000.0)], \
        'only accepted calls are published, stamped with sim time'

    # A mark from someone else (the sim's reset) counts; the node's own echoes did not.
    episode_pub.publish(String(data=EpisodeMark(EpisodeEvent.START, 1000.0, source='sim')
                               .to_json()))
    wait_for(lambda: len(monitor.summary().per_episode) == 2, 10.0,
             message='the sim mark to open episode 2')
    assert monitor.skipped == [], f'own marks were fed twice: {monitor.skipped}'
    assert monitor.summary().episodes == 1
    spinner.executor.remove_node(monitor)
    monitor.destroy_node()
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['episodes'] == 1 and summary['per_episode'][1]['open'] is True, \
        'shutdown writes the run directory'
