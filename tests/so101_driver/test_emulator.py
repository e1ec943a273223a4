"""Byte-level tests of the STS3215 bus emulator: hand-built packets in, status packets out.

Most tests talk to ``EmulatorServer`` over its pseudo-terminal exactly as a host does; the
motion model is tested on ``ServoBus`` with a synthetic clock so it is deterministic.
Absence of a reply is shown by ordering, not by waiting: the packet that must get no answer
is followed by a PING, and the next bytes on the line must be that PING's reply.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time
import tty

import pytest

from so101_driver.feetech import control_table as ct
from so101_driver.joints import JOINT_NAMES
from so101_driver.feetech.emulator import (
    EmulatorConfig,
    EmulatorServer,
    ServoBus,
    instruction_packet,
    status_packet,
)

I = ct.Instruction  # noqa: E741 - short for packet tables


def packet(sid, instruction, *params):
    """An instruction packet built by hand (the checksum from control_table)."""
    body = [sid, len(params) + 2, int(instruction), *params]
    return bytes([0xFF, 0xFF, *body, ct.checksum(body)])


def status(sid, error=0, *params):
    body = [sid, len(params) + 2, error, *params]
    return bytes([0xFF, 0xFF, *body, ct.checksum(body)])


class Line:
    """The host side of the emulator's port, opened like a serial adapter."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.rx = bytearray()

    def send(self, data: bytes):
        os.write(self.fd, data)

    def recv(self, n_packets: int, timeout: float = 5.0) -> list[bytes]:
        """The next ``n_packets`` status packets (FF FF ID LEN ... CHK), as sent."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n_packets:
            while len(self.rx) >= 4 and len(self.rx) >= self.rx[3] + 4:
                assert self.rx[:2] == b'\xff\xff', \
                    f'expected a status header, got {bytes(self.rx)!r}'
                total = self.rx[3] + 4
                out.append(bytes(self.rx[:total]))
                del self.rx[:total]
                if len(out) == n_packets:
                    return out
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f'expected {n_packets} status packets within {timeout} s, '
                                     f'got {out} and pending bytes {bytes(self.rx)!r}')
            if select.select([self.fd], [], [], left)[0]:
                self.rx += os.read(self.fd, 4096)
        return out

    def transact(self, data: bytes, n_packets: int = 1) -> list[bytes]:
        self.send(data)
        return self.recv(n_packets)

    def assert_silent_then_ping(self, data: bytes, ping_id: int = 1):
        """``data`` gets no reply: the next thing on the line is the PING's answer."""
        self.send(data)
        reply = self.transact(packet(ping_id, I.PING))
        assert reply == [status(ping_id)], f'expected only the ping reply after {data!r}, ' \
                                           f'got {reply}'

    def close(self):
        os.close(self.fd)


@pytest.fixture(scope='module')
def server():
    srv = EmulatorServer(EmulatorConfig(ids=(1, 2, 3, 4, 5, 6)))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def line(server):
    server.reset()
    ln = Line(server.port)
    yield ln
    ln.close()


def read(line, sid, reg, error=0):
    (reply,) = line.transact(packet(sid, I.READ, reg.address, reg.size))
    assert reply[4] == error and len(reply) == reg.size + 6, \
        f'expected a {reg.size}-byte read reply with error byte {error}, got {reply!r}'
    return reply[5:5 + reg.size]


def write(line, sid, reg, value):
    data = ct.to_bytes(reg, value)
    reply = line.transact(packet(sid, I.WRITE, reg.address, *data))
    assert reply == [status(sid)], f'expected a plain ack of the write, got {reply}'


# -- instructions ---------------------------------------------------------------------
def test_ping_gets_an_empty_status_packet(line):
    reply = line.transact(bytes([0xFF, 0xFF, 0x01, 0x02, 0x01, 0xFB]))  # the datasheet example
    assert reply == [bytes([0xFF, 0xFF, 0x01, 0x02, 0x00, 0xFC])], f'got {reply}'


def test_read_of_model_number_returns_777_little_endian(line):
    data = read(line, 3, ct.MODEL_NUMBER)
    assert data == bytes([777 & 0xFF, 777 >> 8]), f'expected 09 03, got {data.hex(" ")}'


def test_status_packet_builders_agree_with_hand_built_packets():
    assert instruction_packet(5, I.READ, [56, 2]) == packet(5, I.READ, 56, 2)
    assert status_packet(5, 4, bytes([1, 2])) == status(5, 4, 1, 2)


