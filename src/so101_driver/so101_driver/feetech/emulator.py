"""Emulated Feetech STS3215 servo bus behind a pseudo-terminal (no rclpy).

The real ``scservo_sdk`` (and so the real ``FeetechBus``) opens the emulator's port like a
USB bus adapter: the port is a stable symlink to the slave side of a pty in raw mode, and
the emulator answers on the master side. Register addresses, sign bits, instruction codes,
error bits and the checksum all come from ``control_table``.

What is emulated
  * Protocol 0 packets ``FF FF ID LEN INSTR PARAMS CHK``; status packets
    ``FF FF ID LEN ERR PARAMS CHK`` whose error byte is the servo's ``Status`` register.
    PING, READ, WRITE, REG_WRITE + ACTION, SYNC_READ (one status packet per listed id, in
    the order listed) and SYNC_WRITE (no reply). Broadcast (id 0xFE) gets no reply, except
    SYNC_READ and PING (every servo answers a broadcast ping in id order, as real servos
    do and as LeRobot's ``broadcast_ping`` relies on).
  * A bad checksum, a malformed packet or garbage gets no reply; the receiver
    resynchronises on the next ``FF FF``, as a servo does. A packet left incomplete for
    ``STALE_PACKET_S`` is dropped the same way.
  * A 128-byte control table per servo with STS3215 factory defaults (model 777, return
    delay 250 = 500 us, limits 0..4095, max torque 1000, P/D/I 32/32/0, 12.0 V, Lock = 1 at
    power-up). EEPROM writes (addresses below Torque_Enable) are ignored while Lock = 1;
    LeRobot, like ``FeetechBus.set_torque(False)``, writes Lock = 0 first. Model number,
    firmware and the present-value block are read-only. Writing the ID register moves the
    servo to the new id (the acknowledgement comes from the old id).
  * Present_Position = (actual - Homing_Offset) mod 4096, as the servo reports it.
  * Motion, advanced by wall-clock time (at least every ``MOTION_PERIOD_S`` and before
    every packet): with torque on the position approaches Goal_Position clamped to the
    position limits, at ``speed`` ticks/s (or Goal_Velocity if lower and non-zero), with
    Acceleration honoured loosely (a trapezoidal profile at Acceleration x 100 ticks/s^2;
    0 means instant). Present_Velocity is the profile's velocity; Present_Load is small
    (a few 0.1 %) while moving freely, 0 at rest. The gripper can be blocked by an object
    at a tick (``block_gripper``): closing (towards lower ticks, LeRobot's range_min is the
    closed end) stops there and the load grows with how far the goal lies beyond the object
    (``block_gain`` per tick), saturating at the servo's torque limit; its sign is the
    direction the servo pushes (negative when closing). Torque off: the position stays
    where it is, or where ``set_position`` (a hand moving the arm) puts it.
  * Faults, at start and at run time: silent ids (never answer, ignore writes), corrupt
    checksums on a fraction of replies (seeded RNG) or on the next N replies, a reply
    delay, error bits per servo (Status register and status packets; overheat also raises
    Present_Temperature above its limit, voltage drops Present_Voltage below its limit),
    and a port that vanishes (pty closed: the SDK's reads and writes fail) and reappears
    at the same path (the symlink is re-pointed to a fresh pty).

What is not emulated
  EEPROM persistence across runs; baud-rate mismatches (the Baud_Rate register is stored
  but every rate works) and wire timing (replies come as fast as the host allows, plus
  ``reply_delay_ms``; the Return_Delay_Time register is stored only); velocity, PWM and
  step modes (stored, position mode is always simulated); overload/overcurrent protection
  (no automatic torque-off); Torque_Enable = 128 (middle-position calibration); gravity,
  inertia, the P/I/D gains and any coupling between joints.

Use it in-process (``ServoBus`` bytes in, bytes out; ``EmulatorServer`` on a pty in a
thread) or in a child process (``EmulatorProcess``), so its timing is independent of the
caller's GIL; ``so101-servo-emulator`` (``main``) serves it from the command line.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from so101_driver.feetech import control_table as ct
#: Every register ``control_table`` names, by lower-case name (for ``state`` and tests).
REGISTERS: dict[str, ct.Register] = {
    name.lower(): value for name, value in vars(ct).items() if isinstance(value, ct.Register)
}
#: Seconds an incomplete packet may wait for its remaining bytes before it is dropped.
STALE_PACKET_S = 0.02
#: The motion model advances at least this often (seconds).
MOTION_PERIOD_S = 0.01
#: Largest LEN byte a packet may carry (the SDK's buffer is 250 bytes).
MAX_LENGTH = 250
#: Present_Voltage (0.1 V) and Present_Temperature (deg C) of a healthy servo.
NOMINAL_VOLTAGE = 120
NOMINAL_TEMPERATURE = 30
#: Present_Current (6.5 mA units) per unit of Present_Load (0.1 % of max torque).
CURRENT_PER_LOAD = 0.4

_READ_ONLY = {*range(0, 5), *range(ct.PRESENT_POSITION.address,
                                    ct.PRESENT_CURRENT.address + ct.PRESENT_CURRENT.size)}
_EEPROM_END = ct.TORQUE_ENABLE.address  # addresses below this are EEPROM (Lock applies)

#: STS3215 factory values; every other byte of the table starts at 0.
FACTORY_DEFAULTS: dict[ct.Register, int] = {
    ct.MODEL_NUMBER: ct.STS3215_MODEL_NUMBER,
    ct.BAUD_RATE: 0,  # 0 = 1 Mbps
    ct.RETURN_DELAY_TIME: 250,  # 2 us units: 500 us, LeRobot writes 0
    ct.MIN_POSITION_LIMIT: 0,
    ct.MAX_POSITION_LIMIT: ct.RESOLUTION - 1,
    ct.MAX_TEMPERATURE_LIMIT: 70,
    ct.MAX_VOLTAGE_LIMIT: 140,
    ct.MIN_VOLTAGE_LIMIT: 40,
    ct.MAX_TORQUE_LIMIT: 1000,
    ct.PHASE: 0x0C,
    ct.P_COEFFICIENT: 32,
    ct.D_COEFFICIENT: 32,
    ct.I_COEFFICIENT: 0,
    ct.PROTECTION_CURRENT: 500,
    ct.HOMING_OFFSET: 0,
    ct.OPERATING_MODE: ct.OperatingMode.POSITION,
    ct.OVERLOAD_TORQUE: 80,
    ct.TORQUE_ENABLE: 0,
    ct.ACCELERATION: 0,
    ct.TORQUE_LIMIT: 1000,
    ct.LOCK: 1,
    ct.PRESENT_VOLTAGE: NOMINAL_VOLTAGE,
    ct.PRESENT_TEMPERATURE: NOMINAL_TEMPERATURE,
    ct.MAXIMUM_ACCELERATION: 0,
}


def parse_error_bits(value: int | str | Iterable[str]) -> int:
    """``ErrorBit`` flags from an int, a name (``'overheat'``) or names; unknown names raise."""
    if isinstance(value, int):
        return int(value)
    names = [value] if isinstance(value, str) else list(value)
    bits = 0
    for name in names:
        try:
            bits |= ct.ErrorBit[name.strip().upper()]
        except KeyError:
            known = ', '.join(f.name.lower() for f in ct.ErrorBit)
            raise ValueError(f'unknown error bit {name!r}; expected one of {known}') from None
    return bits


@dataclass
class EmulatorConfig:
    """What the emulated bus holds and which faults it starts with."""

    ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # servo ids on the bus
    speed: float = 3000.0  # max speed, ticks/s (about the STS3215's no-load speed)
    gripper_id: int = 6  # the servo that can be blocked by an object
    block_tick: int | None = None  # gripper blocked at this Present_Position (None: free)
    block_gain: float = 2.0  # gripper load (0.1 %) per tick the goal lies beyond the object
    silent_ids: tuple[int, ...] = ()  # ids that never answer
    corrupt_fraction: float = 0.0  # fraction of status packets sent with a wrong checksum
    reply_delay_ms: float = 0.0  # extra delay before every reply
    error_bits: dict[int, int] = field(default_factory=dict)  # id -> ErrorBit flags
    seed: int = 0  # seed of the corruption RNG

    def __post_init__(self):
        self.ids = tuple(int(i) for i in self.ids)
        if not self.ids or len(set(self.ids)) != len(self.ids) or not all(
                0 <= i < ct.BROADCAST_ID for i in self.ids):
            raise ValueError(f'ids must be distinct servo ids 0..{ct.BROADCAST_ID - 1}, '
                             f'got {self.ids}')
        if not self.speed > 0:
            raise ValueError(f'speed must be > 0 ticks/s, got {self.speed}')
        if self.block_tick is not None and not 0 <= self.block_tick < ct.RESOLUTION:
            raise ValueError(f'block_tick must be 0..{ct.RESOLUTION - 1}, got {self.block_tick}')
        if self.block_gain < 0:
            raise ValueError(f'block_gain must be >= 0, got {self.block_gain}')
        self.silent_ids = tuple(int(i) for i in self.silent_ids)
        unknown = [i for i in (*self.silent_ids, *self.error_bits) if i not in self.ids]
        if unknown:
            raise ValueError(f'ids {unknown} (silent or with error bits) are not on the bus '
                             f'{self.ids}')
        if not 0.0 <= self.corrupt_fraction <= 1.0:
            raise ValueError(f'corrupt_fraction must be in [0, 1], got {self.corrupt_fraction}')
        if self.reply_delay_ms < 0:
            raise ValueError(f'reply_delay_ms must be >= 0, got {self.reply_delay_ms}')
        self.error_bits = {int(k): parse_error_bits(v) for k, v in self.error_bits.items()}


class Servo:
    """One STS3215: its control table and the state behind the present-value registers."""

    def __init__(self, sid: int):
        self.table = bytearray(ct.CONTROL_TABLE_SIZE)
        for reg, value in FACTORY_DEFAULTS.items():
            self.set(reg, value)
        self.set(ct.ID, sid)
        self.actual = ct.RESOLUTION / 2  # encoder ticks before the homing offset
        self.velocity = 0.0  # ticks/s, signed
        self.load = 0.0  # 0.1 % of max torque, signed
        self.injected_errors = 0  # ErrorBit flags set by fault injection
        self.pending: tuple[int, bytes] | None = None  # REG_WRITE waiting for ACTION
        self.set(ct.GOAL_POSITION, self.present)

    @property
    def sid(self) -> int:
        return self.table[ct.ID.address]

    def get(self, reg: ct.Register) -> int:
        return ct.from_bytes(reg, self.table[reg.address:reg.address + reg.size])

    def set(self, reg: ct.Register, value: int) -> None:
        """Store ``value`` regardless of Lock or read-only (the emulator's own writes)."""
        self.table[reg.address:reg.address + reg.size] = bytes(ct.to_bytes(reg, int(value)))

    @property
    def present(self) -> int:
        return int(round(self.actual - self.get(ct.HOMING_OFFSET))) % ct.RESOLUTION

    def set_present(self, tick: float) -> None:
        self.actual = (tick + self.get(ct.HOMING_OFFSET)) % ct.RESOLUTION

    def read(self, address: int, length: int) -> bytes | None:
        if length < 1 or address + length > ct.CONTROL_TABLE_SIZE:
            return None
        return bytes(self.table[address:address + length])

    def write(self, address: int, data: bytes) -> bool:
        """A bus write: read-only bytes are skipped, EEPROM bytes too while Lock = 1."""
        if not data or address + len(data) > ct.CONTROL_TABLE_SIZE:
            return False
        locked = self.table[ct.LOCK.address] != 0
        for i, byte in enumerate(data):
            a = address + i
            if a in _READ_ONLY or (locked and a < _EEPROM_END and a != ct.LOCK.address):
                continue
            self.table[a] = byte
        return True

    def refresh(self) -> None:
        """Write the present-value registers from the motion state."""
        self.set(ct.PRESENT_POSITION, self.present)
        self.set(ct.PRESENT_VELOCITY, max(-32767, min(32767, round(self.velocity))))
        load = max(-1000, min(1000, round(self.load)))
        self.set(ct.PRESENT_LOAD, load)
        self.set(ct.PRESENT_CURRENT, round(abs(load) * CURRENT_PER_LOAD))
        self.set(ct.MOVING, int(self.velocity != 0.0))
        self.set(ct.STATUS, self.injected_errors)
        temp_limit = self.get(ct.MAX_TEMPERATURE_LIMIT)
        self.set(ct.PRESENT_TEMPERATURE, temp_limit + 5 if self.injected_errors
                 & ct.ErrorBit.OVERHEAT else NOMINAL_TEMPERATURE)
        volt_min = self.get(ct.MIN_VOLTAGE_LIMIT)
        self.set(ct.PRESENT_VOLTAGE, max(0, volt_min - 5) if self.injected_errors
                 & ct.ErrorBit.VOLTAGE else NOMINAL_VOLTAGE)


def status_packet(sid: int, error: int, params: bytes = b'') -> bytes:
    body = bytes([sid, len(params) + 2, error & 0xFF, *params])
    return b'\xff\xff' + body + bytes([ct.checksum(body)])


def instruction_packet(sid: int, instruction: int, params: Iterable[int] = ()) -> bytes:
    """An instruction packet as a host sends it (used by tests and the benchmark)."""
    params = bytes(params)
    body = bytes([sid, len(params) + 2, int(instruction), *params])
    return b'\xff\xff' + body + bytes([ct.checksum(body)])


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


#: Methods ``EmulatorServer.call`` (and so ``EmulatorProcess.call``) may run.
RPC_METHODS = frozenset({
    'load_calibration', 'set_position', 'set_register', 'set_silent', 'set_corrupt',
    'set_error_bits', 'block_gripper', 'set_reply_delay_ms', 'set_speed', 'vanish',
    'reappear', 'reset', 'state',
})


class EmulatorServer:
    """A ``ServoBus`` served on a pty, at a stable symlink path that survives vanish/reappear.

    ``serve()`` runs the loop in the calling thread (what the child process and the CLI
    do); ``start()`` runs it in a daemon thread. Control methods are thread-safe.
    """

    def __init__(self, config: EmulatorConfig | None = None, link: str | None = None):
        self.config = config or EmulatorConfig()
        self.bus = ServoBus(self.config)
        self.reply_delay_s = self.config.reply_delay_ms / 1000.0
        self._tmpdir = None if link else tempfile.mkdtemp(prefix='so101-emu-')
        self.port = os.path.abspath(link) if link else os.path.join(self._tmpdir, 'ttySTS0')
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._outbox: list[tuple[float, bytes]] = []
        self._tasks: list[tuple] = []  # (function, done event) to run in the serving thread
        self.sent = 0  # status packets written to the pty
        self._running = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._open_pty()

    # -- pty -----------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a serial line
        os.set_blocking(master, False)
        # the emulator keeps a slave fd open so the pty survives the host closing its side
        self._master, self._slave = master, slave
        tmp = self.port + '.new'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.port)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if os.path.lexists(self.port):
            os.unlink(self.port)

    @property
    def present(self) -> bool:
        """False between ``vanish`` and ``reappear``."""
        return self._master is not None

    def vanish(self) -> None:
        """Close the pty (the host's reads and writes fail) and remove the port path."""
        loop = self._thread
        if loop is not None and loop.is_alive() and threading.current_thread() is not loop:
            # close in the serving thread: a select() in flight elsewhere would keep the
            # pty open for a moment after close(), and the host could still write to it
            done = threading.Event()
            with self._lock:
                self._tasks.append((self._vanish_now, done))
            self._wake()
            if not done.wait(5.0):
                raise TimeoutError('emulator loop did not close the port within 5 s')
            return
        self._vanish_now()

    def _vanish_now(self) -> None:
        with self._lock:
            if self._master is not None:
                self._close_pty()
            self._outbox.clear()
            self.bus.clear_input()

    def reappear(self) -> str:
        """Serve again at the same path (a fresh pty, as a re-plugged adapter)."""
        with self._lock:
            if self._master is None:
                self._open_pty()
                self._wake()
            return self.port

    # -- controls (also reachable through call) ------------------------------------
    def load_calibration(self, calibration, place_mid: bool = True) -> None:
        with self._lock:
            self.bus.load_calibration(calibration, place_mid)

    def set_position(self, sid: int, tick: int) -> None:
        with self._lock:
            self.bus.set_position(sid, tick)

    def set_register(self, sid: int, register, value: int) -> None:
        with self._lock:
            self.bus.set_register(sid, register, value)

    def set_silent(self, ids) -> None:
        with self._lock:
            self.bus.set_silent(ids)

    def set_corrupt(self, fraction: float | None = None, count: int | None = None) -> None:
        with self._lock:
            self.bus.set_corrupt(fraction, count)

    def set_error_bits(self, sid: int, bits) -> None:
        with self._lock:
            self.bus.set_error_bits(sid, bits)

    def block_gripper(self, tick: int | None) -> None:
        with self._lock:
            self.bus.block_gripper(tick)

    def set_reply_delay_ms(self, ms: float) -> None:
        if ms < 0:
            raise ValueError(f'reply delay must be >= 0 ms, got {ms}')
        with self._lock:
            self.reply_delay_s = ms / 1000.0

    def set_speed(self, ticks_per_s: float) -> None:
        if not ticks_per_s > 0:
            raise ValueError(f'speed must be > 0 ticks/s, got {ticks_per_s}')
        with self._lock:
            self.bus.config.speed = float(ticks_per_s)

    def reset(self) -> None:
        """Factory state and no faults (the start configuration), port present."""
        with self._lock:
            self.bus = ServoBus(self.config)
            self.reply_delay_s = self.config.reply_delay_ms / 1000.0
            self._outbox.clear()
            self.sent = 0
            self.reappear()

    def state(self) -> dict:
        with self._lock:
            self.bus.advance(time.monotonic())
            out = self.bus.state()
            out['port'] = self.port
            out['present'] = self.present
            out['sent'] = self.sent
            return out

    def call(self, name: str, *args, **kwargs):
        """Run control method ``name`` (the same surface as ``EmulatorProcess.call``)."""
        if name not in RPC_METHODS:
            raise ValueError(f'unknown emulator call {name!r}; expected one of '
                             f'{sorted(RPC_METHODS)}')
        return getattr(self, name)(*args, **kwargs)

    # -- serving -------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b'x')
        except OSError:
            pass

    def _step(self, readable: list) -> None:
        now = time.monotonic()
        with self._lock:
            replies = []
            if self._master is not None and self._master in readable:
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b''
                except OSError:  # EIO: nobody holds the slave (cannot happen while we do)
                    data = b''
                if data:
                    replies += self.bus.feed(data, now)
            replies += self.bus.poll(now)
            due = now + self.reply_delay_s
            self._outbox.extend((due, r) for r in replies)
            self._flush(now)

    def _flush(self, now: float) -> None:
        while self._outbox and self._outbox[0][0] <= now:
            _, packet = self._outbox.pop(0)
            if self._master is None:
                continue
            try:
                os.write(self._master, packet)
                self.sent += 1
            except (BlockingIOError, OSError):
                pass  # the host is not reading: bytes are lost, as on a real line

    def _timeout(self) -> float:
        with self._lock:
            if self._outbox:
                return max(0.0, min(MOTION_PERIOD_S, self._outbox[0][0] - time.monotonic()))
        return MOTION_PERIOD_S

    def serve(self, conn=None, should_stop=None) -> None:
        """Serve until ``stop()``, ``should_stop()`` is true or ``conn`` (a
        ``multiprocessing`` connection carrying ``(name, args, kwargs)`` calls) closes."""
        self._running = True
        while self._running and not (should_stop and should_stop()):
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            if conn is not None:
                fds.append(conn)
            try:
                readable, _, _ = select.select(fds, [], [], self._timeout())
            except (OSError, ValueError):  # a fd closed by vanish() under select
                continue
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            self._step(readable)
            with self._lock:
                tasks, self._tasks = self._tasks, []
            for task, done in tasks:
                task()
                done.set()
            if conn is not None and conn in readable:
                if not self._serve_call(conn):
                    break
        self._running = False

    def _serve_call(self, conn) -> bool:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return False
        if request is None:  # stop
            conn.send(('ok', None))
            return False
        name, args, kwargs = request
        try:
            result = ('ok', self.call(name, *args, **kwargs))
        except Exception as err:  # noqa: BLE001 - handed back to the caller
            result = ('error', err)
        conn.send(result)
        return True

    def start(self) -> str:
        """Serve in a daemon thread; returns the port path."""
        self._thread = threading.Thread(target=self.serve, name='so101-servo-emulator',
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            if self._master is not None:
                self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _child_main(config: EmulatorConfig, link: str | None, conn) -> None:
    """Entry of the emulator's child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    server = EmulatorServer(config, link)
    try:
        conn.send(('ready', server.port))
        server.serve(conn)
    finally:
        server.stop()
        conn.close()


class EmulatorProcess:
    """The emulator in a child process (its timing does not share the caller's GIL).

    ``start()`` returns the port path; ``call(name, *args, **kwargs)`` runs an
    ``EmulatorServer`` control method there (``RPC_METHODS``) and returns its result or
    raises its exception; ``stop()`` ends it. Also a context manager.
    """

    def __init__(self, config: EmulatorConfig | None = None, link: str | None = None,
                 call_timeout_s: float = 10.0, **config_fields):
        if config is not None and config_fields:
            raise TypeError('pass either config or its fields, not both')
        self.config = config or EmulatorConfig(**config_fields)
        self.link = link
        self.call_timeout_s = call_timeout_s
        self.port: str | None = None
        self._process = None
        self._conn = None
        self._lock = threading.Lock()

    def start(self, timeout_s: float = 30.0) -> str:
        if self._process is not None:
            raise RuntimeError('emulator process already started')
        ctx = multiprocessing.get_context('spawn')  # no fork of a threaded parent (rclpy)
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(target=_child_main, args=(self.config, self.link, child_conn),
                                    name='so101-servo-emulator', daemon=True)
        self._process.start()
        child_conn.close()
        if not self._conn.poll(timeout_s):
            self.stop()
            raise TimeoutError(f'servo emulator process did not start within {timeout_s} s')
        _, self.port = self._conn.recv()
        return self.port

    def call(self, name: str, *args, **kwargs):
        if self._conn is None:
            raise RuntimeError('emulator process is not running; call start() first')
        with self._lock:
            self._conn.send((name, args, kwargs))
            if not self._conn.poll(self.call_timeout_s):
                raise TimeoutError(f'servo emulator did not answer {name!r} within '
                                   f'{self.call_timeout_s} s')
            status, value = self._conn.recv()
        if status == 'error':
            raise value
        return value

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            with self._lock:
                self._conn.send(None)
                if self._conn.poll(2.0):
                    self._conn.recv()
        except (OSError, EOFError, BrokenPipeError):
            pass
        self._process.join(timeout=3.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=2.0)
        self._conn.close()
        self._process = self._conn = None

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- command line ------------------------------------------------------------------
def _id_list(text: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(t) for t in text.replace(' ', '').split(',') if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated servo ids like 1,2,3, '
                                         f'got {text!r}') from None
    if not ids:
        raise argparse.ArgumentTypeError('expected at least one servo id')
    return ids


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'expected a fraction between 0 and 1, got {text!r}')
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f'expected a number >= 0, got {text!r}')
    return value


def _error_bits(text: str) -> tuple[int, int]:
    sid, sep, names = text.partition(':')
    try:
        if not sep:
            raise ValueError('missing ":"')
        return int(sid), parse_error_bits(names.split('|'))
    except ValueError as err:
        known = '|'.join(f.name.lower() for f in ct.ErrorBit)
        raise argparse.ArgumentTypeError(f'expected ID:NAME[|NAME] with NAME in {known}, got '
                                         f'{text!r} ({err})') from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='so101-servo-emulator',
        description='Serve an emulated Feetech STS3215 bus on a pseudo-terminal; point the '
                    'so101_arm port parameter at the printed path.')
    parser.add_argument('--ids', type=_id_list, default=(1, 2, 3, 4, 5, 6),
                        help='servo ids, comma-separated (default 1,2,3,4,5,6)')
    parser.add_argument('--calibration', metavar='FILE',
                        help='LeRobot calibration JSON: preload homing offsets and limits')
    parser.add_argument('--silent-id', type=int, action='append', default=[], metavar='ID',
                        help='a servo id that never answers (repeatable)')
    parser.add_argument('--corrupt', type=_fraction, default=0.0, metavar='FRACTION',
                        help='fraction of replies sent with a wrong checksum')
    parser.add_argument('--reply-delay-ms', type=_non_negative, default=0.0, metavar='MS',
                        help='delay before every reply')
    parser.add_argument('--error-bits', type=_error_bits, action='append', default=[],
                        metavar='ID:voltage|overheat',
                        help='error bits a servo reports (repeatable)')
    parser.add_argument('--speed', type=float, default=EmulatorConfig.speed,
                        metavar='TICKS_PER_S', help='max servo speed (default %(default)s)')
    parser.add_argument('--block-gripper', type=int, default=None, metavar='TICK',
                        help='an object blocks the gripper at this position')
    parser.add_argument('--gripper-id', type=int, default=EmulatorConfig.gripper_id,
                        help='id of the gripper servo (default %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the corruption RNG')
    parser.add_argument('--link', metavar='PATH',
                        help='serve at this path (a symlink) instead of a temporary one')
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    errors: dict[int, int] = {}
    for sid, bits in args.error_bits:
        errors[sid] = errors.get(sid, 0) | bits
    try:
        config = EmulatorConfig(ids=args.ids, speed=args.speed, gripper_id=args.gripper_id,
                                block_tick=args.block_gripper, silent_ids=tuple(args.silent_id),
                                corrupt_fraction=args.corrupt, reply_delay_ms=args.reply_delay_ms,
                                error_bits=errors, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    preload = None
    if args.calibration:
        from so101_driver.feetech.calibration import CalibrationError, load_calibration
        try:
            cal = load_calibration(args.calibration)
        except CalibrationError as err:
            parser.error(str(err))
        preload = {c.id: (c.homing_offset, c.range_min, c.range_max) for c in cal.values()}
        missing = sorted(set(preload) - set(config.ids))
        if missing:
            parser.error(f'--calibration {args.calibration} names servo ids {missing} that '
                         f'are not in --ids {",".join(map(str, config.ids))}')
    if args.link and os.path.exists(args.link) and not os.path.islink(args.link):
        parser.error(f'--link {args.link} exists and is not a symlink; refusing to replace it')
    server = EmulatorServer(config, args.link)
    if preload:
        server.load_calibration(preload)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        server._wake()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f'so101-servo-emulator: port {server.port}', flush=True)
    try:
        server.serve(should_stop=stop.is_set)
    finally:
        server.stop()
    print('so101-servo-emulator: stopped', file=sys.stderr, flush=True)


if __name__ == '__main__':
    main()
