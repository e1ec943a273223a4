"""so101-bag-reindex: rebuild a bag's MCAP index and metadata.yaml from the messages in it.

A recorder that dies without closing the bag (SIGKILL, power loss, a crash) leaves MCAP files
without summary and footer, maybe ending in a cut record, and a metadata.yaml with the counts
of its last refresh. The suite's reader copes (it scans such files sequentially), other tools
do not: rosbags refuses a file without footer, rosbag2 trusts metadata.yaml's counts. Like
``ros2 bag reindex``, this rebuilds what they need from what the files hold:

- each file without a sound summary (or with damage the reader had to skip) is rewritten
  with the ``mcap`` writer: its schemas, channels and readable messages (log and publish
  times, sequence numbers, bytes unchanged), then a summary, an index and a footer; the new
  file is written beside the old one, fsynced and renamed over it, so an interrupted reindex
  leaves the old file;
- sound files are left untouched;
- metadata.yaml (version 9) is rewritten from the messages counted in all files, keeping
  the topics' QoS, type hashes and custom_data from the old metadata.yaml (else from the
  channels' metadata); a topic known only to the old metadata.yaml is kept with 0 messages.

Run it on a bag no process is writing any more.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval_monitor.bag.definitions import type_description_hash
from eval_monitor.bag.metadata import (
    MCAP_METADATA_NAME,
    FileInfo,
    TopicInfo,
    bag_info,
    info_yaml,
    normalize_qos_profiles,
    write_metadata,
)
from eval_monitor.bag.reader import BagReader
from eval_monitor.bag.shield import run_to_completion

__all__ = [
    'FileReport',
    'ReindexReport',
    'main',
    'reindex_bag',
]


@dataclass
class FileReport:
    """What :func:`reindex_bag` found in, and did to, one file."""

    path: str
    message_count: int
    rewritten: bool
    reason: str = ''  # why it was rewritten
    counts: dict[str, int] = field(default_factory=dict)  # messages per topic


@dataclass
class ReindexReport:
    """The outcome of :func:`reindex_bag`."""

    bag: Path
    files: list[FileReport]
    counts: dict[str, int]  # messages per topic, as now in metadata.yaml
    problems: list[str]  # what the reader met: missing footers, cut records, skipped chunks

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())


def _old_topics(metadata: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``topic_metadata`` of each topic in an old metadata.yaml (any version), by name."""
    topics: dict[str, dict[str, Any]] = {}
    for entry in (metadata or {}).get('topics_with_message_count') or []:
        topic = (entry or {}).get('topic_metadata') or {}
        if isinstance(topic.get('name'), str) and isinstance(topic.get('type'), str):
            topics[topic['name']] = topic
    return topics


def _qos(*candidates: Any) -> list[dict[str, Any]]:
    """The first QoS list among the candidates that is present and readable."""
    for candidate in candidates:
        try:
            profiles = normalize_qos_profiles(candidate)
        except ValueError:
            continue
        if profiles:
            return profiles
    return []


def _rewrite(reader: BagReader, file: Path, channels: list[tuple[Any, Any]],
             info: dict[str, Any]) -> None:
    """Write ``file`` anew (schemas, channels, messages, summary) and rename it into place.

    Messages are streamed from the reader a second time, so memory holds one chunk, not the
    file.
    """
    from mcap.writer import LIBRARY_IDENTIFIER, CompressionType, Writer

    partial = file.with_name(file.name + '.reindex.tmp')
    with open(partial, 'wb') as stream:
        writer = Writer(stream, compression=CompressionType.ZSTD)
        writer.start(profile='ros2', library=f'{LIBRARY_IDENTIFIER} so101 reindex')
        schema_ids: dict[tuple[str, str, bytes], int] = {}
        channel_ids: dict[int, int] = {}
        for schema, channel in channels:
            schema_id = 0
            if schema is not None:
                key = (schema.name, schema.encoding, bytes(schema.data))
                if key not in schema_ids:
                    schema_ids[key] = writer.register_schema(
                        name=schema.name, encoding=schema.encoding, data=bytes(schema.data))
                schema_id = schema_ids[key]
            channel_ids[channel.id] = writer.register_channel(
                topic=channel.topic, message_encoding=channel.message_encoding,
                schema_id=schema_id, metadata=dict(channel.metadata or {}))
        for _, channel, message in reader.file_records(file):
            writer.add_message(
                channel_id=channel_ids[channel.id], log_time=message.log_time,
                data=message.data, publish_time=message.publish_time,
                sequence=message.sequence,
            )
        writer.add_metadata(MCAP_METADATA_NAME, {'serialized_metadata': info_yaml(info)})
        writer.finish()
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, file)


def reindex_bag(path: str | os.PathLike[str], force: bool = False) -> ReindexReport:
    """Rebuild the MCAP index of damaged files and metadata.yaml of the bag at ``path``.

    ``force`` rewrites every file, sound or not. Raises ``FileNotFoundError`` when ``path``
    is not a bag directory with ``.mcap`` files. Runs to completion once started, even
    through Ctrl-C (see :func:`run_to_completion`).
    """
    bag = Path(path)
    if not bag.is_dir():
        raise FileNotFoundError(f'no bag directory at {bag}')
    reader = BagReader(bag)
    return run_to_completion(lambda: _reindex(bag, reader, force), name=f'reindex {bag.name}')


