"""The serial transport under ``FeetechBus``: the Feetech SDK's port and packet handlers
with the waiting, timing and framing this suite needs (no rclpy).

``SelectPortHandler`` waits for replies in ``select`` (no busy polling, GIL released) and
times them out on the monotonic clock, telling a late reply from a lost one;
``StrictPacketHandler`` takes a status packet only if its length is the one asked for. See
each class for why the SDK's own behaviour is not enough.
"""

from __future__ import annotations

import errno
import os
import select
import time

import scservo_sdk as scs
import serial


class SelectPortHandler(scs.PortHandler):
    """SDK port that waits for replies in ``select`` and times them out on the monotonic clock.

    The PyPI SDK polls its non-blocking port in a busy loop: the polling thread keeps a core
    and, between its reads, the GIL, so it slows every other thread of its process and, on
    a busy machine, the reply's sender too; and it starts the timeout at the write but
    checks it after an empty read, on wall-clock time, so a reply that arrived while the
    thread was not scheduled after that read is declared lost. Here a read blocks in
    ``select`` (GIL released) until bytes arrive and takes all that has arrived at once.

    A reply is due ``timeout_margin_ms`` after its wire time (the PyPI SDK waits ~34 ms
    flat). One that has not begun by then is late: the wait goes on for as long again, and
    if it comes, it is the answer (``late`` is set; nothing else was asked meanwhile, so
    it cannot belong to another request). It is lost only when that second deadline has
    passed and a last look finds the input empty. Lateness is the kernel's verdict (a
    ``select`` that timed out at the deadline), not the thread's: a reply that came on time
    while the thread was not running is on time.
    """

    def __init__(self, port_name: str, timeout_margin_ms: float):
        super().__init__(port_name)
        self.timeout_margin_ms = timeout_margin_ms
        self._rx = bytearray()  # bytes read from the device, not yet handed to the SDK
        self._deadline = 0.0  # time.monotonic() at which the awaited reply is due
        self._lost_at = 0.0  # ... and past which it counts as lost
        self._overdue = False  # the line was seen empty at or after the deadline
        self.late = False  # bytes of the awaited reply came after the deadline
        self._late_budget = 0  # bytes still taken after _lost_at (a device streaming
        #                        garbage must not keep a read alive for ever)

    # -- clock and timeout (the SDK's names) ------------------------------------------
    def getCurrentTime(self):  # noqa: N802 - ms, monotonic: no NTP step moves a deadline
        return time.monotonic() * 1e3

    def setPacketTimeout(self, packet_length):  # noqa: N802
        self.setPacketTimeoutMillis(self.tx_time_per_byte * (packet_length + 3)
                                    + self.timeout_margin_ms)

    def setPacketTimeoutMillis(self, msec):  # noqa: N802
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = msec
        self._deadline = (self.packet_start_time + msec) / 1e3
        self._lost_at = self._deadline + msec / 1e3
        self._overdue = self.late = False
        self._late_budget = 1024  # many times a sync-read's replies

    def isPacketTimeout(self):  # noqa: N802
        if time.monotonic() < self._lost_at:
            return False  # the SDK asks after a short read; readPort waits, no spinning
        if self._late_budget > 0 and (self._rx or self._fill(0.0)):
            # it came while this thread was not running (or in this very moment): read it
            self._late_budget -= len(self._rx)
            return False
        self.packet_timeout = 0
        return True

    # -- I/O (the SDK's names) -----------------------------------------------------------
    def clearPort(self):  # noqa: N802
        """The SDK drains the output before every request; the kernel keeps writes in order
        anyway, and the drain is one more blocking call (and GIL round trip) per packet."""

    def getBytesAvailable(self):  # noqa: N802
        return len(self._rx) + self.ser.in_waiting

    def readPort(self, length):  # noqa: N802
        if length <= 0:
            return b''
        if not self._rx:  # wait until the deadline (or, past it, look once) ...
            self._fill(max(0.0, self._deadline - time.monotonic()))
            if not self._rx:  # ... nothing by then: late; wait on until it counts as lost
                self._overdue = True
                self._fill(max(0.0, self._lost_at - time.monotonic()))
        data = bytes(self._rx[:length])
        del self._rx[:length]
        return data

    def writePort(self, packet):  # noqa: N802
        """Write all of ``packet`` (one syscall when the kernel buffer has room)."""
        data = memoryview(bytes(packet))
        fd = self.ser.fd
        written = 0
        while written < len(data):
            try:
                written += os.write(fd, data[written:])
            except BlockingIOError:
                if not select.select([], [fd], [], 0.1)[1]:
                    raise serial.SerialException('write timed out: the adapter takes no '
                                                 'data') from None
        return written

    def _fill(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for input, then append all that is there; byte count."""
        fd = self.ser.fd
        if not select.select([fd], [], [], timeout_s)[0]:
            return 0
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return 0
        except OSError as err:
            if err.errno == errno.EINTR:
                return 0
            raise
        if not data:  # what pyserial reports for a device that went away
            raise serial.SerialException('device reports readiness to read but returned no '
                                         'data (device disconnected?)')
        self._rx += data
        self.late = self.late or self._overdue
        return len(data)

    # -- stale input ---------------------------------------------------------------------
    def discard_input(self) -> int:
        """Drop whatever waits in the input (late replies to an earlier request); count."""
        dropped = len(self._rx)
        self._rx.clear()
        while self._fill(0.0):
            dropped += len(self._rx)
            self._rx.clear()
        self.late = False
        return dropped

    def settle(self, quiet_s: float, max_s: float) -> int:
        """After a failed exchange: drop input until none came for ``quiet_s`` (at most
        ``max_s``), so a reply still on its way cannot be read as the next one's answer."""
        dropped = self.discard_input()
        end = time.monotonic() + max_s
        while (left := end - time.monotonic()) > 0 and self._fill(min(quiet_s, left)):
            dropped += len(self._rx)
            self._rx.clear()
        return dropped


class StrictPacketHandler(scs.protocol_packet_handler):
    """SDK packet handler that takes a status packet only if its length is the one asked for.

    The SDK slices the expected number of bytes out of any packet of the right id, so a late
    9-byte telemetry reply would pass for a 6-byte position reply (positions made of
    voltage and temperature bytes), and a late position reply for a 2-byte register.
    """

    def readRx(self, port, scs_id, length):  # noqa: N802 - SDK name
        while True:
            rxpacket, result = self.rxPacket(port)
            if result != scs.COMM_SUCCESS or rxpacket[scs.PKT_ID] == scs_id:
                break
        return self._payload(rxpacket, result, length)

    def readTxRx(self, port, scs_id, address, length):  # noqa: N802 - SDK name
        if scs_id >= scs.BROADCAST_ID:
            return [], scs.COMM_NOT_AVAILABLE, 0
        txpacket = [0] * 8
        txpacket[scs.PKT_ID] = scs_id
        txpacket[scs.PKT_LENGTH] = 4
        txpacket[scs.PKT_INSTRUCTION] = scs.INST_READ
        txpacket[scs.PKT_PARAMETER0] = address
        txpacket[scs.PKT_PARAMETER0 + 1] = length
        rxpacket, result, _ = self.txRxPacket(port, txpacket)
        return self._payload(rxpacket, result, length)

    @staticmethod
    def _payload(rxpacket, result, length):
        if result != scs.COMM_SUCCESS:
            return [], result, 0
        if rxpacket[scs.PKT_LENGTH] != length + 2:  # LEN = error byte + params + checksum
            return [], scs.COMM_RX_CORRUPT, 0
        return (list(rxpacket[scs.PKT_PARAMETER0:scs.PKT_PARAMETER0 + length]), result,
                rxpacket[scs.PKT_ERROR])
