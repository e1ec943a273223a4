"""``so101 demo``: the whole suite on a laptop — simulated cell, scripted expert, monitor,
recorder — for N episodes, then the evaluation table.

The nodes are the ones ``so101 up hardware:=sim policy:=expert record:=true`` starts, as
separate processes talking over DDS, from the same YAML. The expert makes mistakes at the
rates of ``FAILURES`` and retries within each episode (up to ``--max-attempts``, within
``--episode-timeout-s``), as a policy does. A simulated operator (``sim.operator``) stands
where a person would: after ``--rescue-after`` failed attempts in an episode, or
``--stall-s`` without a grasp success, it takes over inside the episode through
``teleop/override`` + ``teleop/joint_trajectory``, sets the arm up above the cube (or, with
``--operator-mode place``, does the pick-and-place) and hands back; the episode goes on and
the monitor counts the intervention in it. ``--fast`` runs the same graph with the cameras
off (the expert needs none) and the sim ahead of the wall clock. At the end the monitor
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
from so101_driver.joints import measured_positions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='so101 demo', description=__doc__.splitlines()[0])
    parser.add_argument('--episodes', type=int, default=9, help='episodes to run (default 9, '
                        'as the reference evaluation)')
    parser.add_argument('--grasp-noise-m', type=float, default=0.008,
                        help='std of the expert\'s grasp-point error (default 0.008)')
    parser.add_argument('--failure-scale', type=float, default=1.0,
                        help='multiply the expert\'s failure rates (0: no injected failures; '
                        'default 1)')
    parser.add_argument('--max-attempts', type=int, default=6,
                        help='grasp attempts per episode (default 6)')
    parser.add_argument('--episode-timeout-s', type=float, default=75.0,
                        help='sim seconds after which an episode ends failed (default 75)')
    parser.add_argument('--seed', type=int, default=1, help='seed of cube placement and '
                        'expert noise (default 1)')
    parser.add_argument('--run-dir', type=Path, default=None,
                        help='where the report, bag and logs go (default runs/demo_<time>)')
    parser.add_argument('--rescue-after', type=int, default=5,
                        help='failed attempts in an episode after which the simulated operator '
                        'takes over (0: never; default 5)')
    parser.add_argument('--stall-s', type=float, default=45.0,
                        help='sim seconds without a grasp success after which the operator '
                        'takes over (0: never; default 45)')
    parser.add_argument('--operator-mode', choices=('assist', 'place'), default='assist',
                        help='assist: set the arm up above the cube and hand back (default); '
                        'place: do the pick-and-place, then hand back')
    parser.add_argument('--fast', action='store_true',
                        help='cameras off and the sim at --speed 4 unless given: the same nodes '
                        'and topics, faster than real time')
    parser.add_argument('--speed', type=float, default=None,
                        help='sim seconds per wall second (default 1.5; 4 with --fast)')
    parser.add_argument('--camera-rate-hz', type=float, default=2.0,
                        help='sim camera rate; CPU rendering is slow (default 2; 0 with --fast)')
    parser.add_argument('--timeout-s', type=float, default=None,
                        help='wall-clock limit of the whole run (default 120 s + 90 s of sim '
                        'per episode at --speed)')
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


#: The expert's failure profile in the demo: per-attempt rates that give an evaluation the
#: shape of a real one (several attempts per episode, most episodes end in the bowl).
FAILURES = {'miss_rate': 0.45, 'knock_rate': 0.15, 'narrow_open_rate': 0.1, 'slip_rate': 0.1,
            'transport_drop_rate': 0.08, 'release_outside_rate': 0.07}


#: --fast: half the message rates of the sim (the detector needs 50 Hz joint states), so the
#: subscribers keep up with a sim several times faster than the wall clock on 2 cores.
FAST_SIM = {'control_rate_hz': 50.0, 'clock_rate_hz': 50.0, 'truth_rate_hz': 25.0}


class Operator:
    """The simulated operator (``sim.operator.SimOperator``) and the progress printer, on one
    rclpy node (sim time). It learns of failed grasps, drops and successes from the monitor's
    ``eval/events``, of episodes from ``eval/episode``, of the cube from ``sim/truth``, and
    takes over through ``teleop/override`` + ``teleop/joint_trajectory``."""

    def __init__(self, config):
        import rclpy
        from rclpy.parameter import Parameter
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        from so101_driver import qos
        from so101_driver.sim.operator import SimOperator

        self.node = rclpy.create_node('so101_demo_operator', parameter_overrides=[
            Parameter('use_sim_time', value=True)])
        self.sim_operator = SimOperator(config)
        self.lock = threading.Lock()
        self.ended: list[EpisodeMark] = []
        self.truth: SimTruth | None = None
        self.present: np.ndarray | None = None
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

    @property
    def interventions(self) -> int:
        return self.sim_operator.total

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_episode(self, msg):
        try:
            mark = EpisodeMark.from_json(msg.data)
        except PayloadError:
            return
        with self.lock:
            if mark.event is EpisodeEvent.START:
                self.sim_operator.episode_started(mark.stamp, mark.episode)
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
        if not isinstance(event, dict):
            return
        kind = event.get('kind', '?')
        stamp = event.get('stamp', 0)
        stamp = stamp if isinstance(stamp, (int, float)) else 0
        with self.lock:
            if kind in ('grasp_failed', 'drop'):
                self.sim_operator.failure(stamp)
            elif kind == 'grasp_success':
                self.sim_operator.progress(stamp)
        if kind in ('grasp_attempt', 'grasp_success', 'grasp_failed', 'drop', 'place',
                    'intervention_start', 'intervention_end'):
            print(f'[demo]   t={stamp:7.2f}  {kind}', flush=True)

    def _on_truth(self, msg):
        try:
            truth = SimTruth.from_json(msg.data)
        except PayloadError:
            return
        with self.lock:
            self.truth = truth

    def _on_state(self, msg):
        try:  # NaN or absurd values would become the first point of a teleop chunk
            present = measured_positions(msg.name, msg.position)
        except ValueError:
            return
        with self.lock:
            self.present = present

    def _supervise(self):
        from so101_driver.ros_io import trajectory_msg

        now = self.now()
        with self.lock:
            edge, traj = self.sim_operator.step(now, self.truth, self.present)
            reason = self.sim_operator.reason
        if edge is True:
            print(f'[demo]   {reason}: the simulated operator takes over '
                  f'({self.sim_operator.config.mode})', flush=True)
            self.pub_override.publish(self._bool(data=True))
        if traj is not None:
            self.pub_teleop.publish(trajectory_msg(traj.positions, traj.time_from_start,
                                                   traj.start))
        if edge is False:
            self.pub_override.publish(self._bool(data=False))
            print('[demo]   operator hands back', flush=True)

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

    from so101_driver.sim.operator import OperatorConfig

    opts = build_parser().parse_args(argv)
    if opts.episodes < 1:
        raise bringup.BringupError('--episodes must be at least 1')
    speed = opts.speed if opts.speed is not None else (4.0 if opts.fast else 1.5)
    if speed <= 0:
        raise bringup.BringupError('--speed must be > 0 (the demo paces the sim)')
    if not 0 <= opts.failure_scale * sum(FAILURES.values()) <= 1:
        raise bringup.BringupError(f'--failure-scale {opts.failure_scale}: the failure rates '
                                   'must add up to between 0 and 1')
    timeout_s = opts.timeout_s or 120.0 + 90.0 * opts.episodes / speed
    camera_rate = 0.0 if opts.fast else opts.camera_rate_hz
    try:
        operator_config = OperatorConfig(rescue_after_failures=opts.rescue_after,
                                         stall_s=opts.stall_s, mode=opts.operator_mode)
    except ValueError as err:
        raise bringup.BringupError(str(err)) from None
    run_dir = (opts.run_dir or Path('runs') / time.strftime('demo_%Y%m%d_%H%M%S')).resolve()
    (run_dir / 'logs').mkdir(parents=True, exist_ok=True)
    args = bringup.parse_args({'hardware': 'sim', 'policy': 'expert', 'record': 'true',
                               'monitor': 'true', 'view': 'true' if opts.view else 'false'})
    extra = {
        # the first START waits for every listener: monitor, recorder, operator (+ view)
        'so101_sim': {'seed': opts.seed, 'camera_rate_hz': camera_rate,
                      'real_time_factor': speed, 'episode_mark_wait_s': 60.0,
                      'episode_mark_subscribers': 4 if opts.view else 3,
                      **(FAST_SIM if opts.fast else {})},
        'so101_sim_expert': {'seed': opts.seed, 'max_episodes': opts.episodes,
                             'auto_reset': True, 'grasp_xy_noise_m': opts.grasp_noise_m,
                             'max_attempts': opts.max_attempts,
                             'episode_timeout_s': opts.episode_timeout_s,
                             'chunk_horizon_s': 2.0,  # slack for a sim ahead of the wall
                             **{k: v * opts.failure_scale for k, v in FAILURES.items()}},
        'eval_monitor': {'run_dir': str(run_dir / 'report'), 'title': 'so101 demo: '
                         f'scripted expert, {opts.episodes} simulated episodes'},
        'so101_recorder': {'output': str(run_dir / 'bag')},
        'so101_view': view_overrides(opts.view or 'auto', run_dir),
    }
    print(f'[demo] run directory {run_dir}; node logs in {run_dir / "logs"}', flush=True)
    group = ProcessGroup()
    confine_discovery(args.hardware)  # before this process joins the domain
    rclpy.init(args=[])
    operator = Operator(operator_config)
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
                  f'{opts.episodes} episodes at {speed:g}x real time'
                  f'{", cameras off" if not camera_rate else ""}', flush=True)
            if opts.view:
                print_view_line(run_dir / 'logs' / 'so101_view.log')
            while len(operator.ended) < opts.episodes:
                if group.exited():
                    name, code = group.exited()[0]
                    print(f'[demo] {name} exited with code {code}; see its log',
                          file=sys.stderr)
                    break
                if time.monotonic() - t0 > timeout_s:
                    print(f'[demo] timed out after {timeout_s:.0f} s with '
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
    wall = time.monotonic() - t0
    sim_s = operator.ended[-1].stamp if operator.ended else 0.0
    print(f'[demo] {len(operator.ended)} episodes, {operator.interventions} operator '
          f'takeovers, {sim_s:.0f} s of sim time in {wall:.0f} s ({sim_s / max(wall, 1e-9):.1f}x '
          'real time)')
    print(f'[demo] {len(operator.ended)} episodes in {wall:.0f} s; report '
          f'{run_dir / "report" / "report.html"}; bag {run_dir / "bag"}; re-evaluate with: '
          f'so101 eval {run_dir / "bag"} -o {run_dir / "report_offline"}')
    if opts.view == 'file':
        print(f'[demo] rerun recording {run_dir / "view.rrd"}; open it with: rerun '
              f'{run_dir / "view.rrd"}')
    return 0 if ok and report.is_file() else 1
