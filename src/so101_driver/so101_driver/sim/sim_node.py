"""``so101_sim``: the MuJoCo pick-and-place cell behind the arm node's topics.

Same interface as ``so101_arm``: ``joint_states`` (effort = actuator torque, N·m, so a
gripper blocked by the cube shows), ``joint_trajectory`` and, while ``teleop/override`` is
true, ``teleop/joint_trajectory`` through the same ``trajectory.ArmController`` (same
rejection rules and counters), latched ``robot_description``, ``diagnostics``. Plus:
``/clock`` (the sim is the time source; every stamp it writes is sim time), the cameras
``cameras/<name>/image_raw`` (rgb8) + ``camera_info`` (intrinsics from the MuJoCo fovy) and,
with ``publish_compressed``, ``image_raw/compressed`` (JPEG, as the camera node, for a policy
on another host),
ground truth ``sim/cube_pose`` and ``sim/truth`` (``SimTruth`` JSON), the ``sim/reset``
service (new seeded cube position, arm home) and, on reset, ``eval/episode`` END (success =
cube in bowl) and START marks.

One worker thread steps physics + control at ``control_rate_hz`` of sim time, renders the
cameras every 1/``camera_rate_hz`` of sim time and publishes; it paces itself to
``real_time_factor`` x the wall clock (0: as fast as it can). ROS callbacks only touch the
cell under a lock.

Command-to-servo latency (``so101_driver.latency``): ``diagnostics`` carry the controller's
``command_*`` values, i.e. for every accepted trajectory its header stamp, first point due,
receipt and the tick that applied it (all sim time: a trajectory taken between two ticks is
applied at the sim instant it arrived; the wall-clock wait is reported beside), with p50/p95.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import (
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from so101_driver import qos
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
from so101_driver.guard import GuardedNode
from so101_driver.images import numpy_to_image, rgb_to_compressed
from so101_driver.joints import urdf_text
from so101_driver.ros_io import (
    diag_status,
    float_range,
    joint_state_msg,
    log_outcome,
    run_node,
    time_msg,
    trajectory_from_msg,
)
from so101_driver.arm.trajectory import CommandSource, Outcome, TrajectoryRejected
from so101_driver.sim import gl

#: MuJoCo reads MUJOCO_GL when it is first imported: choose before sim.cell imports it.
GL_BACKEND = gl.choose_backend()

from so101_driver.sim.cell import CAMERA_NAMES, SimCell, SimConfig  # noqa: E402
from so101_driver.sim.renderer import Intrinsics, SimRenderer  # noqa: E402

# ints: ros_io.diag_status packs the level with bytes([level]); the message constants are bytes
OK, WARN = ord(DiagnosticStatus.OK), ord(DiagnosticStatus.WARN)



def camera_info_msg(intr: Intrinsics, stamp, frame_id: str) -> CameraInfo:
    """CameraInfo of an ideal pinhole camera (no distortion)."""
    msg = CameraInfo()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def _every(rate_hz: float, dt: float) -> int:
    """Ticks between publications at ``rate_hz`` (sim time); 0 = never."""
    return 0 if rate_hz <= 0 else max(1, round(1.0 / (rate_hz * dt)))


class SimNode(GuardedNode):
    """MuJoCo simulation of the SO-101 cell."""

    def __init__(self, **kwargs):
        super().__init__('so101_sim', **kwargs)
        self._declare_parameters()
        def p(name):
            return self.get_parameter(name).value
        self.cell = SimCell(SimConfig(
            model_path=p('model_path'), seed=p('seed'), control_rate_hz=p('control_rate_hz'),
            max_jump=p('max_jump'), max_relative_target=p('max_relative_target'),
            limit_margin=p('limit_margin'), cube_x_range=tuple(p('cube_x_range')),
            cube_y_range=tuple(p('cube_y_range')), cube_yaw_range=tuple(p('cube_yaw_range')),
            bowl_xy=tuple(p('bowl_xy'))))
        self.cameras = list(p('cameras'))
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f'parameter cameras: unknown camera(s) {unknown}; the cell has '
                             f'{list(CAMERA_NAMES)}')
        self._lock = threading.Lock()  # the cell: stepping, trajectories, override, reset
        self._rtf = p('real_time_factor')
        self._repace = True
        self._stats = {'render_s': deque(maxlen=50), 'rtf': 0.0, 'tick_hz': 0.0}
        self._episode_marks = p('publish_episode_marks')

        self.pub_joint_states = self.create_publisher(JointState, 'joint_states',
                                                      qos.MEASUREMENT_PUB)
        self.pub_description = self.create_publisher(String, 'robot_description', qos.LATCHED)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, 'diagnostics',
                                                     qos.STREAM_PUB)
        self.pub_clock = self.create_publisher(Clock, '/clock', qos.STREAM_PUB)
        self.pub_cube = self.create_publisher(PoseStamped, 'sim/cube_pose', qos.STREAM_PUB)
        self.pub_truth = self.create_publisher(String, 'sim/truth', qos.MEASUREMENT_PUB)
        self.pub_episode = self.create_publisher(String, 'eval/episode',
                                                 qos.EPISODE_MARKS)
        self.pub_images = {c: self.create_publisher(Image, f'cameras/{c}/image_raw',
                                                    qos.STREAM_PUB) for c in self.cameras}
        self.pub_infos = {c: self.create_publisher(CameraInfo, f'cameras/{c}/camera_info',
                                                   qos.STREAM_PUB) for c in self.cameras}
        self._jpeg_quality = p('jpeg_quality')
        self.pub_compressed = {
            c: self.create_publisher(CompressedImage, f'cameras/{c}/image_raw/compressed',
                                     qos.STREAM_PUB)
            for c in self.cameras} if p('publish_compressed') else {}
        self.pub_description.publish(String(data=urdf_text(p('mesh_uri'))))
        self.create_subscription(JointTrajectory, 'joint_trajectory',
                                 lambda m: self._on_trajectory(CommandSource.POLICY, m),
                                 qos.COMMAND)
        self.create_subscription(JointTrajectory, 'teleop/joint_trajectory',
                                 lambda m: self._on_trajectory(CommandSource.TELEOP, m),
                                 qos.COMMAND)
        self.create_subscription(Bool, 'teleop/override', self._on_override, qos.LATCHED)
        self.create_service(Trigger, 'sim/reset', self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._loop = threading.Thread(target=self._run, name='so101_sim_worker', daemon=True)
        self._loop.start()
        self.get_logger().info(
            f'simulation running: seed {p("seed")}, real_time_factor {self._rtf}, cameras '
            f'{self.cameras if p("camera_rate_hz") > 0 else "off"} '
            f'{p("camera_width")}x{p("camera_height")} at {p("camera_rate_hz")} Hz sim time'
            f'{" (+ JPEG image_raw/compressed)" if self.pub_compressed else ""}; '
            f'MuJoCo GL backend {GL_BACKEND[0] or "none"} ({GL_BACKEND[1]})')

    # -- parameters --------------------------------------------------------------
    def _declare_parameters(self):
        def declare(name, default, description, read_only=True, **ranges):
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=read_only, **ranges))

        declare('model_path', '', 'MJCF scene; empty = the packaged mjcf/scene.xml')
        declare('seed', 0, 'Seed of the cube placements (same seed, same sequence)',
                integer_range=[IntegerRange(from_value=0, to_value=2**31 - 1, step=1)])
        declare('real_time_factor', 1.0, 'Sim seconds per wall second to aim for; 0 = as fast '
                'as possible', read_only=False, floating_point_range=float_range(0, 1000))
        declare('control_rate_hz', 100.0, 'Control loop and joint_states rate (sim time)',
                floating_point_range=float_range(10, 1000))
        declare('max_relative_target', 0.2, 'Max |goal - present| per joint per tick (rad)',
                read_only=False, floating_point_range=float_range(0.001, 1.0))
        declare('max_jump', 0.35, 'Max distance of a trajectory\'s first point from the '
                'present position (rad)', read_only=False,
                floating_point_range=float_range(0.001, 3.2))
        declare('limit_margin', 0.0, 'Shrink the URDF joint limits by this much on each side '
                '(rad)', floating_point_range=float_range(0, 0.5))
        declare('cube_x_range', [0.17, 0.26], 'Cube centre x at reset, [low, high] (m, base '
                'frame, x forward)')
        declare('cube_y_range', [-0.12, 0.06], 'Cube centre y at reset, [low, high] (m)')
        declare('cube_yaw_range', [-0.6, 0.6], 'Cube yaw at reset, [low, high] (rad)')
        declare('bowl_xy', [0.14, 0.2], 'Bowl centre on the table, [x, y] (m)')
        declare('cameras', list(CAMERA_NAMES), 'Cameras to render: front, handeye')
        declare('camera_width', 224, 'Rendered image width (px)',
                integer_range=[IntegerRange(from_value=16, to_value=1920, step=1)])
        declare('camera_height', 224, 'Rendered image height (px)',
                integer_range=[IntegerRange(from_value=16, to_value=1080, step=1)])
        declare('camera_rate_hz', 10.0, 'Image rate per camera in sim time; 0 = no rendering',
                floating_point_range=float_range(0, 100))
        declare('publish_compressed', False, 'Also publish cameras/<name>/image_raw/compressed '
                '(JPEG), for a policy node on another host (use_compressed)')
        declare('jpeg_quality', 90, 'JPEG quality of image_raw/compressed',
                integer_range=[IntegerRange(from_value=1, to_value=100, step=1)])
        declare('clock_rate_hz', 100.0, '/clock rate in sim time (at most control_rate_hz)',
                floating_point_range=float_range(1, 1000))
        declare('truth_rate_hz', 50.0, 'sim/truth and sim/cube_pose rate in sim time',
                floating_point_range=float_range(1, 1000))
        declare('diagnostics_rate_hz', 1.0, 'diagnostics rate (wall clock)',
                floating_point_range=float_range(0.1, 10))
        declare('episode_mark_wait_s', 5.0, 'Wait this long (wall time) at start for an '
                'eval/episode subscriber before the first START mark and the first step',
                read_only=True, floating_point_range=float_range(0.0, 600.0))
        declare('episode_mark_subscribers', 0, 'Before the first START, wait (at most '
                'episode_mark_wait_s) for this many eval/episode subscribers; 0 = until their '
                'number has not changed for a second', read_only=True,
                integer_range=[IntegerRange(from_value=0, to_value=100, step=1)])
        declare('publish_episode_marks', True, 'Publish eval/episode END (success = cube in '
                'bowl) and START marks on every reset', read_only=False)
        declare('mesh_uri', 'package', "Mesh URIs in robot_description: 'package' or 'file'")

    def _on_set_parameters(self, params) -> SetParametersResult:
        config = self.cell.controller.executor.config
        for param in params:
            if param.name == 'max_relative_target':
                config.max_relative_target[:] = param.value
            elif param.name == 'max_jump':
                config.max_jump[:] = param.value
            elif param.name == 'real_time_factor':
                self._rtf = float(param.value)
                self._repace = True
            elif param.name == 'publish_episode_marks':
                self._episode_marks = bool(param.value)
        return SetParametersResult(successful=True)

    # -- worker ------------------------------------------------------------------
    def _run(self):
        try:
            self._work()
        except Exception as err:
            self.get_logger().fatal(f'simulation worker stopped: {err!r}')
            raise

    def _work(self):
        def p(name):
            return self.get_parameter(name).value
        dt = self.cell.dt
        every = {'clock': _every(p('clock_rate_hz'), dt), 'truth': _every(p('truth_rate_hz'), dt),
                 'camera': _every(p('camera_rate_hz'), dt) if self.cameras else 0}
        renderer = None
        if every['camera']:
            try:  # the GL context belongs to this thread
                renderer = SimRenderer(self.cell, p('camera_width'), p('camera_height'))
            except Exception as err:  # noqa: BLE001 - no GL: run without cameras, say so
                self.get_logger().error(
                    f'rendering unavailable with MuJoCo GL backend {GL_BACKEND[0] or "none"} '
                    f'({GL_BACKEND[1]}): {err}; install EGL (libegl1) or OSMesa '
                    '(libosmesa6) or set MUJOCO_GL; running without cameras')
                every['camera'] = 0
        diag_period = 1.0 / p('diagnostics_rate_hz')
        next_diag = time.monotonic() + diag_period
        window = (time.monotonic(), self.cell.time, self.cell.counters.ticks)
        wall0 = sim0 = 0.0
        self._first_episode_mark(p('episode_mark_wait_s'), p('episode_mark_subscribers'))
        while self._running:
            if self._repace:  # (re)anchor the pacing: start, rate change, overrun
                wall0, sim0, self._repace = time.monotonic(), self.cell.time, False
            with self._lock:
                self.cell.step()
                tick = self.cell.counters.ticks
                sample = self.cell.joint_sample()
                truth = self.cell.truth() if tick % every['truth'] == 0 else None
                cube = self.cell.cube_pose() if truth else None
                images = {}
                if every['camera'] and tick % every['camera'] == 0:
                    start = time.monotonic()
                    images = {c: renderer.render(c) for c in self.cameras}
                    self._stats['render_s'].append(time.monotonic() - start)
            stamp = time_msg(sample.stamp)
            if every['clock'] and tick % every['clock'] == 0:
                self.pub_clock.publish(Clock(clock=stamp))
            self.pub_joint_states.publish(joint_state_msg(
                stamp, sample.position, sample.velocity, sample.effort))
            if truth is not None:
                self.pub_truth.publish(String(data=truth.to_json()))
                self.pub_cube.publish(self._pose_msg(stamp, *cube))
            for name, rgb in images.items():
                frame = f'{name}_camera_optical_frame'
                self.pub_images[name].publish(numpy_to_image(rgb, 'rgb8', stamp, frame))
                self.pub_infos[name].publish(camera_info_msg(renderer.intrinsics(name), stamp,
                                                             frame))
                if name in self.pub_compressed:
                    self.pub_compressed[name].publish(rgb_to_compressed(
                        rgb, self._jpeg_quality, stamp=stamp, frame_id=frame))
            now = time.monotonic()
            if now >= next_diag:
                wall_then, sim_then, ticks_then = window
                span = max(now - wall_then, 1e-9)
                self._stats['rtf'] = (self.cell.time - sim_then) / span
                self._stats['tick_hz'] = (tick - ticks_then) / span
                window = (now, self.cell.time, tick)
                next_diag = now + diag_period
                self.pub_diagnostics.publish(self.diagnostics())
            if self._rtf > 0:
                ahead = (self.cell.time - sim0) / self._rtf - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -0.5:  # fell behind (rendering, load): don't sprint to catch up
                    self._repace = True
            else:
                time.sleep(0)  # let waiting callbacks take the lock between ticks
        if renderer is not None:
            renderer.close()

    @staticmethod
    def _pose_msg(stamp, position, quat) -> PoseStamped:
        msg = PoseStamped()
        msg.header.stamp = stamp
        msg.header.frame_id = 'world'
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, position)
        w, x, y, z = map(float, quat)
        msg.pose.orientation.w, msg.pose.orientation.x = w, x
        msg.pose.orientation.y, msg.pose.orientation.z = y, z
        return msg

    # -- callbacks ---------------------------------------------------------------
    def _on_trajectory(self, source: CommandSource, msg: JointTrajectory):
        with self._lock:
            try:
                outcome, text = self.cell.submit(source, trajectory_from_msg(msg))
            except TrajectoryRejected as err:
                outcome = Outcome.REJECTED
                text = self.cell.controller.record_rejection(source, err)
        log_outcome(self.get_logger(), outcome, text)

    def _on_override(self, msg: Bool):
        with self._lock:
            edge = self.cell.set_override(bool(msg.data))
        if edge:
            self.get_logger().info('operator override ' + ('ON: following teleop' if msg.data
                                                           else 'OFF: policy in control'))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            ended = self.cell.episode
            success, (x, y, yaw) = self.cell.reset()
            started = self.cell.episode
        self._publish_mark(EpisodeEvent.END, success, 'cube in bowl' if success
                           else 'cube not in bowl', episode=ended)
        self._publish_mark(EpisodeEvent.START, None, 'sim reset', episode=started)
        response.success = True
        response.message = (f'episode {ended} ended ({"success" if success else "failure"}); '
                            f'episode {started}: cube at x={x:.3f} y={y:.3f} m, yaw={yaw:.2f} rad')
        self.get_logger().info(response.message)
        return response

    def _first_episode_mark(self, wait_s: float, expected: int = 0):
        """Publish the first START once the listeners on eval/episode are matched (a monitor
        or recorder started just before may not be yet): wait for ``expected`` subscribers
        or, without a number, for a first one and then until their number has not changed
        for a second; at most ``wait_s`` of wall time. Sim time does not advance meanwhile,
        so nothing is missed."""
        deadline = time.monotonic() + wait_s
        count, since = 0, time.monotonic()
        while self._running and self._episode_marks and time.monotonic() < deadline:
            now_count = self.pub_episode.get_subscription_count()
            if expected:
                if now_count >= expected:
                    break
            elif now_count != count:
                count, since = now_count, time.monotonic()
            elif count and time.monotonic() - since > 1.0:
                break
            time.sleep(0.05)
        self._publish_mark(EpisodeEvent.START, None, 'sim started')

    def _publish_mark(self, event: EpisodeEvent, success: bool | None, note: str,
                      episode: int | None = None):
        if not self._episode_marks:
            return
        mark = EpisodeMark(event=event, stamp=self.cell.time, success=success, source='sim',
                           episode=self.cell.episode if episode is None else episode, note=note)
        self.pub_episode.publish(String(data=mark.to_json()))

    # -- diagnostics -------------------------------------------------------------
    def diagnostics(self) -> DiagnosticArray:
        ctl = self.cell.controller.counters
        renders = self._stats['render_s']
        rtf = self._stats['rtf']
        behind = self._rtf > 0 and rtf < 0.5 * self._rtf
        values = {
            'sim_time_s': f'{self.cell.time:.3f}',
            'real_time_factor': f'{rtf:.3f}',
            'real_time_factor_target': self._rtf,
            'tick_rate_hz': f'{self._stats["tick_hz"]:.1f}',
            'render_ms': f'{1e3 * float(np.mean(renders)):.1f}' if renders else 'off',
            'episode': self.cell.episode, 'resets': self.cell.counters.resets,
            'drops': self.cell.counters.drops, 'override': self.cell.controller.override,
            **{f'accepted_{k}': v for k, v in ctl.accepted.items()},
            **{f'rejected_{k}': v for k, v in ctl.rejected.items()},
            **{f'ignored_{k}': v for k, v in ctl.ignored.items()},
            'rejected_total': sum(ctl.rejected.values()),
            'last_rejection': self.cell.controller.last_message,
            **self.guard_values(), 'last_rejected_message': self.last_rejection,
            **self.cell.controller.latency.values(),
        }
        array = DiagnosticArray()
        array.header.stamp = time_msg(self.cell.time)
        array.status.append(diag_status(
            'so101_sim: simulation', WARN if behind else OK,
            f'running at {rtf:.2f}x real time' + (' (behind target)' if behind else ''),
            'mujoco', values))
        return array

    # -- shutdown ----------------------------------------------------------------
    def destroy_node(self):
        self._running = False
        if self._loop.is_alive():
            self._loop.join(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    run_node(SimNode, 'so101_sim', (ValueError, FileNotFoundError), threads=2, args=args)


if __name__ == '__main__':
    main()