def test_write_stores_goal_position_in_sign_magnitude(line):
    write(line, 2, ct.GOAL_POSITION, -100)
    raw = read(line, 2, ct.GOAL_POSITION)
    assert raw == bytes([100, 0x80]), f'expected 64 80 (bit 15 = sign), got {raw.hex(" ")}'
    assert ct.from_bytes(ct.GOAL_POSITION, raw) == -100


def test_homing_offset_uses_sign_bit_11_and_shifts_present_position(line, server):
    before = ct.from_bytes(ct.PRESENT_POSITION, read(line, 1, ct.PRESENT_POSITION))
    write(line, 1, ct.LOCK, 0)
    write(line, 1, ct.HOMING_OFFSET, -300)
    raw = read(line, 1, ct.HOMING_OFFSET)
    assert raw == bytes([300 & 0xFF, (300 >> 8) | 0x08]), \
        f'expected 2c 09 (bit 11 = sign), got {raw.hex(" ")}'
    after = ct.from_bytes(ct.PRESENT_POSITION, read(line, 1, ct.PRESENT_POSITION))
    assert after == (before + 300) % 4096, \
        f'Present = actual - offset: expected {(before + 300) % 4096}, got {after}'


def test_eeprom_write_is_ignored_while_locked_and_applied_after_unlock(line):
    assert read(line, 4, ct.LOCK) == b'\x01', 'a servo powers up with Lock = 1'
    write(line, 4, ct.MIN_POSITION_LIMIT, 100)
    got = ct.from_bytes(ct.MIN_POSITION_LIMIT, read(line, 4, ct.MIN_POSITION_LIMIT))
    assert got == 0, f'locked EEPROM write must be ignored, register holds {got}'
    write(line, 4, ct.LOCK, 0)
    write(line, 4, ct.MIN_POSITION_LIMIT, 100)
    got = ct.from_bytes(ct.MIN_POSITION_LIMIT, read(line, 4, ct.MIN_POSITION_LIMIT))
    assert got == 100, f'unlocked EEPROM write: expected 100, got {got}'


def test_read_only_registers_ignore_writes(line):
    write(line, 1, ct.LOCK, 0)
    write(line, 1, ct.MODEL_NUMBER, 1234)
    got = ct.from_bytes(ct.MODEL_NUMBER, read(line, 1, ct.MODEL_NUMBER))
    assert got == 777, f'model number is read-only: expected 777, got {got}'


def test_reg_write_takes_effect_only_on_action(line):
    reply = line.transact(packet(2, I.REG_WRITE, ct.ACCELERATION.address, 77))
    assert reply == [status(2)]
    assert read(line, 2, ct.ACCELERATION) == b'\x00', 'REG_WRITE must wait for ACTION'
    line.assert_silent_then_ping(packet(ct.BROADCAST_ID, I.ACTION))
    assert read(line, 2, ct.ACCELERATION) == bytes([77]), 'ACTION must apply the REG_WRITE'


def test_sync_read_answers_each_listed_id_in_the_listed_order(line, server):
    server.set_position(1, 1000)
    server.set_position(3, 3000)
    replies = line.transact(packet(ct.BROADCAST_ID, I.SYNC_READ, ct.PRESENT_POSITION.address, 2,
                                   3, 1, 2), 3)
    ids = [r[2] for r in replies]
    assert ids == [3, 1, 2], f'expected replies from ids 3, 1, 2 in that order, got {ids}'
    positions = [ct.from_bytes(ct.PRESENT_POSITION, r[5:7]) for r in replies]
    assert positions == [3000, 1000, 2048], f'expected [3000, 1000, 2048], got {positions}'
    assert all(r[-1] == ct.checksum(r[2:-1]) for r in replies), f'bad checksums in {replies}'


def test_sync_write_sets_every_listed_servo_without_a_reply(line):
    entries = []
    for sid, value in ((1, 1111), (2, -5), (3, 3333)):
        entries += [sid, *ct.to_bytes(ct.GOAL_POSITION, value)]
    line.assert_silent_then_ping(packet(ct.BROADCAST_ID, I.SYNC_WRITE,
                                        ct.GOAL_POSITION.address, 2, *entries))
    got = [ct.from_bytes(ct.GOAL_POSITION, read(line, s, ct.GOAL_POSITION)) for s in (1, 2, 3)]
    assert got == [1111, -5, 3333], f'expected goals [1111, -5, 3333], got {got}'


def test_broadcast_write_is_applied_without_a_reply(line):
    line.assert_silent_then_ping(packet(ct.BROADCAST_ID, I.WRITE, ct.ACCELERATION.address, 9))
    got = [read(line, s, ct.ACCELERATION)[0] for s in range(1, 7)]
    assert got == [9] * 6, f'expected Acceleration 9 on every servo, got {got}'


