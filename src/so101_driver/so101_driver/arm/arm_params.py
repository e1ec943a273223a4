"""The parameters of ``so101_arm``: names, defaults, ranges and what each does (the README's
parameter table follows this list)."""

from __future__ import annotations

from rcl_interfaces.msg import IntegerRange, ParameterDescriptor

from so101_driver.ros_io import float_range


def declare_arm_parameters(node) -> None:
    """Declare every parameter of ``so101_arm`` on ``node`` (README: so101_arm parameters)."""
    def declare(name, default, description, read_only=False, **ranges):
        node.declare_parameter(name, default, ParameterDescriptor(
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
    declare('packet_timeout_ms', 20.0, 'A reply later than this beyond its wire time (ms) '
            'is late (counted, still used); one not there by twice this is lost and the '
            'read retried. Raise it for USB adapters with a high latency timer',
            read_only=True, floating_point_range=float_range(1, 1000))
    declare('realtime_priority', 0, 'SCHED_FIFO priority of the control thread, 1..99 '
            '(0: normal scheduling). Needs CAP_SYS_NICE or an rtprio limit; when the OS '
            'refuses it the node says so and runs at normal priority', read_only=True,
            integer_range=[IntegerRange(from_value=0, to_value=99, step=1)])
    declare('gil_switch_interval_ms', 1.0, 'Longest time another thread of this process '
            'keeps the GIL while the control thread waits for it (sys.setswitchinterval; '
            'Python default 5 ms; 0: leave it). Only ever lowered, process-wide, until '
            'the node is destroyed',
            read_only=True, floating_point_range=float_range(0, 5))
    declare('gc_in_idle', True, 'Run Python\'s garbage collector from the control thread '
            'in the slack after a tick (automatic collection off, process-wide, while the '
            'node runs; objects alive at start are frozen out of it)', read_only=True)
    declare('health_window_s', 2.0, 'Window of the loop figures in diagnostics (rate, '
            'tick period p50/p99, overruns, retries)', read_only=True,
            floating_point_range=float_range(0.5, 60))
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
