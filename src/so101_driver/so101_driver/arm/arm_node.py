"""``so101_arm``: the SO-101 follower arm on its Feetech bus as a ROS 2 node.

Publishes ``joint_states`` (stamped at read time), ``robot_description`` (latched URDF) and
``diagnostics``; executes ``joint_trajectory`` (policy) or, while ``teleop/override`` is
true, ``teleop/joint_trajectory`` through ``trajectory.ArmController``; offers
``~/enable_torque``. The control loop runs in its own thread at ``control_rate_hz`` with
absolute deadlines (serial I/O never blocks a ROS callback); callbacks only touch the
controller under a lock.

Faults: a failed read is retried by the bus (counted, WARN); a tick whose read still fails
writes no goal; ``persistent_failure_ticks`` failed ticks in a row raise ERROR and, once reads
recover, the arm holds where it is instead of catching up. A vanished port is reported and
re-opened every ``reconnect_period_s``; on return the arm holds its measured position.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from so101_driver import qos
from so101_driver.feetech.bus import BusConfig, BusError, FeetechBus, PortLost, error_names
from so101_driver.feetech.calibration import ArmCalibration, CalibrationError, load_calibration
from so101_driver.joints import JOINT_NAMES, JointLimits, urdf_limits, urdf_text
from so101_driver.ros_io import (
    diag_status,
    float_range,
    joint_state_msg,
    log_outcome,
    run_node,
    trajectory_from_msg,
)
from so101_driver.arm.trajectory import (
    ArmController,
    CommandSource,
    ExecutorConfig,
    Outcome,
    TrajectoryRejected,
)

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR



class ArmNode(Node):
    """SO-101 follower arm node."""

    def __init__(self, **kwargs):
        super().__init__('so101_arm', **kwargs)
        self._loop: threading.Thread | None = None  # set last: destroy_node may run before
        self.bus: FeetechBus | None = None
        self._declare_parameters()
        p = self.get_parameter
        self.calibration = ArmCalibration(load_calibration(p('calibration_file').value))
        self.limits = self._limits()
        self.controller = ArmController(ExecutorConfig(
            limits=self.limits,
            max_jump=p('max_jump').value,
            max_relative_target=p('max_relative_target').value,
        ))
        self.stall_torque = p('stall_torque_nm').value
        self.bus = FeetechBus(BusConfig(port=p('port').value, baudrate=p('baudrate').value,
                                        read_retries=p('read_retries').value,
                                        packet_timeout_ms=p('packet_timeout_ms').value))
        self._lock = threading.Lock()  # controller, present state, counters
        self._present: np.ndarray | None = None
        self._torque_wanted = p('torque_on_start').value
        self._torque_on = False
        self._connected = False
        self._failed_ticks = 0
        self._hold_after_recovery = False
        self._telemetry: dict = {}
        self._tick_periods: deque[float] = deque(maxlen=1000)
        self._status_line = 'starting'
        self._retries_reported = 0

        self._connect(first=True)

        self.pub_joint_states = self.create_publisher(JointState, 'joint_states', qos.STREAM_PUB)
        self.pub_description = self.create_publisher(String, 'robot_description', qos.LATCHED)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, 'diagnostics',
                                                     qos.STREAM_PUB)
        self.pub_description.publish(String(data=urdf_text(p('mesh_uri').value)))
        self.create_subscription(JointTrajectory, 'joint_trajectory',
                                 lambda m: self._on_trajectory(CommandSource.POLICY, m),
                                 qos.COMMAND)
        self.create_subscription(JointTrajectory, 'teleop/joint_trajectory',
                                 lambda m: self._on_trajectory(CommandSource.TELEOP, m),
                                 qos.COMMAND)
        self.create_subscription(Bool, 'teleop/override', self._on_override, qos.LATCHED)
        self.create_service(SetBool, '~/enable_torque', self._on_enable_torque)
        self.create_timer(1.0 / p('diagnostics_rate_hz').value, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._running = True
        self._loop = threading.Thread(target=self._control_loop, name='so101_arm_control',
                                      daemon=True)
        self._loop.start()

    # -- parameters --------------------------------------------------------------
    def _declare_parameters(self):
        def declare(name, default, description, read_only=False, **ranges):
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=read_only, **ranges))

        declare('port', '/dev/ttyACM0', 'Serial port of the Feetech bus adapter '
                '(prefer /dev/serial/by-id/...)', read_only=True)
        declare('baudrate', 1_000_000, 'Bus baud rate (STS3215 default 1 Mbps)', read_only=True)
        declare('calibration_file', '', 'LeRobot calibration JSON of this arm '
                '(lerobot-calibrate output)', read_only=True)
        declare('write_calibration', True, 'Write the file\'s homing offsets and limits to the '
                'servos when they differ (as LeRobot does on connect)', read_only=True)
        declare('control_rate_hz', 100.0, 'Control loop and joint_states rate',
                read_only=True, floating_point_range=float_range(1, 1000))
        declare('telemetry_rate_hz', 5.0, 'Voltage/temperature/status read rate',
                read_only=True, floating_point_range=float_range(0.1, 50))
        declare('diagnostics_rate_hz', 1.0, 'diagnostics publish rate', read_only=True,
                floating_point_range=float_range(0.1, 10))
        declare('read_retries', 2, 'Extra attempts of a failed bus read', read_only=True,
                integer_range=[IntegerRange(from_value=0, to_value=10, step=1)])
        declare('packet_timeout_ms', 20.0, 'Wait for a reply beyond its wire time (ms); raise '
                'it for USB adapters with a high latency timer or a loaded host',
                read_only=True, floating_point_range=float_range(1, 1000))
        declare('persistent_failure_ticks', 10, 'Failed ticks in a row that count as a '
                'persistent failure (ERROR)', integer_range=[
                    IntegerRange(from_value=1, to_value=1000, step=1)])
        declare('reconnect_period_s', 1.0, 'How often to re-open a vanished port',
                floating_point_range=float_range(0.05, 60))
        declare('max_relative_target', 0.2, 'Max |goal - present| per joint per tick (rad)',
                floating_point_range=float_range(0.001, 1.0))
        declare('max_jump', 0.35, 'Max distance of a trajectory\'s first point from the '
                'present position (rad)', floating_point_range=float_range(0.001, 3.2))
        declare('limit_margin', 0.0, 'Shrink the joint limits by this much on each side (rad)',
                read_only=True, floating_point_range=float_range(0, 0.5))
        declare('torque_on_start', True, 'Enable torque (holding the present position) at start',
                read_only=True)
        declare('disable_torque_on_shutdown', True, 'Torque off when the node stops')
        declare('stall_torque_nm', 1.96, 'Servo stall torque for effort = load fraction x this '
                '(STS3215 7.4 V: 19.5 kg.cm)', floating_point_range=float_range(0.1, 10))
        declare('mesh_uri', 'package', "Mesh URIs in robot_description: 'package' "
                "(package://so101_driver/...) or 'file' (absolute file:// paths)", read_only=True)

    def _limits(self) -> JointLimits:
        """URDF limits intersected with the calibrated range, minus the margin."""
        urdf = urdf_limits()
        cal_lo, cal_hi = self.calibration.radians_range()
        margin = self.get_parameter('limit_margin').value
        lower = np.maximum(urdf.lower, cal_lo) + margin
        upper = np.minimum(urdf.upper, cal_hi) - margin
        return JointLimits(lower=lower, upper=upper)

    def _on_set_parameters(self, params) -> SetParametersResult:
        config = self.controller.executor.config
        for param in params:
            if param.name == 'max_relative_target':
                config.max_relative_target[:] = param.value
            elif param.name == 'max_jump':
                config.max_jump[:] = param.value
            elif param.name == 'stall_torque_nm':
                self.stall_torque = param.value
        return SetParametersResult(successful=True)

    # -- connection --------------------------------------------------------------
    def _connect(self, first: bool = False) -> bool:
        """Open, configure and read the bus; hold the measured position. False if it failed."""
        try:
            self.bus.open()
            changed = self.bus.configure(self.calibration.motors,
                                         self.get_parameter('write_calibration').value)
            for line in changed:
                self.get_logger().warning(f'calibration written to servo EEPROM: {line}')
            state = self.bus.read_fast()
            present = self.calibration.ticks_to_radians(state.position)
            self.bus.write_goals(state.position)
            if self._torque_wanted:
                self.bus.set_torque(True)
        except (PortLost, BusError) as err:
            if first:
                raise
            self._status_line = f'reconnect failed: {err}'
            self.bus.close(disable_torque=False)
            return False
        with self._lock:
            self._present = present
            self._torque_on = self._torque_wanted
            self.controller.hold_present(present, self._now())
            self._connected = True
            self._failed_ticks = 0
        self._status_line = 'connected'
        self.get_logger().info(f'bus on {self.bus.config.port} connected, torque '
                               f'{"on" if self._torque_on else "off"}, holding '
                               f'{np.round(np.degrees(present), 1).tolist()} deg')
        return True

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- control loop ------------------------------------------------------------
    def _control_loop(self):
        period = 1.0 / self.get_parameter('control_rate_hz').value
        telemetry_every = max(1, round(self.get_parameter('telemetry_rate_hz').value ** -1
                                       / period))
        next_tick = time.monotonic()
        last_tick = None
        tick = 0
        while self._running:
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -period:  # overran by more than a tick: re-phase, don't burst
                next_tick = time.monotonic()
            start = time.monotonic()
            if last_tick is not None:
                self._tick_periods.append(start - last_tick)
            last_tick = start
            if not self._connected:
                if tick % max(1, round(self.get_parameter('reconnect_period_s').value
                                       / period)) == 0:
                    self._connect()
                tick += 1
                continue
            try:
                self._tick(telemetry=(tick % telemetry_every == 0))
            except PortLost as err:
                with self._lock:
                    self._connected = False
                    self._torque_on = False
                self._status_line = f'port lost: {err}'
                self.get_logger().error(f'{err}; no goals are sent until it returns')
            except Exception as err:  # noqa: BLE001 - one bad tick must not end the loop
                self._status_line = f'control tick failed: {err!r}'
                self.get_logger().error(self._status_line, throttle_duration_sec=1.0)
            tick += 1

    def _tick(self, telemetry: bool):
        try:
            state = self.bus.read_fast()
        except PortLost:
            raise
        except BusError as err:
            self._failed_ticks += 1
            limit = self.get_parameter('persistent_failure_ticks').value
            if self._failed_ticks == limit:
                self._status_line = f'persistent read failure: {err}'
                self.get_logger().error(f'{self._failed_ticks} failed reads in a row ({err}); '
                                        'no goals are written from stale state')
                self._hold_after_recovery = True
            return
        stamp = self.get_clock().now()
        now = stamp.nanoseconds * 1e-9
        cal = self.calibration
        present = cal.ticks_to_radians(state.position)
        with self._lock:
            self._present = present
            if self._failed_ticks:
                if self._hold_after_recovery:
                    self.get_logger().warning('bus reads recovered; holding the present position')
                    self.controller.hold_present(present, now)
                    self._hold_after_recovery = False
                    self._status_line = 'recovered'
                self._failed_ticks = 0
            goal = self.controller.goal(now, present) if self._torque_on else None
        if goal is not None:
            self.bus.write_goals(cal.radians_to_ticks(goal))
        effort = cal.sign * state.load / 1000.0 * self.stall_torque
        self.pub_joint_states.publish(joint_state_msg(
            stamp.to_msg(), present, cal.tick_rate_to_radians(state.velocity), effort))
        if telemetry:
            try:
                self._telemetry = self.bus.read_telemetry()
            except BusError as err:
                self.get_logger().warning(f'telemetry read failed: {err}',
                                       throttle_duration_sec=5.0)

    # -- callbacks ---------------------------------------------------------------
    def _on_trajectory(self, source: CommandSource, msg: JointTrajectory):
        now = self._now()
        with self._lock:
            if not self._torque_on:
                self.get_logger().warning(f'{source.value} trajectory ignored: torque is off',
                                       throttle_duration_sec=2.0)
                self.controller.counters.ignored[source.value] += 1
                return
            try:
                outcome, text = self.controller.on_trajectory(
                    source, trajectory_from_msg(msg), now, self._present)
            except TrajectoryRejected as err:
                outcome, text = Outcome.REJECTED, self.controller.record_rejection(source, err)
        log_outcome(self.get_logger(), outcome, text)

    def _on_override(self, msg: Bool):
        with self._lock:
            edge = self.controller.on_override(bool(msg.data), self._now(), self._present)
        if edge:
            self.get_logger().info('operator override ' + ('ON: following teleop' if msg.data
                                                           else 'OFF: policy in control'))

    def _on_enable_torque(self, request: SetBool.Request, response: SetBool.Response):
        try:
            if request.data:
                state = self.bus.read_fast()
                self.bus.write_goals(state.position)  # no jump to an old goal
                self.bus.set_torque(True)
                present = self.calibration.ticks_to_radians(state.position)
                with self._lock:
                    self.controller.hold_present(present, self._now())
                    self._torque_on = self._torque_wanted = True
            else:
                with self._lock:
                    self._torque_on = self._torque_wanted = False
                self.bus.set_torque(False)
        except BusError as err:
            response.success, response.message = False, f'torque change failed: {err}'
            return response
        response.success = True
        response.message = f'torque {"enabled" if request.data else "disabled"}'
        self.get_logger().info(response.message)
        return response

    # -- diagnostics -------------------------------------------------------------
    def tick_period_stats(self) -> dict[str, float]:
        periods = np.array(self._tick_periods) if self._tick_periods else np.zeros(1)
        return {'rate_hz': 1.0 / max(periods.mean(), 1e-9),
                'period_p50_ms': float(np.percentile(periods, 50) * 1e3),
                'period_p99_ms': float(np.percentile(periods, 99) * 1e3)}

    def diagnostics(self) -> DiagnosticArray:
        counters = self.bus.counters
        ctl = self.controller.counters
        new_retries = counters.retries - self._retries_reported
        self._retries_reported = counters.retries
        if not self._connected:
            level, message = ERROR, self._status_line
        elif self._failed_ticks >= self.get_parameter('persistent_failure_ticks').value:
            level, message = ERROR, self._status_line
        elif new_retries:
            level, message = WARN, f'{new_retries} transient read failures retried'
        else:
            level, message = OK, 'torque on' if self._torque_on else 'torque off'
        stats = self.tick_period_stats()
        values = {
            'port': self.bus.config.port, 'connected': self._connected,
            'torque': self._torque_on, 'override': self.controller.override,
            'reads': counters.reads, 'retries': counters.retries,
            'read_failures': counters.read_failures, 'writes': counters.writes,
            'last_error': counters.last_error,
            'rate_hz': f'{stats["rate_hz"]:.1f}',
            'period_p99_ms': f'{stats["period_p99_ms"]:.2f}',
            **{f'accepted_{k}': v for k, v in ctl.accepted.items()},
            **{f'rejected_{k}': v for k, v in ctl.rejected.items()},
            **{f'ignored_{k}': v for k, v in ctl.ignored.items()},
            'rejected_total': sum(ctl.rejected.values()),
            'last_rejection': self.controller.last_message,
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(diag_status('so101_arm: bus', level, message,
                                        self.bus.config.port, values))
        for name, sid in zip(JOINT_NAMES, self.bus.config.ids, strict=True):
            telem = self._telemetry.get(sid)
            if telem is None:
                array.status.append(diag_status(f'so101_arm: {name}', WARN if self._connected
                                                else ERROR, 'no telemetry yet', f'id {sid}', {}))
                continue
            s_level = ERROR if telem.status & 0x04 else WARN if telem.status else OK
            array.status.append(diag_status(
                f'so101_arm: {name}', s_level,
                ', '.join(error_names(telem.status)) or 'ok', f'id {sid}',
                {'voltage_v': telem.voltage, 'temperature_c': telem.temperature,
                 'moving': telem.moving, 'current_raw': telem.current,
                 'error_bits': telem.status}))
        return array

    def _publish_diagnostics(self):
        self.pub_diagnostics.publish(self.diagnostics())

    # -- shutdown ----------------------------------------------------------------
    def destroy_node(self):
        self._running = False
        if self._loop is not None and self._loop.is_alive():
            self._loop.join(timeout=2.0)
        # the servos keep their last goal (hold); then torque off if configured
        disable = self.get_parameter('disable_torque_on_shutdown').value
        try:
            if self.bus is not None:
                self.bus.close(disable_torque=disable and self._connected)
        except BusError as err:
            self.get_logger().error(f'closing the bus: {err}')
        return super().destroy_node()


def main(args=None):
    run_node(ArmNode, 'so101_arm', (CalibrationError, BusError), threads=2, args=args)


if __name__ == '__main__':
    main()
