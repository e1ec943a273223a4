"""Feetech STS3215 control table, instruction set and encodings (protocol 0, little endian).

This is the one place the suite names register addresses: the bus layer, the emulator and
the tests all read from here. Addresses and sign bits agree with LeRobot's
``lerobot.motors.feetech.tables`` (a test checks that), but the suite does not import them
at run time so the driver keeps working with nothing but ``feetech-servo-sdk`` installed.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import NamedTuple


class Register(NamedTuple):
    """A control-table entry: byte address and width (1 or 2 bytes)."""

    address: int
    size: int


# EEPROM (persistent; writable only while Lock == 0)
MODEL_NUMBER = Register(3, 2)
ID = Register(5, 1)
BAUD_RATE = Register(6, 1)
RETURN_DELAY_TIME = Register(7, 1)
MIN_POSITION_LIMIT = Register(9, 2)
MAX_POSITION_LIMIT = Register(11, 2)
MAX_TEMPERATURE_LIMIT = Register(13, 1)
MAX_VOLTAGE_LIMIT = Register(14, 1)
MIN_VOLTAGE_LIMIT = Register(15, 1)
MAX_TORQUE_LIMIT = Register(16, 2)
PHASE = Register(18, 1)
P_COEFFICIENT = Register(21, 1)
D_COEFFICIENT = Register(22, 1)
I_COEFFICIENT = Register(23, 1)
PROTECTION_CURRENT = Register(28, 2)
HOMING_OFFSET = Register(31, 2)
OPERATING_MODE = Register(33, 1)
OVERLOAD_TORQUE = Register(36, 1)
# SRAM (volatile)
TORQUE_ENABLE = Register(40, 1)
ACCELERATION = Register(41, 1)
GOAL_POSITION = Register(42, 2)
GOAL_TIME = Register(44, 2)
GOAL_VELOCITY = Register(46, 2)
TORQUE_LIMIT = Register(48, 2)
LOCK = Register(55, 1)
PRESENT_POSITION = Register(56, 2)
PRESENT_VELOCITY = Register(58, 2)
PRESENT_LOAD = Register(60, 2)
PRESENT_VOLTAGE = Register(62, 1)
PRESENT_TEMPERATURE = Register(63, 1)
STATUS = Register(65, 1)
MOVING = Register(66, 1)
PRESENT_CURRENT = Register(69, 2)
# Factory area
MAXIMUM_ACCELERATION = Register(85, 1)

CONTROL_TABLE_SIZE = 128

#: Registers stored in sign-magnitude form, with the index of their sign bit.
SIGN_BITS: dict[Register, int] = {
    HOMING_OFFSET: 11,
    GOAL_POSITION: 15,
    GOAL_VELOCITY: 15,
    PRESENT_POSITION: 15,
    PRESENT_VELOCITY: 15,
    PRESENT_LOAD: 10,
}

STS3215_MODEL_NUMBER = 777
#: Encoder ticks per turn.
RESOLUTION = 4096
#: Phase register bit that selects multi-turn angle feedback; LeRobot clears it on the STS3215.
PHASE_ANGLE_FEEDBACK_BIT = 0x10


class Instruction(IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


BROADCAST_ID = 0xFE


class ErrorBit(IntFlag):
    """Error byte of a status packet (also the ``Status`` register)."""

    VOLTAGE = 0x01
    ANGLE = 0x02
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x20


class OperatingMode(IntEnum):
    POSITION = 0
    VELOCITY = 1
    PWM = 2
    STEP = 3


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Signed int -> sign-magnitude register value (sign in bit ``sign_bit``)."""
    magnitude = abs(int(value))
    if magnitude >= 1 << sign_bit:
        raise ValueError(f'{value} does not fit a sign-magnitude field with sign bit {sign_bit}')
    return magnitude | ((1 << sign_bit) if value < 0 else 0)


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    """Sign-magnitude register value -> signed int."""
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def encode(register: Register, value: int) -> int:
    """Host integer -> the unsigned value stored in ``register``."""
    sign_bit = SIGN_BITS.get(register)
    if sign_bit is not None:
        return encode_sign_magnitude(value, sign_bit)
    if not 0 <= value < 1 << (8 * register.size):
        raise ValueError(f'{value} does not fit register at address {register.address}')
    return int(value)


def decode(register: Register, raw: int) -> int:
    """Unsigned value stored in ``register`` -> host integer."""
    sign_bit = SIGN_BITS.get(register)
    return decode_sign_magnitude(raw, sign_bit) if sign_bit is not None else int(raw)


def to_bytes(register: Register, value: int) -> list[int]:
    """Encode ``value`` for ``register`` as little-endian bytes (protocol 0)."""
    raw = encode(register, value)
    return [(raw >> (8 * i)) & 0xFF for i in range(register.size)]


def from_bytes(register: Register, data: bytes | list[int]) -> int:
    """Decode ``register.size`` little-endian bytes into a host integer."""
    raw = 0
    for i in range(register.size):
        raw |= (data[i] & 0xFF) << (8 * i)
    return decode(register, raw)


def checksum(body: bytes | list[int]) -> int:
    """Packet checksum over ID, LENGTH, INSTRUCTION/ERROR and parameters."""
    return (~sum(body)) & 0xFF