def test_broadcast_ping_is_answered_by_every_servo_in_id_order(line):
    replies = line.transact(packet(ct.BROADCAST_ID, I.PING), 6)
    assert replies == [status(s) for s in range(1, 7)], f'got {replies}'


def test_write_of_the_id_register_moves_the_servo_to_the_new_id(line):
    write(line, 6, ct.LOCK, 0)
    reply = line.transact(packet(6, I.WRITE, ct.ID.address, 9))
    assert reply == [status(6)], 'the acknowledgement comes from the old id'
    assert line.transact(packet(9, I.PING)) == [status(9)], 'the servo must answer as id 9'
    line.assert_silent_then_ping(packet(6, I.PING))


# -- error bits ---------------------------------------------------------------------
def test_status_packets_carry_the_servos_error_bits(line, server):
    server.set_error_bits(2, ['overheat'])
    server.set_error_bits(3, 'voltage')
    assert line.transact(packet(2, I.PING)) == [status(2, int(ct.ErrorBit.OVERHEAT))]
    assert line.transact(packet(3, I.PING)) == [status(3, int(ct.ErrorBit.VOLTAGE))]
    assert line.transact(packet(1, I.PING)) == [status(1, 0)], 'healthy servo: error byte 0'
    heat, volt = int(ct.ErrorBit.OVERHEAT), int(ct.ErrorBit.VOLTAGE)
    assert read(line, 2, ct.STATUS, heat) == bytes([heat]), 'Status register = error bits'
    temp = read(line, 2, ct.PRESENT_TEMPERATURE, heat)[0]
    limit = read(line, 2, ct.MAX_TEMPERATURE_LIMIT, heat)[0]
    assert temp > limit, f'overheat: temperature {temp} should exceed its limit {limit}'
    volts = read(line, 3, ct.PRESENT_VOLTAGE, volt)[0]
    assert volts < read(line, 3, ct.MIN_VOLTAGE_LIMIT, volt)[0], \
        f'voltage error but {volts / 10} V'


def test_unknown_error_bit_name_is_refused_with_the_known_names(server):
    with pytest.raises(ValueError, match='overheat'):
        server.set_error_bits(1, 'smoke')


# -- line faults ----------------------------------------------------------------------
def test_garbage_before_a_packet_is_skipped_and_the_packet_answered(line, server):
    garbage = bytes([0x00, 0x13, 0xFF, 0x42, 0x99, 0xFE])
    reply = line.transact(garbage + packet(4, I.PING))
    assert reply == [status(4)], f'expected a resync onto the ping, got {reply}'
    assert server.state()['counters']['garbage_bytes'] >= len(garbage) - 1


def test_bad_checksum_gets_no_reply_and_the_bus_resyncs_on_the_next_header(line, server):
    bad = bytearray(packet(2, I.PING))
    bad[-1] ^= 0xFF
    line.assert_silent_then_ping(bytes(bad))
    assert server.state()['counters']['bad_checksums'] == 1


def test_truncated_packet_is_dropped_and_the_next_one_answered(line):
    # a header claiming 9 more bytes that never come, then (after the stale timeout) a ping
    line.send(bytes([0xFF, 0xFF, 0x01, 0x09, 0x03, 0x2A]))
    reply = line.transact(packet(5, I.PING))
    assert reply == [status(5)], f'expected the ping to be answered after a resync, got {reply}'


def test_silent_id_never_answers_and_is_skipped_in_sync_read(line, server):
    server.set_silent([3])
    line.assert_silent_then_ping(packet(3, I.PING))
    replies = line.transact(packet(ct.BROADCAST_ID, I.SYNC_READ, ct.ID.address, 1, 1, 3, 2), 2)
    assert [r[2] for r in replies] == [1, 2], f'id 3 is silent: got replies {replies}'
    line.assert_silent_then_ping(packet(3, I.READ, ct.ID.address, 1))


def test_corrupted_reply_fails_the_checksum_and_the_next_reply_is_clean(line, server):
    server.set_corrupt(count=1)
    (bad,) = line.transact(packet(1, I.PING))
    assert bad[:5] == status(1)[:5], f'only the checksum is damaged, got {bad!r}'
    assert bad[-1] != ct.checksum(bad[2:-1]), f'expected a wrong checksum, got {bad!r}'
    assert line.transact(packet(1, I.PING)) == [status(1)], 'count=1 corrupts one reply only'


