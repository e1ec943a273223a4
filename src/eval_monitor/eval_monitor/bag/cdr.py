"""Serialize rclpy messages to CDR bytes of exactly the length the DDS wire carries.

``rclpy.serialization.serialize_message`` with Fast DDS (``rmw_serialize``) returns a buffer
as long as Fast CDR's *estimate* of the size, which exceeds the real data whenever the
estimate counts alignment padding that is never written (an empty ``float64[]``, a sequence
of structs): JointState with empty velocities ends in 8 bytes that were never written,
JointTrajectory 16 or more. Those bytes are uninitialised heap memory: decoders that check
the length (rosbags allows at most 3 bytes of padding) reject the message, and the bag
carries whatever the heap held. A published message goes out at its real length, which is
what the recorder receives; :func:`serialize_message` cuts what ``write_msg`` stores to that
same length. (Alignment gaps inside the data are not zeroed by Fast CDR either; they are
left as they are, as on the wire.)

The length is computed from the message's rosidl introspection (``SLOT_TYPES``), with the
plain CDR (XCDR1) layout ROS 2 uses: a 4 byte encapsulation header, then each primitive
aligned to its size (at most 8) counted from the end of the header; strings as a uint32
length (including the terminating NUL), the bytes and the NUL; sequences as a uint32 count
then the elements; arrays as the elements alone; a message with no fields as one byte.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    'cdr_size',
    'serialize_message',
]

_HEADER = 4
_PRIMITIVE_SIZES = {
    'boolean': 1, 'octet': 1, 'char': 1, 'int8': 1, 'uint8': 1,
    'int16': 2, 'uint16': 2,
    'int32': 4, 'uint32': 4, 'float': 4,
    'int64': 8, 'uint64': 8, 'double': 8,
}


class _Unsupported(Exception):
    """A field this module does not size (wide strings, long double)."""


def _align(offset: int, size: int) -> int:
    return offset + (-offset % size)


@functools.cache
def _fields(message_class: type) -> tuple[tuple[str, Any], ...]:
    names = list(message_class.get_fields_and_field_types())
    return tuple(zip(names, message_class.SLOT_TYPES))


def _message_end(msg: Any, offset: int) -> int:
    fields = _fields(type(msg))
    if not fields:
        return offset + 1  # rosidl's structure_needs_at_least_one_member
    for name, slot in fields:
        offset = _value_end(slot, getattr(msg, name), offset)
    return offset


def _elements_end(element_type: Any, values: Any, offset: int) -> int:
    from rosidl_parser.definition import BasicType

    count = len(values)
    if isinstance(element_type, BasicType):
        size = _PRIMITIVE_SIZES.get(element_type.typename)
        if size is None:
            raise _Unsupported(element_type.typename)
        return _align(offset, size) + size * count if count else offset
    for value in values:
        offset = _value_end(element_type, value, offset)
    return offset


def _value_end(slot: Any, value: Any, offset: int) -> int:
    from rosidl_parser.definition import (
        AbstractSequence,
        AbstractString,
        AbstractWString,
        Array,
        BasicType,
        NamespacedType,
    )

    if isinstance(slot, BasicType):
        size = _PRIMITIVE_SIZES.get(slot.typename)
        if size is None:
            raise _Unsupported(slot.typename)
        return _align(offset, size) + size
    if isinstance(slot, AbstractString):
        return _align(offset, 4) + 4 + len(value.encode('utf-8')) + 1
    if isinstance(slot, AbstractWString):
        raise _Unsupported('wstring')
    if isinstance(slot, NamespacedType):
        return _message_end(value, offset)
    if isinstance(slot, Array):
        return _elements_end(slot.value_type, value, offset)
    if isinstance(slot, AbstractSequence):
        return _elements_end(slot.value_type, value, _align(offset, 4) + 4)
    raise _Unsupported(type(slot).__name__)


def cdr_size(msg: Any) -> int | None:
    """Serialized (XCDR1) size of an rclpy message, header included; None if not computable.

    None for the types this module does not size (``wstring``, ``wchar``, ``long double``);
    the suite's messages have none.
    """
    try:
        return _HEADER + _message_end(msg, 0)
    except _Unsupported:
        return None


def serialize_message(msg: Any) -> bytes:
    """``rclpy.serialization.serialize_message`` cut to the message's real CDR length.

    rclpy's bytes up to the end of the data; only the tail that was never written is dropped.
    """
    from rclpy.serialization import serialize_message as rclpy_serialize

    data = rclpy_serialize(msg)
    size = cdr_size(msg)
    if size is None or size >= len(data):
        return data
    return data[:size]
