"""rosbag2-compatible MCAP bags without rclpy: writer, tolerant reader, message definitions.

A bag is a directory laid out as ``ros2 bag record -s mcap`` lays it out::

    <name>/metadata.yaml
    <name>/<name>_0.mcap
    <name>/<name>_1.mcap      (after a split)

Each ``.mcap`` file is standard MCAP with the ``ros2`` profile: ``ros2msg`` schemas holding
the concatenated message definition (the format rosbag2's MCAP storage plugin writes, see
:func:`msg_definition`) and ``cdr`` channels. Every file is self-contained (it repeats all
schemas and channels), so a file can be read on its own.

``metadata.yaml`` uses rosbag2 metadata format version 5 (:data:`METADATA_VERSION`), the
oldest version with per-file information; every rosbag2 release from Humble on reads it
(newer releases decode older versions field by field), while versions 6 to 9 add fields
(``custom_data``, ``type_description_hash``, ``ros_distro``, QoS policies as names) that
Humble cannot read or that this suite cannot fill in without rosidl's type hashing.

Only ``rclpy.serialization`` is used, lazily, by :meth:`BagWriter.write_msg`; reading
decodes with ``mcap_ros2`` (pure Python), so offline evaluation runs without ROS.
"""

from __future__ import annotations

import functools
import heapq
import io
import itertools
import os
import re
import struct
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import yaml

__all__ = [
    'METADATA_VERSION',
    'BagReader',
    'BagWriter',
    'Compression',
    'msg_definition',
    'normalize_type_name',
    'qos_profiles_yaml',
]

#: rosbag2 metadata.yaml format version written by :class:`BagWriter`.
METADATA_VERSION = 5
#: rosbag2 storage plugin identifier of the files.
STORAGE_ID = 'mcap'
METADATA_FILE = 'metadata.yaml'

Compression = Literal['zstd', 'lz4', 'none']

# ---------------------------------------------------------------------------------------------
# Message definitions (rosbag2_storage_mcap's message_definition_cache, reimplemented)
# ---------------------------------------------------------------------------------------------

_DEFINITION_SEPARATOR = '=' * 80 + '\n'
# 'pkg/Type' or 'pkg/msg/Type'
_TYPE_NAME_RE = re.compile(r'^([a-zA-Z][a-zA-Z0-9_]*)/(?:(msg|srv)/)?([a-zA-Z][a-zA-Z0-9_]*)$')
# The type of each field line in a .msg ('foo_msgs/Bar' in 'foo_msgs/Bar[] bar'); no MULTILINE,
# so '^' is the start of the text only, as in rosbag2's std::regex.
_MSG_FIELD_TYPE_RE = re.compile(r'(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+')
_PRIMITIVE_TYPES = frozenset({
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16',
    'int32', 'uint32', 'int64', 'uint64', 'string', 'wstring',
})


def normalize_type_name(type_name: str) -> str:
    """Return the ROS 2 type name in ``pkg/msg/Type`` form (accepts ``pkg/Type`` too)."""
    match = _TYPE_NAME_RE.match(type_name)
    if match is None:
        raise ValueError(f'not a ROS 2 message type name: {type_name!r}')
    package, namespace, name = match.groups()
    return '/'.join((package, namespace or 'msg', name))


def _share_directories(package: str) -> list[Path]:
    """Candidate share directories of ``package``: the ament index, then this environment."""
    candidates = []
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / 'share' / package)
    candidates.append(Path(sys.prefix) / 'share' / package)
    return candidates


@functools.cache
def _msg_spec(package_resource_name: str) -> tuple[str, tuple[str, ...]]:
    """Text of one ``.msg`` file and its sorted non-primitive dependencies (``pkg/Type``)."""
    match = _TYPE_NAME_RE.match(package_resource_name)
    if match is None:
        raise ValueError(f'not a ROS 2 message type name: {package_resource_name!r}')
    package, namespace, name = match.groups()
    for share in _share_directories(package):
        path = share / (namespace or 'msg') / f'{name}.msg'
        if path.is_file():
            # Bytes decoded as-is: rosbag2 copies the file verbatim (no newline translation).
            text = path.read_bytes().decode('utf-8')
            break
    else:
        searched = ', '.join(str(p) for p in _share_directories(package))
        raise LookupError(f'no .msg definition for {package_resource_name} under {searched}')
    dependencies = set()
    for found in _MSG_FIELD_TYPE_RE.finditer(text):
        type_ = found.group(1)
        if type_ in _PRIMITIVE_TYPES:
            continue
        dependencies.add(type_ if '/' in type_ else f'{package}/{type_}')
    return text, tuple(sorted(dependencies))


