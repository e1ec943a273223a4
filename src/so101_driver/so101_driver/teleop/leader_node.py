"""``so101_leader``: an SO-101 leader arm on its own Feetech bus as the teleop source.

Reads the leader (torque off, never enabled) at ``control_rate_hz`` in its own thread and,
while the override is on, publishes ``teleop/joint_trajectory``: a stamped one- or two-point
trajectory toward the leader's pose (``teleop.teleop_points``: the first point within
``max_jump`` of the follower's ``joint_states`` so the arm's jump check accepts it).

``teleop/override`` (std_msgs/Bool, transient-local) is published on every change and
re-sent every ``override_period_s``. Who raises it (``override_mode``):

* ``manual``: the operator, through ``~/set_override`` (std_srvs/SetBool; the operator
  console calls it);
* ``distance``: ``teleop.TakeoverDetector``, from the leader's distance to the follower's
  ``joint_states``; ``~/set_override`` is refused in this mode.

A vanished leader port is reported (diagnostics ERROR) and re-opened every
``reconnect_period_s``; meanwhile no teleop trajectory is sent and the override keeps its
value (the arm holds its last setpoint: nobody is steering).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from so101_driver import qos
from so101_driver.guard import GuardedNode
from so101_driver.feetech.bus import BusConfig, BusError, FeetechBus, PortLost
from so101_driver.feetech.calibration import ArmCalibration, CalibrationError, load_calibration
from so101_driver.joints import measured_positions
from so101_driver.ros_io import diag_status, float_range, run_node, trajectory_msg
from so101_driver.teleop.leader import (
    LeaderToFollower,
    OverrideMode,
    TakeoverConfig,
    TakeoverDetector,
    configure_leader,
    teleop_points,
)

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class LeaderNode(GuardedNode):
    """SO-101 leader arm: teleop trajectories and the operator override."""

    def __init__(self, **kwargs):
        super().__init__('so101_leader', **kwargs)
        self._loop: threading.Thread | None = None
        self.bus: FeetechBus | None = None
        self._connected = False
        self._declare_parameters()
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            self.mode = OverrideMode(p('override_mode'))
        except ValueError:
            raise ValueError(f"override_mode must be one of {[m.value for m in OverrideMode]}, "
                             f"got {p('override_mode')!r}") from None
        try:
            self.calibration = ArmCalibration(load_calibration(p('calibration_file')))
        except CalibrationError as err:
            raise CalibrationError(
                f'leader arm: {err} (a leader\'s file is in ~/.cache/huggingface/lerobot/'
                'calibration/teleoperators/so_leader/<id>.json)') from err
        follower_file = p('follower_calibration_file')
        self.mapping = LeaderToFollower(
            self.calibration, ArmCalibration(load_calibration(follower_file))
            if follower_file else None)
        self.detector = TakeoverDetector(TakeoverConfig(
            takeover_threshold_rad=p('takeover_threshold_rad'),
            leader_motion_threshold_rad=p('leader_motion_threshold_rad'),
            release_threshold_rad=p('release_threshold_rad'),
            release_hold_s=p('release_hold_s')))
        self.bus = FeetechBus(BusConfig(port=p('port'), baudrate=p('baudrate'),
                                        read_retries=p('read_retries'),
                                        packet_timeout_ms=p('packet_timeout_ms')))
        self._lock = threading.Lock()  # override, follower state, counters
        self.override = False
        self._follower: np.ndarray | None = None
        self._follower_at = 0.0  # monotonic time of the last follower joint_states
        self._leader_target: np.ndarray | None = None
        self._status_line = 'starting'
        self.counters = {'reads': 0, 'read_failures': 0, 'trajectories': 0,
                         'override_raised': 0, 'override_released': 0, 'reconnects': 0,
                         'joint_states_refused': 0}

        self._connect(first=True)  # raises if the leader is not there at start

        self.pub_trajectory = self.create_publisher(JointTrajectory, 'teleop/joint_trajectory',
                                                    qos.COMMAND)
        self.pub_override = self.create_publisher(Bool, 'teleop/override', qos.LATCHED)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, 'diagnostics',
                                                     qos.STREAM_PUB)
        self.create_subscription(JointState, 'joint_states', self._on_joint_states,
                                 qos.STREAM_SUB)
        self.create_service(SetBool, '~/set_override', self._on_set_override)
        self.create_timer(p('override_period_s'), self._publish_override)
        self.create_timer(1.0 / p('diagnostics_rate_hz'), self._publish_diagnostics)
        self._publish_override()

        self._running = True
        self._loop = threading.Thread(target=self._control_loop, name='so101_leader_read',
                                      daemon=True)
        self._loop.start()

    # -- parameters --------------------------------------------------------------
    def _declare_parameters(self):
        def declare(name, default, description, read_only=True, **ranges):
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=read_only, **ranges))

        declare('port', '/dev/ttyACM1', 'Serial port of the leader arm\'s bus adapter '
                '(prefer /dev/serial/by-id/...)')
        declare('baudrate', 1_000_000, 'Bus baud rate (STS3215 default 1 Mbps)')
        declare('calibration_file', '', 'LeRobot calibration JSON of the leader arm '
                '(lerobot-calibrate --teleop.type=so101_leader output)')
        declare('follower_calibration_file', '', 'LeRobot calibration JSON of the follower; '
                'given: LeRobot\'s range-to-range mapping (gripper) and the follower\'s limits; '
                'empty: leader joint angles as they are, URDF limits')
        declare('write_calibration', True, 'Write the file\'s homing offsets and limits to the '
                'leader\'s servos when they differ (as LeRobot does on connect)')
        declare('control_rate_hz', 50.0, 'Leader read and teleop trajectory rate',
                floating_point_range=float_range(1, 500))
        declare('read_retries', 2, 'Extra attempts of a failed bus read',
                integer_range=[IntegerRange(from_value=0, to_value=10, step=1)])
        declare('packet_timeout_ms', 20.0, 'Wait for a reply beyond its wire time (ms); raise '
                'it for USB adapters with a high latency timer or a loaded host',
                floating_point_range=float_range(1, 1000))
        declare('reconnect_period_s', 1.0, 'How often a vanished leader port is re-opened',
                floating_point_range=float_range(0.05, 60))
        declare('override_mode', OverrideMode.MANUAL.value, 'Who raises teleop/override: '
                "'manual' (~/set_override, the console) or 'distance' (leader moved away "
                'from the follower)')
        declare('takeover_threshold_rad', 0.25, "distance mode: override raised when the "
                'leader is further than this from the follower on any joint (rad)',
                floating_point_range=float_range(0.01, 3.0))
        declare('leader_motion_threshold_rad', 0.05, 'distance mode: ... and the leader moved '
                'more than this since it last rested (rad; 0 = distance alone)',
                floating_point_range=float_range(0.0, 3.0))
        declare('release_threshold_rad', 0.08, 'distance mode: override released when every '
                'joint stays within this of the follower ... (rad)',
                floating_point_range=float_range(0.005, 3.0))
        declare('release_hold_s', 1.0, 'distance mode: ... for this long (s)',
                floating_point_range=float_range(0.0, 60.0))
        declare('override_period_s', 1.0, 'teleop/override is re-sent this often (s)',
                floating_point_range=float_range(0.05, 60.0))
        declare('max_jump', 0.3, 'First teleop point at most this far from the follower per '
                'joint (rad); keep below the arm\'s max_jump (0.35)',
                floating_point_range=float_range(0.01, 3.0))
        declare('lookahead_s', 0.1, 'time_from_start of the first teleop point (s)',
                floating_point_range=float_range(0.01, 2.0))
        declare('catchup_velocity_rad_s', 1.0, 'Speed of the second point when the leader is '
                'beyond max_jump from the follower (rad/s)',
                floating_point_range=float_range(0.05, 10.0))
        declare('follower_timeout_s', 0.5, 'Follower joint_states older than this count as '
                'unknown (s)', floating_point_range=float_range(0.05, 10.0))
        declare('diagnostics_rate_hz', 1.0, 'diagnostics publish rate',
                floating_point_range=float_range(0.1, 10))

    # -- bus -------------------------------------------------------------------------
    def _connect(self, first: bool = False) -> bool:
        try:
            self.bus.open()
            changed = configure_leader(self.bus, self.calibration.motors,
                                       self.get_parameter('write_calibration').value)
        except (PortLost, BusError) as err:
            if first:
                raise
            self._status_line = f'reconnect failed: {err}'
            self.bus.close(disable_torque=False)
            return False
        for line in changed:
            self.get_logger().warning(f'calibration written to leader EEPROM: {line}')
        self._connected = True
        self._status_line = 'connected'
        self.get_logger().info(f'leader on {self.bus.config.port} connected (torque off), '
                               f'override mode {self.mode.value}')
        return True

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _control_loop(self):
        period = 1.0 / self.get_parameter('control_rate_hz').value
        next_tick = time.monotonic()
        next_reconnect = 0.0
        while self._running:
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:
                next_tick = time.monotonic()
            if not self._connected:
                if time.monotonic() >= next_reconnect:
                    next_reconnect = time.monotonic() + \
                        self.get_parameter('reconnect_period_s').value
                    if self._connect():
                        self.counters['reconnects'] += 1
                continue
            try:
                self._tick()
            except PortLost as err:
                self._connected = False
                self._status_line = f'leader port lost: {err}'
                self.get_logger().error(f'{err}; no teleop trajectories until it returns')

    def _tick(self):
        try:
            state = self.bus.read_fast()
        except PortLost:
            raise
        except BusError as err:
            self.counters['read_failures'] += 1
            self.get_logger().warning(f'leader read failed: {err}', throttle_duration_sec=2.0)
            return
        self.counters['reads'] += 1
        target = self.mapping.target(state.position)
        now = self._now()
        with self._lock:
            self._leader_target = target
            follower = self._fresh_follower()
            before = self.override
            if self.mode is OverrideMode.DISTANCE:
                self.override = self.detector.update(target, follower, now)
            changed = self.override != before
            active = self.override
        if changed:
            self._override_changed(active, 'leader moved away from the follower' if active
                                   else 'leader back at the follower')
        if active:
            points, times = teleop_points(target, follower, self.get_parameter('max_jump').value,
                                          self.get_parameter('lookahead_s').value,
                                          self.get_parameter('catchup_velocity_rad_s').value)
            self.pub_trajectory.publish(trajectory_msg(points, times, start=now))
            self.counters['trajectories'] += 1

    def _fresh_follower(self) -> np.ndarray | None:
        timeout = self.get_parameter('follower_timeout_s').value
        if self._follower is None or time.monotonic() - self._follower_at > timeout:
            return None
        return self._follower

    # -- override ----------------------------------------------------------------
    def _override_changed(self, active: bool, why: str):
        self.counters['override_raised' if active else 'override_released'] += 1
        self.get_logger().info(f'override {"ON" if active else "OFF"}: {why}')
        self._publish_override()

    def _publish_override(self):
        with self._lock:
            value = self.override
        self.pub_override.publish(Bool(data=value))

    def _on_set_override(self, request: SetBool.Request, response: SetBool.Response):
        if self.mode is not OverrideMode.MANUAL:
            response.success = False
            response.message = (f'override_mode is {self.mode.value}: the override follows the '
                                'leader\'s distance to the follower; set override_mode:=manual '
                                'to switch it by hand')
            return response
        with self._lock:
            changed = self.override != bool(request.data)
            self.override = bool(request.data)
        if changed:
            self._override_changed(bool(request.data), 'set by the operator')
        response.success = True
        response.message = f'override {"on" if request.data else "off"}'
        return response

    def _on_joint_states(self, msg: JointState):
        # an absurd follower position (1e9 rad) would make teleop_points' catch-up time
        # overflow the trajectory's Duration and end the read thread: not a measurement, refused
        try:
            position = measured_positions(msg.name, msg.position)
        except ValueError as err:
            self.counters['joint_states_refused'] += 1
            self.get_logger().warning(f'follower {err}; ignored', throttle_duration_sec=5.0)
            return
        with self._lock:
            self._follower = position
            self._follower_at = time.monotonic()

    # -- diagnostics -------------------------------------------------------------
    def diagnostics(self) -> DiagnosticArray:
        with self._lock:
            follower_known = self._fresh_follower() is not None
            override = self.override
        if not self._connected:
            level, message = ERROR, self._status_line
        elif self.mode is OverrideMode.DISTANCE and not follower_known:
            level, message = WARN, 'no follower joint_states: distance takeover is blind'
        else:
            level, message = OK, f'override {"on" if override else "off"}'
        values = {'port': self.bus.config.port, 'connected': self._connected,
                  'override': override, 'override_mode': self.mode.value,
                  'follower_state': follower_known,
                  'distance_rad': f'{self.detector.distance:.3f}',
                  'read_retries_total': self.bus.counters.retries,
                  'last_error': self.bus.counters.last_error, **self.counters,
                  **self.guard_values(), 'last_rejected_message': self.last_rejection}
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(diag_status('so101_leader: bus', level, message,
                                        self.bus.config.port, values))
        return array

    def _publish_diagnostics(self):
        self.pub_diagnostics.publish(self.diagnostics())

    def destroy_node(self):
        # also runs on a half-built node (rclpy's shutdown destroys it after a start failure)
        self._running = False
        if self._loop is not None and self._loop.is_alive():
            self._loop.join(timeout=2.0)
        if self.bus is not None:
            try:
                self.bus.close(disable_torque=self._connected)  # writes torque off, never on
            except BusError as err:
                self.get_logger().error(f'closing the leader bus: {err}')
        return super().destroy_node()


def main(args=None):
    run_node(LeaderNode, 'so101_leader', (CalibrationError, BusError, ValueError), threads=2,
             args=args)


if __name__ == '__main__':
    main()
