"""so101_recorder stopped by signals: repeated Ctrl-C, SIGTERM, SIGKILL then so101-bag-reindex.

Each time the bag's metadata.yaml must agree with what its MCAP file holds, counted by the
mcap library and by rosbags (an independent reader), and an ordinary stop must exit 0 without
a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from mcap.reader import make_reader

from tests.eval_monitor.test_recorder import _joint_state, _pace
from tests.helpers import wait_for

TOPICS = ('/eval/events', '/joint_states')


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class Recorder:
    """The ``so101_recorder`` console script as a subprocess, its output collected."""

    def __init__(self, bag: Path, *params: str) -> None:
        env = dict(os.environ)  # conftest put this test's ROS_DOMAIN_ID in os.environ
        env['PYTHONUNBUFFERED'] = '1'
        env['RCUTILS_LOGGING_BUFFERED_STREAM'] = '0'
        args = [_script('so101_recorder'), '--ros-args', '-p', f'output:={bag}',
                '-p', f'topics:=[{",".join(TOPICS)}]', '-p', 'discovery_period_s:=0.05',
                '-p', 'stats_period_s:=0.1']
        for param in params:
            args += ['-p', param]
        self.process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._collector = threading.Thread(target=lambda: self.lines.extend(self.process.stdout),
                                           daemon=True)
        self._collector.start()

    @property
    def output(self) -> str:
        return ''.join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._collector.join(timeout=5.0)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._collector.join(timeout=5.0)


@pytest.fixture
def recorder_factory():
    started: list[Recorder] = []

    def start(bag: Path, *params: str) -> Recorder:
        started.append(Recorder(bag, *params))
        return started[-1]

    yield start
    for recorder in started:
        recorder.kill()


class Stream:
    """joint_states at 100 Hz and an event every 5th message, published by the test."""

    def __init__(self, spinner, ros_context) -> None:
        from rclpy.node import Node
        from so101_driver.qos import COMMAND, STREAM_PUB
        from std_msgs.msg import String

        self._string = String
        self.node = spinner.add(Node('test_source', context=ros_context))
        self.events = self.node.create_publisher(String, '/eval/events', COMMAND)
        self.joints = self.node.create_publisher(type(_joint_state(0, 0)), '/joint_states',
                                                 STREAM_PUB)
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wait_for_recorder(self) -> None:
        wait_for(lambda: self.events.get_subscription_count()
                 and self.joints.get_subscription_count(), 30.0,
                 message='the recorder process to subscribe')

    def publish(self, count: int) -> None:
        for _ in _pace(0.01, count):
            self._publish_one()

    def _publish_one(self) -> None:
        self.joints.publish(_joint_state(self.sent, time.time_ns()))
        if self.sent % 5 == 0:
            self.events.publish(self._string(data=f'{{"event": "grasp", "index": {self.sent}}}'))
        self.sent += 1

    def start(self) -> None:
        """Keep publishing at 100 Hz in a thread until :meth:`stop`."""
        def run() -> None:
            while not self._stop.is_set():
                self._publish_one()
                self._stop.wait(0.01)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


def _metadata_counts(bag: Path) -> dict[str, int]:
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['message_count'] == sum(e['message_count']
                                        for e in info['topics_with_message_count'])
    return {e['topic_metadata']['name']: e['message_count']
            for e in info['topics_with_message_count']}


def _mcap_counts(bag: Path) -> dict[str, int]:
    """Per-topic counts from the MCAP summary's statistics (the file must be closed)."""
    counts: Counter[str] = Counter()
    for file in sorted(bag.glob('*.mcap')):
        with open(file, 'rb') as stream:
            summary = make_reader(stream).get_summary()
        assert summary is not None and summary.statistics is not None, \
            f'{file.name} has no MCAP summary (not closed)'
        for channel_id, count in summary.statistics.channel_message_counts.items():
            counts[summary.channels[channel_id].topic] += count
        for channel in summary.channels.values():
            counts.setdefault(channel.topic, 0)
    return dict(counts)


def _rosbags_counts(bag: Path) -> dict[str, int]:
    """Per-topic counts of the messages rosbags reads out of the files."""
    from rosbags.rosbag2 import Reader

    counts: Counter[str] = Counter()
    with Reader(bag) as reader:
        for connection in reader.connections:
            counts.setdefault(connection.topic, 0)
        for connection, _, _ in reader.messages():
            counts[connection.topic] += 1
    return dict(counts)