@functools.cache
def msg_definition(type_name: str) -> str:
    """Full ROS 2 message definition of ``type_name`` as rosbag2 writes ``ros2msg`` schemas.

    The root ``.msg`` text, then for each dependency not seen yet (depth first, sorted per
    level) a newline, a line of 80 ``=``, ``MSG: pkg/Type`` and that type's text. Raises
    ``LookupError`` when a ``.msg`` file cannot be found.
    """
    seen: set[str] = set()

    def append_recursive(resource_name: str, depth: int) -> str:
        if depth <= 0:
            raise RecursionError(f'message definition of {type_name} nests too deep')
        text, dependencies = _msg_spec(resource_name)
        parts = [text]
        for dependency in dependencies:
            if dependency not in seen:
                seen.add(dependency)
                parts.append(f'\n{_DEFINITION_SEPARATOR}MSG: {dependency}\n')
                parts.append(append_recursive(dependency, depth - 1))
        return ''.join(parts)

    return append_recursive(type_name, 50)


# ---------------------------------------------------------------------------------------------
# QoS profiles as rosbag2 stores them (metadata version <= 8: policies as rmw enum integers)
# ---------------------------------------------------------------------------------------------


def _duration_yaml(value: Any) -> dict[str, int]:
    nanoseconds = int(getattr(value, 'nanoseconds', value))
    nanoseconds = max(0, min(nanoseconds, 2**63 - 1))
    return {'sec': nanoseconds // 1_000_000_000, 'nsec': nanoseconds % 1_000_000_000}


def qos_profiles_yaml(profiles: Iterable[Any]) -> str:
    """Serialise QoS profiles (rclpy ``QoSProfile``-like) for ``offered_qos_profiles``.

    Same layout as rosbag2 (a YAML list in a string); policies are the rmw enum integers that
    metadata versions up to 8 use, durations ``{sec, nsec}``. An empty input gives ``''``.
    """
    entries = []
    for profile in profiles:
        entries.append({
            'history': int(profile.history),
            'depth': int(profile.depth),
            'reliability': int(profile.reliability),
            'durability': int(profile.durability),
            'deadline': _duration_yaml(profile.deadline),
            'lifespan': _duration_yaml(profile.lifespan),
            'liveliness': int(profile.liveliness),
            'liveliness_lease_duration': _duration_yaml(profile.liveliness_lease_duration),
            'avoid_ros_namespace_conventions': bool(profile.avoid_ros_namespace_conventions),
        })
    if not entries:
        return ''
    return yaml.safe_dump(entries, sort_keys=False, default_flow_style=False).rstrip('\n')


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------


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

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


@dataclass
class _TopicRecord:
    name: str
    type_name: str
    definition: str
    offered_qos_profiles: str
    message_count: int = 0
    sequence: int = 0


@dataclass
class _FileRecord:
    path: str
    start_ns: int | None = None
    end_ns: int | None = None
    message_count: int = 0
    channel_ids: dict[str, int] = field(default_factory=dict)

    def add(self, log_time_ns: int) -> None:
        self.message_count += 1
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)


def _time_yaml(start_ns: int | None, end_ns: int | None) -> tuple[dict, dict]:
    if start_ns is None or end_ns is None:
        return {'nanoseconds_since_epoch': 0}, {'nanoseconds': 0}
    return {'nanoseconds_since_epoch': start_ns}, {'nanoseconds': end_ns - start_ns}


