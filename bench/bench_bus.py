"""Benchmark: servo-bus loop rates on the STS3215 emulator (real ``scservo_sdk``).

One emulator child process serves the measurements in a row:

1. raw SDK loop: ``GroupSyncRead`` of Present_Position/Velocity/Load of 6 servos plus a
   ``GroupSyncWrite`` of 6 goals, as fast as possible (interleaved with (2) in 0.25 s
   slices, so the load of other processes falls on both alike);
2. driver loop: ``FeetechBus.read_fast`` + ``write_goals`` with the calibration
   conversions the arm node does per tick (ticks -> rad, tick rate -> rad/s, load -> N.m,
   rad -> ticks), as fast as possible; reported as a ratio to (1) (target >= 0.9);
3. the ``so101_arm`` node at control_rate_hz = 100 for ``--node-seconds``, ``--trials``
   times in each of two configurations, alternating: in this process beside a
   ``joint_states`` listener (each node on its own single-threaded executor, as the driver
   demo runs them), and as a separate process (``so101_arm`` with
   ``config/so101_arm_emulated.yaml``, as ``so101 up hardware:=emulated`` starts it). The
   node measures its own loop (``LoopHealth``: achieved rate, tick period p50/p99/max,
   overruns, retries); the separate process reports it on ``/diagnostics``. The figures
   are the WORST trial of each configuration (lowest rate, highest p99), target: rate
   >= 99 % of 100 Hz and p99 < 12 ms in every trial.

Beside them: the wire-time bound of one tick at 1 Mbps (sync-read request + 6 replies +
sync-write, 10 bits per byte), i.e. the rate a real bus could not exceed. The emulator
answers without wire time, so (1) and (2) may exceed it; on hardware they cannot.

Load and option switches (for the README's table of real-time options): ``--burst N``
runs N busy processes during the node trials, ``--hog`` a pure-Python busy thread and
``--garbage`` a thread making cyclic garbage in this process (in-process trials);
``--realtime-priority``, ``--gil-switch-interval-ms`` and ``--no-gc-in-idle`` set the arm
node's parameters of those names; ``--emulator-priority`` puts the emulator at a SCHED_FIFO
priority (servos answer whatever the host's load, the emulator only if it is scheduled);
``--only in_process|separate_process`` runs one configuration.

Prints the figures and writes bench/results/bench_bus.json.

    .venv/bin/python bench/bench_bus.py [--trials 5] [--node-seconds 10] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results' / 'bench_bus.json'
EMULATED_CONFIG = ROOT / 'config' / 'so101_arm_emulated.yaml'
IDS = (1, 2, 3, 4, 5, 6)
BAUD = 1_000_000
RATE = 100.0
TARGET_RATE_FRACTION = 0.99
TARGET_P99_MS = 12.0


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


def _burn(stop) -> None:
    """A CPU burst: spin until told to stop."""
    x = 0
    while not stop.is_set():
        x += 1


def _make_garbage(stop) -> None:
    """Cyclic garbage at a steady pace, as Python-side message handling makes it (about
    400 k objects/s): the collector has to run often, wherever the threshold is crossed."""
    while not stop.is_set():
        for _ in range(2000):
            a = {'self': None, 'data': [1, 2, 3]}
            a['self'] = a
        time.sleep(0.005)


class Load:
    """Optional load during a node trial: busy processes, a busy Python thread and/or a
    garbage-making thread in this process."""

    def __init__(self, processes: int = 0, thread: bool = False, garbage: bool = False):
        self.processes, self.thread, self.garbage = processes, thread, garbage
        self._stop = self._procs = self._hog = self._garbage = None

    def __enter__(self) -> Load:
        ctx = multiprocessing.get_context('spawn')
        self._stop = ctx.Event()
        self._procs = [ctx.Process(target=_burn, args=(self._stop,), daemon=True)
                       for _ in range(self.processes)]
        for proc in self._procs:
            proc.start()
        if self.thread:
            self._hog = threading.Thread(target=_burn, args=(self._stop,), daemon=True)
            self._hog.start()
        if self.garbage:
            self._garbage = threading.Thread(target=_make_garbage, args=(self._stop,),
                                             daemon=True)
            self._garbage.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for proc in self._procs:
            proc.join(timeout=5)
        for thread in (self._hog, self._garbage):
            if thread is not None:
                thread.join(timeout=5)


def node_parameters(args) -> dict:
    """The arm node's real-time options as the command line sets them."""
    return {'realtime_priority': args.realtime_priority,
            'gil_switch_interval_ms': args.gil_switch_interval_ms,
            'gc_in_idle': not args.no_gc_in_idle}


def _spin_alone(node):
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    return executor, thread


