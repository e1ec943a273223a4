"""The emulated bus: instruction bytes in, status packets out, and the motion model.

Parses the host's byte stream (resynchronising on ``FF FF`` as a servo does), runs each
instruction against the ``Servo`` tables, advances motion by wall-clock time and holds
the test and fault controls. No I/O: ``EmulatorServer`` (``server``) puts it on a pty.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from so101_driver.feetech import control_table as ct
from so101_driver.feetech.emulator.servo import (
    REGISTERS,
    EmulatorConfig,
    Servo,
    parse_error_bits,
)
from so101_driver.feetech.emulator.wire import MAX_LENGTH, STALE_PACKET_S, status_packet


@dataclass
class BusCounters:
    """What the emulated bus saw, for assertions."""

    packets: int = 0  # well-formed instruction packets
    replies: int = 0  # status packets sent
    bad_checksums: int = 0  # instruction packets dropped for their checksum
    malformed: int = 0  # well-formed frames with impossible contents
    garbage_bytes: int = 0  # bytes skipped while looking for FF FF
    corrupted_replies: int = 0  # status packets sent with a wrong checksum on purpose


class ServoBus:
    """The emulated servos and the protocol: instruction bytes in, status packets out.

    Not thread-safe; ``EmulatorServer`` serialises access. ``now`` is ``time.monotonic()``.
    """

    def __init__(self, config: EmulatorConfig | None = None, now: float | None = None):
        # a copy: run-time changes (set_speed) must not leak into the caller's config
        self.config = replace(config) if config else EmulatorConfig()
        self.servos: dict[int, Servo] = {sid: Servo(sid) for sid in self.config.ids}
        self.silent: set[int] = set(self.config.silent_ids)
        self.corrupt_fraction = self.config.corrupt_fraction
        self.corrupt_next = 0
        self.block_tick = self.config.block_tick
        self.counters = BusCounters()
        self._rng = random.Random(self.config.seed)
        self._buf = bytearray()
        self._last_rx = 0.0
        self._last_advance = time.monotonic() if now is None else now
        for sid, bits in self.config.error_bits.items():
            self.servos[sid].injected_errors = bits
        self._refresh()

    # -- protocol ----------------------------------------------------------------
    def feed(self, data: bytes, now: float) -> list[bytes]:
        """Bytes from the host; returns the status packets to send back, in order."""
        self._buf += data
        self._last_rx = now
        return self._parse(now)

    def clear_input(self) -> None:
        """Forget a partly received packet (the line went away)."""
        self._buf.clear()

    def poll(self, now: float) -> list[bytes]:
        """Advance motion; drop an incomplete packet that waited too long (may resync)."""
        self.advance(now)
        if self._buf and now - self._last_rx > STALE_PACKET_S:
            del self._buf[0]
            self.counters.garbage_bytes += 1
            self._last_rx = now
            return self._parse(now)
        return []

    def _parse(self, now: float) -> list[bytes]:
        buf, out = self._buf, []
        while True:
            start = buf.find(b'\xff\xff')
            if start < 0:  # keep a trailing FF: it may start the next header
                keep = 1 if buf[-1:] == b'\xff' else 0
                self.counters.garbage_bytes += len(buf) - keep
                del buf[:len(buf) - keep]
                return out
            if start:
                self.counters.garbage_bytes += start
                del buf[:start]
            if len(buf) < 4:
                return out
            sid, length = buf[2], buf[3]
            if sid == 0xFF or not 2 <= length <= MAX_LENGTH:  # not a header: slide by one
                self.counters.garbage_bytes += 1
                del buf[0]
                continue
            total = length + 4
            if len(buf) < total:
                return out
            if ct.checksum(buf[2:total - 1]) != buf[total - 1]:
                self.counters.bad_checksums += 1
                del buf[0]  # resynchronise on the next FF FF
                continue
            instruction, params = buf[4], bytes(buf[5:total - 1])
            del buf[:total]
            self.counters.packets += 1
            self.advance(now)
            replies = self._execute(sid, instruction, params)
            if replies is None:
                self.counters.malformed += 1
                continue
            out.extend(self._emit(r) for r in replies)

    def _emit(self, packet: bytes) -> bytes:
        self.counters.replies += 1
        corrupt = False
        if self.corrupt_next > 0:
            self.corrupt_next -= 1
            corrupt = True
        elif self.corrupt_fraction and self._rng.random() < self.corrupt_fraction:
            corrupt = True
        if corrupt:
            self.counters.corrupted_replies += 1
            packet = packet[:-1] + bytes([packet[-1] ^ 0x5A])
        return packet

    def _targets(self, sid: int) -> list[Servo]:
        """Servos an instruction to ``sid`` acts on (broadcast: all that answer)."""
        if sid == ct.BROADCAST_ID:
            return [s for i, s in sorted(self.servos.items()) if i not in self.silent]
        servo = self.servos.get(sid)
        return [servo] if servo is not None and sid not in self.silent else []

    def _status(self, servo: Servo, params: bytes = b'') -> bytes:
        return status_packet(servo.sid, servo.get(ct.STATUS), params)

    def _execute(self, sid: int, instruction: int, params: bytes) -> list[bytes] | None:
        """Run one packet; the status packets it answers with, or None if malformed."""
        broadcast = sid == ct.BROADCAST_ID
        targets = self._targets(sid)
        if instruction == ct.Instruction.PING:
            return [self._status(s) for s in targets]
        if instruction == ct.Instruction.READ:
            if len(params) != 2:
                return None
            if broadcast:
                return []
            replies = []
            for s in targets:
                data = s.read(params[0], params[1])
                if data is None:
                    return None
                replies.append(self._status(s, data))
            return replies
        if instruction in (ct.Instruction.WRITE, ct.Instruction.REG_WRITE):
            if len(params) < 2:
                return None
            address, data = params[0], params[1:]
            if address + len(data) > ct.CONTROL_TABLE_SIZE:
                return None
            acks = [(s, s.sid) for s in targets]  # a new ID is acknowledged by the old one
            for s in targets:
                if instruction == ct.Instruction.WRITE:
                    self._write(s, address, data)
                else:
                    s.pending = (address, data)
            return [] if broadcast else [status_packet(sid, s.get(ct.STATUS))
                                         for s, sid in acks]
        if instruction == ct.Instruction.ACTION:
            if params:
                return None
            for s in targets:
                if s.pending is not None:
                    self._write(s, *s.pending)
                    s.pending = None
            return [] if broadcast else [self._status(s) for s in targets]
        if instruction == ct.Instruction.SYNC_READ:
            if len(params) < 3 or not broadcast:
                return None
            address, length = params[0], params[1]
            if length < 1 or address + length > ct.CONTROL_TABLE_SIZE:
                return None
            replies = []
            for listed in params[2:]:
                for s in self._targets(listed):
                    replies.append(self._status(s, s.read(address, length)))
            return replies
        if instruction == ct.Instruction.SYNC_WRITE:
            if len(params) < 2 or not broadcast:
                return None
            address, length = params[0], params[1]
            entries = params[2:]
            if length < 1 or len(entries) % (length + 1) or \
                    address + length > ct.CONTROL_TABLE_SIZE:
                return None
            for i in range(0, len(entries), length + 1):
                for s in self._targets(entries[i]):
                    self._write(s, address, entries[i + 1:i + 1 + length])
            return []
        return None  # unknown instruction: a servo ignores it

    def _write(self, servo: Servo, address: int, data: bytes) -> None:
        old_id = servo.sid
        servo.write(address, data)
        new_id = servo.sid
        if new_id != old_id:
            if new_id in self.servos or new_id >= ct.BROADCAST_ID:
                servo.table[ct.ID.address] = old_id  # a clash would brick the bus: refuse
            else:
                self.servos[new_id] = self.servos.pop(old_id)
        servo.refresh()

    # -- motion ------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Move every servo by the wall-clock time since the last call."""
        dt = now - self._last_advance
        if dt <= 0:
            return
        self._last_advance = now
        dt = min(dt, 0.1)  # after a stall, do not teleport
        for sid, servo in self.servos.items():
            self._move(servo, dt, sid == self.config.gripper_id)
        self._refresh()

    def _move(self, servo: Servo, dt: float, is_gripper: bool) -> None:
        if not servo.get(ct.TORQUE_ENABLE):
            servo.velocity = servo.load = 0.0
            return
        pos = servo.actual - servo.get(ct.HOMING_OFFSET)
        pos = pos % ct.RESOLUTION
        lo, hi = servo.get(ct.MIN_POSITION_LIMIT), servo.get(ct.MAX_POSITION_LIMIT)
        if lo >= hi:
            lo, hi = 0, ct.RESOLUTION - 1
        target = float(min(hi, max(lo, servo.get(ct.GOAL_POSITION))))
        squeeze = 0.0
        if is_gripper and self.block_tick is not None and pos >= self.block_tick - 0.5 \
                and target < self.block_tick:
            squeeze = self.block_tick - target
            target = float(self.block_tick)
        vmax = self.config.speed
        goal_speed = abs(servo.get(ct.GOAL_VELOCITY))
        if goal_speed:
            vmax = min(vmax, goal_speed)
        accel = servo.get(ct.ACCELERATION) * 100.0
        err = target - pos
        if accel:
            # trapezoid: speed up at most accel * dt, but never faster than what still
            # stops at the target (braking is not limited, so the profile cannot overshoot)
            wanted = math.copysign(min(vmax, math.sqrt(2 * accel * abs(err))), err)
            velocity = servo.velocity + max(-accel * dt, min(accel * dt, wanted - servo.velocity))
            if velocity * err > 0 and abs(velocity) > abs(wanted):
                velocity = wanted
        else:
            velocity = math.copysign(vmax, err) if err else 0.0
        step = velocity * dt
        if abs(err) <= 0.5 or (step * err > 0 and abs(step) >= abs(err)):
            pos, velocity = target, 0.0  # arrived (within the half tick the encoder shows)
        else:
            pos += step
        servo.velocity = velocity
        servo.actual = (pos + servo.get(ct.HOMING_OFFSET)) % ct.RESOLUTION
        if squeeze and pos == target:
            cap = min(servo.get(ct.TORQUE_LIMIT), servo.get(ct.MAX_TORQUE_LIMIT))
            servo.load = -min(cap, self.config.block_gain * squeeze)
        elif velocity:
            servo.load = math.copysign(10 + abs(velocity) * 0.01, velocity)
        else:
            servo.load = 0.0

    def _refresh(self) -> None:
        for servo in self.servos.values():
            servo.refresh()

    # -- test and fault controls ---------------------------------------------------
    def servo(self, sid: int) -> Servo:
        try:
            return self.servos[sid]
        except KeyError:
            raise ValueError(f'no servo with id {sid} on the emulated bus '
                             f'(ids {sorted(self.servos)})') from None

    def load_calibration(self, calibration: Mapping[int, tuple[int, int, int]],
                         place_mid: bool = True) -> None:
        """Preload ``{id: (homing_offset, range_min, range_max)}`` into the EEPROM
        registers; with ``place_mid`` each servo rests at the middle of its range."""
        for sid, (offset, range_min, range_max) in calibration.items():
            servo = self.servo(int(sid))
            servo.set(ct.HOMING_OFFSET, offset)
            servo.set(ct.MIN_POSITION_LIMIT, range_min)
            servo.set(ct.MAX_POSITION_LIMIT, range_max)
            if place_mid:
                servo.set_present((range_min + range_max) // 2)
            servo.set(ct.GOAL_POSITION, servo.present)
        self._refresh()

    def set_position(self, sid: int, tick: int) -> None:
        """Put servo ``sid`` at Present_Position ``tick`` (a hand moving the arm)."""
        servo = self.servo(sid)
        servo.set_present(int(tick))
        servo.velocity = 0.0
        self._refresh()

    def set_register(self, sid: int, register: str | ct.Register, value: int) -> None:
        """Store a register value as the servo's firmware would (ignores Lock, read-only)."""
        reg = REGISTERS[register.lower()] if isinstance(register, str) else register
        self.servo(sid).set(reg, value)
        if reg == ct.PRESENT_POSITION:
            self.set_position(sid, value)

    def set_silent(self, ids: Iterable[int]) -> None:
        self.silent = {int(i) for i in ids}

    def set_corrupt(self, fraction: float | None = None, count: int | None = None) -> None:
        """Corrupt a ``fraction`` of replies from now on and/or the next ``count`` replies."""
        if fraction is not None:
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f'corrupt fraction must be in [0, 1], got {fraction}')
            self.corrupt_fraction = float(fraction)
        if count is not None:
            self.corrupt_next = int(count)

    def set_error_bits(self, sid: int, bits: int | str | Iterable[str]) -> None:
        self.servo(sid).injected_errors = parse_error_bits(bits)
        self._refresh()

    def block_gripper(self, tick: int | None) -> None:
        if tick is not None and not 0 <= tick < ct.RESOLUTION:
            raise ValueError(f'block tick must be 0..{ct.RESOLUTION - 1}, got {tick}')
        self.block_tick = tick

    def state(self) -> dict:
        """Registers (decoded) and motion state of every servo, plus the bus counters."""
        return {
            'servos': {
                sid: {
                    'registers': {name: s.get(reg) for name, reg in REGISTERS.items()},
                    'actual': s.actual,
                    'velocity': s.velocity,
                    'load': s.load,
                    'silent': sid in self.silent,
                } for sid, s in sorted(self.servos.items())
            },
            'counters': vars(self.counters).copy(),
            'block_tick': self.block_tick,
        }
