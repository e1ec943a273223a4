"""so101_recorder: records topics into a rosbag2-compatible MCAP bag (no rosbag2 needed).

Subscribes with ``raw=True`` (serialized CDR, never deserialised) to each wanted topic once
a publisher for it is discovered, with the type the graph reports; discovery is polled, so
topics that appear later are picked up. Every message is stamped on receipt with the node
clock (``use_sim_time`` honoured) and handed to a writer thread through a queue, so the
subscription callback only timestamps and enqueues. The writer thread finishes the MCAP
chunk and refreshes ``metadata.yaml`` every ``flush_period_s`` while messages arrive, so a
recorder killed outright (SIGKILL, OOM killer) leaves all but the last moments readable
(``so101-bag-reindex`` then rebuilds index and metadata). The bag is closed (queue drained,
MCAP footers and ``metadata.yaml`` written) by :meth:`RecorderNode.close`, which
``destroy_node`` calls, which ``main`` calls when SIGINT/SIGTERM end the spin.

Stopping (``main``, through ``so101_driver.ros_io.run_node``): the first SIGINT or SIGTERM
ends the spin; any further one while the queue drains and the bag closes is logged and
otherwise ignored, so an impatient second Ctrl-C neither cuts the bag short nor prints a
traceback, and the process exits 0 with a complete bag. The close itself also runs to its end
if the process's signal handlers raise (embedding with Python's default handlers): see
:func:`eval_monitor.bag.run_to_completion`.

QoS matches what each topic's publishers offer, as ``ros2 bag record`` does: RELIABLE
keep-last 100 (a recording must not lose messages) unless a publisher offers only
BEST_EFFORT, TRANSIENT_LOCAL when every publisher offers it (the latched
``robot_description``, ``teleop/override``, ``policy/task``), so their last value is
captured however late the recorder starts.
"""

from __future__ import annotations

import copy
import functools
import importlib
import queue
import threading
import time
from collections import Counter
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from so101_driver.guard import GuardedNode
from so101_driver.ros_io import float_range, run_node
from so101_driver.qos import COMMAND

from eval_monitor.bag import (
    BagWriter,
    msg_definition,
    normalize_type_name,
    qos_profiles,
    run_to_completion,
)

#: What an evaluation needs (DESIGN.md topic table), relative so a pushed namespace applies;
#: /clock is global.
DEFAULT_TOPICS = [
    'joint_states',
    'joint_trajectory',
    'teleop/joint_trajectory',
    'teleop/override',
    'policy/task',
    'policy/status',
    'eval/episode',
    'eval/events',
    'eval/status',
    'sim/truth',
    'robot_description',
    'diagnostics',
    '/clock',
]
#: Added by ``record_images`` (two 640x480 rgb8 streams at 30 fps are ~55 MB/s).
IMAGE_TOPICS = [
    'cameras/front/image_raw',
    'cameras/front/camera_info',
    'cameras/handeye/image_raw',
    'cameras/handeye/camera_info',
]
#: Subscription history depth: bursts (an image pair plus 100 Hz joint states while the
#: executor is busy) must not overwrite samples not taken yet.
RECORD_DEPTH = 100


def message_class(type_name: str) -> Any:
    """Python message class of a ROS type name (``pkg/msg/Type`` or ``pkg/Type``)."""
    package, namespace, name = normalize_type_name(type_name).split('/')
    return getattr(importlib.import_module(f'{package}.{namespace}'), name)


def _descriptor(description: str, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=True, **kwargs)