def test_corruption_fraction_is_reproducible_from_the_seed():
    def pattern(seed):
        bus = ServoBus(EmulatorConfig(corrupt_fraction=0.3, seed=seed), now=0.0)
        out = [bus.feed(packet(1, I.PING), 0.0)[0] for _ in range(200)]
        return [r[-1] != ct.checksum(r[2:-1]) for r in out]
    first, again, other = pattern(7), pattern(7), pattern(8)
    assert first == again, 'the same seed must corrupt the same replies'
    assert first != other, 'another seed should corrupt other replies'
    assert 30 <= sum(first) <= 90, f'expected about 60 of 200 corrupted, got {sum(first)}'


def test_reply_delay_holds_back_the_reply(line, server):
    server.set_reply_delay_ms(60)
    t0 = time.monotonic()
    assert line.transact(packet(1, I.PING)) == [status(1)]
    waited = time.monotonic() - t0
    assert waited >= 0.055, f'reply came after {waited * 1e3:.1f} ms, before the 60 ms delay'


def test_vanished_port_fails_io_and_reappears_at_the_same_path(server):
    server.reset()
    ln = Line(server.port)
    try:
        server.vanish()
        assert not os.path.exists(server.port), 'a vanished port must not be openable'
        with pytest.raises(OSError):
            os.write(ln.fd, packet(1, I.PING))
            os.read(ln.fd, 16)
    finally:
        ln.close()
    assert server.reappear() == server.port
    ln = Line(server.port)
    try:
        assert ln.transact(packet(1, I.PING)) == [status(1)], 'the reappeared port must serve'
    finally:
        ln.close()


# -- motion model (synthetic clock) -----------------------------------------------------
def _bus(**kw):
    bus = ServoBus(EmulatorConfig(**kw), now=0.0)
    return bus


def _write(bus, sid, reg, value, now=0.0):
    bus.feed(packet(sid, I.WRITE, reg.address, *ct.to_bytes(reg, value)), now)


def test_torque_on_moves_to_the_goal_clamped_to_the_position_limits():
    bus = _bus(speed=1000.0)
    servo = bus.servos[1]
    servo.set(ct.MAX_POSITION_LIMIT, 2500)
    _write(bus, 1, ct.TORQUE_ENABLE, 1)
    _write(bus, 1, ct.GOAL_POSITION, 3500)
    bus.advance(0.2)
    mid = servo.get(ct.PRESENT_POSITION)
    assert 2048 < mid < 2500, f'after 0.2 s at 1000 ticks/s expected ~2248, got {mid}'
    assert servo.get(ct.PRESENT_VELOCITY) == 1000, 'velocity must reflect the motion'
    assert servo.get(ct.MOVING) == 1 and 0 < servo.get(ct.PRESENT_LOAD) < 100, \
        f'moving freely: small load, got {servo.get(ct.PRESENT_LOAD)}'
    for k in range(1, 20):
        bus.advance(0.2 + 0.05 * k)
    assert servo.get(ct.PRESENT_POSITION) == 2500, \
        f'goal 3500 clamped to the max limit 2500, got {servo.get(ct.PRESENT_POSITION)}'
    assert servo.get(ct.MOVING) == 0 and servo.get(ct.PRESENT_VELOCITY) == 0


def test_motion_downwards_reports_negative_velocity_with_sign_bit_15():
    bus = _bus(speed=1000.0)
    _write(bus, 2, ct.TORQUE_ENABLE, 1)
    _write(bus, 2, ct.GOAL_POSITION, 1000)
    bus.advance(0.1)
    raw = bus.servos[2].read(ct.PRESENT_VELOCITY.address, 2)
    assert raw[1] & 0x80, f'moving down: expected bit 15 set, got {raw.hex(" ")}'
    assert ct.from_bytes(ct.PRESENT_VELOCITY, raw) == -1000
    load = bus.servos[2].read(ct.PRESENT_LOAD.address, 2)
    assert load[1] & 0x04, f'load against the motion: expected bit 10 set, got {load.hex(" ")}'


def test_acceleration_ramps_the_velocity_up():
    bus = _bus(speed=3000.0)
    _write(bus, 1, ct.ACCELERATION, 10)  # 1000 ticks/s^2
    _write(bus, 1, ct.TORQUE_ENABLE, 1)
    _write(bus, 1, ct.GOAL_POSITION, 4000)
    bus.advance(0.1)
    v = bus.servos[1].get(ct.PRESENT_VELOCITY)
    assert 90 <= v <= 110, f'0.1 s at 1000 ticks/s^2: expected ~100 ticks/s, got {v}'


