"""The real ``FeetechBus`` on the real ``scservo_sdk``, against the emulated STS3215 bus.

One emulator child process serves the module; every test starts from its factory state
(``reset``) and asserts on what the servos hold (``state``), not on what the driver says.
"""

import numpy as np
import pytest
import scservo_sdk as scs

from so101_driver.feetech import control_table as ct
from so101_driver.feetech.bus import BusConfig, BusError, FeetechBus, PortLost, ServoNotFound
from so101_driver.feetech.calibration import parse_calibration
from so101_driver.feetech.emulator import EmulatorProcess
from so101_driver.joints import JOINT_NAMES
from tests.helpers import wait_for

#: A calibration as lerobot-calibrate writes it (ids 1..6 in joint order).
CALIBRATION = parse_calibration({
    name: {'id': i + 1, 'drive_mode': 0, 'homing_offset': offset, 'range_min': lo,
           'range_max': hi}
    for i, (name, (offset, lo, hi)) in enumerate(zip(JOINT_NAMES, (
        (-1470, 758, 3292), (157, 812, 3190), (1105, 891, 3106),
        (-2036, 850, 3254), (1551, 128, 4002), (1296, 2034, 3423)), strict=True))
})
GRIPPER_ID = 6


@pytest.fixture(scope='module')
def emulator_process():
    with EmulatorProcess(ids=(1, 2, 3, 4, 5, 6)) as emu:
        yield emu


@pytest.fixture
def emulator(emulator_process):
    emulator_process.call('reset')
    return emulator_process


@pytest.fixture
def bus(emulator):
    # a generous reply timeout: a loaded test machine must not turn into retries that the
    # counter assertions would see (corrupt replies fail on their checksum, not a timeout)
    b = FeetechBus(BusConfig(port=emulator.port, packet_timeout_ms=250.0))
    yield b
    b.close(disable_torque=False)


def servos(emulator):
    return emulator.call('state')['servos']


def register(emulator, name):
    """``name`` of every servo, in id order."""
    return [s['registers'][name] for _, s in sorted(servos(emulator).items())]


def preload(emulator):
    emulator.call('load_calibration', {c.id: (c.homing_offset, c.range_min, c.range_max)
                                       for c in CALIBRATION.values()})


# -- connect ------------------------------------------------------------------------
def test_open_finds_all_six_servos_and_reads_their_positions(bus, emulator):
    bus.open()
    assert bus.is_open
    state = bus.read_fast()
    want = register(emulator, 'present_position')
    assert state.position.tolist() == want, f'expected positions {want}, got {state.position}'


def test_open_with_a_silent_servo_names_the_id_and_the_port(bus, emulator):
    emulator.call('set_silent', [4])
    with pytest.raises(ServoNotFound) as err:
        bus.open()
    message = str(err.value)
    assert '[4]' in message and emulator.port in message, \
        f'expected the missing id [4] and port {emulator.port} in {message!r}'
    assert not bus.is_open, 'a failed open must leave the port closed'


def test_open_refuses_a_servo_with_another_model_number(bus, emulator):
    emulator.call('set_register', 3, 'model_number', 1234)
    with pytest.raises(ServoNotFound, match=r'\(3, 1234\)'):
        bus.open()


def test_open_of_a_missing_port_raises_port_lost_naming_it(emulator):
    bus = FeetechBus(BusConfig(port=emulator.port + '.absent'))
    with pytest.raises(PortLost, match='.absent'):
        bus.open()


