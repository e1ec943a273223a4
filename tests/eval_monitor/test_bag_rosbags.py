"""Bags checked by an independent implementation: rosbags (pure Python rosbag2 reader/writer).

Until these tests the suite's bags were only ever read back by the suite's own reader. Here
rosbags reads what BagWriter writes (every message deserialised by the ROS 2 Jazzy typestore,
counts as in metadata.yaml), BagReader and offline evaluation read what rosbags writes the
way ``ros2 bag record -s mcap`` does (metadata version 9), and so101-bag-reindex makes damaged
bags readable by rosbags again.
"""

from __future__ import annotations

import array
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from eval_monitor.bag import BagReader, BagWriter, type_description_hash
from eval_monitor.bag.cdr import cdr_size
from eval_monitor.bag.reindex import reindex_bag
from tests.eval_monitor.test_offline import EXPECTED, T0, counts, script, step_message

LOG_T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope='module')
def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def type_name(msg: Any) -> str:
    cls = type(msg)
    return f'{cls.__module__.split(".")[0]}/msg/{cls.__name__}'


def assert_same(decoded: Any, original: Any, path: str = 'msg', field_type: str = '') -> None:
    """A rosbags message (numpy arrays for numeric sequences) equals the rclpy one.

    ``field_type`` is the rosidl type of the field (``float`` values are compared as float32:
    rclpy keeps the Python float it was given, the wire carries 32 bits).
    """
    if hasattr(original, 'get_fields_and_field_types'):
        for name, ftype in original.get_fields_and_field_types().items():
            assert_same(getattr(decoded, name), getattr(original, name), f'{path}.{name}', ftype)
    elif field_type == 'octet':  # a byte field: rclpy has a bytes of length 1, rosbags an int
        assert decoded == original[0], f'{path}: rosbags read {decoded!r}, wrote {original!r}'
    elif isinstance(original, (bytes, bytearray)) or (
            isinstance(original, array.array) and original.typecode == 'B'):
        assert bytes(decoded) == bytes(original), f'{path}: byte arrays differ'
    elif isinstance(original, (array.array, np.ndarray, list, tuple)):
        element = field_type.removeprefix('sequence<').split(',')[0].rstrip('>').split('[')[0]
        assert len(decoded) == len(original), f'{path}: {len(decoded)} != {len(original)} items'
        for index, (d, o) in enumerate(zip(decoded, original)):
            assert_same(d, o, f'{path}[{index}]', element)
    elif field_type == 'float':
        assert np.float32(decoded) == np.float32(original), f'{path}: {decoded} != {original}'
    else:
        assert decoded == original, f'{path}: rosbags read {decoded!r}, wrote {original!r}'