class BagWriter:
    """Write a rosbag2 bag directory of MCAP files (see the module docstring).

    ``split_size_bytes`` starts a new file once the current one holds at least that many
    bytes (bytes on disk plus the open chunk's uncompressed bytes); ``split_duration_s``
    once a message's log time is that far past the file's first message. ``metadata.yaml``
    is rewritten when the bag opens, on every new topic, at every split and on close, so a
    crash loses at most the open file's index (the reader recovers its readable part).

    Thread safe: every public method takes an internal lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        storage: str = STORAGE_ID,
        split_size_bytes: int | None = None,
        split_duration_s: float | None = None,
        compression: Compression = 'zstd',
        chunk_size_bytes: int = 1024 * 1024,
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
        offered_qos_profiles: str = '',
        definition: str | None = None,
    ) -> None:
        """Declare a topic (``type_name`` like ``sensor_msgs/msg/Image``); idempotent.

        ``definition`` defaults to :func:`msg_definition`; ``offered_qos_profiles`` is the
        rosbag2 YAML string (see :func:`qos_profiles_yaml`), ``''`` when unknown.
        """
        type_name = normalize_type_name(type_name)
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
            topic = _TopicRecord(name, type_name, definition, offered_qos_profiles)
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
        """Serialize a ROS message object with rclpy and append it (declares the topic)."""
        from rclpy.serialization import serialize_message

        if topic not in self._topics:
            cls = type(msg)
            package = cls.__module__.split('.')[0]
            self.add_topic(topic, f'{package}/msg/{cls.__name__}')
        self.write(topic, serialize_message(msg), log_time_ns)

    def close(self) -> None:
        """Finish the open file (MCAP summary and footer) and write ``metadata.yaml``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._finish_file()
            finally:
                self._write_metadata()

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
            message_encoding='cdr',
            schema_id=schema_id,
            metadata={'offered_qos_profiles': topic.offered_qos_profiles},
        )

    def _finish_file(self) -> None:
        try:
            self._writer.finish()
            self._stream.flush()
        finally:
            self._stream.close()

    def _split(self) -> None:
        self._finish_file()
        self._open_next_file()
        self._write_metadata()

    def _metadata(self) -> dict[str, Any]:
        starts = [f.start_ns for f in self._files if f.start_ns is not None]
        ends = [f.end_ns for f in self._files if f.end_ns is not None]
        starting_time, duration = _time_yaml(min(starts, default=None), max(ends, default=None))
        files = []
        for record in self._files:
            file_start, file_duration = _time_yaml(record.start_ns, record.end_ns)
            files.append({
                'path': record.path,
                'starting_time': file_start,
                'duration': file_duration,
                'message_count': record.message_count,
            })
        return {
            'rosbag2_bagfile_information': {
                'version': METADATA_VERSION,
                'storage_identifier': STORAGE_ID,
                'duration': duration,
                'starting_time': starting_time,
                'message_count': sum(t.message_count for t in self._topics.values()),
                'topics_with_message_count': [
                    {
                        'topic_metadata': {
                            'name': topic.name,
                            'type': topic.type_name,
                            'serialization_format': 'cdr',
                            'offered_qos_profiles': topic.offered_qos_profiles,
                        },
                        'message_count': topic.message_count,
                    }
                    for topic in self._topics.values()
                ],
                # rosbag2 compression (whole files or messages) is not used; MCAP compresses
                # its chunks internally, which readers handle transparently.
                'compression_format': '',
                'compression_mode': '',
                'relative_file_paths': [record.path for record in self._files],
                'files': files,
            }
        }

    def _write_metadata(self) -> None:
        text = yaml.safe_dump(self._metadata(), sort_keys=False, default_flow_style=False)
        target = self.path / METADATA_FILE
        partial = target.with_name(METADATA_FILE + '.tmp')
        partial.write_text(text, encoding='utf-8')
        os.replace(partial, target)


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------


class _ClampedReader:
    """Read-only view of a file that never asks the OS for more bytes than the file holds.

    Corrupt length fields can claim gigabytes; without the clamp a ``read(n)`` would try to
    allocate ``n`` bytes before finding out the file is short. A plain object, not an
    ``io.RawIOBase``, which mcap's stream reader would wrap in a buffer.
    """

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        remaining = max(0, self._size - self._position)
        if size is None or size < 0 or size > remaining:
            size = remaining
        data = self._file.read(size)
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = self._file.seek(offset, whence)
        return self._position

    def tell(self) -> int:
        return self._position


def _split_index(path: Path) -> tuple[int, str]:
    match = re.search(r'_(\d+)\.mcap$', path.name)
    return (int(match.group(1)) if match else -1, path.name)