# -- configure ------------------------------------------------------------------------
def test_configure_writes_the_calibration_and_lerobots_settings(bus, emulator):
    emulator.call('set_register', 2, 'phase', 0x1C)  # angle-feedback bit set
    bus.open()
    changed = bus.configure(CALIBRATION)
    assert len(changed) == 18, f'3 calibration registers x 6 servos rewritten, got {changed}'
    cal = [CALIBRATION[n] for n in JOINT_NAMES]
    expected = {
        'homing_offset': [c.homing_offset for c in cal],
        'min_position_limit': [c.range_min for c in cal],
        'max_position_limit': [c.range_max for c in cal],
        'return_delay_time': [0] * 6,
        'maximum_acceleration': [254] * 6,
        'acceleration': [254] * 6,
        'operating_mode': [0] * 6,
        'p_coefficient': [16] * 6,
        'i_coefficient': [0] * 6,
        'd_coefficient': [32] * 6,
        'max_torque_limit': [1000] * 5 + [500],
        'protection_current': [500] * 5 + [250],
        'overload_torque': [80] * 5 + [25],
        'torque_enable': [0] * 6,
        'lock': [0] * 6,
    }
    for name, want in expected.items():
        got = register(emulator, name)
        assert got == want, f'{name}: expected {want}, got {got}'
    phase = register(emulator, 'phase')[1]
    assert phase == 0x0C, f'Phase bit 4 must be cleared (0x1C -> 0x0C), got {phase:#x}'


def test_configure_without_write_calibration_names_the_register_and_writes_nothing(
        bus, emulator):
    bus.open()
    with pytest.raises(BusError, match=r'shoulder_pan \(id 1\) holds Register\(address=31'):
        bus.configure(CALIBRATION, write_calibration=False)
    assert register(emulator, 'homing_offset') == [0] * 6, 'no calibration may be written'


def test_configure_of_a_calibrated_arm_rewrites_nothing(bus, emulator):
    preload(emulator)
    bus.open()
    assert bus.configure(CALIBRATION, write_calibration=False) == []


def test_set_torque_toggles_torque_and_the_eeprom_lock(bus, emulator):
    bus.open()
    bus.set_torque(True)
    assert register(emulator, 'torque_enable') == [1] * 6
    assert register(emulator, 'lock') == [1] * 6, 'torque on locks the EEPROM'
    bus.set_torque(False)
    assert register(emulator, 'torque_enable') == [0] * 6
    assert register(emulator, 'lock') == [0] * 6, 'torque off unlocks the EEPROM'


# -- per-tick I/O ---------------------------------------------------------------------
def test_read_fast_follows_a_written_goal(bus, emulator):
    preload(emulator)
    emulator.call('set_speed', 1000.0)
    bus.open()
    bus.configure(CALIBRATION)
    start = bus.read_fast().position
    goals = start + np.array([300, -200, 150, -100, 250, 200])
    bus.write_goals(start)
    bus.set_torque(True)
    bus.write_goals(goals)
    speeds = []

    def arrived():
        state = bus.read_fast()
        speeds.append(np.abs(state.velocity).max())
        return np.array_equal(state.position, goals)
    wait_for(arrived, timeout=10, message=f'positions to reach the goals {goals.tolist()}')
    assert register(emulator, 'goal_position') == goals.tolist()
    assert max(speeds) > 0, 'Present_Velocity should have shown the motion'
    final = bus.read_fast()
    assert not final.velocity.any() and not final.load.any(), \
        f'at rest: velocity and load 0, got {final.velocity}, {final.load}'


def test_gripper_load_rises_when_an_object_blocks_it(bus, emulator):
    preload(emulator)
    bus.open()
    bus.configure(CALIBRATION)
    start = bus.read_fast().position
    obstacle = int(start[5]) - 100
    emulator.call('block_gripper', obstacle)
    bus.write_goals(start)
    bus.set_torque(True)
    assert bus.read_fast().load[5] == 0, 'holding still: no load'
    goals = start.copy()
    goals[5] = obstacle - 400  # squeeze 400 ticks past the object
    bus.write_goals(goals)
    state = wait_for(lambda: (s := bus.read_fast()).load[5] <= -400 and s,
                     timeout=10, message='the gripper load to rise against the object')
    assert state.position[5] == obstacle, \
        f'the gripper must stop at the object {obstacle}, got {state.position[5]}'
    assert state.load[5] == -500, \
        f'squeeze saturates at the gripper torque limit 500 (LeRobot), got {state.load[5]}'