def suite_messages() -> list[tuple[str, Any]]:
    """A message of each type the suite records, fields set, empty sequences included."""
    from builtin_interfaces.msg import Duration, Time
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Bool, ColorRGBA, Header, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    from visualization_msgs.msg import Marker, MarkerArray

    names = ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']
    header = Header(stamp=Time(sec=1_700_000_000, nanosec=123_456_789), frame_id='base_link')
    rng = np.random.default_rng(3)
    return [
        ('/joint_states', JointState(header=header, name=names,
                                     position=[0.1, -0.2, 0.3, -0.4, 0.5, 0.6])),  # no vel/eff
        ('/joint_states', JointState(header=header, name=names, position=[0.0] * 6,
                                     velocity=[1.5] * 6, effort=[-0.25] * 6)),
        ('/joint_trajectory', JointTrajectory(header=header, joint_names=names, points=[
            JointTrajectoryPoint(positions=[0.01 * i + j for j in range(6)],
                                 time_from_start=Duration(sec=i // 10, nanosec=i % 10 * 10**8))
            for i in range(1, 31)])),
        ('/cameras/front/image_raw', Image(
            header=header, height=24, width=32, encoding='rgb8', is_bigendian=0, step=96,
            data=rng.integers(0, 256, 24 * 32 * 3, dtype=np.uint8).tobytes())),
        ('/cameras/front/image_raw/compressed', CompressedImage(
            header=header, format='jpeg', data=bytes(range(256)) * 4)),
        ('/policy/task', String(data='pick the red cube and place it in the gray bowl ✓')),
        ('/teleop/override', Bool(data=True)),
        ('/diagnostics', DiagnosticArray(header=header, status=[
            DiagnosticStatus(level=DiagnosticStatus.WARN, name='so101: bus', message='slow',
                             hardware_id='ttyACM0',
                             values=[KeyValue(key='latency_ms', value='12.5')]),
            DiagnosticStatus(level=DiagnosticStatus.OK, name='so101: camera')])),
        ('/eval/markers', MarkerArray(markers=[
            Marker(header=header, ns='grasps', id=3, type=Marker.SPHERE_LIST,
                   action=Marker.ADD,
                   pose=Pose(position=Point(x=0.2, y=-0.1, z=0.05),
                             orientation=Quaternion(w=1.0)),
                   scale=Vector3(x=0.02, y=0.02, z=0.02),
                   color=ColorRGBA(r=0.1, g=0.8, b=0.2, a=1.0),
                   lifetime=Duration(sec=5), frame_locked=True,
                   points=[Point(x=0.1 * i) for i in range(4)],
                   colors=[ColorRGBA(r=1.0, a=0.5)] * 4, text='grasp 3'),
            Marker(header=header, ns='text', id=4, type=Marker.TEXT_VIEW_FACING,
                   text='episode 2')])),
    ]


def test_rosbags_reads_every_message_of_a_bagwriter_bag(tmp_path, typestore):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.interfaces import QosDurability, QosReliability
    from rosbags.rosbag2 import Reader

    samples = suite_messages()
    bag = tmp_path / 'bag'
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    with BagWriter(bag, split_size_bytes=20_000, chunk_size_bytes=4_000,
                   custom_data={'task': 'pick'}) as writer:
        writer.add_topic('/policy/task', 'std_msgs/msg/String', [latched])
        for index, (topic, msg) in enumerate(samples * 3):
            writer.write_msg(topic, msg, LOG_T0 + index * 1_000_000)

    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert len(info['relative_file_paths']) >= 2, 'the bag should have split'
    in_metadata = {e['topic_metadata']['name']: e['message_count']
                   for e in info['topics_with_message_count']}
    expected = Counter(topic for topic, _ in samples * 3)
    assert in_metadata == expected

    with Reader(bag) as reader:
        assert {name: topic.msgcount for name, topic in reader.topics.items()} == in_metadata
        assert reader.message_count == sum(expected.values())
        assert info['custom_data'] == {'task': 'pick'}  # rosbags does not expose it
        for connection in reader.connections:
            assert connection.digest == typestore.hash_rihs01(connection.msgtype)
        [task] = [c for c in reader.connections if c.topic == '/policy/task']
        [offer] = task.ext.offered_qos_profiles
        assert (offer.reliability, offer.durability, offer.depth) == (
            QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)
        read = [(connection.topic, timestamp, typestore.deserialize_cdr(raw, connection.msgtype))
                for connection, timestamp, raw in reader.messages()]
    assert [(topic, ts) for topic, ts, _ in read] == [
        (topic, LOG_T0 + index * 1_000_000) for index, (topic, _) in enumerate(samples * 3)]
    for (topic, _, decoded), (_, original) in zip(read, samples * 3):
        assert type(decoded).__name__ == type_name(original).replace('/', '__')
        assert_same(decoded, original, topic)


def test_write_msg_stores_the_exact_cdr_length(typestore):
    """rclpy with Fast DDS serialises to its size estimate; the bag gets the real length."""
    from rclpy.serialization import deserialize_message, serialize_message

    from eval_monitor.bag.cdr import serialize_message as exact

    cut = 0
    for _, msg in suite_messages():
        data = exact(msg)
        assert len(data) == cdr_size(msg) == len(
            typestore.serialize_cdr(typestore.deserialize_cdr(data, type_name(msg)),
                                    type_name(msg))), type_name(msg)
        assert deserialize_message(data, type(msg)) == deserialize_message(
            serialize_message(msg), type(msg))
        cut += len(serialize_message(msg)) > len(data)
    assert cut, 'no message was over-long: is the Fast DDS estimate no longer used?'


def test_type_hashes_are_the_rihs01_of_the_ros_types(typestore):
    for _, msg in suite_messages():
        assert type_description_hash(type_name(msg)) == typestore.hash_rihs01(type_name(msg))
    assert type_description_hash('std_msgs/msg/NoSuchType') == ''


def test_qos_policy_names_are_rclpys_enum_names():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, ReliabilityPolicy

    from eval_monitor.bag import normalize_qos_profiles

    for key, enum in (('history', HistoryPolicy), ('reliability', ReliabilityPolicy),
                      ('durability', DurabilityPolicy), ('liveliness', LivelinessPolicy)):
        for policy in enum:
            [entry] = normalize_qos_profiles(f'- {{{key}: {int(policy)}, depth: 5}}')
            assert entry[key] == policy.name.lower(), f'{key} {policy!r}'


def _rosbags_script_bag(path: Path, typestore) -> dict[str, int]:
    """The scripted evaluation written by rosbags' Writer as ``ros2 bag record -s mcap``."""
    from rclpy.serialization import serialize_message
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )
    from rosbags.rosbag2 import StoragePlugin, Writer

    infinite = QosTime(9223372036, 854775807)
    offer = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
                infinite, infinite, QosLiveliness.AUTOMATIC, infinite, False)
    written: Counter[str] = Counter()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        previous = None
        for step in script():
            msg = step_message(step, T0 + step.t, previous)
            if step.topic == 'joint_states':
                previous = step.value
            topic = '/' + step.topic
            if topic not in connections:
                connections[topic] = writer.add_connection(
                    topic, type_name(msg), typestore=typestore, offered_qos_profiles=[offer])
            writer.write(connections[topic], int(round((T0 + step.t) * 1e9)),
                         serialize_message(msg))
            written[topic] += 1
    return dict(written)


