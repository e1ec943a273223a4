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

The package is layered; each layer imports only the ones above it, and the writer and the
reader never import each other:

- :mod:`eval_monitor.bag.definitions`: type names and ``ros2msg`` message definitions;
- :mod:`eval_monitor.bag.metadata`: the ``metadata.yaml`` constants, time fields and QoS
  YAML that writer and reader agree on;
- :mod:`eval_monitor.bag.writer`: :class:`BagWriter`;
- :mod:`eval_monitor.bag.reader`: :class:`BagReader`.

Everything other code uses is re-exported here, so ``from eval_monitor.bag import ...``
stays the one import to use.
"""

from __future__ import annotations

from eval_monitor.bag.definitions import msg_definition, normalize_type_name
from eval_monitor.bag.metadata import (  # noqa: F401 - METADATA_FILE, STORAGE_ID importable
    METADATA_FILE,
    METADATA_VERSION,
    STORAGE_ID,
    qos_profiles_yaml,
)
from eval_monitor.bag.reader import BagReader
from eval_monitor.bag.writer import BagWriter, Compression

__all__ = [
    'METADATA_VERSION',
    'BagReader',
    'BagWriter',
    'Compression',
    'msg_definition',
    'normalize_type_name',
    'qos_profiles_yaml',
]
