"""``so101 demo``: the whole suite on a laptop — simulated cell, scripted expert, monitor,
recorder — for N episodes, then the evaluation table.

The nodes are the ones ``so101 up hardware:=sim policy:=expert record:=true`` starts, as
separate processes talking over DDS, from the same YAML. A simulated operator stands where a
person would: after a failed grasp or a drop, or when an episode makes no progress for
``--stall-s`` (sim time), it takes over
through ``teleop/override`` + ``teleop/joint_trajectory``, brings the arm back to its rest
pose and hands back, which the monitor counts as an intervention. At the end the monitor
writes the run directory (report.md/html, plots, events, summary), the recorder closes the
bag, and the report's tables are printed. Node logs go to ``<run>/logs/``.
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

from so101_driver.bringup import plan as bringup
from so101_driver.bringup.processes import ProcessGroup, confine_discovery, start_nodes
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark, PayloadError, SimTruth
from so101_driver.joints import JOINT_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='so101 demo', description=__doc__.splitlines()[0])
    parser.add_argument('--episodes', type=int, default=6, help='episodes to run (default 6)')
    parser.add_argument('--grasp-noise-m', type=float, default=0.012,
                        help='std of the expert\'s grasp-point error: more noise, more misses '
                        'and drops (default 0.012)')
    parser.add_argument('--seed', type=int, default=1, help='seed of cube placement and '
                        'expert noise (default 1)')
    parser.add_argument('--run-dir', type=Path, default=None,
                        help='where the report, bag and logs go (default runs/demo_<time>)')
    parser.add_argument('--stall-s', type=float, default=12.0,
                        help='sim seconds without the cube in the bowl after which the '
                        'simulated operator takes over (0: never; default 12)')
    parser.add_argument('--camera-rate-hz', type=float, default=2.0,
                        help='sim camera rate; CPU rendering is slow (default 2)')
    parser.add_argument('--timeout-s', type=float, default=540.0,
                        help='wall-clock limit of the whole run (default 540)')
    parser.add_argument('--view', nargs='?', const='auto', default=None,
                        choices=('auto', 'spawn', 'web', 'file'),
                        help='watch it in rerun (so101_view): auto (a viewer window, or the web '
                        'viewer\'s URL without a display; the default of a bare --view), '
                        'spawn, web, or file (<run>/view.rrd, open later with rerun)')
    return parser


def view_overrides(mode: str, run_dir: Path) -> dict:
    """so101_view parameters for ``--view MODE``: every image (the demo's cameras are slow)
    and, for ``file``, no viewer but ``<run>/view.rrd``."""
    if mode == 'file':
        return {'viewer': 'none', 'save_path': str(run_dir / 'view.rrd'), 'image_rate_hz': 0.0}
    return {'viewer': mode, 'image_rate_hz': 0.0}


def print_view_line(log: Path, timeout_s: float = 10.0) -> None:
    """Echo where the view is (the web viewer's URL) from so101_view's log, whose other
    output stays in the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [line for line in (log.read_text(errors='replace').splitlines()
                                   if log.is_file() else []) if 'rerun' in line]
        if lines:
            print(f'[demo] {lines[0].split("] ", 1)[-1] if "] " in lines[0] else lines[0]}',
                  flush=True)
            return
        time.sleep(0.2)
    print(f'[demo] so101_view said nothing about its viewer yet; see {log}', flush=True)


class Operator:
    """The simulated operator and the progress printer, on one rclpy node (sim time).

    It takes over once per episode when the monitor reports a failed grasp or a drop, or
    when the episode makes no progress for ``stall_s``: override on, the arm back to its
    rest pose over 2 s, override off after 3 s.
    """

    def __init__(self, stall_s: float, rest: np.ndarray):
        import rclpy
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from so101_driver import qos

        self.node = rclpy.create_node('so101_demo_operator', parameter_overrides=[
            Parameter('use_sim_time', value=True)])
        self.stall_s = stall_s
        self.rest = rest
        self.lock = threading.Lock()
        self.ended: list[EpisodeMark] = []
        self.episode_start: float | None = None
        self.intervened_in_episode = False
        self.in_bowl = False
        self.failure_seen = False
        self.present: np.ndarray | None = None
        self.takeover_until: float | None = None
        self.interventions = 0
        self.pub_override = self.node.create_publisher(Bool, 'teleop/override', qos.LATCHED)
        self.pub_teleop = self.node.create_publisher(JointTrajectory, 'teleop/joint_trajectory',
                                                     qos.COMMAND)
        self.node.create_subscription(String, 'eval/episode', self._on_episode, qos.COMMAND)
        self.node.create_subscription(String, 'eval/events', self._on_event, qos.COMMAND)
        self.node.create_subscription(String, 'sim/truth', self._on_truth, qos.STREAM_SUB)
        self.node.create_subscription(JointState, 'joint_states', self._on_state,
                                      qos.STREAM_SUB)
        self.save_client = self.node.create_client(Trigger, 'eval/save_report')
        self.node.create_timer(0.1, self._supervise)
        self._bool, self._trigger = Bool, Trigger
        self.pub_override.publish(Bool(data=False))

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_episode(self, msg):
        try:
            mark = EpisodeMark.from_json(msg.data)
        except PayloadError:
            return
        with self.lock:
            if mark.event is EpisodeEvent.START:
                self.episode_start, self.intervened_in_episode = mark.stamp, False
                self.in_bowl = self.failure_seen = False
            else:
                self.ended.append(mark)
                outcome = 'success' if mark.success else 'failure'
                print(f'[demo] episode {len(self.ended)} ended: {outcome} ({mark.note}) '
                      f'at sim t={mark.stamp:.1f} s', flush=True)

    def _on_event(self, msg):
        try:
            event = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        kind = event.get('kind', '?')
        if kind in ('grasp_failed', 'drop'):
            with self.lock:
                self.failure_seen = True
        if kind in ('grasp_attempt', 'grasp_success', 'grasp_failed', 'drop', 'place',
                    'intervention_start', 'intervention_end'):
            print(f'[demo]   t={event.get("stamp", 0):7.2f}  {kind}', flush=True)

    def _on_truth(self, msg):
        try:
            truth = SimTruth.from_json(msg.data)
        except PayloadError:
            return
        with self.lock:
            self.in_bowl = truth.in_bowl

    def _on_state(self, msg):
        if list(msg.name) == list(JOINT_NAMES):
            self.present = np.array(msg.position)

    def _supervise(self):
        from so101_driver.ros_io import trajectory_msg

        now = self.now()
        with self.lock:
            if self.takeover_until is not None:
                if now >= self.takeover_until:
                    self.takeover_until = None
                    self.pub_override.publish(self._bool(data=False))
                    print('[demo]   operator hands back', flush=True)
                return
            stalled = (self.stall_s > 0 and self.episode_start is not None
                       and not self.in_bowl and now - self.episode_start > self.stall_s)
            if (not (stalled or self.failure_seen) or self.intervened_in_episode
                    or self.present is None):
                return
            reason = 'a failed grasp' if self.failure_seen else 'no progress'
            self.intervened_in_episode = True
            self.interventions += 1
            self.takeover_until = now + 3.0
        print(f'[demo]   {reason}: the simulated operator takes over', flush=True)
        self.pub_override.publish(self._bool(data=True))
        steps = np.linspace(0.0, 1.0, 21)[1:]
        positions = self.present + steps[:, None] * (self.rest - self.present)
        self.pub_teleop.publish(trajectory_msg(positions, steps * 2.0, None))

    def save_report(self, timeout: float = 30.0) -> str:
        if not self.save_client.wait_for_service(timeout_sec=timeout):
            return 'eval/save_report not available'
        future = self.save_client.call_async(self._trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        return future.result().message if future.done() else 'save_report timed out'


def cmd_demo(argv) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    opts = build_parser().parse_args(argv)
    if opts.episodes < 1:
        raise bringup.BringupError('--episodes must be at least 1')
    run_dir = (opts.run_dir or Path('runs') / time.strftime('demo_%Y%m%d_%H%M%S')).resolve()
    (run_dir / 'logs').mkdir(parents=True, exist_ok=True)
    args = bringup.parse_args({'hardware': 'sim', 'policy': 'expert', 'record': 'true',
                               'monitor': 'true', 'view': 'true' if opts.view else 'false'})
    extra = {
        'so101_sim': {'seed': opts.seed, 'camera_rate_hz': opts.camera_rate_hz},
        'so101_sim_expert': {'seed': opts.seed, 'max_episodes': opts.episodes,
                             'auto_reset': True, 'grasp_xy_noise_m': opts.grasp_noise_m},
        'eval_monitor': {'run_dir': str(run_dir / 'report'), 'title': 'so101 demo: '
                         f'scripted expert, {opts.episodes} simulated episodes'},
        'so101_recorder': {'output': str(run_dir / 'bag')},
        'so101_view': view_overrides(opts.view or 'auto', run_dir),
    }
    print(f'[demo] run directory {run_dir}; node logs in {run_dir / "logs"}', flush=True)
    group = ProcessGroup()
    confine_discovery(args.hardware)  # before this process joins the domain
    rclpy.init(args=[])
    operator = Operator(opts.stall_s, rest=np.zeros(len(JOINT_NAMES)))
    executor = SingleThreadedExecutor()
    executor.add_node(operator.node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    spinning.start()
    t0 = time.monotonic()
    ok = False
    try:
        with tempfile.TemporaryDirectory(prefix='so101_demo_') as tmp:
            logs = {}

            def popen_for(name):
                logs[name] = open(run_dir / 'logs' / f'{name}.log', 'w')  # noqa: SIM115
                return {'stdout': logs[name], 'stderr': logs[name]}

            specs = start_nodes(args, group, Path(tmp), extra_overrides=extra,
                                popen_for=popen_for)
            print(f'[demo] started {", ".join(s.name for s in specs)}; '
                  f'{opts.episodes} episodes', flush=True)
            if opts.view:
                print_view_line(run_dir / 'logs' / 'so101_view.log')
            while len(operator.ended) < opts.episodes:
                if group.exited():
                    name, code = group.exited()[0]
                    print(f'[demo] {name} exited with code {code}; see its log',
                          file=sys.stderr)
                    break
                if time.monotonic() - t0 > opts.timeout_s:
                    print(f'[demo] timed out after {opts.timeout_s:.0f} s with '
                          f'{len(operator.ended)} episodes', file=sys.stderr)
                    break
                time.sleep(0.2)
            else:
                ok = True
            print(f'[demo] {operator.save_report()}', flush=True)
    finally:
        group.stop()
        # join the spin thread before rclpy goes: a thread still inside the executor at
        # interpreter exit ends the process with std::terminate (SIGABRT)
        executor.shutdown(timeout_sec=2)
        spinning.join(timeout=5)
        operator.node.destroy_node()
        rclpy.try_shutdown()
    report = run_dir / 'report' / 'report.md'
    if report.is_file():
        print('\n' + report.read_text().split('\n## Events')[0])
    print(f'[demo] {len(operator.ended)} episodes in {time.monotonic() - t0:.0f} s; report '
          f'{run_dir / "report" / "report.html"}; bag {run_dir / "bag"}; re-evaluate with: '
          f'so101 eval {run_dir / "bag"} -o {run_dir / "report_offline"}')
    if opts.view == 'file':
        print(f'[demo] rerun recording {run_dir / "view.rrd"}; open it with: rerun '
              f'{run_dir / "view.rrd"}')
    return 0 if ok and report.is_file() else 1
