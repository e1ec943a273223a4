"""Soak: the so101_arm node on the emulated bus for two minutes with faults injected.

The node runs at 100 Hz with its shipped defaults (20 ms reply timeout) on its own
executor beside a joint_states listener, as in the driver demo. A corrupt reply now and
then (0.5 % of replies) runs all along; fault windows add delayed replies (within the
timeout, late, and lost), a servo that stops answering and CPU bursts of busy processes.
Outside the windows the loop must keep >= 95 % of its rate, one second after each window
it must be back at that rate, and its diagnostics must flag the degraded loop within two
seconds of a window's start. The tick record is the node's own (``ArmNode.health``).
Stretches in which work outside this test took more than one core (a shared machine)
are reported but not judged; a run in which that held throughout is skipped.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from so101_driver import qos

from so101_driver.arm.arm_node import ArmNode
from so101_driver.arm.driver_demo import DEMO_CALIBRATION, emulator_calibration
from so101_driver.feetech.emulator import EmulatorProcess
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

RATE = 100.0
KEEP = 0.95  # of RATE, outside the fault windows and one second after each
RECOVERY_S = 1.0
CORRUPT_FRACTION = 0.005


def _burn(stop) -> None:
    while not stop.is_set():
        pass


class Burst:
    """Busy processes beside the node (a policy or a camera pipeline hogging the CPUs)."""

    def __init__(self, processes: int):
        ctx = multiprocessing.get_context('spawn')
        self.stop = ctx.Event()
        self.procs = [ctx.Process(target=_burn, args=(self.stop,), daemon=True)
                      for _ in range(processes)]

    def start(self) -> None:
        for proc in self.procs:
            proc.start()

    def end(self) -> None:
        self.stop.set()
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


def delayed(ms):
    return (lambda emu: emu.call('set_reply_delay_ms', ms),
            lambda emu: emu.call('set_reply_delay_ms', 0))


def silent(ids):
    return (lambda emu: emu.call('set_silent', ids), lambda emu: emu.call('set_silent', []))


#: (what, start after the run began (s), duration (s), degrades the loop, (apply, clear)).
#: A burst needs its processes built before it starts, so it is set up apart.
FAULTS = [
    ('replies 30 ms late (after the 20 ms timeout: late, used)', 12.0, 3.0, True,
     delayed(30)),
    ('CPU burst, 3 busy processes', 30.0, 6.0, False, None),
    ('servo 3 silent (lost replies)', 50.0, 1.5, True, silent([3])),
    ('replies 6 ms late (within the timeout)', 66.0, 4.0, True, delayed(6)),
    ('replies 60 ms late (after twice the timeout: lost, retried)', 84.0, 2.0, True,
     delayed(60)),
    ('CPU burst, 2 busy processes', 100.0, 5.0, False, None),
]
RUN_S = 118.0


@pytest.fixture
def emulator():
    emu = EmulatorProcess(corrupt_fraction=CORRUPT_FRACTION, seed=17)
    emu.start()
    emu.call('load_calibration', emulator_calibration(DEMO_CALIBRATION))
    try:
        yield emu
    finally:
        emu.stop()


def rate_between(starts: np.ndarray, t0: float, t1: float) -> float:
    return float(np.count_nonzero((starts >= t0) & (starts < t1)) / (t1 - t0))


class HostLoad:
    """CPU the rest of the host used beside this test (its process and the emulator's),
    sampled: a stretch in which other work took more than ``FOREIGN_LIMIT`` cores was a
    fault nobody injected, and the loop is not judged there."""

    def __init__(self, pids):
        self.pids = pids
        self.tick = os.sysconf('SC_CLK_TCK')
        self.samples: list[tuple[float, float]] = []  # (monotonic, foreign CPU seconds)
        self.last = 0.0

    def sample(self, every_s: float = 0.25) -> None:
        now = time.monotonic()
        if now - self.last < every_s:
            return
        self.last = now
        with open('/proc/stat') as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        ours = 0
        for pid in self.pids:
            try:
                with open(f'/proc/{pid}/stat') as f:
                    stat = f.read().rsplit(')', 1)[1].split()
                ours += int(stat[11]) + int(stat[12])  # utime + stime, all threads
            except OSError:
                pass
        self.samples.append((now, (busy - ours) / self.tick))

    def cores(self, a: float, b: float) -> float:
        """Mean foreign CPU use between ``a`` and ``b`` (nearest samples), in cores."""
        times = np.array([t for t, _ in self.samples])
        cpu = np.array([c for _, c in self.samples])
        i, j = np.searchsorted(times, a), np.searchsorted(times, b, side='right') - 1
        if j <= i:
            return 0.0
        return float((cpu[j] - cpu[i]) / (times[j] - times[i]))


FOREIGN_LIMIT = 1.0  # cores (of 2) of other work beside the test that void a stretch


def test_the_loop_keeps_its_rate_outside_fault_windows_and_recovers_after_each(
        spinner, emulator, tmp_path):
    cal_file = tmp_path / 'calibration.json'
    cal_file.write_text(json.dumps(DEMO_CALIBRATION))
    node = ArmNode(context=spinner.executor.context, parameter_overrides=[
        Parameter('port', value=emulator.port),
        Parameter('calibration_file', value=str(cal_file)),
        Parameter('control_rate_hz', value=RATE)])
    spinner.add(node)
    listener = rclpy.create_node('soak_listener', context=spinner.executor.context)
    received = []
    listener.create_subscription(JointState, 'joint_states', lambda m: received.append(1),
                                 qos.STREAM_SUB)
    spinner.add(listener)
    emulator_pids = [c.pid for c in multiprocessing.active_children()
                     if c.name == 'so101-servo-emulator']
    host = HostLoad([os.getpid(), *emulator_pids])
    starts: list[float] = []

    def collect():  # the node keeps two minutes of tick starts; merge what is new
        last = starts[-1] if starts else 0.0
        starts.extend(t for t in node.health.tick_starts().tolist() if t > last)

    def wait_until(t: float, during=None):
        while time.monotonic() < t:
            host.sample()
            if during is not None:
                during()
            time.sleep(0.05)
        collect()

    try:
        wait_for(lambda: len(node.health.tick_starts()) > 50,
                 message='the control loop running')
        t0 = time.monotonic()
        windows, flagged = [], {}
        for what, at, duration, degrades, actions in FAULTS:
            burst = Burst(int(what.split(',')[1].split()[0])) if actions is None else None
            wait_until(t0 + at)
            begin = time.monotonic()
            if burst is not None:
                burst.start()
            else:
                actions[0](emulator)
            levels = [DiagnosticStatus.OK]

            def watch():  # what diagnostics say in the first two seconds of the window
                if degrades and time.monotonic() < begin + 2.0:
                    levels.append(node.diagnostics().status[0].level)
            wait_until(begin + duration, watch)
            if burst is not None:
                burst.end()
            else:
                actions[1](emulator)
            windows.append((what, begin, time.monotonic(), degrades))
            flagged[what] = max(levels)
        wait_until(t0 + RUN_S)
    finally:
        node.destroy_node()
    assert len(received) > 0.8 * len(starts), \
        f'joint_states reached a node beside the arm only {len(received)} times'

    ticks = np.array(starts)
    report, failures, judged = [], [], 0

    def judge(a: float, b: float, what: str) -> float | None:
        """The rate between ``a`` and ``b``, or None where other work overloaded the host."""
        nonlocal judged
        rate, foreign = rate_between(ticks, a, b), host.cores(a, b)
        report.append(f'{what} ({a - t0:5.1f}..{b - t0:5.1f} s): {rate:6.1f} Hz, other '
                      f'work on the host {foreign:.2f} cores')
        if foreign > FOREIGN_LIMIT:
            report[-1] += ': not judged'
            return None
        judged += 1
        return rate

    edge = t0
    for what, begin, end, _ in windows:
        rate = judge(edge, begin, 'outside the fault windows')
        if rate is not None and rate < KEEP * RATE:
            failures.append(f'{rate:.1f} Hz between {edge - t0:.1f} and {begin - t0:.1f} s '
                            f'(outside the fault windows; >= {KEEP * RATE:.0f} expected)')
        edge = end + RECOVERY_S
    rate = judge(edge, ticks[-1], 'outside the fault windows')
    if rate is not None and rate < KEEP * RATE:
        failures.append(f'{rate:.1f} Hz after the last fault window')
    for what, begin, end, degrades in windows:
        report.append(f'{what}: {rate_between(ticks, begin, end):6.1f} Hz inside, '
                      f'diagnostics level {flagged[what][0]} in its first 2 s')
        after = judge(end + RECOVERY_S, end + RECOVERY_S + 1.0, '  the second after the first')
        if after is not None and after < KEEP * RATE:
            failures.append(f'{what}: {after:.1f} Hz one second after the window ended')
        if degrades and rate_between(ticks, begin, end) < 0.9 * RATE \
                and flagged[what] == DiagnosticStatus.OK:
            failures.append(f'{what}: the loop ran below 90 % of its rate but diagnostics said '
                            'OK for the first two seconds')
    print('\n'.join(report))
    assert not failures, '\n'.join(failures + ['', *report])
    if not judged:
        pytest.skip('other work overloaded the host for the whole run:\n' + '\n'.join(report))
