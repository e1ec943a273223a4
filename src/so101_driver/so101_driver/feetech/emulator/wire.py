"""Protocol 0 framing: the packets the bus carries and the framing limits.

The lowest layer of the emulator: it knows bytes and the checksum, nothing about servos,
so tests and the benchmark can build packets without the bus model.
"""

from __future__ import annotations

from collections.abc import Iterable

from so101_driver.feetech import control_table as ct

#: Seconds an incomplete packet may wait for its remaining bytes before it is dropped.
STALE_PACKET_S = 0.02
#: Largest LEN byte a packet may carry (the SDK's buffer is 250 bytes).
MAX_LENGTH = 250


def status_packet(sid: int, error: int, params: bytes = b'') -> bytes:
    body = bytes([sid, len(params) + 2, error & 0xFF, *params])
    return b'\xff\xff' + body + bytes([ct.checksum(body)])


def instruction_packet(sid: int, instruction: int, params: Iterable[int] = ()) -> bytes:
    """An instruction packet as a host sends it (used by tests and the benchmark)."""
    params = bytes(params)
    body = bytes([sid, len(params) + 2, int(instruction), *params])
    return b'\xff\xff' + body + bytes([ct.checksum(body)])
