"""Benchmark: servo-bus loop rates on the STS3215 emulator (real ``scservo_sdk``).

One emulator child process serves three measurements in a row:

1. raw SDK loop: ``GroupSyncRead`` of Present_Position/Velocity/Load of 6 servos plus a
   ``GroupSyncWrite`` of 6 goals, as fast as possible (interleaved with (2) in 0.25 s
   slices, so the load of other processes falls on both alike);
2. driver loop: ``FeetechBus.read_fast`` + ``write_goals`` with the calibration
   conversions the arm node does per tick (ticks -> rad, tick rate -> rad/s, load -> N.m,
   rad -> ticks), as fast as possible; reported as a ratio to (1) (target >= 0.9);
3. the ``so101_arm`` node (``ArmNode``, rclpy, control_rate_hz = 100) for ~10 s: achieved
   rate, tick period p50/p99, jitter, and the ``joint_states`` a subscriber received.

Beside them: the wire-time bound of one tick at 1 Mbps (sync-read request + 6 replies +
sync-write, 10 bits per byte), i.e. the rate a real bus could not exceed. The emulator
answers without wire time, so (1) and (2) may exceed it; on hardware they cannot.

Prints the figures and writes bench/results/bench_bus.json.

    .venv/bin/python bench/bench_bus.py [--seconds 8] [--node-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results' / 'bench_bus.json'
IDS = (1, 2, 3, 4, 5, 6)
BAUD = 1_000_000


def period_stats(periods: list[float]) -> dict[str, float]:
    p = np.asarray(periods) if periods else np.zeros(1)
    return {'rate_hz': float(1.0 / max(p.mean(), 1e-12)), 'iterations': len(periods),
            'period_p50_ms': float(np.percentile(p, 50) * 1e3),
            'period_p99_ms': float(np.percentile(p, 99) * 1e3),
            'period_max_ms': float(p.max() * 1e3),
            'jitter_std_ms': float(p.std() * 1e3)}


def wire_bound() -> dict[str, float]:
    """Bytes on the wire for one tick and the rate 1 Mbps allows (10 bits per byte)."""
    from so101_driver.feetech import control_table as ct
    from so101_driver.feetech.emulator import instruction_packet, status_packet

    start, length = ct.PRESENT_POSITION.address, 6  # position, velocity, load
    request = instruction_packet(ct.BROADCAST_ID, ct.Instruction.SYNC_READ,
                                 [start, length, *IDS])
    reply = status_packet(1, 0, bytes(length))
    write = instruction_packet(ct.BROADCAST_ID, ct.Instruction.SYNC_WRITE,
                               [ct.GOAL_POSITION.address, 2, *([0, 0, 0] * len(IDS))])
    total = len(request) + len(IDS) * len(reply) + len(write)
    seconds = total * 10 / BAUD
    return {'request_bytes': len(request), 'reply_bytes_each': len(reply),
            'sync_write_bytes': len(write), 'total_bytes': total,
            'tick_ms': seconds * 1e3, 'max_rate_hz': 1.0 / seconds}


class RawLoop:
    """The plain SDK loop a hand-written driver would run."""

    def __init__(self, port: str):
        import scservo_sdk as scs

        from so101_driver.feetech import control_table as ct
        self.scs, self.ct = scs, ct
        self.ph = scs.PortHandler(port)
        if not self.ph.openPort() or not self.ph.setBaudRate(BAUD):
            raise RuntimeError(f'cannot open {port}')
        pk = scs.PacketHandler(0)
        self.reader = scs.GroupSyncRead(self.ph, pk, ct.PRESENT_POSITION.address, 6)
        self.writer = scs.GroupSyncWrite(self.ph, pk, ct.GOAL_POSITION.address, 2)
        for sid in IDS:
            self.reader.addParam(sid)
        self.periods: list[float] = []
        self.failures = 0

    def run_for(self, seconds: float) -> None:
        scs, ct, reader, writer = self.scs, self.ct, self.reader, self.writer
        self.ph.ser.reset_input_buffer()
        last = time.monotonic()
        end = last + seconds
        while last < end:
            if reader.txRxPacket() != scs.COMM_SUCCESS:
                self.failures += 1
                self.ph.ser.reset_input_buffer()
            else:
                writer.clearParam()
                for sid in IDS:
                    pos = reader.getData(sid, ct.PRESENT_POSITION.address, 2)
                    reader.getData(sid, ct.PRESENT_VELOCITY.address, 2)
                    reader.getData(sid, ct.PRESENT_LOAD.address, 2)
                    writer.addParam(sid, [pos & 0xFF, pos >> 8])  # hold where it is
                writer.txPacket()
            now = time.monotonic()
            self.periods.append(now - last)
            last = now

    def close(self) -> dict:
        self.ph.closePort()
        return {**period_stats(self.periods), 'failures': self.failures}


class DriverLoop:
    """The arm node's per-tick bus work, without ROS: read, convert, convert back, write."""

    def __init__(self, port: str, cal_path: str):
        from so101_driver.feetech.bus import BusConfig, BusError, FeetechBus
        from so101_driver.feetech.calibration import ArmCalibration

        self.error = BusError
        self.cal = ArmCalibration.from_file(cal_path)
        self.bus = FeetechBus(BusConfig(port=port))
        self.bus.open()
        self.bus.configure(self.cal.motors)
        self.bus.write_goals(self.bus.read_fast().position)
        self.bus.set_torque(True)
        self.stall_torque = 1.96
        self.periods: list[float] = []
        self.failures = 0

    def run_for(self, seconds: float) -> None:
        bus, cal = self.bus, self.cal
        bus._drain()  # the other loop's leftovers, if any
        last = time.monotonic()
        end = last + seconds
        while last < end:
            try:
                state = bus.read_fast()
            except self.error:
                self.failures += 1
            else:
                present = cal.ticks_to_radians(state.position)
                cal.tick_rate_to_radians(state.velocity)
                cal.sign * state.load / 1000.0 * self.stall_torque  # effort, N.m
                bus.write_goals(cal.radians_to_ticks(present))  # hold where it is
            now = time.monotonic()
            self.periods.append(now - last)
            last = now

    def close(self) -> dict:
        self.bus.close(disable_torque=True)
        return {**period_stats(self.periods), 'failures': self.failures,
                'retries': self.bus.counters.retries}


