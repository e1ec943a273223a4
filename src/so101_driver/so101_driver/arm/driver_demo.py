"""``so101-driver-demo``: the arm node on the emulated bus, following a scripted trajectory.

Starts the STS3215 bus emulator in a child process, the ``so101_arm`` node on its port (the
real driver and the real ``scservo_sdk``), and a small commander that sends three chunks:
a reach, a second chunk that replaces the first half-way (the splice must not stop the arm),
and a gripper close/open. It prints live ``/joint_states`` beside the commanded setpoint,
then the tracking error, the measured loop rate and the node's diagnostics. It exits 1 if
the arm ends away from home, a chunk was rejected or the loop ran below 90 % of its rate.

Each node spins on its own single-threaded executor, as if in its own process: rclpy's
``MultiThreadedExecutor`` (up to 9.1 at least) busy-waits while a callback it handed to its
pool has not started, holding the GIL, and a control thread in the same process then runs
at a fraction of its rate (measured here: 6 to 30 Hz instead of 100).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from so101_driver import qos
from so101_driver.arm.arm_node import ArmNode
from so101_driver.feetech.emulator import EmulatorProcess
from so101_driver.joints import JOINT_NAMES, package_root
from so101_driver.ros_io import to_seconds, trajectory_msg

#: A plausible calibration of a real arm, as lerobot-calibrate writes it (the one file the
#: emulator, the demo, the benchmarks and the simulated policy use).
DEMO_CALIBRATION_FILE = package_root() / 'config' / 'calibration' / 'so101_demo.json'
DEMO_CALIBRATION = json.loads(DEMO_CALIBRATION_FILE.read_text())


def emulator_calibration(calibration: dict) -> dict[int, tuple[int, int, int]]:
    """Emulator preload: servo id -> (homing_offset, range_min, range_max)."""
    return {c['id']: (c['homing_offset'], c['range_min'], c['range_max'])
            for c in calibration.values()}


class Commander(Node):
    """Sends the scripted chunks and records what the arm did."""

    def __init__(self):
        super().__init__('so101_demo_commander')
        self.pub = self.create_publisher(JointTrajectory, 'joint_trajectory', qos.COMMAND)
        self.create_subscription(JointState, 'joint_states', self._on_state, qos.STREAM_SUB)
        self.create_subscription(DiagnosticArray, 'diagnostics', self._on_diag, qos.STREAM_SUB)
        self.lock = threading.Lock()
        self.states: list[tuple[float, np.ndarray]] = []
        self.diagnostics: DiagnosticArray | None = None

    def _on_state(self, msg: JointState):
        with self.lock:
            self.states.append((to_seconds(msg.header.stamp), np.array(msg.position)))

    def _on_diag(self, msg: DiagnosticArray):
        self.diagnostics = msg

    def latest(self) -> np.ndarray | None:
        with self.lock:
            return self.states[-1][1] if self.states else None

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9


def chunk(start: np.ndarray, goal: np.ndarray, duration: float, fps: float = 30.0):
    """Positions and times of a smooth (cosine) move from start to goal."""
    n = max(2, int(duration * fps))
    s = (1 - np.cos(np.linspace(0, np.pi, n + 1)[1:])) / 2
    return start + s[:, None] * (goal - start), np.arange(1, n + 1) / fps


def run(duration_scale: float = 1.0, print_rate_hz: float = 4.0) -> dict:
    """Run the demo; return its figures (also used by a test)."""
    workdir = Path(tempfile.mkdtemp(prefix='so101_demo_'))
    cal_path = workdir / 'calibration.json'
    cal_path.write_text(json.dumps(DEMO_CALIBRATION, indent=4))
    emulator = EmulatorProcess(ids=tuple(range(1, 7)))
    port = emulator.start()
    emulator.call('load_calibration', emulator_calibration(DEMO_CALIBRATION))
    print(f'[demo] STS3215 bus emulator on {port}')
    rclpy.init()
    arm = commander = None
    spinning: list[tuple[SingleThreadedExecutor, threading.Thread]] = []
    try:
        arm = ArmNode(parameter_overrides=[
            Parameter('port', value=port),
            Parameter('calibration_file', value=str(cal_path)),
        ])
        commander = Commander()
        spinning = [spin_alone(arm), spin_alone(commander)]
        deadline = time.monotonic() + 10
        while commander.latest() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        home = commander.latest()
        if home is None:
            raise RuntimeError('no /joint_states from the arm node within 10 s')

        reach = home + np.radians([30, -20, 25, 15, 40, 0])
        further = home + np.radians([-25, -35, 40, 25, -30, 0])
        gripper_open = home.copy()
        gripper_open[5] = 1.2
        script = [  # (delay before sending, goal, duration, label)
            (0.0, reach, 3.0, 'reach'),
            (1.5, further, 3.0, 'replace mid-way'),
            (3.5, gripper_open, 1.5, 'open gripper'),
            (2.0, home, 3.0, 'return home'),
        ]
        names = '  '.join(f'{n[:11]:>11}' for n in JOINT_NAMES)
        print(f'[demo] live /joint_states (deg), measured vs commanded\n        t  {names}')
        t0 = time.monotonic()
        sent_at = []
        setpoint = arm.controller.executor.setpoint
        for delay, goal, duration, label in script:
            end = time.monotonic() + delay * duration_scale
            while time.monotonic() < end:
                _print_live(commander, setpoint, t0)
                time.sleep(1.0 / print_rate_hz)
            start = setpoint(commander.now())
            pos, times = chunk(start, goal, duration * duration_scale)
            commander.pub.publish(trajectory_msg(pos, times, None))
            sent_at.append(time.monotonic())
            print(f'[demo] sent chunk "{label}" ({len(times)} points)')
        end = time.monotonic() + 3.5 * duration_scale
        while time.monotonic() < end:
            _print_live(commander, setpoint, t0)
            time.sleep(1.0 / print_rate_hz)
        final = commander.latest()
        stats = arm.tick_period_stats()
        rate = arm.get_parameter('control_rate_hz').value
        figures = {
            'control_rate_hz': rate,
            'final_error_deg': float(np.max(np.abs(np.degrees(final - home)))),
            'joint_states_received': len(commander.states),
            'loop_rate_hz': stats['rate_hz'],
            'period_p99_ms': stats['period_p99_ms'],
            'accepted': dict(arm.controller.counters.accepted),
            'rejected': dict(arm.controller.counters.rejected),
            'period_p50_ms': stats['period_p50_ms'],
            'overruns': stats['overruns'],
            'bus_retries': arm.bus.counters.retries,
            'bus_read_failures': arm.bus.counters.read_failures,
        }
        print('[demo] done: final error vs home {final_error_deg:.2f} deg, loop '
              '{loop_rate_hz:.1f} Hz of {control_rate_hz:.0f} (tick period p50 '
              '{period_p50_ms:.2f} ms, p99 {period_p99_ms:.2f} ms, {overruns} overruns), '
              'chunks accepted {accepted}, rejected {rejected}, bus retries '
              '{bus_retries}'.format(**figures))
        if commander.diagnostics is not None:
            for status in commander.diagnostics.status:
                print(f'[demo] diagnostics {status.name}: level {status.level[0]} '
                      f'"{status.message}"')
        return figures
    finally:
        for executor, thread in spinning:
            executor.shutdown(timeout_sec=2)
            thread.join(timeout=5)  # a thread inside the executor at exit aborts the process
        if arm is not None:
            arm.destroy_node()
        if commander is not None:
            commander.destroy_node()
        rclpy.try_shutdown()
        emulator.stop()


def spin_alone(node: Node) -> tuple[SingleThreadedExecutor, threading.Thread]:
    """Spin ``node`` on its own single-threaded executor in a daemon thread."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, name=f'spin-{node.get_name()}',
                              daemon=True)
    thread.start()
    return executor, thread


def passed(figures: dict) -> bool:
    """The demo's verdict: home reached, nothing rejected, the loop at >= 90 % of its rate
    (below that the node's diagnostics say WARN)."""
    return (figures['final_error_deg'] < 2.0 and not figures['rejected']
            and figures['loop_rate_hz'] >= 0.9 * figures['control_rate_hz'])


def _print_live(commander: Commander, setpoint, t0: float) -> None:
    measured = commander.latest()
    target = setpoint(commander.now())
    if measured is None or target is None:
        return
    cells = '  '.join(f'{m:+5.1f}/{c:+5.1f}' for m, c in zip(np.degrees(measured),
                                                          np.degrees(target)))
    print(f'  {time.monotonic() - t0:6.2f}  {cells}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--speed', type=float, default=1.0,
                        help='time scale of the script (2 = twice as slow)')
    args = parser.parse_args(argv)
    figures = run(duration_scale=args.speed)
    ok = passed(figures)
    if not ok:
        print('[demo] FAILED: the arm must end within 2 deg of home with no chunk rejected '
              'and the loop at >= 90 % of control_rate_hz', file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
