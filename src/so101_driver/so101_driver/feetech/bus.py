"""Feetech STS3215 bus of the SO-101, on ``scservo_sdk`` (no rclpy).

Connects and configures the servos the way LeRobot's SO-101 follower does (return delay 0,
maximum acceleration 254, position mode, P/I/D 16/0/32, gripper torque and current capped,
angle-feedback bit of Phase cleared), makes the servos' EEPROM calibration (homing offset,
position limits) agree with the LeRobot calibration file, then serves one sync-read of
position/velocity/load and one sync-write of goals per control tick, plus a slower telemetry
read (voltage, temperature, status, current). Transient failures are retried a bounded
number of times and counted; a vanished port raises ``PortLost`` so the caller can stop
commanding and reconnect.

Replies are awaited in ``select`` (no busy polling) and timed out on the monotonic clock.
A reply later than ``packet_timeout_ms`` is late: it is still awaited for as long again
and used (counted in ``late_replies``); only one that has not come by then is lost and
retried, and only once a last look finds the input empty, so a reply that came while the
calling thread was not running (GIL held elsewhere, CPU busy) is never taken for lost.
Every request that expects a reply first drops stale input, a failed exchange waits for
the line to go quiet before the retry, and a status packet counts only if its length is
the one asked for, so a reply to an earlier request can neither pass for the answer nor
shift the exchanges after it.

All methods take ticks (offset-applied, as the servo reports them); radians live in
``calibration.ArmCalibration``.
"""

from __future__ import annotations

import termios
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scservo_sdk as scs
import serial

from so101_driver.feetech import control_table as ct
from so101_driver.feetech.calibration import MotorCalibration
from so101_driver.feetech.port import SelectPortHandler, StrictPacketHandler
from so101_driver.joints import GRIPPER, JOINT_NAMES, SERVO_IDS


class BusError(RuntimeError):
    """A bus transaction failed after its retries."""


class PortLost(BusError):
    """The serial port cannot be opened or vanished (adapter unplugged)."""


class ServoNotFound(BusError):
    """Servos did not answer a ping at connect time."""


@dataclass
class BusConfig:
    """Bus settings; defaults follow LeRobot's SO-101 follower."""

    port: str  # serial device, e.g. /dev/ttyACM0 or /dev/serial/by-id/...
    baudrate: int = 1_000_000  # STS3215 factory default
    ids: tuple[int, ...] = tuple(SERVO_IDS[n] for n in JOINT_NAMES)  # joint order
    read_retries: int = 2  # extra attempts of a failed read (LeRobot: num_read_retries=2)
    write_retries: int = 2  # extra attempts of a failed configuration write
    packet_timeout_ms: float = 20.0  # wait for a reply beyond its wire time
    p_coefficient: int = 16  # position-loop gains LeRobot writes at connect
    i_coefficient: int = 0
    d_coefficient: int = 32
    acceleration: int = 254
    gripper_max_torque: int = 500  # 50 % of max torque, to avoid burning the gripper motor
    gripper_protection_current: int = 250
    gripper_overload_torque: int = 25

    def __post_init__(self):
        if len(self.ids) != len(JOINT_NAMES) or len(set(self.ids)) != len(self.ids):
            raise ValueError(f'ids must be {len(JOINT_NAMES)} distinct servo ids, got {self.ids}')
        if self.baudrate not in (1_000_000, 500_000, 250_000, 128_000, 115_200, 57_600):
            raise ValueError(f'unsupported baud rate {self.baudrate}')


@dataclass
class BusCounters:
    """Transaction counters for diagnostics."""

    reads: int = 0
    read_failures: int = 0  # reads that failed after all retries
    retries: int = 0  # extra attempts that were needed
    writes: int = 0
    write_failures: int = 0
    timeouts: int = 0  # attempts whose reply was lost (none by twice the timeout)
    corrupt_replies: int = 0  # attempts that got a bad checksum, length or id
    late_replies: int = 0  # exchanges whose reply came after its timeout, but came
    stale_bytes: int = 0  # bytes dropped before a request or after a failed exchange
    last_error: str = ''


@dataclass
class FastState:
    """One control-tick read: joint order, ticks, ticks/s, load in 0.1 % of max torque."""

    position: np.ndarray
    velocity: np.ndarray
    load: np.ndarray
    stamp_ns: int  # time.time_ns() just after the reply arrived


@dataclass
class Telemetry:
    """Slow read of one servo."""

    voltage: float  # V
    temperature: int  # degrees C
    status: int  # ErrorBit flags
    moving: bool
    current: int  # raw units (6.5 mA)
    errors: list[str] = field(default_factory=list)


