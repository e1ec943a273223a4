"""What the writer and the reader agree on: rosbag2 ``metadata.yaml`` layout and QoS YAML.

``metadata.yaml`` uses rosbag2 metadata format version 5 (:data:`METADATA_VERSION`), the
oldest version with per-file information; every rosbag2 release from Humble on reads it
(newer releases decode older versions field by field), while versions 6 to 9 add fields
(``custom_data``, ``type_description_hash``, ``ros_distro``, QoS policies as names) that
Humble cannot read or that this suite cannot fill in without rosidl's type hashing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

__all__ = [
    'METADATA_FILE',
    'METADATA_VERSION',
    'STORAGE_ID',
    'qos_profiles_yaml',
]

#: rosbag2 metadata.yaml format version written by :class:`BagWriter`.
METADATA_VERSION = 5
#: rosbag2 storage plugin identifier of the files.
STORAGE_ID = 'mcap'
METADATA_FILE = 'metadata.yaml'


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
# Time fields of metadata.yaml (bag-wide and per file)
# ---------------------------------------------------------------------------------------------


def _time_yaml(start_ns: int | None, end_ns: int | None) -> tuple[dict, dict]:
    if start_ns is None or end_ns is None:
        return {'nanoseconds_since_epoch': 0}, {'nanoseconds': 0}
    return {'nanoseconds_since_epoch': start_ns}, {'nanoseconds': end_ns - start_ns}