def _assert_bag_consistent(bag: Path, at_least: dict[str, int]) -> dict[str, int]:
    counts = _metadata_counts(bag)
    assert _mcap_counts(bag) == counts, 'metadata.yaml disagrees with the MCAP summary'
    assert _rosbags_counts(bag) == counts, 'metadata.yaml disagrees with what rosbags reads'
    for topic, minimum in at_least.items():
        assert counts.get(topic, 0) >= minimum, f'{topic}: {counts} < {at_least}'
    return counts


def _received(stream: Stream, recorder: Recorder, joints: int) -> None:
    stream.wait_for_recorder()
    stream.publish(joints)
    expected = f'/eval/events {(joints + 4) // 5}, /joint_states {joints}'
    wait_for(lambda: any(expected in line for line in recorder.lines), 20.0,
             message=f'the recorder to log {expected} written')


@pytest.mark.parametrize('signals', [
    # An impatient operator: three Ctrl-C within a second, the second one while the first is
    # still stopping the node, the third while rclpy shuts down or later.
    [(signal.SIGINT, 0.01), (signal.SIGINT, 0.3), (signal.SIGINT, 0.0)],
    [(signal.SIGTERM, 0.0)],
], ids=['three_sigints', 'sigterm'])
def test_stop_signals_close_the_bag_completely_and_exit_0(
        ros_context, spinner, tmp_path, recorder_factory, signals):
    bag = tmp_path / 'bag'
    recorder = recorder_factory(bag)
    stream = Stream(spinner, ros_context)
    _received(stream, recorder, 50)
    stream.start()  # still streaming while it stops: the close has a queue to drain
    try:
        for signum, pause in signals:
            recorder.process.send_signal(signum)
            time.sleep(pause)
        code = recorder.wait(timeout=20.0)
    finally:
        stream.stop()
    assert code == 0, recorder.output
    assert 'Traceback' not in recorder.output, recorder.output
    _assert_bag_consistent(bag, {'/eval/events': 10, '/joint_states': 50})


def test_sigkilled_recording_is_evaluated_then_reindexed_for_other_readers(
        ros_context, spinner, tmp_path, recorder_factory):
    from eval_monitor.bag import BagReader
    from eval_monitor.offline import evaluate_bag

    bag = tmp_path / 'bag'
    recorder = recorder_factory(bag, 'flush_period_s:=0.2')
    stream = Stream(spinner, ros_context)
    _received(stream, recorder, 50)
    expected = {'/eval/events': 10, '/joint_states': 50}
    # The periodic flush puts the chunk into the file and the counts into metadata.yaml.
    wait_for(lambda: _metadata_counts(bag) == expected, 10.0,
             message='the recorder to flush the 60 messages')
    recorder.process.send_signal(signal.SIGKILL)
    assert recorder.wait(timeout=10.0) == -signal.SIGKILL

    with open(bag / 'bag_0.mcap', 'rb') as file:
        assert file.read()[-8:] != b'\x89MCAP0\r\n', 'a killed recorder writes no footer'
    reader = BagReader(bag)
    assert Counter(topic for topic, _, _, _ in reader.raw_messages()) == expected
    result = evaluate_bag(bag, tmp_path / 'run')  # so101-eval reads the unclosed bag
    assert result.received['joint_states'] == 50
    assert any('bag_0.mcap' in s for s in result.skipped), result.skipped

    done = subprocess.run([_script('so101-bag-reindex'), str(bag)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'rewritten' in done.stdout, done.stdout
    assert _assert_bag_consistent(bag, expected) == expected
    reread = BagReader(bag)
    assert Counter(topic for topic, _, _, _ in reread.raw_messages()) == expected
    assert reread.problems == []


def test_a_ctrl_c_during_bag_close_is_raised_only_after_the_close(tmp_path):
    from std_msgs.msg import String

    from eval_monitor.bag import BagWriter

    bag = tmp_path / 'bag'
    writer = BagWriter(bag)
    for index in range(20):
        writer.write_msg('/eval/events', String(data=str(index)), 1_700_000_000 * 10**9 + index)
    write_footer_metadata = writer._writer.add_metadata  # the first step of finishing the file

    def interrupted(*args, **kwargs):
        # Ctrl-C lands in the main thread just as the file starts to be finished; unshielded,
        # KeyboardInterrupt would be raised right here and the file would get no footer.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        return write_footer_metadata(*args, **kwargs)

    writer._writer.add_metadata = interrupted
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            writer.close()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert writer.closed
    assert _mcap_counts(bag) == _metadata_counts(bag) == {'/eval/events': 20}
