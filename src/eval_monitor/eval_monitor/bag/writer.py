"""Writer of rosbag2 bag directories of MCAP files (splitting, crash-safe metadata.yaml).

Only ``rclpy.serialization`` is used, lazily, by :meth:`BagWriter.write_msg`; everything else
is ``mcap`` and PyYAML, so bags can be written without ROS.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from eval_monitor.bag.definitions import (
    msg_definition,
    normalize_type_name,
    type_description_hash,
)
from eval_monitor.bag.metadata import (
    MCAP_METADATA_NAME,
    STORAGE_ID,
    FileInfo,
    TopicInfo,
    bag_info,
    info_yaml,
    normalize_qos_profiles,
    qos_profiles_yaml,
    write_metadata,
)
from eval_monitor.bag.shield import run_to_completion

__all__ = [
    'BagWriter',
    'Compression',
]

Compression = Literal['zstd', 'lz4', 'none']


class _CountingFile:
    """Write-only file that counts the bytes written (``tell`` without a syscall).

    A plain object, not an ``io.RawIOBase``: mcap's writer would wrap one in a second buffer.
    """

    def __init__(self, path: Path) -> None:
        self._file = open(path, 'wb')  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, data: Any) -> int:
        written = self._file.write(data)
        self.count += written
        return written

    def tell(self) -> int:
        return self.count

    def flush(self) -> None:
        self._file.flush()

    def sync(self) -> None:
        """Flush and fsync: the bytes survive a power loss, not only a killed process."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class _TopicRecord(TopicInfo):
    """A declared topic: its metadata.yaml entry plus what the MCAP files need."""

    def __init__(self, info: TopicInfo, definition: str) -> None:
        super().__init__(**vars(info))
        self.definition = definition
        self.sequence = 0


