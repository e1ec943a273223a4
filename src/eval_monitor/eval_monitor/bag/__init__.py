"""rosbag2-compatible MCAP bags without rclpy: writer, tolerant reader, message definitions.

A bag is a directory laid out as ``ros2 bag record -s mcap`` lays it out::

    <name>/metadata.yaml
    <name>/<name>_0.mcap
    <name>/<name>_1.mcap      (after a split)

Each ``.mcap`` file is standard MCAP with the ``ros2`` profile: ``ros2msg`` schemas holding
the concatenated message definition (the format rosbag2's MCAP storage plugin writes, see
:func:`msg_definition`) and ``cdr`` channels. Every file is self-contained (it repeats all
schemas and channels), so a file can be read on its own.

``metadata.yaml`` uses rosbag2 metadata format version 9 (:data:`METADATA_VERSION`), the
version ``ros2 bag record`` writes from Jazzy on: QoS profiles as a list with named policies,
``type_description_hash``, ``ros_distro``, ``custom_data``, ``files`` (see
:mod:`eval_monitor.bag.metadata`). The reader reads any version. Bags written here open with
rosbags and rosbag2; bags they write are read here (tested against rosbags).

Only rclpy's serialization and rosidl's introspection are used, lazily, by
:meth:`BagWriter.write_msg`; reading decodes with ``mcap_ros2`` (pure Python), so offline
evaluation runs without ROS.

The package is layered; each layer imports only the ones above it, and the writer and the
reader never import each other:

- :mod:`eval_monitor.bag.definitions`: type names, ``ros2msg`` message definitions, type
  hashes; :mod:`eval_monitor.bag.cdr`: exact-length CDR of rclpy messages;
  :mod:`eval_monitor.bag.shield`: work that a signal handler cannot cut short;
- :mod:`eval_monitor.bag.metadata`: the ``metadata.yaml`` document and QoS form that
  writer, reader and reindexer agree on;
- :mod:`eval_monitor.bag.writer`: :class:`BagWriter`;
- :mod:`eval_monitor.bag.reader`: :class:`BagReader`;
- :mod:`eval_monitor.bag.reindex`: ``so101-bag-reindex`` (the reader, then ``mcap``'s
  writer).

Everything other code uses is re-exported here, so ``from eval_monitor.bag import ...``
stays the one import to use.
"""

from __future__ import annotations

from eval_monitor.bag.definitions import (
    msg_definition,
    normalize_type_name,
    type_description_hash,
)
from eval_monitor.bag.metadata import (  # noqa: F401 - METADATA_FILE, STORAGE_ID importable
    METADATA_FILE,
    METADATA_VERSION,
    STORAGE_ID,
    normalize_qos_profiles,
    qos_profiles,
    qos_profiles_yaml,
)
from eval_monitor.bag.reader import BagReader
from eval_monitor.bag.shield import run_to_completion
from eval_monitor.bag.writer import BagWriter, Compression

__all__ = [
    'METADATA_VERSION',
    'BagReader',
    'BagWriter',
    'Compression',
    'msg_definition',
    'normalize_qos_profiles',
    'normalize_type_name',
    'qos_profiles',
    'qos_profiles_yaml',
    'run_to_completion',
    'type_description_hash',
]
