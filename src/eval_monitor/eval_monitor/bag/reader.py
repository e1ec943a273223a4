"""Damage-tolerant reader of rosbag2 MCAP bags (a directory or a single ``.mcap`` file).

Reading decodes with ``mcap_ros2`` (pure Python), so offline evaluation runs without ROS.
"""

from __future__ import annotations

import heapq
import io
import itertools
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from eval_monitor.bag.metadata import METADATA_FILE

__all__ = [
    'BagReader',
]


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

    Any metadata.yaml version is read (5, written here before, and 9, written now, are
    tested, as are bags rosbags writes): only ``relative_file_paths`` and the topics' names
    and types are used, which every version has. Files come from ``metadata.yaml``
    (``relative_file_paths``) when present, else every ``*.mcap`` of the directory in
    split-index order. Messages are yielded file by file, each file's in log-time order (ties
    keep file order), so a reader of several topics sees one time line; a split starts a new
    file later in time, so the whole bag is in order.

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

    def file_summary(self, file: Path) -> Any:
        """The MCAP summary of one of :attr:`files`, or None when it has no usable one."""
        return self._summary(file)

    def file_channels(self, file: Path) -> list[tuple[Any, Any]]:
        """``(schema, channel)`` mcap records of every channel one of :attr:`files` declares.

        From the summary when it is sound, else from a sequential scan (schema None when the
        file lost it); channels without messages are included.
        """
        summary = self._summary(file)
        if summary is not None:
            return [(summary.schemas.get(ch.schema_id), ch) for ch in summary.channels.values()]
        return [(record[2], record[1]) for record in self._stream_records(file, report=False)
                if record[0] == 'channel']

    def file_records(self, file: Path) -> Iterator[tuple[Any, Any, Any]]:
        """``(schema, channel, message)`` mcap records of one of :attr:`files`, in log-time order.

        What :meth:`raw_messages` reads of that file, as the mcap library's record objects
        (publish time and sequence included); damage is skipped and reported the same way.
        """
        yield from self._iter_file(file, None)

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