class _FileRecord(FileInfo):
    """A file of the bag: its metadata.yaml entry plus its channel ids by topic."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.channel_ids: dict[str, int] = {}


class BagWriter:
    """Write a rosbag2 bag directory of MCAP files (see :mod:`eval_monitor.bag`).

    ``split_size_bytes`` starts a new file once the current one holds at least that many
    bytes (bytes on disk plus the open chunk's uncompressed bytes); ``split_duration_s``
    once a message's log time is that far past the file's first message. ``metadata.yaml``
    is rewritten (atomically) when the bag opens, on every new topic, at every split, on
    :meth:`flush` and on close, so a crash loses at most the open file's index and the chunk
    not flushed yet (the reader recovers the readable part; ``so101-bag-reindex`` rebuilds
    index and metadata). ``custom_data`` goes to metadata.yaml's ``custom_data``.

    Thread safe: every public method takes an internal lock. :meth:`close` runs to its end
    even when a signal handler raises (Ctrl-C) meanwhile; see :func:`run_to_completion`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        storage: str = STORAGE_ID,
        split_size_bytes: int | None = None,
        split_duration_s: float | None = None,
        compression: Compression = 'zstd',
        chunk_size_bytes: int = 1024 * 1024,
        custom_data: Mapping[str, str] | None = None,
    ) -> None:
        """Create the bag directory (which must not exist or be empty) and its first file."""
        from mcap.writer import CompressionType

        if storage != STORAGE_ID:
            raise ValueError(f'only the {STORAGE_ID!r} storage is supported, not {storage!r}')
        compressions = {
            'zstd': CompressionType.ZSTD, 'lz4': CompressionType.LZ4, 'none': CompressionType.NONE,
        }
        if compression not in compressions:
            raise ValueError(f'compression must be one of {sorted(compressions)}')
        if split_size_bytes is not None and split_size_bytes <= 0:
            raise ValueError('split_size_bytes must be positive (or None)')
        if split_duration_s is not None and split_duration_s <= 0:
            raise ValueError('split_duration_s must be positive (or None)')
        custom_data = dict(custom_data or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in custom_data.items()):
            raise ValueError('custom_data must map strings to strings (rosbag2 stores strings)')
        self.path = Path(path)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise FileExistsError(f'bag output {self.path} already exists and is not empty')
        self.path.mkdir(parents=True, exist_ok=True)
        self._name = self.path.name
        self._compression = compressions[compression]
        self._chunk_size = int(chunk_size_bytes)
        self._split_size = split_size_bytes
        self._split_duration_ns = (
            None if split_duration_s is None else int(split_duration_s * 1e9)
        )
        self._lock = threading.RLock()
        self._topics: dict[str, _TopicRecord] = {}
        self._files: list[_FileRecord] = []
        self._stream: _CountingFile | None = None
        self._writer: Any = None
        self._schema_ids: dict[str, int] = {}
        self._last_count = 0
        self._pending_bytes = 0
        self._custom_data = custom_data
        self._closed = False
        self._open_next_file()
        self._write_metadata()

    # -- public API ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def files(self) -> list[Path]:
        """Paths of the bag's files so far, in order."""
        return [self.path / record.path for record in self._files]

    @property
    def message_counts(self) -> dict[str, int]:
        """Messages written per topic."""
        with self._lock:
            return {name: topic.message_count for name, topic in self._topics.items()}

    def add_topic(
        self,
        name: str,
        type_name: str,
        offered_qos_profiles: Iterable[Any] | str = (),
        definition: str | None = None,
        type_hash: str | None = None,
    ) -> None:
        """Declare a topic (``type_name`` like ``sensor_msgs/msg/Image``); idempotent.

        ``offered_qos_profiles``: what the publishers offer, as rclpy ``QoSProfile`` objects,
        the version 9 list (:func:`qos_profiles`) or an older metadata's YAML string; empty
        when unknown. ``definition`` defaults to :func:`msg_definition`, ``type_hash`` to
        :func:`type_description_hash`.
        """
        type_name = normalize_type_name(type_name)
        profiles = normalize_qos_profiles(
            offered_qos_profiles if isinstance(offered_qos_profiles, str)
            else list(offered_qos_profiles)
        )
        with self._lock:
            self._check_open()
            existing = self._topics.get(name)
            if existing is not None:
                if existing.type_name != type_name:
                    raise ValueError(
                        f'topic {name} already recorded as {existing.type_name}, not {type_name}'
                    )
                return
            if definition is None:
                definition = msg_definition(type_name)
            if type_hash is None:
                type_hash = type_description_hash(type_name)
            topic = _TopicRecord(TopicInfo(name, type_name, profiles, type_hash), definition)
            self._topics[name] = topic
            self._register(topic)
            self._write_metadata()

    def write(
        self,
        topic: str,
        data: bytes,
        log_time_ns: int,
        publish_time_ns: int | None = None,
    ) -> None:
        """Append one serialized (CDR) message of a declared topic."""
        with self._lock:
            self._check_open()
            record = self._topics.get(topic)
            if record is None:
                raise KeyError(f'topic {topic} was not declared with add_topic()')
            if self._should_split(log_time_ns):
                self._split()
            current = self._files[-1]
            record.sequence = (record.sequence + 1) & 0xFFFFFFFF
            self._writer.add_message(
                channel_id=current.channel_ids[topic],
                log_time=log_time_ns,
                data=data,
                publish_time=log_time_ns if publish_time_ns is None else publish_time_ns,
                sequence=record.sequence,
            )
            record.message_count += 1
            current.add(log_time_ns)
            if self._stream.count != self._last_count:
                # A chunk was flushed to disk (it holds this message too).
                self._last_count = self._stream.count
                self._pending_bytes = 0
            else:
                self._pending_bytes += len(data) + 31  # message record overhead

    def write_msg(self, topic: str, msg: Any, log_time_ns: int) -> None:
        """Serialize a ROS message object with rclpy and append it (declares the topic).

        The CDR bytes are cut to the message's real length (see :mod:`eval_monitor.bag.cdr`),
        as a published message would arrive.
        """
        from eval_monitor.bag.cdr import serialize_message

        if topic not in self._topics:
            cls = type(msg)
            package = cls.__module__.split('.')[0]
            self.add_topic(topic, f'{package}/msg/{cls.__name__}')
        self.write(topic, serialize_message(msg), log_time_ns)

    def flush(self) -> None:
        """Put everything written so far into the file and refresh ``metadata.yaml``.

        Finishes the MCAP chunk in progress (an MCAP reader finds its messages even if the
        process dies before :meth:`close`) and rewrites metadata.yaml with the counts so far.
        Costs one chunk (its compression restarts), so call it every second or so, not per
        message. Does not fsync.
        """
        with self._lock:
            self._check_open()
            self._writer.flush()
            self._last_count = self._stream.count
            self._pending_bytes = 0
            self._write_metadata()

    def close(self) -> None:
        """Finish the open file (MCAP summary and footer) and write ``metadata.yaml``.

        Both are fsynced. Runs to its end even if a signal handler raises meanwhile (the
        exception is raised afterwards): a Ctrl-C never leaves a half-written footer.
        """
        run_to_completion(self._close, name=f'close {self._name}')

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._finish_file()
            finally:
                self._write_metadata(durable=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f'bag {self.path} is closed')

    def _current_size(self) -> int:
        return self._stream.count + self._pending_bytes

    def _should_split(self, log_time_ns: int) -> bool:
        current = self._files[-1]
        if current.message_count == 0:
            return False
        if self._split_size is not None and self._current_size() >= self._split_size:
            return True
        return (
            self._split_duration_ns is not None
            and log_time_ns - current.start_ns >= self._split_duration_ns
        )

    def _open_next_file(self) -> None:
        from mcap.writer import LIBRARY_IDENTIFIER, Writer

        record = _FileRecord(f'{self._name}_{len(self._files)}.mcap')
        self._stream = _CountingFile(self.path / record.path)
        self._writer = Writer(
            self._stream,
            chunk_size=self._chunk_size,
            compression=self._compression,
        )
        self._writer.start(profile='ros2', library=f'{LIBRARY_IDENTIFIER} so101 eval_monitor')
        self._files.append(record)
        self._schema_ids = {}
        self._last_count = self._stream.count
        self._pending_bytes = 0
        for topic in self._topics.values():
            self._register(topic)

    def _register(self, topic: _TopicRecord) -> None:
        schema_id = self._schema_ids.get(topic.type_name)
        if schema_id is None:
            schema_id = self._writer.register_schema(
                name=topic.type_name, encoding='ros2msg', data=topic.definition.encode()
            )
            self._schema_ids[topic.type_name] = schema_id
        self._files[-1].channel_ids[topic.name] = self._writer.register_channel(
            topic=topic.name,
            message_encoding=topic.serialization_format,
            schema_id=schema_id,
            # What rosbag2's MCAP plugin stores per channel (Jazzy on).
            metadata={
                'offered_qos_profiles': qos_profiles_yaml(topic.offered_qos_profiles),
                'topic_type_hash': topic.type_description_hash,
            },
        )

    def _finish_file(self) -> None:
        """Close the open file: the bag's metadata as a ``rosbag2`` record, summary, footer."""
        try:
            self._writer.add_metadata(
                MCAP_METADATA_NAME, {'serialized_metadata': info_yaml(self._metadata())}
            )
            self._writer.finish()
            self._stream.sync()
        finally:
            self._stream.close()

    def _split(self) -> None:
        # Off the main thread in the recorder; on it (a script) a Ctrl-C must not leave the
        # writer between two files.
        def split() -> None:
            self._finish_file()
            self._open_next_file()
            self._write_metadata(durable=True)

        run_to_completion(split, name=f'split {self._name}')

    def _metadata(self) -> dict[str, Any]:
        return bag_info(self._topics.values(), self._files, custom_data=self._custom_data)

    def _write_metadata(self, durable: bool = False) -> None:
        write_metadata(self.path, self._metadata(), durable=durable)
