"""ROS 2 message type names, full message definitions and type hashes, as rosbag2 stores them.

rosbag2's MCAP storage plugin puts the concatenated ``.msg`` text of a type and all its
dependencies into each ``ros2msg`` schema (its ``message_definition_cache``). This module
reimplements that lookup and concatenation over the ament share directories, so bags are
written without rosbag2 and readers (``mcap_ros2``, Foxglove, rosbag2) can decode them. The
type hash (``type_description_hash``, metadata version 7 on) is read from the type
description rosidl installs beside each ``.msg``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

__all__ = [
    'msg_definition',
    'normalize_type_name',
    'type_description_hash',
]

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


@functools.cache
def type_description_hash(type_name: str) -> str:
    """RIHS01 type hash of ``type_name`` (``RIHS01_<sha256 hex>``), or ``''`` when unknown.

    rosidl (Iron on) installs ``share/<pkg>/msg/<Type>.json`` next to the ``.msg``, holding the
    type description and its hash: the value the graph reports for the type (REP-2011) and
    rosbag2 records as ``type_description_hash``. Read, not recomputed, so it cannot drift from
    what the publishers' type support uses. Older installs without the file give ``''``, which
    rosbag2 also writes when it has no hash.
    """
    package, namespace, name = normalize_type_name(type_name).split('/')
    wanted = f'{package}/{namespace}/{name}'
    for share in _share_directories(package):
        path = share / namespace / f'{name}.json'
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text(encoding='utf-8'))
        except (OSError, ValueError):
            continue
        for entry in document.get('type_hashes') or []:
            if entry.get('type_name') == wanted and isinstance(entry.get('hash_string'), str):
                return entry['hash_string']
    return ''