# Fast block: Present_Position .. Present_Load (56..61), 6 bytes per servo.
_FAST_START = ct.PRESENT_POSITION.address
_FAST_LEN = ct.PRESENT_LOAD.address + ct.PRESENT_LOAD.size - _FAST_START
# Telemetry block: Present_Voltage .. Present_Current (62..70), 9 bytes per servo.
_TELEM_START = ct.PRESENT_VOLTAGE.address
_TELEM_LEN = ct.PRESENT_CURRENT.address + ct.PRESENT_CURRENT.size - _TELEM_START


def error_names(bits: int) -> list[str]:
    return [flag.name.lower() for flag in ct.ErrorBit if bits & flag]


class FeetechBus:
    """The six servos of one arm. Thread-safe: every transaction holds one lock."""

    def __init__(self, config: BusConfig):
        self.config = config
        self.counters = BusCounters()
        self._lock = threading.Lock()
        self._port: SelectPortHandler | None = None
        scs.SCS_SETEND(0)  # what scs.PacketHandler(0) does: STS byte order
        self._ph = StrictPacketHandler()
        self._fast_reader = None
        self._telem_reader = None
        self._goal_writer = None

    # -- connection ------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def open(self) -> None:
        """Open the port and check every servo answers as an STS3215."""
        with self._lock:
            self._close_port()
            port = SelectPortHandler(self.config.port, self.config.packet_timeout_ms)
            try:
                if not port.openPort() or not port.setBaudRate(self.config.baudrate):
                    raise PortLost(f'cannot open serial port {self.config.port} at '
                                   f'{self.config.baudrate} baud')
            except (OSError, serial.SerialException) as err:
                raise PortLost(f'cannot open serial port {self.config.port}: {err}') from err
            self._port = port
            self._fast_reader = scs.GroupSyncRead(port, self._ph, _FAST_START, _FAST_LEN)
            self._telem_reader = scs.GroupSyncRead(port, self._ph, _TELEM_START, _TELEM_LEN)
            self._goal_writer = scs.GroupSyncWrite(port, self._ph, ct.GOAL_POSITION.address,
                                                   ct.GOAL_POSITION.size)
            for sid in self.config.ids:
                self._fast_reader.addParam(sid)
                self._telem_reader.addParam(sid)
        missing, wrong = [], []
        for sid in self.config.ids:
            model = self._ping(sid)
            if model is None:
                missing.append(sid)
            elif model != ct.STS3215_MODEL_NUMBER:
                wrong.append((sid, model))
        if missing:
            self.close(disable_torque=False)
            raise ServoNotFound(
                f'servo ids {missing} did not answer on {self.config.port} at '
                f'{self.config.baudrate} baud (check power, cabling and ids; expected ids '
                f'{list(self.config.ids)} for {list(JOINT_NAMES)})')
        if wrong:
            self.close(disable_torque=False)
            raise ServoNotFound(f'unexpected model numbers (id, model) {wrong} on '
                                f'{self.config.port}; expected STS3215 '
                                f'({ct.STS3215_MODEL_NUMBER})')

    def close(self, disable_torque: bool = True) -> None:
        if disable_torque and self.is_open:
            try:
                self.set_torque(False)
            except BusError:
                pass
        with self._lock:
            self._close_port()

    def _close_port(self) -> None:
        if self._port is not None:
            try:
                self._port.closePort()
            except (OSError, serial.SerialException, AttributeError):
                pass
        self._port = None

    # -- configuration ---------------------------------------------------------
    def configure(self, calibration: Mapping[str, MotorCalibration],
                  write_calibration: bool = True) -> list[str]:
        """Configure every servo as LeRobot's SO-101 follower does and sync the EEPROM
        calibration.

        Torque is off afterwards. Returns a line per calibration register rewritten;
        raises ``BusError`` if the servos disagree with the file and
        ``write_calibration`` is False.
        """
        self.set_torque(False)  # also unlocks the EEPROM (Lock = 0)
        changed = self.sync_calibration(calibration, write_calibration)
        for name, sid in zip(JOINT_NAMES, self.config.ids, strict=True):
            self.configure_motor(sid, self.config.acceleration)
            self.write_register(sid, ct.P_COEFFICIENT, self.config.p_coefficient)
            self.write_register(sid, ct.I_COEFFICIENT, self.config.i_coefficient)
            self.write_register(sid, ct.D_COEFFICIENT, self.config.d_coefficient)
            if name == GRIPPER:
                self.write_register(sid, ct.MAX_TORQUE_LIMIT, self.config.gripper_max_torque)
                self.write_register(sid, ct.PROTECTION_CURRENT,
                                    self.config.gripper_protection_current)
                self.write_register(sid, ct.OVERLOAD_TORQUE, self.config.gripper_overload_torque)
        return changed

    def sync_calibration(self, calibration: Mapping[str, MotorCalibration],
                         write_calibration: bool = True, arm: str = '',
                         recalibrate: str = 're-run lerobot-calibrate') -> list[str]:
        """Make the servos' homing offsets and position limits equal the calibration file
        (torque must be off, EEPROM unlocked). Returns a line per register rewritten; with
        ``write_calibration`` False a difference raises ``BusError`` naming the register.
        ``arm`` prefixes joint names in messages (e.g. 'leader')."""
        changed = []
        prefix = f'{arm} ' if arm else ''
        for name, sid in zip(JOINT_NAMES, self.config.ids, strict=True):
            cal = calibration[name]
            for reg, want in ((ct.HOMING_OFFSET, cal.homing_offset),
                              (ct.MIN_POSITION_LIMIT, cal.range_min),
                              (ct.MAX_POSITION_LIMIT, cal.range_max)):
                have = self.read_register(sid, reg)
                if have != want:
                    if not write_calibration:
                        raise BusError(f'{prefix}{name} (id {sid}) holds {reg} = {have}, '
                                       f'calibration file says {want}; enable '
                                       f'write_calibration or {recalibrate}')
                    self.write_register(sid, reg, want)
                    changed.append(f'{prefix}{name}: register {reg.address} {have} -> {want}')
        return changed

    def configure_motor(self, sid: int, acceleration: int) -> None:
        """What LeRobot's ``configure_motors`` does for every SO-101 servo, follower or
        leader: return delay 0, maximum acceleration 254, the given acceleration, the
        Phase angle-feedback bit cleared, position mode."""
        self.write_register(sid, ct.RETURN_DELAY_TIME, 0)
        self.write_register(sid, ct.MAXIMUM_ACCELERATION, 254)
        self.write_register(sid, ct.ACCELERATION, acceleration)
        phase = self.read_register(sid, ct.PHASE)
        if phase & ct.PHASE_ANGLE_FEEDBACK_BIT:
            self.write_register(sid, ct.PHASE, phase & ~ct.PHASE_ANGLE_FEEDBACK_BIT)
        self.write_register(sid, ct.OPERATING_MODE, ct.OperatingMode.POSITION)

    def set_torque(self, enabled: bool) -> None:
        """Torque on (then lock the EEPROM) or off (then unlock it), as LeRobot does."""
        for sid in self.config.ids:
            self.write_register(sid, ct.TORQUE_ENABLE, int(enabled))
            self.write_register(sid, ct.LOCK, int(enabled))

    def _ping(self, sid: int) -> int | None:
        """Model number of servo ``sid``, or None if it does not answer (one retry)."""
        def attempt():
            try:
                model, result, _ = self._ph.ping(self._port, sid)
            except IndexError:  # the SDK read a late, empty PING reply as the model number
                return scs.COMM_RX_CORRUPT, None
            return result, model
        try:
            return self._transact(attempt, 1, f'ping id {sid}', is_read=True)
        except PortLost:
            raise
        except BusError:
            return None

    # -- single-register access --------------------------------------------------
    def read_register(self, sid: int, reg: ct.Register) -> int:
        def attempt():
            data, result, _ = self._ph.readTxRx(self._port, sid, reg.address, reg.size)
            return result, data
        data = self._transact(attempt, self.config.read_retries, f'read {reg} from id {sid}',
                              is_read=True)
        return ct.from_bytes(reg, data)

    def write_register(self, sid: int, reg: ct.Register, value: int) -> None:
        payload = ct.to_bytes(reg, int(value))

        def attempt():
            result, _ = self._ph.writeTxRx(self._port, sid, reg.address, reg.size, payload)
            return result, None
        self._transact(attempt, self.config.write_retries, f'write {reg}={value} to id {sid}',
                       is_read=False)

    # -- per-tick I/O ------------------------------------------------------------
    def read_fast(self) -> FastState:
        """Sync-read position, velocity and load of all servos (one bus transaction)."""
        reader = self._fast_reader

        def attempt():
            return self._sync_read(reader, _FAST_LEN), None
        self._transact(attempt, self.config.read_retries, 'sync-read of present position',
                       is_read=True)
        stamp = time.time_ns()
        raw = [reader.data_dict[sid] for sid in self.config.ids]
        return FastState(
            position=np.array([ct.from_bytes(ct.PRESENT_POSITION, d[0:2]) for d in raw]),
            velocity=np.array([ct.from_bytes(ct.PRESENT_VELOCITY, d[2:4]) for d in raw]),
            load=np.array([ct.from_bytes(ct.PRESENT_LOAD, d[4:6]) for d in raw]),
            stamp_ns=stamp,
        )

    def read_telemetry(self) -> dict[int, Telemetry]:
        """Sync-read voltage, temperature, status, moving and current of all servos."""
        reader = self._telem_reader

        def attempt():
            return self._sync_read(reader, _TELEM_LEN), None
        self._transact(attempt, self.config.read_retries, 'sync-read of telemetry', is_read=True)
        out = {}
        for sid in self.config.ids:
            d = reader.data_dict[sid]
            status = d[ct.STATUS.address - _TELEM_START]
            out[sid] = Telemetry(
                voltage=d[0] / 10.0,
                temperature=d[1],
                status=status,
                moving=bool(d[ct.MOVING.address - _TELEM_START]),
                current=ct.from_bytes(ct.PRESENT_CURRENT, d[ct.PRESENT_CURRENT.address
                                                           - _TELEM_START:]),
                errors=error_names(status),
            )
        return out

    def write_goals(self, ticks: Sequence[int]) -> None:
        """Sync-write Goal_Position of all servos (no reply on the bus)."""
        writer = self._goal_writer

        def attempt():
            writer.clearParam()
            for sid, value in zip(self.config.ids, ticks, strict=True):
                writer.addParam(sid, ct.to_bytes(ct.GOAL_POSITION, int(value)))
            return writer.txPacket(), None
        self._transact(attempt, 0, 'sync-write of goal position', is_read=False, reply=False)

    def _sync_read(self, reader, length: int) -> int:
        """One sync-read (a status packet per servo, each checked for its length by
        ``StrictPacketHandler``)."""
        result = reader.txRxPacket()
        if result == scs.COMM_SUCCESS and any(len(reader.data_dict[sid]) != length
                                              for sid in self.config.ids):
            return scs.COMM_RX_CORRUPT
        return result

    # -- retry core --------------------------------------------------------------
    def _transact(self, attempt, retries: int, what: str, is_read: bool, reply: bool = True):
        """Run ``attempt`` under the lock, retrying SDK failures ``retries`` times.

        ``reply``: the request is answered, so stale input is dropped before it is sent."""
        with self._lock:
            if self._port is None:
                raise PortLost(f'{what}: port {self.config.port} is not open')
            if is_read:
                self.counters.reads += 1
            else:
                self.counters.writes += 1
            result = scs.COMM_TX_FAIL
            for n in range(retries + 1):
                if n:
                    self.counters.retries += 1
                try:
                    if reply:
                        self.counters.stale_bytes += self._port.discard_input()
                    result, data = attempt()
                    if reply and result == scs.COMM_SUCCESS and self._port.late:
                        self.counters.late_replies += 1
                    elif reply and result != scs.COMM_SUCCESS:
                        self._after_failure(result)
                except (OSError, ValueError, serial.SerialException, TypeError,
                        termios.error) as err:
                    # TypeError/ValueError: a closed fd (None or -1) in select;
                    # termios.error: a flush on a vanished device (EIO)
                    self.counters.last_error = f'{what}: port {self.config.port} lost ({err})'
                    self._close_port()
                    raise PortLost(self.counters.last_error) from err
                finally:
                    if self._port is not None:
                        self._port.is_using = False
                if result == scs.COMM_SUCCESS:
                    return data
            message = f'{what} failed after {retries + 1} attempts: ' \
                      f'{self._ph.getTxRxResult(result)}'
            self.counters.last_error = message
            if is_read:
                self.counters.read_failures += 1
            else:
                self.counters.write_failures += 1
            raise BusError(message)

    def _after_failure(self, result: int) -> None:
        """Count the failure and let the line settle (the other servos' replies of a
        corrupt exchange are still coming), so none is read as the answer to the retry."""
        timeout_s = self.config.packet_timeout_ms / 1e3
        self.counters.stale_bytes += self._port.settle(
            quiet_s=min(max(timeout_s / 4, 0.002), 0.01), max_s=timeout_s)
        if result == scs.COMM_RX_TIMEOUT:
            self.counters.timeouts += 1
        elif result == scs.COMM_RX_CORRUPT:
            self.counters.corrupt_replies += 1

    def _drain(self) -> None:
        """Drop stray bytes of a failed exchange so the next reply is read in step."""
        with self._lock:
            if self._port is not None:
                try:
                    self.counters.stale_bytes += self._port.discard_input()
                    self._port.ser.reset_input_buffer()
                except (OSError, ValueError, serial.SerialException, TypeError,
                        termios.error):
                    pass