class RecorderNode(GuardedNode):
    """Record wanted topics into a bag directory until closed."""

    def __init__(self, **kwargs: Any) -> None:
        """Declare parameters, open the bag, start the writer thread and discovery."""
        super().__init__('so101_recorder', **kwargs)
        stamp = time.strftime('%Y%m%d_%H%M%S')
        output = self.declare_parameter(
            'output', f'bags/so101_{stamp}',
            _descriptor('Bag directory to create (must not exist or be empty).'),
        ).value
        topics = self.declare_parameter(
            'topics', DEFAULT_TOPICS,
            _descriptor('Topics to record; relative names resolve in the node namespace.'),
        ).value
        record_images = self.declare_parameter(
            'record_images', False,
            _descriptor('Also record the front and handeye camera images and camera_info.'),
        ).value
        all_topics = self.declare_parameter(
            'all_topics', False,
            _descriptor('Record every topic with a publisher (except hidden ones); '
                        'overrides topics.'),
        ).value
        split_size_mb = self.declare_parameter(
            'split_size_mb', 0.0,
            _descriptor('Start a new bag file after this many MB; 0 = never.',
                        floating_point_range=float_range(0.0, 1e7)),
        ).value
        split_duration_s = self.declare_parameter(
            'split_duration_s', 0.0,
            _descriptor('Start a new bag file after this many seconds; 0 = never.',
                        floating_point_range=float_range(0.0, 1e7)),
        ).value
        discovery_period = self.declare_parameter(
            'discovery_period_s', 0.1,
            _descriptor('How often to look for new topics and publishers.',
                        floating_point_range=float_range(0.01, 60.0)),
        ).value
        stats_period = self.declare_parameter(
            'stats_period_s', 10.0,
            _descriptor('How often to log per-topic message counters; 0 = never.',
                        floating_point_range=float_range(0.0, 3600.0)),
        ).value
        compression = self.declare_parameter(
            'compression', 'zstd',
            _descriptor('MCAP chunk compression: zstd, lz4 or none.'),
        ).value
        max_queue_mb = self.declare_parameter(
            'max_queue_mb', 1024.0,
            _descriptor('Most received-but-unwritten data held in memory; beyond it messages '
                        'are dropped and counted (the disk is too slow).',
                        floating_point_range=float_range(1.0, 1e6)),
        ).value
        flush_period = self.declare_parameter(
            'flush_period_s', 1.0,
            _descriptor('Finish the MCAP chunk and refresh metadata.yaml at least this often '
                        'while messages arrive, so a killed recorder loses at most about '
                        'this much; 0 = only when a chunk fills (1 MiB).',
                        floating_point_range=float_range(0.0, 3600.0)),
        ).value

        self._all_topics = bool(all_topics)
        if record_images:
            topics = list(topics) + IMAGE_TOPICS
        self._wanted = {self.resolve_topic_name(t) for t in topics}
        self._max_queue_bytes = int(max_queue_mb * 1e6)
        self._flush_period = float(flush_period)
        self._writer = BagWriter(
            output,
            split_size_bytes=int(split_size_mb * 1e6) or None,
            split_duration_s=split_duration_s or None,
            compression=compression,
        )
        self.output = self._writer.path

        # Shared between the executor (callbacks) and the writer thread, under _lock.
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._queued_bytes = 0
        self._received: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._written: Counter[str] = Counter()
        self._written_bytes = 0
        self._closing = False
        self._closed = False
        self._write_error: Exception | None = None

        self._subscriptions_by_topic: dict[str, Any] = {}
        self._types: dict[str, str] = {}
        self._ignored: set[str] = set()
        self._last_logged: dict[str, int] = {}
        self._discovery_timer = self._stats_timer = None
        self._thread = threading.Thread(target=self._write_loop, name='bag_writer', daemon=True)
        self._thread.start()
        try:
            self.get_logger().info(
                f'recording to {self.output}: '
                + ('all topics' if self._all_topics else ', '.join(sorted(self._wanted)))
            )
            self._discover()
            # Wall (steady) clock: with use_sim_time a sim that waits for its listeners before
            # the first /clock would otherwise wait for a discovery that never comes.
            steady = Clock(clock_type=ClockType.STEADY_TIME)
            self._discovery_timer = self.create_timer(discovery_period, self._discover,
                                                      clock=steady)
            self._stats_timer = (
                self.create_timer(stats_period, self._log_stats, clock=steady)
                if stats_period > 0 else None
            )
        except BaseException:
            # Interrupted or failed while starting: leave a closed bag, not an open one.
            self.close()
            raise

    # -- public --------------------------------------------------------------------------

    @property
    def recorded_topics(self) -> dict[str, str]:
        """Subscribed topics: ``{name: type}``."""
        return dict(self._types)

    @property
    def received_counts(self) -> dict[str, int]:
        """Messages received per topic (queued for writing)."""
        with self._lock:
            return dict(self._received)

    @property
    def written_counts(self) -> dict[str, int]:
        """Messages written to the bag per topic."""
        with self._lock:
            return dict(self._written)

    @property
    def dropped_counts(self) -> dict[str, int]:
        """Messages dropped per topic because the write queue was full."""
        with self._lock:
            return dict(self._dropped)

    def close(self) -> None:
        """Stop recording: write everything received, finish the bag. Safe to call twice.

        Runs to its end even if a signal handler raises meanwhile (see
        :func:`run_to_completion`).
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._queue.put(None)
            queued = self._queue.qsize() - 1
        if queued > 0:
            self.get_logger().info(f'stopping: writing {queued} queued messages, then closing')
        run_to_completion(self._finish, name='recorder close')

    def _finish(self) -> None:
        for timer in (self._discovery_timer, self._stats_timer):
            if timer is not None:
                timer.cancel()
        self._thread.join()
        self._writer.close()
        self._closed = True
        self._log_stats(final=True)

    def destroy_node(self) -> None:
        """Close the bag, then destroy the node."""
        if hasattr(self, '_thread'):  # not when __init__ failed (rclpy destroys it at shutdown)
            self.close()
        super().destroy_node()

    # -- discovery ---------------------------------------------------------------------------

    def _is_wanted(self, name: str) -> bool:
        if self._all_topics:
            return not any(part.startswith('_') for part in name.split('/'))
        return name in self._wanted

    def _discover(self) -> None:
        if self._closing:
            return
        for name, types in self.get_topic_names_and_types():
            if name in self._subscriptions_by_topic or name in self._ignored:
                continue
            if not self._is_wanted(name) or self.count_publishers(name) == 0:
                continue
            self._subscribe(name, types)

    def _subscribe(self, name: str, types: list[str]) -> None:
        log = self.get_logger()
        if len(types) > 1:
            log.warning(f'{name} has several types {types}; recording {types[0]}')
        type_name = types[0]
        try:
            msg_type = message_class(type_name)
            definition = msg_definition(type_name)
        except (ImportError, AttributeError, LookupError, ValueError) as exc:
            log.error(f'not recording {name}: type {type_name} unavailable here ({exc})')
            self._ignored.add(name)
            return
        offered = [info.qos_profile for info in self.get_publishers_info_by_topic(name)]
        qos = self._subscription_qos(name, offered)
        with self._lock:
            # Queued before any of its messages: the writer declares the topic first.
            self._queue.put(('topic', name, type_name, qos_profiles(offered), definition))
        subscription = self.create_subscription(
            msg_type, name, functools.partial(self._on_message, name), qos, raw=True
        )
        self._subscriptions_by_topic[name] = subscription
        self._types[name] = type_name
        log.info(
            f'recording {name} [{type_name}] {qos.reliability.name} {qos.durability.name}'
        )

    def _subscription_qos(self, name: str, offered: list[QoSProfile]) -> QoSProfile:
        """RELIABLE unless a publisher is BEST_EFFORT; TRANSIENT_LOCAL if all publishers are."""
        qos = copy.copy(COMMAND)
        qos.depth = RECORD_DEPTH
        if any(p.reliability == ReliabilityPolicy.BEST_EFFORT for p in offered):
            self.get_logger().warning(
                f'{name}: a publisher offers only BEST_EFFORT; recording BEST_EFFORT '
                '(messages may be lost on the way)'
            )
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if offered and all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered):
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
        return qos

    # -- receive and write ---------------------------------------------------------------

    def _on_message(self, topic: str, data: bytes, info: dict[str, Any]) -> None:
        with self._lock:
            # Stamped under the lock so queue (file) order is log-time order even when a
            # multi-threaded executor runs two subscriptions at once.
            receive_time = self.get_clock().now().nanoseconds
            publish_time = info.get('source_timestamp') or receive_time
            if self._closing:
                return
            if self._queued_bytes + len(data) > self._max_queue_bytes:
                self._dropped[topic] += 1
                if self._dropped[topic] in (1, 10, 100) or self._dropped[topic] % 1000 == 0:
                    self.get_logger().error(
                        f'write queue full ({self._queued_bytes / 1e6:.0f} MB): dropped '
                        f'{self._dropped[topic]} messages of {topic} so far'
                    )
                return
            self._queued_bytes += len(data)
            self._received[topic] += 1
            self._queue.put(('msg', topic, data, receive_time, publish_time))

    def _write_loop(self) -> None:
        flush_due: float | None = None  # monotonic time the unflushed messages must be out by
        while True:
            try:
                timeout = None if flush_due is None else max(0.0, flush_due - time.monotonic())
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = 'flush'
            if item is None:
                return
            if flush_due is not None and (item == 'flush' or time.monotonic() >= flush_due):
                flush_due = None
                self._flush()
            if item == 'flush':
                continue
            if item[0] == 'msg' and flush_due is None and self._flush_period > 0:
                flush_due = time.monotonic() + self._flush_period
            try:
                if item[0] == 'topic':
                    _, name, type_name, offered_qos, definition = item
                    self._writer.add_topic(name, type_name, offered_qos, definition)
                    continue
                _, topic, data, receive_time, publish_time = item
                if self._write_error is None:
                    self._writer.write(topic, data, receive_time, publish_time)
                    with self._lock:
                        self._written[topic] += 1
                        self._written_bytes += len(data)
            except Exception as exc:  # noqa: BLE001 - disk full etc.: keep draining, report
                if self._write_error is None:
                    self._write_error = exc
                    self.get_logger().error(f'writing the bag failed, recording stopped: {exc}')
            finally:
                if item[0] == 'msg':
                    with self._lock:
                        self._queued_bytes -= len(item[2])

    def _flush(self) -> None:
        if self._write_error is not None:
            return
        try:
            self._writer.flush()
        except Exception as exc:  # noqa: BLE001 - disk full etc.: as a failed write
            self._write_error = exc
            self.get_logger().error(f'writing the bag failed, recording stopped: {exc}')

    def _log_stats(self, final: bool = False) -> None:
        with self._lock:
            written = dict(self._written)
            dropped = sum(self._dropped.values())
            queued_mb = self._queued_bytes / 1e6
            written_mb = self._written_bytes / 1e6
        if not final and written == self._last_logged:
            return
        self._last_logged = written
        counts = ', '.join(f'{topic} {count}' for topic, count in sorted(written.items()))
        what = 'closed bag' if final else 'recorded'
        self.get_logger().info(
            f'{what}: {sum(written.values())} messages, '
            f'{written_mb:.1f} MB, {dropped} dropped, queue {queued_mb:.1f} MB'
            + (f' [{counts}]' if counts else '')
        )


def main(args=None):
    """``so101_recorder``: record until SIGINT/SIGTERM, then close the bag and exit 0."""
    run_node(RecorderNode, 'so101_recorder', (FileExistsError, LookupError, ValueError), args=args)


if __name__ == '__main__':
    main()
