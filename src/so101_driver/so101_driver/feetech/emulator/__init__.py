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

Layers, each importing only those above it in this list: ``wire`` (packet framing),
``servo`` (control table, factory defaults, ``EmulatorConfig``), ``bus`` (``ServoBus``:
protocol and motion), ``server`` (``EmulatorServer`` on a pty, ``RPC_METHODS``),
``process`` (``EmulatorProcess``) and ``cli`` (``main``). This package re-exports their
public names, so importers need not know the split.
"""

from __future__ import annotations

from so101_driver.feetech.emulator.bus import BusCounters, ServoBus
from so101_driver.feetech.emulator.cli import build_parser, main
from so101_driver.feetech.emulator.process import EmulatorProcess
from so101_driver.feetech.emulator.server import MOTION_PERIOD_S, RPC_METHODS, EmulatorServer
from so101_driver.feetech.emulator.servo import (
    CURRENT_PER_LOAD,
    FACTORY_DEFAULTS,
    NOMINAL_TEMPERATURE,
    NOMINAL_VOLTAGE,
    REGISTERS,
    EmulatorConfig,
    Servo,
    parse_error_bits,
)
from so101_driver.feetech.emulator.wire import (
    MAX_LENGTH,
    STALE_PACKET_S,
    instruction_packet,
    status_packet,
)

__all__ = [
    'CURRENT_PER_LOAD',
    'FACTORY_DEFAULTS',
    'MAX_LENGTH',
    'MOTION_PERIOD_S',
    'NOMINAL_TEMPERATURE',
    'NOMINAL_VOLTAGE',
    'REGISTERS',
    'RPC_METHODS',
    'STALE_PACKET_S',
    'BusCounters',
    'EmulatorConfig',
    'EmulatorProcess',
    'EmulatorServer',
    'Servo',
    'ServoBus',
    'build_parser',
    'instruction_packet',
    'main',
    'parse_error_bits',
    'status_packet',
]
