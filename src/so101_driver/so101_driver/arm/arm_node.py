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

Loop health: ``diagnostics`` carries the achieved rate, tick period p50/p99/max, overruns
and bus retries over the last ``health_window_s``; WARN below 90 % of ``control_rate_hz``
or when retries occurred, ERROR below 50 %. Retries are logged (at most every 5 s).

Real-time options (all measured in bench/bench_bus.py, figures in README): the control
thread can run at a SCHED_FIFO priority (``realtime_priority``, where the OS allows it);
``gil_switch_interval_ms`` bounds how long another Python thread of the process keeps the
GIL while the control thread waits for it; ``gc_in_idle`` runs Python's garbage collector
in the slack after a tick instead of wherever an allocation happens to trigger it.
In a process with other nodes, give this one a single-threaded executor of its own (the
driver demo and the benchmark do): rclpy's ``MultiThreadedExecutor`` (9.1) busy-waits,
holding the GIL, while a callback it queued has not started yet, and with a busy node
beside it the control thread misses most of its ticks (measured: 6 to 30 Hz of 100).
``main`` keeps a two-thread one for this node alone, whose few callbacks leave it idle.
"""

from __future__ import annotations

import gc
import sys
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from so101_driver import qos
from so101_driver.arm import loop
from so101_driver.arm.arm_params import declare_arm_parameters
from so101_driver.arm.loop import (
    ERROR_RATE_FRACTION,
    RETRY_LOG_PERIOD_S,
    WARN_RATE_FRACTION,
    LoopHealth,
)
from so101_driver.feetech.bus import BusConfig, BusError, FeetechBus, PortLost, error_names
from so101_driver.feetech.calibration import ArmCalibration, CalibrationError, load_calibration
from so101_driver.guard import GuardedNode
from so101_driver.joints import JOINT_NAMES, JointLimits, urdf_limits, urdf_text
from so101_driver.ros_io import (
    diag_status,
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


class ArmNode(GuardedNode):
    """SO-101 follower arm node."""

    def __init__(self, **kwargs):
        super().__init__('so101_arm', **kwargs)
        self._loop: threading.Thread | None = None  # set last: destroy_node may run before
        self._switch_interval_restore: tuple[float, float] | None = None  # (before, ours)
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
        self.health = LoopHealth(p('control_rate_hz').value)
        self._status_line = 'starting'
        self._realtime = 'off'  # what realtime_priority achieved (diagnostics)
        self._gc_disabled_here = False
        self._retries_logged = -RETRY_LOG_PERIOD_S

        self._connect(first=True)

        self.pub_joint_states = self.create_publisher(JointState, 'joint_states',
                                                      qos.MEASUREMENT_PUB)
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

        self._apply_switch_interval()
        self._running = True
        self._loop = threading.Thread(target=self._control_loop, name='so101_arm_control',
                                      daemon=True)
        self._loop.start()

    # -- parameters --------------------------------------------------------------
    def _declare_parameters(self):
        declare_arm_parameters(self)

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
    def _apply_switch_interval(self) -> None:
        before = sys.getswitchinterval()
        if loop.set_switch_interval(self.get_parameter('gil_switch_interval_ms').value):
            self._switch_interval_restore = (before, sys.getswitchinterval())

    def _apply_realtime_priority(self) -> None:
        self._realtime = loop.set_realtime_priority(
            self.get_parameter('realtime_priority').value, self.get_logger())

    def _start_gc_in_idle(self) -> None:
        if self.get_parameter('gc_in_idle').value:
            self._gc_disabled_here = loop.freeze_gc()

    def _collect_if_due(self, slack_s: float) -> None:
        loop.collect_if_due(slack_s, self.health.period)

    def _control_loop(self):
        try:
            self._run_loop()
        finally:
            if self._gc_disabled_here:  # automatic collection back; what was frozen with it
                self._gc_disabled_here = False
                gc.unfreeze()
                gc.enable()

    def _run_loop(self):
        period = 1.0 / self.get_parameter('control_rate_hz').value
        telemetry_every = max(1, round(self.get_parameter('telemetry_rate_hz').value ** -1
                                       / period))
        self._apply_realtime_priority()
        self._start_gc_in_idle()
        next_tick = time.monotonic()
        tick = 0
        telemetry_due = False
        retries_seen = self.bus.counters.retries
        while self._running:
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.monotonic()
            late = start - next_tick
            if late > period:  # overran by more than a tick: re-phase, don't burst
                next_tick = start
            telemetry_due = telemetry_due or tick % telemetry_every == 0
            tick += 1
            try:
                if not self._connected:
                    if tick % max(1, round(self.get_parameter('reconnect_period_s').value
                                           / period)) == 0:
                        self._connect()
                else:
                    # telemetry only in a tick that is on time: a late one catches up first
                    telemetry = telemetry_due and late < 0.25 * period
                    self._tick(telemetry)
                    telemetry_due = telemetry_due and not telemetry
            except PortLost as err:
                with self._lock:
                    self._connected = False
                    self._torque_on = False
                self._status_line = f'port lost: {err}'
                self.get_logger().error(f'{err}; no goals are sent until it returns')
            except Exception as err:  # noqa: BLE001 - one bad tick must not end the loop
                self._status_line = f'control tick failed: {err!r}'
                self.get_logger().error(self._status_line, throttle_duration_sec=1.0)
            retries = self.bus.counters.retries - retries_seen
            retries_seen += retries
            self.health.record(start, late, retries)
            if retries:
                self._log_retries(start)
            if self._gc_disabled_here:
                self._collect_if_due(next_tick + period - time.monotonic())

    def _log_retries(self, now: float) -> None:
        """A WARN about bus retries, at most every ``RETRY_LOG_PERIOD_S``."""
        if now - self._retries_logged < RETRY_LOG_PERIOD_S:
            return
        self._retries_logged = now
        c = self.bus.counters
        window = self.get_parameter('health_window_s').value
        self.get_logger().warning(
            f'bus retries: {self.health.window(window, now)["retries"]} in the last '
            f'{window:g} s (since start: {c.retries} retries for {c.timeouts} lost and '
            f'{c.corrupt_replies} corrupt replies; {c.late_replies} late replies used; '
            f'{c.read_failures} reads failed after all retries)')

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
    def tick_period_stats(self, window_s: float | None = None) -> dict[str, float]:
        """Loop figures over the last ``window_s`` (default: all that is recorded)."""
        if window_s is None:
            starts = self.health.tick_starts()
            window_s = (time.monotonic() - starts[0]) if len(starts) else 1.0
        return self.health.window(window_s)

    def diagnostics(self) -> DiagnosticArray:
        counters = self.bus.counters
        ctl = self.controller.counters
        rate = self.get_parameter('control_rate_hz').value
        window = self.get_parameter('health_window_s').value
        stats = self.health.window(window)
        problems = []
        level = OK
        if stats['rate_hz'] < ERROR_RATE_FRACTION * rate:
            level = ERROR
            problems.append(f'loop at {stats["rate_hz"]:.1f} Hz of {rate:g} '
                            f'(< {ERROR_RATE_FRACTION:.0%})')
        elif stats['rate_hz'] < WARN_RATE_FRACTION * rate:
            level = WARN
            problems.append(f'loop at {stats["rate_hz"]:.1f} Hz of {rate:g} '
                            f'(< {WARN_RATE_FRACTION:.0%})')
        if stats['retries']:
            level = max(level, WARN)
            problems.append(f'{stats["retries"]} bus retries in the last {window:g} s')
        if not self._connected:
            level, problems = ERROR, [self._status_line]
        elif self._failed_ticks >= self.get_parameter('persistent_failure_ticks').value:
            level, problems = ERROR, [self._status_line] + problems
        if problems:
            message = '; '.join(problems)
        else:
            message = 'torque on' if self._torque_on else 'torque off'
        values = {
            'port': self.bus.config.port, 'connected': self._connected,
            'torque': self._torque_on, 'override': self.controller.override,
            'control_rate_hz': f'{rate:g}', 'window_s': f'{stats["window_s"]:.1f}',
            'rate_hz': f'{stats["rate_hz"]:.1f}',
            'period_p50_ms': f'{stats["period_p50_ms"]:.2f}',
            'period_p99_ms': f'{stats["period_p99_ms"]:.2f}',
            'period_max_ms': f'{stats["period_max_ms"]:.2f}',
            'overruns': stats['overruns'], 'window_retries': stats['retries'],
            'reads': counters.reads, 'retries': counters.retries,
            'read_failures': counters.read_failures, 'timeouts': counters.timeouts,
            'late_replies': counters.late_replies, 'corrupt_replies': counters.corrupt_replies,
            'stale_bytes': counters.stale_bytes, 'writes': counters.writes,
            'last_error': counters.last_error,
            'realtime': self._realtime, 'gc_in_idle': self._gc_disabled_here,
            **{f'accepted_{k}': v for k, v in ctl.accepted.items()},
            **{f'rejected_{k}': v for k, v in ctl.rejected.items()},
            **{f'ignored_{k}': v for k, v in ctl.ignored.items()},
            'rejected_total': sum(ctl.rejected.values()),
            'last_rejection': self.controller.last_message,
            **self.controller.latency.values(),
            **self.guard_values(), 'last_rejected_message': self.last_rejection,
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
        if self._switch_interval_restore is not None:
            before, ours = self._switch_interval_restore
            self._switch_interval_restore = None
            if sys.getswitchinterval() == ours:  # nobody changed it since
                sys.setswitchinterval(before)
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