class Listener:
    """joint_states and so101_arm diagnostics, received in this process."""

    def __init__(self, context):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from sensor_msgs.msg import JointState

        from so101_driver import qos

        self.node = Node('bench_bus_listener', context=context)
        self.lock = threading.Lock()
        self.stamps: list[float] = []
        self.diag: list[tuple[float, dict]] = []  # (receive time, bus status values)
        self.node.create_subscription(JointState, 'joint_states', self._on_state,
                                      qos.STREAM_SUB)
        self.node.create_subscription(DiagnosticArray, 'diagnostics', self._on_diag,
                                      qos.STREAM_SUB)
        self.spinning = _spin_alone(self.node)

    def _on_state(self, msg) -> None:
        with self.lock:
            self.stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name == 'so101_arm: bus':
                values = {kv.key: kv.value for kv in status.values}
                values['level'] = status.level[0]
                values['message'] = status.message
                with self.lock:
                    self.diag.append((time.monotonic(), values))

    def wait_for_states(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.stamps:
                    return
            time.sleep(0.01)
        raise RuntimeError(f'no joint_states from the arm node within {timeout_s:.0f} s')

    def clear(self) -> None:
        with self.lock:
            self.stamps.clear()
            self.diag.clear()

    def stamp_stats(self) -> dict:
        with self.lock:
            stamps = np.diff(self.stamps) if len(self.stamps) > 1 else np.zeros(1)
            n = len(self.stamps)
        return {'joint_states_received': n,
                'stamp_interval_p50_ms': float(np.percentile(stamps, 50) * 1e3),
                'stamp_interval_p99_ms': float(np.percentile(stamps, 99) * 1e3)}

    def close(self) -> None:
        executor, thread = self.spinning
        executor.shutdown(timeout_sec=2)
        thread.join(timeout=5)
        self.node.destroy_node()


def trial_in_process(port: str, cal_path: str, seconds: float, args) -> dict:
    """The so101_arm node at 100 Hz in this process, a joint_states listener beside it."""
    import rclpy
    from rclpy.parameter import Parameter

    from so101_driver.arm.arm_node import ArmNode

    context = rclpy.Context()
    rclpy.init(context=context)
    arm = listener = spinning = None
    try:
        arm = ArmNode(context=context, parameter_overrides=[
            Parameter('port', value=port), Parameter('calibration_file', value=cal_path),
            Parameter('control_rate_hz', value=RATE),
            *[Parameter(k, value=v) for k, v in node_parameters(args).items()]])
        spinning = _spin_alone(arm)
        listener = Listener(context)
        listener.wait_for_states(10)
        time.sleep(1.0)  # settle: discovery, first diagnostics
        listener.clear()
        with Load(args.burst, args.hog, args.garbage):
            t0 = time.monotonic()
            time.sleep(seconds)  # the node runs on its own; this is the measurement window
            stats = arm.health.window(time.monotonic() - t0)
        return {**_loop_figures(stats), **listener.stamp_stats(),
                'bus_retries': arm.bus.counters.retries,
                'bus_read_failures': arm.bus.counters.read_failures,
                'late_replies': arm.bus.counters.late_replies}
    finally:
        if spinning is not None:
            spinning[0].shutdown(timeout_sec=2)
            spinning[1].join(timeout=5)
        if listener is not None:
            listener.close()
        if arm is not None:
            arm.destroy_node()
        rclpy.try_shutdown(context=context)


def trial_separate_process(port: str, cal_path: str, seconds: float, args) -> dict:
    """``so101_arm`` in its own process with the emulated configuration; its own figures
    come from /diagnostics (window = the trial), its joint_states stamps beside them."""
    import rclpy

    params = {'port': port, 'calibration_file': cal_path, 'control_rate_hz': RATE,
              'health_window_s': seconds, 'diagnostics_rate_hz': 2.0,
              **node_parameters(args)}
    command = [sys.executable, '-m', 'so101_driver.arm.arm_node', '--ros-args',
               '--params-file', str(EMULATED_CONFIG)]
    for key, value in params.items():
        command += ['-p', f'{key}:={str(value).lower() if isinstance(value, bool) else value}']
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        listener = Listener(context)
        listener.wait_for_states(30)
        time.sleep(1.0)
        listener.clear()
        with Load(args.burst, False):  # on until the figures are in: the window is loaded
            t0 = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
            deadline = end + 3.0
            while time.monotonic() < deadline:  # the first diagnostics whose window ends now
                with listener.lock:
                    after = [v for t, v in listener.diag if t >= end]
                if after:
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError('no /diagnostics from the arm process after the trial')
        d = after[0]
        stats = {'rate_hz': float(d['rate_hz']), 'period_p50_ms': float(d['period_p50_ms']),
                 'period_p99_ms': float(d['period_p99_ms']),
                 'period_max_ms': float(d['period_max_ms']), 'overruns': int(d['overruns']),
                 'ticks': round(float(d['rate_hz']) * float(d['window_s'])),
                 'window_s': float(d['window_s'])}
        return {**_loop_figures(stats), **listener.stamp_stats(),
                'bus_retries': int(d['retries']), 'bus_read_failures': int(d['read_failures']),
                'late_replies': int(d['late_replies']), 'diagnostics_level': d['level'],
                'diagnostics_message': d['message'], 'realtime': d['realtime'],
                'measured_s': end - t0}
    finally:
        if listener is not None:
            listener.close()
        rclpy.try_shutdown(context=context)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _loop_figures(stats: dict) -> dict:
    return {'achieved_rate_hz': stats['rate_hz'], 'tick_period_p50_ms': stats['period_p50_ms'],
            'tick_period_p99_ms': stats['period_p99_ms'],
            'tick_period_max_ms': stats['period_max_ms'], 'overruns': stats['overruns'],
            'ticks': stats['ticks'], 'window_s': stats['window_s']}


def worst(trials: list[dict]) -> dict:
    """The worst of several trials: lowest rate, highest p99 and max, most retries."""
    return {'achieved_rate_hz': min(t['achieved_rate_hz'] for t in trials),
            'tick_period_p50_ms': max(t['tick_period_p50_ms'] for t in trials),
            'tick_period_p99_ms': max(t['tick_period_p99_ms'] for t in trials),
            'tick_period_max_ms': max(t['tick_period_max_ms'] for t in trials),
            'overruns': max(t['overruns'] for t in trials),
            'bus_retries': max(t['bus_retries'] for t in trials),
            'trials': len(trials)}


def meets_target(w: dict) -> bool:
    return (w['achieved_rate_hz'] >= TARGET_RATE_FRACTION * RATE
            and w['tick_period_p99_ms'] < TARGET_P99_MS)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=8.0,
                        help='duration of each as-fast-as-possible loop (default 8)')
    parser.add_argument('--node-seconds', type=float, default=10.0,
                        help='duration of each arm node trial (default 10)')
    parser.add_argument('--trials', type=int, default=5,
                        help='arm node trials per configuration; the worst is reported '
                             '(default 5)')
    parser.add_argument('--burst', type=int, default=0, metavar='N',
                        help='N busy processes during the node trials (default 0)')
    parser.add_argument('--hog', action='store_true',
                        help='a pure-Python busy thread in this process (in-process trials)')
    parser.add_argument('--garbage', action='store_true',
                        help='a thread making cyclic garbage in this process (in-process '
                             'trials)')
    parser.add_argument('--realtime-priority', type=int, default=0, metavar='P',
                        help='arm node realtime_priority (SCHED_FIFO; default 0 = off)')
    parser.add_argument('--gil-switch-interval-ms', type=float, default=1.0, metavar='MS',
                        help='arm node gil_switch_interval_ms (default 1; 0 = leave 5 ms)')
    parser.add_argument('--no-gc-in-idle', action='store_true',
                        help='arm node gc_in_idle false (automatic garbage collection)')
    parser.add_argument('--emulator-priority', type=int, default=0, metavar='P',
                        help='SCHED_FIFO priority for the emulator process, so that under '
                             '--burst it answers like hardware, whatever the host load '
                             '(default 0 = normal scheduling)')
    parser.add_argument('--domain-id', type=int, default=0, metavar='ID',
                        help='ROS_DOMAIN_ID of the measurement (default: a random one in '
                             '1..100, so nothing else on the host talks to the arm)')
    parser.add_argument('--skip-loops', action='store_true',
                        help='only the node trials (no raw/driver loops)')
    parser.add_argument('--only', choices=('in_process', 'separate_process'),
                        help='run the node trials in one configuration only')
    args = parser.parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    # a DDS domain of its own (inherited by the separate arm process): a demo or test on
    # this host publishing joint_trajectory must not reach the arm under measurement
    os.environ['ROS_DOMAIN_ID'] = str(args.domain_id or random.randint(1, 100))

    from so101_driver.arm.driver_demo import (
        DEMO_CALIBRATION,
        DEMO_CALIBRATION_FILE,
        emulator_calibration,
    )
    from so101_driver.feetech.emulator import EmulatorProcess

    cal_path = str(DEMO_CALIBRATION_FILE)
    load_at_start = os.getloadavg()
    print(f'[bench_bus] load average {load_at_start[0]:.2f} {load_at_start[1]:.2f} '
          f'{load_at_start[2]:.2f}, ROS_DOMAIN_ID {os.environ["ROS_DOMAIN_ID"]}', flush=True)
    raw = driver = None
    trials: dict[str, list[dict]] = {'in_process': [], 'separate_process': []}
    with EmulatorProcess(ids=IDS) as emulator:
        emulator.call('load_calibration', emulator_calibration(DEMO_CALIBRATION))
        port = emulator.port
        if args.emulator_priority:
            child, = (c for c in multiprocessing.active_children()
                      if c.name == 'so101-servo-emulator')
            os.sched_setscheduler(child.pid, os.SCHED_FIFO,
                                  os.sched_param(args.emulator_priority))
        if not args.skip_loops:
            print(f'[bench_bus] emulator on {port}; raw SDK and driver loops, '
                  f'{args.seconds:.0f} s each, interleaved', flush=True)
            raw, driver = bench_loops(port, cal_path, args.seconds)
        load = (f', load: {args.burst} busy processes' if args.burst else '') + \
               (', a busy Python thread in-process' if args.hog else '') + \
               (', a garbage-making thread in-process' if args.garbage else '')
        print(f'[bench_bus] so101_arm node at {RATE:.0f} Hz: {args.trials} trials of '
              f'{args.node_seconds:.0f} s in-process and as a separate process, '
              f'options {node_parameters(args)}{load}', flush=True)
        configurations = [(name, trial) for name, trial in (
            ('in_process', trial_in_process), ('separate_process', trial_separate_process))
            if args.only in (None, name)]
        for n in range(args.trials):
            for name, trial in configurations:
                t = trial(port, cal_path, args.node_seconds, args)
                trials[name].append(t)
                print(f'  trial {n + 1} {name:16s}: {t["achieved_rate_hz"]:6.2f} Hz  '
                      f'p50 {t["tick_period_p50_ms"]:.2f} ms  p99 {t["tick_period_p99_ms"]:.2f} '
                      f'ms  max {t["tick_period_max_ms"]:.1f} ms  overruns {t["overruns"]}  '
                      f'retries {t["bus_retries"]}', flush=True)
    wire = wire_bound()
    results = {'node_trials': trials,
               'node_worst': {k: worst(v) for k, v in trials.items() if v},
               'node_target': {'rate_hz_min': TARGET_RATE_FRACTION * RATE,
                               'period_p99_ms_max': TARGET_P99_MS},
               'options': {**node_parameters(args), 'burst_processes': args.burst,
                           'emulator_priority': args.emulator_priority,
                           'python_hog_thread': args.hog, 'garbage_thread': args.garbage},
               'wire_bound_1mbps': wire,
               'machine': {'cpus': os.cpu_count(), 'python': sys.version.split()[0],
                           'loadavg_at_start': load_at_start,
                           'loadavg_at_end': os.getloadavg()},
               'ros_domain_id': int(os.environ['ROS_DOMAIN_ID'])}
    print()
    print(f'wire-time bound @1 Mbps: {wire["total_bytes"]} bytes/tick '
          f'({wire["request_bytes"]} request + 6 x {wire["reply_bytes_each"]} replies + '
          f'{wire["sync_write_bytes"]} sync-write) = {wire["tick_ms"]:.2f} ms/tick, '
          f'max {wire["max_rate_hz"]:.0f} Hz')
    if raw is not None:
        ratio = driver['rate_hz'] / raw['rate_hz']
        median_ratio = raw['period_p50_ms'] / driver['period_p50_ms']
        results.update({'raw_sdk': raw, 'driver': driver, 'driver_over_raw': ratio,
                        'driver_over_raw_median_period': median_ratio,
                        'driver_over_raw_target': 0.9})
        for name, r in (('raw SDK loop', raw), ('driver loop', driver)):
            print(f'{name:14s}: {r["rate_hz"]:7.0f} Hz  p50 {r["period_p50_ms"]:.3f} ms  '
                  f'p99 {r["period_p99_ms"]:.3f} ms  max {r["period_max_ms"]:.1f} ms  '
                  f'failures {r["failures"]}  ({r["rate_hz"] / wire["max_rate_hz"]:.1f}x '
                  'the wire bound)')
        print(f'driver / raw  : {ratio:.2f} by rate, {median_ratio:.2f} by median period '
              f'(target >= 0.90: {"met" if ratio >= 0.9 else "NOT met"})')
    for name, w in results['node_worst'].items():
        print(f'arm node, {name.replace("_", " ")}, worst of {w["trials"]}: '
              f'{w["achieved_rate_hz"]:.2f} Hz of {RATE:.0f}  tick p99 '
              f'{w["tick_period_p99_ms"]:.2f} ms  max {w["tick_period_max_ms"]:.1f} ms  '
              f'overruns {w["overruns"]}  retries {w["bus_retries"]}  (target >= '
              f'{TARGET_RATE_FRACTION * RATE:.0f} Hz and p99 < {TARGET_P99_MS:.0f} ms: '
              f'{"met" if meets_target(w) else "NOT met"})')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {RESULTS.relative_to(ROOT)}')
    return results


if __name__ == '__main__':
    main()
