"""so101-dataset converts a bag written by rosbags (the way `ros2 bag record -s mcap` writes
one: metadata version 9, offered QoS as a list) to the same dataset as the recorder's bag."""

from __future__ import annotations

import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # before mujoco is imported (offscreen rendering)
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip('rosbags', reason='rosbags (test dependency) missing')
pytest.importorskip('lerobot', reason='so101-dataset needs lerobot')

from tests.pi05_policy.test_dataset import column, config, load, record_sim_bag  # noqa: E402


def _rewrite_with_rosbags(source, target):
    """Every message of ``source`` into a new bag written by rosbags' own Writer."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    with Reader(source) as reader, Writer(target, version=9,
                                          storage_plugin=StoragePlugin.MCAP) as writer:
        out = {}
        for conn in reader.connections:
            if conn.topic not in out:
                out[conn.topic] = writer.add_connection(
                    conn.topic, conn.msgtype, typestore=typestore,
                    offered_qos_profiles=conn.ext.offered_qos_profiles)
        count = 0
        for conn, timestamp, data in reader.messages():
            writer.write(out[conn.topic], timestamp, data)
            count += 1
    return count


@pytest.mark.slow
def test_a_rosbags_written_bag_converts_to_the_same_dataset(tmp_path):
    import yaml

    from pi05_policy.dataset import convert

    ours = record_sim_bag(tmp_path / 'ours')
    theirs = tmp_path / 'theirs'
    assert _rewrite_with_rosbags(ours.path, theirs) > 500
    info = yaml.safe_load((theirs / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 9
    assert isinstance(info['topics_with_message_count'][0]['topic_metadata'][
        'offered_qos_profiles'], list)

    results = {}
    for name, bag in (('ours', ours.path), ('theirs', theirs)):
        root = tmp_path / f'ds_{name}'
        convert(config([bag], root, video=False))
        results[name] = load(root)
    a, b = results['ours'], results['theirs']
    assert a.num_episodes == b.num_episodes >= 2 and a.num_frames == b.num_frames > 0
    for key in ('observation.state', 'action', 'timestamp', 'episode_index'):
        np.testing.assert_array_equal(column(a, key), column(b, key), err_msg=key)