def bench_loops(port: str, cal_path: str, seconds: float, slice_s: float = 0.25):
    """Raw and driver loops, interleaved in short slices so that load from other processes
    on the machine falls on both alike; ``seconds`` of each in total."""
    raw, driver = RawLoop(port), DriverLoop(port, cal_path)
    try:
        for _ in range(max(1, round(seconds / slice_s))):
            raw.run_for(slice_s)
            driver.run_for(slice_s)
    finally:
        raw_stats, driver_stats = raw.close(), driver.close()
    return raw_stats, driver_stats


def bench_node(port: str, cal_path: str, seconds: float) -> dict:
    """The so101_arm node at 100 Hz with a joint_states subscriber beside it."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState

    from so101_driver import qos
    from so101_driver.arm.arm_node import ArmNode

    rate = 100.0
    received: list[tuple[float, float]] = []  # (receive time, header stamp)

    def on_state(msg: JointState):
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        received.append((time.monotonic(), stamp))

    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=2)
    arm = listener = None
    try:
        arm = ArmNode(parameter_overrides=[
            Parameter('port', value=port), Parameter('calibration_file', value=cal_path),
            Parameter('control_rate_hz', value=rate)])
        listener = Node('bench_joint_states_listener')
        listener.create_subscription(JointState, 'joint_states', on_state, qos.STREAM_SUB)
        executor.add_node(arm)
        executor.add_node(listener)
        threading.Thread(target=executor.spin, daemon=True).start()
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        if not received:
            raise RuntimeError('no joint_states from the arm node within 10 s')
        received.clear()
        t0 = time.monotonic()
        time.sleep(seconds)  # the node runs on its own; this is the measurement window
        window = time.monotonic() - t0
        msgs = list(received)
        stats = arm.tick_period_stats()
        periods = np.array(arm._tick_periods)[-int(window * rate):]  # the window only
        stamps = np.diff([s for _, s in msgs]) if len(msgs) > 1 else np.zeros(1)
        return {
            'control_rate_hz': rate, 'window_s': window,
            'achieved_rate_hz': stats['rate_hz'],
            'tick_period_p50_ms': stats['period_p50_ms'],
            'tick_period_p99_ms': stats['period_p99_ms'],
            'tick_jitter_std_ms': float(periods.std() * 1e3),
            'joint_states_received': len(msgs),
            'joint_states_rate_hz': len(msgs) / window,
            'stamp_interval_p50_ms': float(np.percentile(stamps, 50) * 1e3),
            'stamp_interval_p99_ms': float(np.percentile(stamps, 99) * 1e3),
            'bus_retries': arm.bus.counters.retries,
            'bus_read_failures': arm.bus.counters.read_failures,
        }
    finally:
        executor.shutdown(timeout_sec=2)
        if arm is not None:
            arm.destroy_node()
        if listener is not None:
            listener.destroy_node()
        rclpy.try_shutdown()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=8.0,
                        help='duration of each as-fast-as-possible loop (default 8)')
    parser.add_argument('--node-seconds', type=float, default=10.0,
                        help='duration of the arm node measurement (default 10)')
    args = parser.parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

    from so101_driver.arm.driver_demo import DEMO_CALIBRATION, DEMO_CALIBRATION_FILE, emulator_calibration
    from so101_driver.feetech.emulator import EmulatorProcess

    cal_path = str(DEMO_CALIBRATION_FILE)
    with EmulatorProcess(ids=IDS) as emulator:
        emulator.call('load_calibration', emulator_calibration(DEMO_CALIBRATION))
        port = emulator.port
        print(f'[bench_bus] emulator on {port}; raw SDK and driver loops, '
              f'{args.seconds:.0f} s each, interleaved', flush=True)
        raw, driver = bench_loops(port, cal_path, args.seconds)
        print(f'[bench_bus] so101_arm node at 100 Hz for {args.node_seconds:.0f} s',
              flush=True)
        node = bench_node(port, cal_path, args.node_seconds)
    wire = wire_bound()
    ratio = driver['rate_hz'] / raw['rate_hz']
    median_ratio = raw['period_p50_ms'] / driver['period_p50_ms']
    results = {
        'raw_sdk': raw, 'driver': driver, 'driver_over_raw': ratio,
        'driver_over_raw_median_period': median_ratio,
        'driver_over_raw_target': 0.9, 'node': node, 'wire_bound_1mbps': wire,
        'machine': {'cpus': os.cpu_count(), 'python': sys.version.split()[0]},
    }
    print()
    print(f'wire-time bound @1 Mbps: {wire["total_bytes"]} bytes/tick '
          f'({wire["request_bytes"]} request + 6 x {wire["reply_bytes_each"]} replies + '
          f'{wire["sync_write_bytes"]} sync-write) = {wire["tick_ms"]:.2f} ms/tick, '
          f'max {wire["max_rate_hz"]:.0f} Hz')
    for name, r in (('raw SDK loop', raw), ('driver loop', driver)):
        print(f'{name:14s}: {r["rate_hz"]:7.0f} Hz  p50 {r["period_p50_ms"]:.3f} ms  '
              f'p99 {r["period_p99_ms"]:.3f} ms  max {r["period_max_ms"]:.1f} ms  '
              f'failures {r["failures"]}  ({r["rate_hz"] / wire["max_rate_hz"]:.1f}x '
              'the wire bound)')
    print(f'driver / raw  : {ratio:.2f} by rate, {median_ratio:.2f} by median period '
          f'(target >= 0.90: {"met" if ratio >= 0.9 else "NOT met"})')
    print(f'arm node      : {node["achieved_rate_hz"]:.1f} Hz of {node["control_rate_hz"]:.0f}  '
          f'tick p50 {node["tick_period_p50_ms"]:.2f} ms  p99 {node["tick_period_p99_ms"]:.2f} '
          f'ms  jitter (std) {node["tick_jitter_std_ms"]:.2f} ms')
    print(f'joint_states  : {node["joint_states_received"]} received in '
          f'{node["window_s"]:.1f} s = {node["joint_states_rate_hz"]:.1f} Hz  stamp interval '
          f'p50 {node["stamp_interval_p50_ms"]:.2f} ms  p99 {node["stamp_interval_p99_ms"]:.2f} '
          f'ms  bus retries {node["bus_retries"]}')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {RESULTS.relative_to(ROOT)}')
    return results


if __name__ == '__main__':
    main()
