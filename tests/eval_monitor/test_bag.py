"""Bag writer/reader: rosbag2 layout, standard MCAP, splitting, damaged files."""

from __future__ import annotations

import array
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from eval_monitor.bag import (
    METADATA_VERSION,
    BagReader,
    BagWriter,
    msg_definition,
    qos_profiles_yaml,
)

T0 = 1_700_000_000_000_000_000  # a log time in 2023, ns since the epoch


# ------------------------------------------------------------------------------- helpers


def assert_same(decoded: Any, original: Any, path: str = 'msg') -> None:
    """Compare a decoded mcap_ros2 message with the rclpy message field by field."""
    if hasattr(original, 'get_fields_and_field_types'):
        for name in original.get_fields_and_field_types():
            assert hasattr(decoded, name), f'{path}.{name} missing from the decoded message'
            assert_same(getattr(decoded, name), getattr(original, name), f'{path}.{name}')
    elif isinstance(original, (list, tuple)) and original and hasattr(
        original[0], 'get_fields_and_field_types'
    ):
        assert len(decoded) == len(original), f'{path}: {len(decoded)} != {len(original)} items'
        for index, (d, o) in enumerate(zip(decoded, original)):
            assert_same(d, o, f'{path}[{index}]')
    elif isinstance(original, (bytes, bytearray)) or (
        isinstance(original, array.array) and original.typecode == 'B'
    ):
        assert bytes(decoded) == bytes(original), f'{path}: byte arrays differ'
    elif isinstance(original, (list, tuple, array.array)):
        assert list(decoded) == list(original), f'{path}: {list(decoded)} != {list(original)}'
    else:
        assert decoded == original, f'{path}: decoded {decoded!r}, wrote {original!r}'