def _scan(reader: BagReader, file: Path, force: bool) -> tuple[FileInfo, FileReport, list]:
    """Count one file's readable messages; decide whether it needs rewriting."""
    known_problems = len(reader.problems)
    channels = {channel.id: (schema, channel) for schema, channel in reader.file_channels(file)}
    record = FileInfo(file.relative_to(reader.path).as_posix())
    counts: dict[str, int] = {}
    for schema, channel, message in reader.file_records(file):
        channels.setdefault(channel.id, (schema, channel))  # met only in an unindexed chunk
        record.add(message.log_time)
        counts[channel.topic] = counts.get(channel.topic, 0) + 1
    damaged = reader.problems[known_problems:]
    summary = reader.file_summary(file)
    if summary is None:
        reason = 'no usable summary or footer: not closed'
    elif damaged:
        reason = 'damaged: ' + '; '.join(damaged)
    elif summary.statistics is None or summary.statistics.message_count != record.message_count:
        reason = 'summary statistics disagree with the messages'
    else:
        reason = 'forced' if force else ''
    report = FileReport(record.path, record.message_count, bool(reason), reason, counts)
    return record, report, list(channels.values())


def _reindex(bag: Path, reader: BagReader, force: bool) -> ReindexReport:
    old = reader.metadata or {}
    # Topics in order of first appearance: old metadata.yaml first, then the files.
    topics: dict[str, TopicInfo] = {}
    for name, entry in _old_topics(old).items():
        topics[name] = TopicInfo(
            name, entry['type'], _qos(entry.get('offered_qos_profiles')),
            entry.get('type_description_hash') or '',
            serialization_format=entry.get('serialization_format') or 'cdr',
        )
    files: list[FileInfo] = []
    reports: list[FileReport] = []
    file_channels: list[list[tuple[Any, Any]]] = []
    for file in reader.files:
        record, report, channels = _scan(reader, file, force)
        files.append(record)
        reports.append(report)
        file_channels.append(channels)
        for schema, channel in channels:
            metadata = dict(channel.metadata or {})
            type_name = schema.name if schema is not None else ''
            topic = topics.setdefault(channel.topic, TopicInfo(
                channel.topic, type_name, serialization_format=channel.message_encoding))
            topic.type_name = topic.type_name or type_name
            topic.offered_qos_profiles = topic.offered_qos_profiles or _qos(
                metadata.get('offered_qos_profiles'))
            topic.type_description_hash = (
                topic.type_description_hash or metadata.get('topic_type_hash') or '')
    for topic in topics.values():
        topic.message_count = sum(report.counts.get(topic.name, 0) for report in reports)
        if not topic.type_description_hash and topic.type_name:
            try:
                topic.type_description_hash = type_description_hash(topic.type_name)
            except ValueError:  # not a ROS type name
                pass
    custom_data = old.get('custom_data')
    ros_distro = old.get('ros_distro')
    info = bag_info(
        topics.values(), files,
        custom_data=custom_data if isinstance(custom_data, dict) else None,
        ros_distro=ros_distro if isinstance(ros_distro, str) else None,
    )
    for file, report, channels in zip(reader.files, reports, file_channels):
        if report.rewritten:
            _rewrite(reader, file, channels, info)
    write_metadata(bag, info, durable=True)
    return ReindexReport(bag, reports, {t.name: t.message_count for t in topics.values()},
                         list(reader.problems))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``so101-bag-reindex BAG [BAG ...] [--force]``."""
    parser = argparse.ArgumentParser(
        prog='so101-bag-reindex',
        description='Rebuild the MCAP summary/index of unclosed or damaged files and '
                    'metadata.yaml of a bag from the messages it holds (like ros2 bag '
                    'reindex). Run it on a bag no recorder is writing.',
    )
    parser.add_argument('bags', nargs='+', type=Path, metavar='BAG', help='bag directory')
    parser.add_argument('--force', action='store_true',
                        help='rewrite every file, also those whose summary is sound')
    args = parser.parse_args(argv)
    status = 0
    for bag in args.bags:
        try:
            report = reindex_bag(bag, force=args.force)
        except (FileNotFoundError, NotADirectoryError) as exc:
            print(f'so101-bag-reindex: {exc}', file=sys.stderr)
            status = 2
            continue
        except OSError as exc:
            print(f'so101-bag-reindex: {bag}: {exc}', file=sys.stderr)
            status = 1
            continue
        for file in report.files:
            what = f'rewritten ({file.reason})' if file.rewritten else 'kept (summary sound)'
            print(f'{bag / file.path}: {file.message_count} messages, {what}')
        for problem in report.problems:
            print(f'{bag}: read: {problem}')
        counts = ', '.join(f'{topic} {count}' for topic, count in report.counts.items())
        print(f'{bag / "metadata.yaml"}: {report.message_count} messages'
              + (f' [{counts}]' if counts else ''))
    return status


if __name__ == '__main__':
    sys.exit(main())