def test_a_corrupt_reply_is_retried_counted_and_the_read_succeeds(bus, emulator):
    bus.open()
    emulator.call('set_corrupt', count=1)
    state = bus.read_fast()
    assert state.position.tolist() == register(emulator, 'present_position')
    assert bus.counters.retries == 1 and bus.counters.read_failures == 0, \
        f'expected 1 retry and no failure, got {bus.counters}'
    emulator.call('set_corrupt', count=2)
    assert bus.read_register(3, ct.MODEL_NUMBER) == 777
    assert bus.counters.retries == 3, f'two more retries expected, got {bus.counters.retries}'


def test_persistent_corruption_raises_bus_error_after_the_retries(bus, emulator):
    bus.open()
    emulator.call('set_corrupt', fraction=1.0)
    with pytest.raises(BusError, match='failed after 3 attempts') as err:
        bus.read_fast()
    assert type(err.value) is BusError, f'a corrupt line is not a lost port: {err.value!r}'
    assert bus.counters.read_failures == 1 and bus.counters.retries == 2, f'{bus.counters}'
    emulator.call('set_corrupt', fraction=0.0)
    bus.read_fast()  # the bus recovers once the line is clean


def test_a_servo_that_stops_answering_makes_reads_fail(bus, emulator):
    bus.open()
    emulator.call('set_silent', [5])
    with pytest.raises(BusError, match='no status packet|Incorrect status') as err:
        bus.read_fast()
    assert type(err.value) is BusError
    assert bus.is_open, 'a silent servo is not a lost port'


def test_late_replies_to_a_timed_out_read_are_not_taken_for_telemetry(emulator):
    bus = FeetechBus(BusConfig(port=emulator.port, packet_timeout_ms=100.0, read_retries=1))
    try:
        bus.open()
        sent = emulator.call('state')['sent']
        # lost after 2 x 100 ms: the replies come after both attempts gave up
        emulator.call('set_reply_delay_ms', 500)
        with pytest.raises(BusError, match='no status packet'):
            bus.read_fast()
        assert bus.counters.timeouts == 2, f'{bus.counters}'
        wait_for(lambda: emulator.call('state')['sent'] >= sent + 12, timeout=10,
                 message='the late replies of both attempts to be on the line')
        emulator.call('set_reply_delay_ms', 0)
        retries, stale = bus.counters.retries, bus.counters.stale_bytes
        telemetry = bus.read_telemetry()  # 6-byte replies wait where 9 are due
        assert [t.voltage for t in telemetry.values()] == [12.0] * 6, f'got {telemetry}'
        assert bus.counters.retries == retries, \
            'stale replies are dropped before the request, they must not cost a retry'
        assert bus.counters.stale_bytes >= stale + 12 * 12, f'{bus.counters}'
    finally:
        bus.close(disable_torque=False)


def test_late_telemetry_replies_are_not_taken_for_positions(emulator):
    bus = FeetechBus(BusConfig(port=emulator.port, packet_timeout_ms=100.0, read_retries=0))
    try:
        bus.open()
        sent = emulator.call('state')['sent']
        emulator.call('set_reply_delay_ms', 400)  # lost after 2 x 100 ms
        with pytest.raises(BusError, match='no status packet'):
            bus.read_telemetry()
        wait_for(lambda: emulator.call('state')['sent'] >= sent + 6, timeout=10,
                 message='the late telemetry replies to be on the line')
        emulator.call('set_reply_delay_ms', 0)
        state = bus.read_fast()
        assert state.position.tolist() == register(emulator, 'present_position')
    finally:
        bus.close(disable_torque=False)


class _ScriptedPort:
    """Stands in for the SDK port: hands out the given bytes, then reports a timeout."""

    def __init__(self, data: bytes):
        self.data = bytearray(data)
        self.is_using = False

    def readPort(self, length):  # noqa: N802 - SDK name
        out = bytes(self.data[:length])
        del self.data[:length]
        return out

    def isPacketTimeout(self):  # noqa: N802 - SDK name
        return not self.data


