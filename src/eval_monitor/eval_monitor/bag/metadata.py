"""What the writer, the reader and the reindexer agree on: rosbag2 ``metadata.yaml`` and QoS.

``metadata.yaml`` is written in rosbag2 metadata format version 9 (:data:`METADATA_VERSION`),
the version ``ros2 bag record`` writes from Jazzy on (rosbag2_storage ``yaml.hpp``):

- 5: ``files`` (path, starting time, duration and message count of each file);
- 6: ``custom_data`` (string to string mapping, null when empty);
- 7: ``type_description_hash`` of each topic (``RIHS01_...``; rosidl installs it in the
  type's ``.json`` next to the ``.msg``, see :func:`~eval_monitor.bag.type_description_hash`);
- 8: ``ros_distro``;
- 9: ``offered_qos_profiles`` of each topic is a YAML list of mappings (up to 8 it is a YAML
  document inside a string) and the QoS policies are rmw names (``reliable``,
  ``transient_local``) instead of rmw enum integers.

rosbag2 Jazzy and Kilted read every version up to 9; Humble cannot parse version 9 (it wants
the QoS string), exactly as for the bags Jazzy's own recorder writes. Readers here accept any
version: they use only fields every version has and normalise QoS from either form.

The MCAP files repeat part of it: each channel's metadata holds ``offered_qos_profiles``
(the version 9 list as YAML text, as rosbag2's MCAP plugin stores it) and
``topic_type_hash``; each file ends with a ``rosbag2`` metadata record holding this document
(``serialized_metadata``), so a file read on its own describes itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    'MCAP_METADATA_NAME',
    'METADATA_FILE',
    'METADATA_VERSION',
    'STORAGE_ID',
    'FileInfo',
    'TopicInfo',
    'bag_info',
    'info_yaml',
    'normalize_qos_profiles',
    'qos_profiles',
    'qos_profiles_yaml',
    'write_metadata',
]

#: rosbag2 metadata.yaml format version written by :class:`BagWriter` and the reindexer.
METADATA_VERSION = 9
#: rosbag2 storage plugin identifier of the files.
STORAGE_ID = 'mcap'
METADATA_FILE = 'metadata.yaml'
#: Name of the MCAP metadata record holding the bag's metadata (rosbag2's MCAP plugin).
MCAP_METADATA_NAME = 'rosbag2'


# ---------------------------------------------------------------------------------------------
# QoS profiles as rosbag2 stores them
# ---------------------------------------------------------------------------------------------

# rmw enum value -> the name rmw_qos_*_policy_to_str gives (and rosbag2 >= 9 writes); rmw's
# deprecated MANUAL_BY_NODE (2) has no name and is written as 'unknown', as rosbag2 does.
_POLICY_NAMES = {
    'history': {0: 'system_default', 1: 'keep_last', 2: 'keep_all', 3: 'unknown'},
    'reliability': {0: 'system_default', 1: 'reliable', 2: 'best_effort', 3: 'unknown',
                    4: 'best_available'},
    'durability': {0: 'system_default', 1: 'transient_local', 2: 'volatile', 3: 'unknown',
                   4: 'best_available'},
    'liveliness': {0: 'system_default', 1: 'automatic', 3: 'manual_by_topic', 4: 'unknown',
                   5: 'best_available'},
}
_DURATIONS = ('deadline', 'lifespan', 'liveliness_lease_duration')


def _duration_yaml(value: Any) -> dict[str, int]:
    """``{sec, nsec}`` of an rclpy Duration, nanoseconds or a ``{sec, nsec}`` mapping."""
    if isinstance(value, Mapping):
        return {'sec': int(value.get('sec', 0)), 'nsec': int(value.get('nsec', 0))}
    nanoseconds = int(getattr(value, 'nanoseconds', value))
    nanoseconds = max(0, min(nanoseconds, 2**63 - 1))  # rmw's infinity is INT64_MAX ns
    return {'sec': nanoseconds // 1_000_000_000, 'nsec': nanoseconds % 1_000_000_000}


def _policy_name(policy: str, value: Any) -> str:
    """The rmw name of a policy given as an rmw integer, an rclpy enum or a name."""
    if isinstance(value, str):
        return value.strip().lower() or 'unknown'
    return _POLICY_NAMES[policy].get(int(value), 'unknown')


def _entry(profile: Any) -> dict[str, Any]:
    """One QoS profile (rclpy ``QoSProfile``-like object or rosbag2 mapping) as version 9."""
    get = profile.get if isinstance(profile, Mapping) else (
        lambda name, default=None: getattr(profile, name, default))
    return {
        'history': _policy_name('history', get('history', 0)),
        'depth': int(get('depth', 0)),
        'reliability': _policy_name('reliability', get('reliability', 0)),
        'durability': _policy_name('durability', get('durability', 0)),
        'deadline': _duration_yaml(get('deadline', 0)),
        'lifespan': _duration_yaml(get('lifespan', 0)),
        'liveliness': _policy_name('liveliness', get('liveliness', 0)),
        'liveliness_lease_duration': _duration_yaml(get('liveliness_lease_duration', 0)),
        'avoid_ros_namespace_conventions': bool(get('avoid_ros_namespace_conventions', False)),
    }


def qos_profiles(profiles: Iterable[Any]) -> list[dict[str, Any]]:
    """``offered_qos_profiles`` (version 9) of rclpy ``QoSProfile``-like objects.

    One mapping per profile with rosbag2's keys; policies are rmw names, durations
    ``{sec, nsec}``.
    """
    return [_entry(profile) for profile in profiles]


def normalize_qos_profiles(value: Any) -> list[dict[str, Any]]:
    """Version 9 ``offered_qos_profiles`` from what any metadata version or MCAP channel holds.

    Accepts the version 9 list, a YAML string (versions 4 to 8 and MCAP channel metadata;
    integer or named policies), rclpy profiles, or nothing (``None``, ``''``). Raises
    ``ValueError`` when it is none of these.
    """
    if value is None or value == '':
        return []
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f'offered_qos_profiles is not YAML ({exc})') from None
        if value is None:
            return []
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise ValueError(f'offered_qos_profiles must be a list, not {type(value).__name__}')
    try:
        return qos_profiles(value)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f'offered_qos_profiles entry not understood ({exc})') from None


def qos_profiles_yaml(profiles: Iterable[Any]) -> str:
    """``offered_qos_profiles`` as the YAML text rosbag2's MCAP plugin puts in channel metadata.

    The version 9 list (see :func:`normalize_qos_profiles` for what is accepted); an empty one
    gives ``'[]'``, as rosbag2 and rosbags write it.
    """
    entries = normalize_qos_profiles(profiles if isinstance(profiles, str) else list(profiles))
    return yaml.safe_dump(entries, sort_keys=False, default_flow_style=False).rstrip('\n')


# ---------------------------------------------------------------------------------------------
# The metadata.yaml document
# ---------------------------------------------------------------------------------------------


@dataclass
class TopicInfo:
    """One entry of ``topics_with_message_count``."""

    name: str
    type_name: str
    offered_qos_profiles: list[dict[str, Any]] = field(default_factory=list)
    type_description_hash: str = ''
    message_count: int = 0
    serialization_format: str = 'cdr'


@dataclass
class FileInfo:
    """One entry of ``files``: a file's path (relative to the bag) and its messages' times."""

    path: str
    start_ns: int | None = None
    end_ns: int | None = None
    message_count: int = 0

    def add(self, log_time_ns: int) -> None:
        """Count one message logged at ``log_time_ns``."""
        self.message_count += 1
        self.start_ns = log_time_ns if self.start_ns is None else min(self.start_ns, log_time_ns)
        self.end_ns = log_time_ns if self.end_ns is None else max(self.end_ns, log_time_ns)


def _time_yaml(start_ns: int | None, end_ns: int | None) -> tuple[dict, dict]:
    if start_ns is None or end_ns is None:
        return {'nanoseconds_since_epoch': 0}, {'nanoseconds': 0}
    return {'nanoseconds_since_epoch': start_ns}, {'nanoseconds': end_ns - start_ns}


def bag_info(
    topics: Iterable[TopicInfo],
    files: Iterable[FileInfo],
    custom_data: Mapping[str, str] | None = None,
    ros_distro: str | None = None,
) -> dict[str, Any]:
    """The ``rosbag2_bagfile_information`` mapping (version 9) of a bag's topics and files.

    Keys in rosbag2's order. ``ros_distro`` defaults to ``$ROS_DISTRO`` (``''`` without it:
    the PyPI ROS wheels set none); empty ``custom_data`` is null, as rosbag2 writes it.
    """
    topics = list(topics)
    files = list(files)
    starts = [f.start_ns for f in files if f.start_ns is not None]
    ends = [f.end_ns for f in files if f.end_ns is not None]
    starting_time, duration = _time_yaml(min(starts, default=None), max(ends, default=None))
    file_entries = []
    for record in files:
        file_start, file_duration = _time_yaml(record.start_ns, record.end_ns)
        file_entries.append({
            'path': record.path,
            'starting_time': file_start,
            'duration': file_duration,
            'message_count': record.message_count,
        })
    return {
        'version': METADATA_VERSION,
        'storage_identifier': STORAGE_ID,
        'duration': duration,
        'starting_time': starting_time,
        'message_count': sum(t.message_count for t in topics),
        'topics_with_message_count': [
            {
                'topic_metadata': {
                    'name': topic.name,
                    'type': topic.type_name,
                    'serialization_format': topic.serialization_format,
                    'offered_qos_profiles': list(topic.offered_qos_profiles),
                    'type_description_hash': topic.type_description_hash,
                },
                'message_count': topic.message_count,
            }
            for topic in topics
        ],
        # rosbag2 compression (whole files or messages) is not used; MCAP compresses its
        # chunks internally, which readers handle transparently.
        'compression_format': '',
        'compression_mode': '',
        'relative_file_paths': [record.path for record in files],
        'files': file_entries,
        'custom_data': dict(custom_data) if custom_data else None,
        'ros_distro': os.environ.get('ROS_DISTRO', '') if ros_distro is None else ros_distro,
    }


def info_yaml(info: Mapping[str, Any]) -> str:
    """YAML text of a ``rosbag2_bagfile_information`` mapping (block style, keys in order)."""
    return yaml.safe_dump(dict(info), sort_keys=False, default_flow_style=False)


def write_metadata(directory: Path, info: Mapping[str, Any], durable: bool = False) -> None:
    """Write ``metadata.yaml`` atomically: a temporary file in the same folder, then a rename.

    A reader (or a crash) sees the old file or the new one, never half of one. ``durable``
    also fsyncs the file and the folder, so the new one survives a power loss.
    """
    text = yaml.safe_dump({'rosbag2_bagfile_information': dict(info)}, sort_keys=False,
                          default_flow_style=False)
    target = Path(directory) / METADATA_FILE
    partial = target.with_name(METADATA_FILE + '.tmp')
    with open(partial, 'w', encoding='utf-8') as stream:
        stream.write(text)
        if durable:
            stream.flush()
            os.fsync(stream.fileno())
    os.replace(partial, target)
    if durable:
        _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """fsync a folder (makes a rename in it durable); a no-op where folders cannot be opened."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