def test_a_rosbags_written_bag_is_read_and_evaluated_to_the_scripted_counts(
        tmp_path, typestore):
    from eval_monitor.offline import evaluate_bag

    bag = tmp_path / 'rosbags_bag'
    written = _rosbags_script_bag(bag, typestore)
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    # What `ros2 bag record` writes from Jazzy on, which is what this test stands in for.
    assert info['version'] == 9 and info['storage_identifier'] == 'mcap'
    offered = info['topics_with_message_count'][0]['topic_metadata']['offered_qos_profiles']
    assert isinstance(offered, list) and offered[0]['reliability'] == 'reliable'

    reader = BagReader(bag)
    assert reader.topics() == {topic: type_name(step_message(step, T0, None))
                               for step in script() for topic in ['/' + step.topic]}
    assert Counter(topic for topic, _, _, _ in reader.raw_messages()) == written
    assert reader.problems == []

    result = evaluate_bag(bag, tmp_path / 'run')
    assert counts(result.summary) == EXPECTED
    assert result.missing_topics == [] and result.skipped == []


def test_older_and_newer_metadata_versions_are_read(tmp_path):
    from std_msgs.msg import String

    bag = tmp_path / 'bag'
    with BagWriter(bag) as writer:
        for index in range(5):
            writer.write_msg('/eval/events', String(data=str(index)), LOG_T0 + index)
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    # Version 5 as this suite wrote it before: QoS as a YAML string of integer policies, no
    # type hash, custom_data or ros_distro.
    old = {key: info[key] for key in ('storage_identifier', 'duration', 'starting_time',
                                      'message_count', 'compression_format',
                                      'compression_mode', 'relative_file_paths', 'files')}
    old['version'] = 5
    old['topics_with_message_count'] = [{
        'topic_metadata': {'name': '/eval/events', 'type': 'std_msgs/msg/String',
                           'serialization_format': 'cdr',
                           'offered_qos_profiles': '- history: 1\n  depth: 10\n'
                                                   '  reliability: 1\n  durability: 2\n'},
        'message_count': 5}]
    for version, document in ((5, old), (10, dict(info, version=10, future_field=[1, 2]))):
        (bag / 'metadata.yaml').write_text(
            yaml.safe_dump({'rosbag2_bagfile_information': document}))
        reader = BagReader(bag)
        assert reader.topics() == {'/eval/events': 'std_msgs/msg/String'}, version
        assert [m.data for _, _, _, m in reader.messages()] == [str(i) for i in range(5)]
        assert reader.problems == [], version

    (bag / 'metadata.yaml').write_text(yaml.safe_dump({'rosbag2_bagfile_information': old}))
    report = reindex_bag(bag)
    assert not report.files[0].rewritten, 'a sound file is left as it is'
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 9
    [entry] = info['topics_with_message_count']
    assert entry['topic_metadata']['offered_qos_profiles'][0]['durability'] == 'volatile'
    assert entry['topic_metadata']['type_description_hash'].startswith('RIHS01_')


def test_reindex_makes_a_cut_bag_readable_by_rosbags_with_true_counts(tmp_path):
    from rosbags.rosbag2 import Reader
    from std_msgs.msg import String

    bag = tmp_path / 'bag'
    with BagWriter(bag, split_size_bytes=30_000, chunk_size_bytes=3_000,
                   compression='none') as writer:
        for index in range(600):
            topic = '/eval/events' if index % 3 else '/eval/episode'
            writer.write_msg(topic, String(data=f'{index}:' + 'x' * 100), LOG_T0 + index)
    files = sorted(bag.glob('*.mcap'))
    assert len(files) >= 2
    last = files[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # as a crash leaves it
    with pytest.raises(Exception):  # noqa: B017 - rosbags refuses a file without footer
        with Reader(bag) as reader:
            list(reader.messages())
    readable = Counter(topic for topic, _, _, _ in BagReader(bag).raw_messages())
    assert 0 < sum(readable.values()) < 600

    report = reindex_bag(bag)
    assert [f.rewritten for f in report.files] == [False] * (len(files) - 1) + [True]
    assert report.counts == dict(readable)
    with Reader(bag) as reader:
        assert {n: t.msgcount for n, t in reader.topics.items()} == dict(readable)
        assert Counter(c.topic for c, _, _ in reader.messages()) == readable
    again = BagReader(bag)
    assert Counter(topic for topic, _, _, _ in again.raw_messages()) == readable
    assert again.problems == []
    assert not list(bag.glob('*.tmp')), 'no temporary file left behind'
