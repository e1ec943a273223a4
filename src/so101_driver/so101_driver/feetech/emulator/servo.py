"""The servo model: one STS3215's control table, its factory state and the bus config.

Below the protocol: ``ServoBus`` (``bus``) reads and writes these tables; nothing here
knows about packets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from so101_driver.feetech import control_table as ct

#: Every register ``control_table`` names, by lower-case name (for ``state`` and tests).
REGISTERS: dict[str, ct.Register] = {
    name.lower(): value for name, value in vars(ct).items() if isinstance(value, ct.Register)
}
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