def sample_messages() -> list[tuple[str, Any]]:
    """One message of each type the suite records, with every field set."""
    from builtin_interfaces.msg import Duration, Time
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, Header, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    names = ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']
    header = Header(stamp=Time(sec=1_700_000_000, nanosec=123_456_789), frame_id='base_link')
    joint_state = JointState(
        header=header, name=names, position=[0.1, -0.2, 0.3, -0.4, 0.5, 0.6],
        velocity=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], effort=[-0.5, 0.0, 0.25, 1e-9, 3.5, -2.0],
    )
    trajectory = JointTrajectory(header=header, joint_names=names, points=[
        JointTrajectoryPoint(
            positions=[0.01 * i + j for j in range(6)], velocities=[0.5] * 6,
            accelerations=[], effort=[],
            time_from_start=Duration(sec=i // 10, nanosec=(i % 10) * 100_000_000),
        )
        for i in range(1, 51)
    ])
    rng = random.Random(7)
    image = Image(
        header=header, height=48, width=64, encoding='rgb8', is_bigendian=0, step=64 * 3,
        data=bytes(rng.getrandbits(8) for _ in range(48 * 64 * 3)),
    )
    return [
        ('/joint_states', joint_state),
        ('/joint_trajectory', trajectory),
        ('/cameras/front/image_raw', image),
        ('/policy/task', String(data='pick the red cube and place it in the gray bowl')),
        ('/teleop/override', Bool(data=True)),
    ]


def write_numbered_bag(
    path: Path, count: int, payload: int = 200, **options: Any
) -> list[tuple[str, int, str]]:
    """Write ``count`` String messages (``'<index>:<random padding>'``) 10 ms apart."""
    from std_msgs.msg import String

    rng = random.Random(count)
    written = []
    with BagWriter(path, **options) as writer:
        for index in range(count):
            topic = '/eval/events' if index % 3 else '/eval/episode'
            text = f'{index}:' + ''.join(rng.choice('abcdefghij') for _ in range(payload))
            log_time = T0 + index * 10_000_000
            writer.write_msg(topic, String(data=text), log_time)
            written.append((topic, log_time, text))
    return written


def read_back(path: Path) -> tuple[list[tuple[str, int, str]], BagReader]:
    reader = BagReader(path)
    got = [(topic, log_time, msg.data) for topic, _, log_time, msg in reader.messages()]
    return got, reader


def metadata(path: Path) -> dict[str, Any]:
    return yaml.safe_load((path / 'metadata.yaml').read_text())['rosbag2_bagfile_information']


# ------------------------------------------------------------------------------- round trip


def test_round_trip_returns_every_message_field_by_field(tmp_path):
    samples = sample_messages()
    with BagWriter(tmp_path / 'bag') as writer:
        for index, (topic, msg) in enumerate(samples * 3):
            writer.write_msg(topic, msg, T0 + index * 1000)

    reader = BagReader(tmp_path / 'bag')
    decoded = list(reader.messages())
    assert reader.problems == []
    assert [(t, ts) for t, _, ts, _ in decoded] == [
        (topic, T0 + index * 1000) for index, (topic, _) in enumerate(samples * 3)
    ]
    for (topic, type_name, _, got), (_, original) in zip(decoded, samples * 3):
        package = type(original).__module__.split('.')[0]
        assert type_name == f'{package}/msg/{type(original).__name__}'
        assert_same(got, original, topic)
    assert len(list(reader.raw_messages(topics=['/joint_trajectory']))) == 3


def test_write_stores_serialized_bytes_verbatim(tmp_path):
    from rclpy.serialization import serialize_message

    cdr = serialize_message(sample_messages()[1][1])  # padding bytes are not deterministic
    with BagWriter(tmp_path / 'bag') as writer:
        writer.add_topic('/joint_trajectory', 'trajectory_msgs/JointTrajectory')
        writer.write('/joint_trajectory', cdr, T0, publish_time_ns=T0 - 5)
    [(topic, type_name, log_time, data)] = BagReader(tmp_path / 'bag').raw_messages()
    assert (topic, type_name, log_time, data) == (
        '/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory', T0, cdr
    )
    with open(tmp_path / 'bag' / 'bag_0.mcap', 'rb') as stream:
        [(_, _, message)] = make_reader(stream).iter_messages()
    assert message.publish_time == T0 - 5


def test_metadata_yaml_has_rosbag2_fields_counts_and_files(tmp_path):
    samples = sample_messages()
    with BagWriter(tmp_path / 'run1') as writer:
        for index, (topic, msg) in enumerate(samples * 2):
            writer.write_msg(topic, msg, T0 + index * 1_000_000)
        writer.write_msg('/joint_states', samples[0][1], T0 + 50_000_000)

    info = metadata(tmp_path / 'run1')
    assert info['version'] == METADATA_VERSION == 9
    assert info['storage_identifier'] == 'mcap'
    assert info['message_count'] == 11
    assert info['starting_time'] == {'nanoseconds_since_epoch': T0}
    assert info['duration'] == {'nanoseconds': 50_000_000}
    assert info['compression_format'] == '' and info['compression_mode'] == ''
    topics = {
        entry['topic_metadata']['name']: (entry['topic_metadata'], entry['message_count'])
        for entry in info['topics_with_message_count']
    }
    assert topics['/joint_states'][1] == 3
    assert topics['/policy/task'][1] == 2
    assert topics['/joint_states'][0] == {
        'name': '/joint_states', 'type': 'sensor_msgs/msg/JointState',
        'serialization_format': 'cdr', 'offered_qos_profiles': [],
        'type_description_hash':
            'RIHS01_a13ee3a330e346c9d87b5aa18d24e11690752bd33a0350f11c5882bc9179260e',
    }
    assert info['custom_data'] is None and isinstance(info['ros_distro'], str)
    assert topics['/joint_trajectory'][0]['type'] == 'trajectory_msgs/msg/JointTrajectory'
    assert info['relative_file_paths'] == ['run1_0.mcap']
    assert info['files'] == [{
        'path': 'run1_0.mcap', 'starting_time': {'nanoseconds_since_epoch': T0},
        'duration': {'nanoseconds': 50_000_000}, 'message_count': 11,
    }]
    assert BagReader(tmp_path / 'run1').topics()['/cameras/front/image_raw'] == \
        'sensor_msgs/msg/Image'


def test_files_are_standard_mcap_with_ros2msg_schemas(tmp_path):
    samples = sample_messages()
    with BagWriter(tmp_path / 'bag', compression='lz4') as writer:
        for index, (topic, msg) in enumerate(samples):
            writer.write_msg(topic, msg, T0 + index)

    with open(tmp_path / 'bag' / 'bag_0.mcap', 'rb') as stream:
        reader = make_reader(stream, validate_crcs=True, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == 'ros2'
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count == len(samples)
        assert {s.encoding for s in summary.schemas.values()} == {'ros2msg'}
        assert {c.message_encoding for c in summary.channels.values()} == {'cdr'}
        direct = [(ch.topic, m.log_time, d) for _, ch, m, d in reader.iter_decoded_messages()]
    ours = list(BagReader(tmp_path / 'bag').messages())
    assert [(t, ts) for t, ts, _ in direct] == [(t, ts) for t, _, ts, _ in ours]
    for (_, _, got), (_, original) in zip(direct, samples):
        assert_same(got, original)


def test_msg_definition_is_rosbag2_concatenated_text():
    definition = msg_definition('trajectory_msgs/msg/JointTrajectory')
    share = Path(sys.prefix) / 'share'
    root_text = (share / 'trajectory_msgs' / 'msg' / 'JointTrajectory.msg').read_text()
    assert definition.startswith(root_text)
    separator = '\n' + '=' * 80 + '\nMSG: '
    blocks = [block.split('\n', 1)[0] for block in definition.split(separator)[1:]]
    # depth first, dependencies sorted per level, each type once (rosbag2's order)
    assert blocks == [
        'std_msgs/Header', 'builtin_interfaces/Time',
        'trajectory_msgs/JointTrajectoryPoint', 'builtin_interfaces/Duration',
    ]
    assert msg_definition('std_msgs/String') == msg_definition('std_msgs/msg/String')
    with pytest.raises(LookupError):
        msg_definition('std_msgs/msg/NoSuchType')


def test_qos_profiles_yaml_uses_rosbag2_policy_names():
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    profile = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    [entry] = yaml.safe_load(qos_profiles_yaml([profile]))
    assert entry['history'] == 'keep_last' and entry['depth'] == 1
    assert entry['reliability'] == 'reliable' and entry['durability'] == 'transient_local'
    assert set(entry['deadline']) == {'sec', 'nsec'}
    assert entry['avoid_ros_namespace_conventions'] is False
    assert qos_profiles_yaml([]) == '[]'


# ------------------------------------------------------------------------------- splitting


def test_split_by_size_makes_several_files_listed_and_read_in_order(tmp_path):
    written = write_numbered_bag(
        tmp_path / 'bag', 300, payload=1000, split_size_bytes=60_000,
        compression='none', chunk_size_bytes=16_000,
    )
    info = metadata(tmp_path / 'bag')
    files = info['relative_file_paths']
    assert len(files) >= 4, f'expected several files, got {files}'
    assert files == [f'bag_{i}.mcap' for i in range(len(files))]
    assert [f['path'] for f in info['files']] == files
    assert sum(f['message_count'] for f in info['files']) == info['message_count'] == 300
    for name in files:
        size = (tmp_path / 'bag' / name).stat().st_size
        assert size < 60_000 + 20_000, f'{name} is {size} bytes, past the split size'
        with open(tmp_path / 'bag' / name, 'rb') as stream:
            assert make_reader(stream).get_summary() is not None, f'{name} has no summary'
    got, reader = read_back(tmp_path / 'bag')
    assert reader.problems == []
    assert got == written


def test_split_by_duration_bounds_each_file_duration(tmp_path):
    written = write_numbered_bag(tmp_path / 'bag', 200, split_duration_s=0.5)  # 2 s of data
    info = metadata(tmp_path / 'bag')
    assert len(info['files']) == 4
    for entry in info['files']:
        assert entry['duration']['nanoseconds'] < 500_000_000
        assert entry['message_count'] == 50
    assert info['duration']['nanoseconds'] == 1_990_000_000
    got, reader = read_back(tmp_path / 'bag')
    assert got == written and reader.problems == []


def test_directory_without_metadata_reads_files_in_split_index_order(tmp_path):
    written = write_numbered_bag(tmp_path / 'bag', 120, split_duration_s=0.1)
    (tmp_path / 'bag' / 'metadata.yaml').unlink()
    assert len(list((tmp_path / 'bag').glob('*.mcap'))) == 12  # bag_10 sorts after bag_9
    got, reader = read_back(tmp_path / 'bag')
    assert got == written and reader.problems == []
    assert set(reader.topics()) == {'/eval/episode', '/eval/events'}


# ------------------------------------------------------------------------------- damage


@pytest.fixture(scope='module')
def intact(tmp_path_factory) -> tuple[Path, list[tuple[str, int, str]]]:
    """One file of many small chunks, read back as the reference."""
    path = tmp_path_factory.mktemp('intact') / 'bag'
    written = write_numbered_bag(path, 400, payload=300, chunk_size_bytes=8_000)
    return path / 'bag_0.mcap', written


def chunk_layout(path: Path) -> list[Any]:
    with open(path, 'rb') as stream:
        return make_reader(stream).get_summary().chunk_indexes


@pytest.mark.parametrize('where', ['header', 'first_chunk', 'middle_chunk', 'last_chunk'])
def test_file_cut_inside_a_chunk_yields_messages_before_it_and_a_problem(tmp_path, intact, where):
    source, written = intact
    chunks = chunk_layout(source)
    assert len(chunks) > 10
    if where == 'header':
        cut, chunk = 20, chunks[0]
    else:
        chunk = {'first_chunk': chunks[0], 'middle_chunk': chunks[len(chunks) // 2],
                 'last_chunk': chunks[-1]}[where]
        cut = chunk.chunk_start_offset + chunk.chunk_length // 2
    damaged = tmp_path / 'cut.mcap'
    damaged.write_bytes(source.read_bytes()[:cut])

    got, reader = read_back(damaged)
    expected = [m for m in written if m[1] < chunk.message_start_time]
    assert got == expected, f'read {len(got)}, expected the {len(expected)} before the {where}'
    assert reader.problems and all('cut.mcap' in p for p in reader.problems), reader.problems
    assert any('truncated' in p for p in reader.problems), reader.problems


def test_file_cut_after_its_data_reads_every_message(tmp_path, intact):
    source, written = intact
    last = chunk_layout(source)[-1]
    data = source.read_bytes()
    data_end = last.chunk_start_offset + last.chunk_length + last.message_index_length
    for cut in (data_end - 10, data_end + 1, len(data) - 1):
        (tmp_path / 'cut.mcap').write_bytes(data[:cut])
        got, reader = read_back(tmp_path / 'cut.mcap')
        assert got == written, f'cut at {cut}: {len(got)} of {len(written)} messages read'
        assert reader.problems, f'cut at {cut}: no problem recorded'


def test_missing_footer_and_appended_garbage_still_read_everything(tmp_path, intact):
    source, written = intact
    data = source.read_bytes()
    cases = {
        'nofooter.mcap': data[:-40],  # footer record and closing magic gone
        'garbage.mcap': data + os.urandom(5000),
        'garbage_after_cut.mcap': data[: len(data) // 2] + os.urandom(3000),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        got, reader = read_back(tmp_path / name)
        if name == 'garbage_after_cut.mcap':
            assert 0 < len(got) < 400 and got == written[: len(got)]
        else:
            assert got == written, f'{name}: {len(got)} of 400 messages read'
        assert reader.problems and name in reader.problems[0], (name, reader.problems)


def test_damaged_chunk_in_the_middle_loses_only_that_chunk(tmp_path, intact):
    source, written = intact
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # zeroed inside a compressed chunk
    (tmp_path / 'hole.mcap').write_bytes(bytes(data))

    got, reader = read_back(tmp_path / 'hole.mcap')
    assert 300 < len(got) < 400, f'{len(got)} messages read'
    assert got == [m for m in written if m in got], 'survivors must be unchanged and in order'
    assert got[-1] == written[-1], 'messages after the damaged chunk must still be read'
    assert any('damaged chunk' in p for p in reader.problems), reader.problems


def test_not_an_mcap_file_reports_a_problem_without_raising(tmp_path):
    (tmp_path / 'junk.mcap').write_bytes(os.urandom(2000))
    got, reader = read_back(tmp_path / 'junk.mcap')
    assert got == [] and reader.problems


def test_crashed_recording_keeps_closed_files_and_open_files_flushed_chunks(tmp_path):
    """A copy taken while the writer is open is what a crash (kill -9) leaves on disk."""
    from std_msgs.msg import String

    writer = BagWriter(tmp_path / 'live', split_size_bytes=40_000, compression='none',
                       chunk_size_bytes=4_000)
    written = []
    for index in range(500):
        text = f'{index}:' + 'x' * 300
        writer.write_msg('/eval/events', String(data=text), T0 + index * 1_000_000)
        written.append(('/eval/events', T0 + index * 1_000_000, text))
    writer._stream.flush()  # what the OS holds after the process dies
    shutil.copytree(tmp_path / 'live', tmp_path / 'crashed')
    writer.close()

    info = metadata(tmp_path / 'crashed')
    open_file = info['relative_file_paths'][-1]
    assert len(info['relative_file_paths']) >= 3, 'metadata.yaml must list the open file too'
    got, reader = read_back(tmp_path / 'crashed')
    closed = sum(f['message_count'] for f in info['files'][:-1])
    assert closed <= len(got) < 500 and got == written[: len(got)]
    assert any(open_file in p for p in reader.problems), reader.problems


def test_writer_guards(tmp_path):
    from std_msgs.msg import String

    writer = BagWriter(tmp_path / 'bag')
    writer.add_topic('/a', 'std_msgs/String')
    writer.add_topic('/a', 'std_msgs/msg/String')  # idempotent
    with pytest.raises(ValueError):
        writer.add_topic('/a', 'std_msgs/msg/Bool')
    with pytest.raises(KeyError):
        writer.write('/undeclared', b'', T0)
    writer.close()
    writer.close()  # safe twice
    with pytest.raises(ValueError):
        writer.write_msg('/a', String(data='late'), T0)
    with pytest.raises(FileExistsError):
        BagWriter(tmp_path / 'bag')
    assert BagReader(tmp_path / 'bag').topics() == {'/a': 'std_msgs/msg/String'}
    assert list(BagReader(tmp_path / 'bag').messages()) == []


def test_messages_come_in_log_time_order_across_overlapping_chunks(tmp_path):
    """rosbag2 and our recorder write in receive order, which may step back in log time."""
    from std_msgs.msg import String

    rng = random.Random(3)
    # Each message is written up to 50 ms "late"; chunks of ~10 messages overlap in time.
    times = [T0 + index * 10_000_000 - rng.randrange(50_000_000) for index in range(300)]
    with BagWriter(tmp_path / 'bag', chunk_size_bytes=1_000, compression='none') as writer:
        for index, log_time in enumerate(times):
            writer.write_msg('/eval/events', String(data=f'{index:04d}' + 'x' * 60), log_time)
    expected = sorted(times)
    for name, path in {'indexed': tmp_path / 'bag', 'sequential': tmp_path / 'cut.mcap'}.items():
        if name == 'sequential':  # no footer: the scan path must order the same way
            path.write_bytes((tmp_path / 'bag' / 'bag_0.mcap').read_bytes()[:-40])
        got = [log_time for _, _, log_time, _ in BagReader(path).messages()]
        assert got == expected, f'{name}: messages not in log-time order'