def test_blocked_gripper_stops_at_the_object_and_load_grows_with_the_squeeze():
    bus = _bus(speed=2000.0, block_tick=1800)
    grip = bus.servos[6]
    _write(bus, 6, ct.TORQUE_ENABLE, 1)
    _write(bus, 6, ct.GOAL_POSITION, 1700)  # 100 ticks past the object
    for k in range(1, 10):
        bus.advance(0.05 * k)
    assert grip.get(ct.PRESENT_POSITION) == 1800, \
        f'the object at 1800 must stop the jaw, got {grip.get(ct.PRESENT_POSITION)}'
    light = grip.get(ct.PRESENT_LOAD)
    _write(bus, 6, ct.GOAL_POSITION, 1500, now=0.5)  # squeeze harder
    bus.advance(0.6)
    hard = grip.get(ct.PRESENT_LOAD)
    assert light == -200 and hard == -600, \
        f'load = -gain x squeeze: expected -200 then -600, got {light} then {hard}'
    _write(bus, 6, ct.GOAL_POSITION, 0, now=0.6)
    bus.advance(0.7)
    assert grip.get(ct.PRESENT_LOAD) == -1000, 'the load saturates at the torque limit'
    bus.block_gripper(None)
    bus.advance(0.8)
    assert grip.get(ct.PRESENT_POSITION) < 1800, 'without the object the jaw closes further'


def test_torque_off_keeps_the_position_and_a_hand_can_move_it():
    bus = _bus()
    servo = bus.servos[3]
    _write(bus, 3, ct.GOAL_POSITION, 100)
    bus.advance(1.0)
    assert servo.get(ct.PRESENT_POSITION) == 2048, 'torque off: the goal must not move it'
    bus.set_position(3, 777)
    bus.advance(2.0)
    assert servo.get(ct.PRESENT_POSITION) == 777, 'torque off: stays where the hand left it'


def test_load_calibration_writes_eeprom_and_rests_mid_range():
    bus = _bus()
    bus.load_calibration({1: (-1470, 758, 3292)})
    servo = bus.servos[1]
    assert (servo.get(ct.HOMING_OFFSET), servo.get(ct.MIN_POSITION_LIMIT),
            servo.get(ct.MAX_POSITION_LIMIT)) == (-1470, 758, 3292)
    assert servo.get(ct.PRESENT_POSITION) == (758 + 3292) // 2
    assert servo.get(ct.LOCK) == 1, 'preloading does not unlock the EEPROM'


def test_config_rejects_fault_ids_that_are_not_on_the_bus():
    with pytest.raises(ValueError, match=r'\[9\]'):
        EmulatorConfig(ids=(1, 2), silent_ids=(9,))


# -- command line ---------------------------------------------------------------------
def test_cli_prints_its_port_serves_it_and_stops_on_sigterm(tmp_path):
    link = tmp_path / 'bus'
    cal = {name: {'id': i + 1, 'drive_mode': 0, 'homing_offset': -100 * (i + 1),
                  'range_min': 500, 'range_max': 3500}
           for i, name in enumerate(JOINT_NAMES)}
    (tmp_path / 'cal.json').write_text(json.dumps(cal))
    proc = subprocess.Popen(
        [sys.executable, '-m', 'so101_driver.feetech.emulator',
         '--error-bits', '2:voltage|overheat',
         '--calibration', str(tmp_path / 'cal.json'), '--link', str(link)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        assert first == f'so101-servo-emulator: port {link}', f'got {first!r}'
        ln = Line(str(link))
        try:
            bits = int(ct.ErrorBit.VOLTAGE | ct.ErrorBit.OVERHEAT)
            assert ln.transact(packet(2, I.PING)) == [status(2, bits)]
            ln.assert_silent_then_ping(packet(7, I.PING), ping_id=1)
            offset = ct.from_bytes(ct.HOMING_OFFSET, read(ln, 3, ct.HOMING_OFFSET))
            assert offset == -300, f'--calibration must preload offsets: expected -300, ' \
                                   f'got {offset}'
        finally:
            ln.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, f'exit code {proc.returncode}: {proc.stderr.read()}'
        assert not link.exists(), 'the port path must be removed on exit'
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize('args, message', [
    (['--error-bits', '2:smoke'], "unknown error bit 'smoke'"),
    (['--corrupt', '1.5'], 'between 0 and 1'),
    (['--ids', '1,2', '--silent-id', '7'], 'not on the bus'),
    (['--calibration', '/nonexistent/cal.json'], 'does not exist'),
])
def test_cli_rejects_bad_arguments_with_a_clear_message(args, message):
    result = subprocess.run([sys.executable, '-m', 'so101_driver.feetech.emulator', *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, f'expected argparse exit 2, got {result.returncode}'
    assert message in result.stderr, f'expected {message!r} in {result.stderr!r}'