class BagReader:
    """Read a bag directory (or one ``.mcap`` file) written by :class:`BagWriter` or rosbag2.

    Files come from ``metadata.yaml`` (``relative_file_paths``) when present, else every
    ``*.mcap`` of the directory in split-index order. Messages are yielded file by file,
    each file's in log-time order (ties keep file order), so a reader of several topics sees
    one time line; a split starts a new file later in time, so the whole bag is in order.

    Damaged files never make iteration raise: a file without a usable footer/index is read
    sequentially up to its first unreadable byte, a chunk that fails to decompress or check
    is skipped, a message that fails to decode is skipped; each such event is described in
    :attr:`problems` (file name and what happened).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Locate the bag's files; raises ``FileNotFoundError`` when there are none."""
        self.path = Path(path)
        self.problems: list[str] = []
        self.metadata: dict[str, Any] | None = None
        self._decoders: dict[tuple[str, str, bytes], Any] = {}
        if self.path.is_file():
            self.files = [self.path]
            return
        if not self.path.is_dir():
            raise FileNotFoundError(f'no bag at {self.path}')
        found = sorted(self.path.glob('*.mcap'), key=_split_index)
        listed: list[Path] = []
        metadata_path = self.path / METADATA_FILE
        if metadata_path.is_file():
            try:
                document = yaml.safe_load(metadata_path.read_text(encoding='utf-8'))
                self.metadata = document['rosbag2_bagfile_information']
                listed = [self.path / p for p in self.metadata.get('relative_file_paths') or []]
            except Exception as exc:  # noqa: BLE001 - any damage: fall back to the files
                self._problem(f'{METADATA_FILE}: unreadable ({exc}); using the *.mcap files')
                self.metadata = None
        for missing in [p for p in listed if not p.is_file()]:
            self._problem(f'{missing.name}: listed in {METADATA_FILE} but missing')
        listed = [p for p in listed if p.is_file()]
        extra = [p for p in found if p not in listed]
        if listed and extra:
            names = ', '.join(p.name for p in extra)
            self._problem(f'{names}: not listed in {METADATA_FILE}; read too')
        self.files = sorted(listed + extra, key=_split_index) if extra else listed or found
        if not self.files:
            raise FileNotFoundError(f'no .mcap files in bag {self.path}')

    # -- public API ------------------------------------------------------------------------

    def topics(self) -> dict[str, str]:
        """``{topic name: type name}`` from ``metadata.yaml`` and the files' channels."""
        result: dict[str, str] = {}
        if self.metadata:
            for entry in self.metadata.get('topics_with_message_count') or []:
                topic = entry.get('topic_metadata') or {}
                if 'name' in topic and 'type' in topic:
                    result[topic['name']] = topic['type']
        for file in self.files:
            for name, type_name in self._file_topics(file).items():
                result.setdefault(name, type_name)
        return result

    def raw_messages(
        self, topics: Iterable[str] | None = None
    ) -> Iterator[tuple[str, str, int, bytes]]:
        """Yield ``(topic, type name, log time ns, CDR bytes)`` for every readable message."""
        wanted = None if topics is None else set(topics)
        for file in self.files:
            for schema, channel, message in self._iter_file(file, wanted):
                type_name = schema.name if schema is not None else ''
                yield channel.topic, type_name, message.log_time, message.data

    def messages(
        self, topics: Iterable[str] | None = None
    ) -> Iterator[tuple[str, str, int, Any]]:
        """Yield ``(topic, type name, log time ns, decoded message)``.

        Messages are decoded by ``mcap_ros2`` from the file's ``ros2msg`` schema into plain
        Python objects with the ROS field names as attributes (no rclpy needed).
        """
        wanted = None if topics is None else set(topics)
        for file in self.files:
            for schema, channel, message in self._iter_file(file, wanted):
                decoder = self._decoder(file, schema, channel)
                if decoder is None:
                    continue
                try:
                    decoded = decoder(message.data)
                except Exception as exc:  # noqa: BLE001 - damaged payload: skip, report
                    self._problem(
                        f'{file.name}: a {channel.topic} message at {message.log_time} ns '
                        f'failed to decode ({exc})'
                    )
                    continue
                yield channel.topic, schema.name, message.log_time, decoded

    # -- internals ---------------------------------------------------------------------------

    def _problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)

    def _decoder(self, file: Path, schema: Any, channel: Any) -> Any:
        from mcap_ros2.decoder import DecoderFactory

        if schema is None or schema.encoding != 'ros2msg' or channel.message_encoding != 'cdr':
            self._problem(
                f'{file.name}: {channel.topic} has no ros2msg schema / cdr encoding; '
                'not decoded'
            )
            return None
        key = (schema.name, schema.encoding, bytes(schema.data))
        if key not in self._decoders:
            try:
                # A factory caches by schema id, which differs between files: one per schema.
                factory = DecoderFactory()
                self._decoders[key] = factory.decoder_for(channel.message_encoding, schema)
            except Exception as exc:  # noqa: BLE001
                self._problem(f'{file.name}: schema {schema.name} cannot be parsed ({exc})')
                self._decoders[key] = None
        return self._decoders[key]

    def _file_topics(self, file: Path) -> dict[str, str]:
        summary = self._summary(file)
        if summary is not None:
            return {
                ch.topic: (summary.schemas[ch.schema_id].name if ch.schema_id else '')
                for ch in summary.channels.values()
            }
        result: dict[str, str] = {}
        for record in self._stream_records(file, report=False):
            if record[0] == 'channel':
                _, channel, schema = record
                result.setdefault(channel.topic, schema.name if schema is not None else '')
        return result

    def _summary(self, file: Path) -> Any:
        """The file's MCAP summary, or None when there is none or it cannot be read."""
        try:
            size = file.stat().st_size
            with open(file, 'rb') as handle:
                return _read_summary(_ClampedReader(handle, size), size)
        except Exception:  # noqa: BLE001 - any damage means: no usable summary
            return None

    def _iter_file(self, file: Path, topics: set[str] | None) -> Iterator[tuple[Any, Any, Any]]:
        """``(schema, channel, message)`` of one file in log-time order (ties: file order).

        Groups (chunks) arrive in order of their first log time; a message is released once
        no group still to come can start before it, so only overlapping chunks are held in
        memory at once.
        """
        pending: list[tuple[int, int, tuple]] = []
        order = itertools.count()
        for start, items in self._file_groups(file, topics):
            while pending and pending[0][0] < start:
                yield heapq.heappop(pending)[2]
            for item in items:
                heapq.heappush(pending, (item[2].log_time, next(order), item))
        while pending:
            yield heapq.heappop(pending)[2]

    def _file_groups(self, file: Path, topics: set[str] | None) -> Iterator[tuple[int, list]]:
        """``(first log time, [(schema, channel, message), ...])`` per chunk, by first log time.

        Through the chunk index when the summary is sound (a damaged chunk is skipped, the
        next one found through the index), else by a sequential scan in file order.
        """
        from mcap.data_stream import ReadDataStream
        from mcap.opcode import Opcode
        from mcap.records import Channel, Chunk, Message, Schema
        from mcap.stream_reader import breakup_chunk

        try:
            size = file.stat().st_size
            handle = open(file, 'rb')  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            self._problem(f'{file.name}: cannot open ({exc})')
            return
        with handle:
            clamped = _ClampedReader(handle, size)
            try:
                summary = _read_summary(clamped, size)
            except Exception as exc:  # noqa: BLE001 - no footer, cut summary, garbage tail
                self._problem(f'{file.name}: no usable footer/summary ({_describe(exc)}); '
                              'reading sequentially')
                summary = None
            if summary is None or not summary.chunk_indexes:
                # Damaged, or a valid file without summary or without chunks.
                for record in self._stream_records(file, report=True):
                    if record[0] == 'group':
                        _, start, items = record
                        yield start, [i for i in items if topics is None or i[1].topic in topics]
                return
            schemas = dict(summary.schemas)
            channels = dict(summary.channels)
            wanted = None if topics is None else {
                cid for cid, channel in channels.items() if channel.topic in topics
            }
            indexes = sorted(summary.chunk_indexes,
                             key=lambda c: (c.message_start_time, c.chunk_start_offset))
            for index in indexes:
                offsets = index.message_index_offsets
                if wanted is not None and offsets and not wanted & offsets.keys():
                    continue  # the message index says: none of the wanted topics in here
                position = index.chunk_start_offset
                try:
                    clamped.seek(position)
                    stream = ReadDataStream(clamped)
                    if stream.read1() != Opcode.CHUNK:
                        raise ValueError('no chunk record at the indexed offset')
                    stream.read8()
                    records = breakup_chunk(Chunk.read(stream), validate_crc=True)
                except Exception as exc:  # noqa: BLE001 - damaged chunk: skip it
                    self._problem(f'{file.name}: skipped a damaged chunk at byte {position} '
                                  f'({_describe(exc)})')
                    continue
                items = []
                for record in records:
                    if isinstance(record, Schema):
                        schemas.setdefault(record.id, record)
                    elif isinstance(record, Channel):
                        channels.setdefault(record.id, record)
                    elif isinstance(record, Message):
                        channel = channels.get(record.channel_id)
                        if channel is None:
                            self._problem(f'{file.name}: messages on unknown channel '
                                          f'{record.channel_id} skipped')
                        elif topics is None or channel.topic in topics:
                            items.append((schemas.get(channel.schema_id), channel, record))
                yield index.message_start_time, items

    def _stream_records(self, file: Path, report: bool) -> Iterator[tuple]:
        """Sequential, fault-tolerant record scan of one file.

        Yields ``('channel', channel, schema)`` and ``('group', first log time,
        [(schema, channel, message), ...])`` per chunk (or per message outside chunks). Stops
        at the first unreadable record (truncation, garbage); skips chunks that fail to
        decompress or check. Problems are recorded only when ``report`` is true.
        """
        from mcap.exceptions import EndOfFile, RecordLengthLimitExceeded
        from mcap.records import Channel, Chunk, Footer, Message, Schema
        from mcap.stream_reader import StreamReader, breakup_chunk

        def problem(text: str) -> None:
            if report:
                self._problem(f'{file.name}: {text}')

        schemas: dict[int, Any] = {}
        channels: dict[int, Any] = {}
        unknown_channels: set[int] = set()
        messages = 0
        try:
            size = file.stat().st_size
            handle = open(file, 'rb')  # noqa: SIM115 - closed in finally
        except OSError as exc:
            problem(f'cannot open ({exc})')
            return
        clamped = _ClampedReader(handle, size)
        try:
            records = StreamReader(clamped, emit_chunks=True, record_size_limit=size).records
            while True:
                position = clamped.tell()
                try:
                    record = next(records)
                except StopIteration:
                    return
                except (EndOfFile, struct.error):
                    # A short read: the file ends inside (or right before) this record.
                    problem(f'truncated: ends at byte {size} inside the record at byte '
                            f'{position}, without an MCAP footer; read {messages} messages')
                    return
                except RecordLengthLimitExceeded:
                    problem(f'truncated or damaged: the record at byte {position} is longer '
                            f'than the {size - position} bytes left; read {messages} messages')
                    return
                except Exception as exc:  # noqa: BLE001 - garbage or a cut record
                    problem(f'unreadable record at byte {position} of {size} '
                            f'({_describe(exc)}); read {messages} messages before it')
                    return
                if isinstance(record, Chunk):
                    try:
                        inner = breakup_chunk(record, validate_crc=True)
                    except Exception as exc:  # noqa: BLE001
                        problem(f'skipped a damaged chunk at byte {position} '
                                f'({_describe(exc)})')
                        continue
                elif isinstance(record, Footer):
                    return
                else:
                    inner = [record]
                group = []
                for item in inner:
                    if isinstance(item, Schema):
                        schemas[item.id] = item
                    elif isinstance(item, Channel):
                        channels[item.id] = item
                        yield 'channel', item, schemas.get(item.schema_id)
                    elif isinstance(item, Message):
                        channel = channels.get(item.channel_id)
                        if channel is None:
                            if item.channel_id not in unknown_channels:
                                unknown_channels.add(item.channel_id)
                                problem(f'messages on unknown channel {item.channel_id} skipped')
                            continue
                        messages += 1
                        group.append((schemas.get(channel.schema_id), channel, item))
                if group:
                    start = (record.message_start_time if isinstance(record, Chunk)
                             else group[0][2].log_time)
                    yield 'group', start, group
        finally:
            handle.close()


def _read_summary(stream: _ClampedReader, size: int) -> Any:
    """MCAP summary of a file (None when it has none); raises when the footer is unusable."""
    from mcap.reader import SeekingReader

    return SeekingReader(stream, record_size_limit=size).get_summary()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__
