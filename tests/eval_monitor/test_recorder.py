"""so101_recorder over real DDS: every message after discovery lands in the bag, in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from eval_monitor.bag import BagReader
from tests.helpers import wait_for

TASK = 'pick the red cube and place it in the gray bowl'
JOINTS = ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']


def _joint_state(index: int, stamp_ns: int):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import JointState

    msg = JointState(name=JOINTS, position=[index * 0.001 + j for j in range(6)],
                     velocity=[float(index)] * 6, effort=[-float(index)] * 6)
    msg.header.stamp = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    msg.header.frame_id = 'base_link'
    return msg


def _image(index: int):
    import numpy as np
    from sensor_msgs.msg import Image

    pixels = np.random.default_rng(index).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return Image(height=480, width=640, encoding='rgb8', is_bigendian=0, step=640 * 3,
                 data=pixels.tobytes())


def _pace(period_s: float, count: int):
    """Yield ``count`` times at ``period_s`` intervals (monotonic deadlines, no drift)."""
    start = time.monotonic()
    for index in range(count):
        delay = start + index * period_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield index


def test_recorder_bags_every_message_after_discovery_in_order(ros_context, spinner, tmp_path):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState
    from so101_driver.qos import LATCHED, STREAM_PUB
    from std_msgs.msg import String

    from eval_monitor.recorder_node import RecorderNode

    source = spinner.add(Node('test_source', context=ros_context))
    task_pub = source.create_publisher(String, '/policy/task', LATCHED)
    task_pub.publish(String(data=TASK))  # before the recorder exists: latched capture
    joints_pub = source.create_publisher(JointState, '/joint_states', STREAM_PUB)
    image_pub = source.create_publisher(Image, '/cameras/front/image_raw', STREAM_PUB)

    topics = ['/joint_states', '/policy/task', '/cameras/front/image_raw', '/eval/events']
    recorder = spinner.add(RecorderNode(context=ros_context, parameter_overrides=[
        Parameter('output', value=str(tmp_path / 'bag')),
        Parameter('topics', value=topics),
        Parameter('discovery_period_s', value=0.05),
        Parameter('split_size_mb', value=1.0),  # each 0.9 MB image lands in its own file
    ]))
    wait_for(lambda: len(recorder.recorded_topics) == 3, 10.0, message='the recorder to subscribe')
    wait_for(
        lambda: joints_pub.get_subscription_count() and image_pub.get_subscription_count(),
        10.0, message='publishers to match the recorder',
    )
    wait_for(lambda: recorder.received_counts.get('/policy/task') == 1, 10.0,
             message='the latched task to arrive')

    joint_states = []
    images = [_image(1), _image(2)]
    for index in _pace(0.01, 100):  # 100 Hz for 1 s
        msg = _joint_state(index, time.time_ns())
        joints_pub.publish(msg)
        joint_states.append(msg)
        if index in (30, 70):
            image_pub.publish(images[index // 70])
    expected = {'/joint_states': 100, '/cameras/front/image_raw': 2, '/policy/task': 1}
    wait_for(lambda: recorder.received_counts == expected, 10.0,
             message=f'{expected} to be received')

    spinner.executor.remove_node(recorder)
    recorder.destroy_node()
    assert recorder.written_counts == expected and recorder.dropped_counts == {}

    # Read back with the plain mcap reader, file by file as metadata.yaml lists them.
    info = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())
    info = info['rosbag2_bagfile_information']
    assert len(info['relative_file_paths']) >= 2, f'no split: {info["relative_file_paths"]}'
    got, types = [], {}
    for name in info['relative_file_paths']:
        with open(tmp_path / 'bag' / name, 'rb') as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            for schema, channel, message, decoded in reader.iter_decoded_messages():
                types[channel.topic] = schema.name
                got.append((channel.topic, message.log_time, decoded))
    assert types == {
        '/joint_states': 'sensor_msgs/msg/JointState',
        '/policy/task': 'std_msgs/msg/String',
        '/cameras/front/image_raw': 'sensor_msgs/msg/Image',
    }
    log_times = [log_time for _, log_time, _ in got]
    assert log_times == sorted(log_times), 'log (receive) times must be in recording order'

    by_topic: dict[str, list] = {}
    for topic, _, msg in got:
        by_topic.setdefault(topic, []).append(msg)
    assert [m.data for m in by_topic['/policy/task']] == [TASK]
    recorded_states = by_topic['/joint_states']
    assert len(recorded_states) == 100
    for index, (recorded, sent) in enumerate(zip(recorded_states, joint_states)):
        assert list(recorded.name) == JOINTS
        assert list(recorded.position) == list(sent.position), f'joint state {index} differs'
        assert list(recorded.effort) == list(sent.effort)
        assert (recorded.header.stamp.sec, recorded.header.stamp.nanosec) == (
            sent.header.stamp.sec, sent.header.stamp.nanosec)
    recorded_images = by_topic['/cameras/front/image_raw']
    assert [(m.width, m.height, m.encoding, m.step) for m in recorded_images] == \
        [(640, 480, 'rgb8', 1920)] * 2
    assert [bytes(m.data) for m in recorded_images] == [bytes(i.data) for i in images]

    assert info['message_count'] == 103
    offered = {
        entry['topic_metadata']['name']: entry['topic_metadata']['offered_qos_profiles']
        for entry in info['topics_with_message_count']
    }
    assert offered['/policy/task'][0]['durability'] == 'transient_local', \
        'latched offer kept for playback'
    assert offered['/joint_states'][0]['reliability'] == 'reliable'


def _recorder_env() -> dict[str, str]:
    env = dict(os.environ)  # conftest put this test's ROS_DOMAIN_ID in os.environ
    env['PYTHONUNBUFFERED'] = '1'
    env['RCUTILS_LOGGING_BUFFERED_STREAM'] = '0'
    return env


@pytest.mark.parametrize('stop_signal', [signal.SIGINT, signal.SIGTERM])
def test_recorder_process_closes_bag_on_signal(ros_context, spinner, tmp_path, stop_signal):
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from so101_driver.qos import COMMAND, STREAM_PUB
    from std_msgs.msg import String

    bag = tmp_path / 'bag'
    process = subprocess.Popen(
        [sys.executable, '-m', 'eval_monitor.recorder_node', '--ros-args',
         '-p', f'output:={bag}', '-p', 'topics:=[/eval/events,/joint_states]',
         '-p', 'discovery_period_s:=0.05', '-p', 'stats_period_s:=0.1'],
        env=_recorder_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    collector = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    collector.start()
    try:
        source = spinner.add(Node('test_source', context=ros_context))
        events = source.create_publisher(String, '/eval/events', COMMAND)
        joints = source.create_publisher(JointState, '/joint_states', STREAM_PUB)
        wait_for(lambda: events.get_subscription_count() and joints.get_subscription_count(),
                 30.0, message='the recorder process to subscribe')
        for index in _pace(0.01, 50):
            joints.publish(_joint_state(index, time.time_ns()))
            if index % 5 == 0:
                events.publish(String(data=f'{{"event": "grasp", "index": {index}}}'))
        wait_for(lambda: any('/eval/events 10, /joint_states 50' in line for line in lines),
                 20.0, message='the recorder to log all 60 messages written')
        process.send_signal(stop_signal)
        assert process.wait(timeout=20.0) == 0, ''.join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    collector.join(timeout=5.0)

    files = sorted(bag.glob('*.mcap'))
    assert [f.name for f in files] == ['bag_0.mcap']
    with open(files[0], 'rb') as stream:
        summary = make_reader(stream).get_summary()
    assert summary is not None, 'the MCAP footer and summary must have been written'
    assert summary.statistics.message_count == 60
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    counts = {e['topic_metadata']['name']: e['message_count']
              for e in info['topics_with_message_count']}
    assert counts == {'/eval/events': 10, '/joint_states': 50}
    reader = BagReader(bag)
    events_read = [m.data for t, _, _, m in reader.messages(topics=['/eval/events'])]
    assert events_read == [f'{{"event": "grasp", "index": {i}}}' for i in range(0, 50, 5)]
    assert reader.problems == []