def test_a_status_packet_of_another_length_is_corrupt_not_data():
    from so101_driver.feetech.port import StrictPacketHandler
    from so101_driver.feetech.emulator import status_packet

    handler = StrictPacketHandler()
    telemetry_reply = status_packet(1, 0, bytes([120, 35, 0, 0, 0, 0, 0, 0, 0]))
    data, result, _ = handler.readRx(_ScriptedPort(telemetry_reply), 1, 6)
    assert result == scs.COMM_RX_CORRUPT and data == [], \
        'a 9-byte reply must not pass for the 6 bytes of a position read'
    position_reply = status_packet(1, 0, bytes([0x00, 0x08, 0, 0, 0, 0]))
    data, result, _ = handler.readRx(_ScriptedPort(position_reply), 1, 6)
    assert result == scs.COMM_SUCCESS and data == [0x00, 0x08, 0, 0, 0, 0]


def test_a_reply_that_came_while_the_reader_was_not_running_is_not_a_timeout(bus, emulator):
    from so101_driver.feetech.emulator import instruction_packet

    bus.open()
    port = bus._port
    port.discard_input()
    port.writePort(instruction_packet(1, ct.Instruction.PING))
    port.setPacketTimeoutMillis(0.0)  # both deadlines pass before the reader looks again
    wait_for(lambda: port.ser.in_waiting >= 6, message='the ping reply on the line')
    assert not port.isPacketTimeout(), 'a reply waiting in the input was declared lost'
    assert port.readPort(6)[:3] == b'\xff\xff\x01'
    assert not port.late, 'the reply was on the line before anyone looked: it is not late'
    assert port.isPacketTimeout(), 'past the deadline with nothing waiting is a timeout'


def test_waiting_for_a_reply_leaves_the_cpu_to_others(emulator):
    import time

    bus = FeetechBus(BusConfig(port=emulator.port, packet_timeout_ms=250.0))
    try:
        bus.open()
        emulator.call('set_reply_delay_ms', 80)
        wall, cpu = time.monotonic(), time.thread_time()
        bus.read_fast()
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        assert wall >= 0.08
        assert cpu < 0.25 * wall, f'the read used {cpu * 1e3:.0f} ms of CPU in ' \
                                  f'{wall * 1e3:.0f} ms waiting: a busy poll'
    finally:
        bus.close(disable_torque=False)


def test_a_late_reply_is_used_and_counted_apart_from_a_lost_one(emulator):
    bus = FeetechBus(BusConfig(port=emulator.port, packet_timeout_ms=40.0, read_retries=0))
    try:
        bus.open()
        emulator.call('set_reply_delay_ms', 55)  # after the 40 ms timeout, before twice it
        state = bus.read_fast()
        assert state.position.tolist() == register(emulator, 'present_position')
        assert bus.counters.late_replies == 1 and bus.counters.timeouts == 0, \
            f'a late reply is the answer, not a loss: {bus.counters}'
        emulator.call('set_reply_delay_ms', 0)
        bus.read_fast()
        assert bus.counters.late_replies == 1, f'an on-time reply is not late: {bus.counters}'
        emulator.call('set_silent', [3])  # lost: never answers
        with pytest.raises(BusError):
            bus.read_register(3, ct.MODEL_NUMBER)
        assert bus.counters.timeouts == 1 and bus.counters.late_replies == 1, \
            f'a reply that never comes is lost, not late: {bus.counters}'
    finally:
        bus.close(disable_torque=False)


# -- vanishing port -------------------------------------------------------------------
def test_a_vanished_port_raises_port_lost_and_reopens_after_it_reappears(bus, emulator):
    bus.open()
    emulator.call('vanish')
    with pytest.raises(PortLost, match='lost'):
        bus.read_fast()
    assert not bus.is_open, 'a lost port is closed'
    with pytest.raises(PortLost, match='cannot open'):
        bus.open()
    assert emulator.call('reappear') == emulator.port
    bus.open()
    assert bus.read_fast().position.tolist() == register(emulator, 'present_position')


def test_emulator_process_hands_back_the_errors_of_calls(emulator):
    with pytest.raises(ValueError, match="unknown emulator call 'explode'"):
        emulator.call('explode')
    with pytest.raises(ValueError, match='no servo with id 9'):
        emulator.call('set_position', 9, 100)
    assert emulator.call('state')['present'], 'a failed call must leave the emulator serving'
