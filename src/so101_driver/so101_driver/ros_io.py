"""ROS message <-> core conversions shared by the arm and simulation nodes."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from so101_driver.joints import JOINT_NAMES
from so101_driver.arm.trajectory import Outcome, RejectReason, Trajectory, TrajectoryRejected


def to_seconds(stamp: Time | Duration) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def time_msg(seconds: float) -> Time:
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def duration_msg(seconds: float) -> Duration:
    sec = int(np.floor(seconds))
    return Duration(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def trajectory_from_msg(msg: JointTrajectory) -> Trajectory:
    """Core trajectory from a message; raises ``TrajectoryRejected`` for no joint names or
    ragged points (any message of the type is turned into a trajectory or a rejection)."""
    n = len(msg.joint_names)
    if n == 0:
        raise TrajectoryRejected(RejectReason.MISSING_JOINT,
                                 f'no joint_names (expected {list(JOINT_NAMES)})')
    # shapes first, so the array allocated is never larger than the message: 10^5 names and
    # 10^5 empty points (2 MB on the wire) would otherwise ask for 80 GB (MemoryError)
    for k, point in enumerate(msg.points):
        if len(point.positions) != n:
            raise TrajectoryRejected(
                RejectReason.BAD_SHAPE,
                f'point {k} has {len(point.positions)} positions for {n} joint names')
    positions = np.empty((len(msg.points), n))
    for k, point in enumerate(msg.points):
        positions[k] = point.positions
    start = to_seconds(msg.header.stamp)
    return Trajectory(
        joint_names=tuple(msg.joint_names),
        start=start if start > 0 else None,
        time_from_start=np.array([to_seconds(p.time_from_start) for p in msg.points]),
        positions=positions,
    )


def trajectory_msg(positions: np.ndarray, time_from_start: np.ndarray, start: float | None,
                   joint_names: tuple[str, ...] = JOINT_NAMES) -> JointTrajectory:
    msg = JointTrajectory()
    msg.joint_names = list(joint_names)
    if start:
        msg.header.stamp = time_msg(start)
    for row, t in zip(np.asarray(positions, dtype=float), time_from_start, strict=True):
        msg.points.append(JointTrajectoryPoint(positions=row.tolist(),
                                               time_from_start=duration_msg(float(t))))
    return msg


def joint_state_msg(stamp: Time, position: np.ndarray, velocity: np.ndarray | None = None,
                    effort: np.ndarray | None = None) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(JOINT_NAMES)
    msg.position = [float(x) for x in position]
    if velocity is not None:
        msg.velocity = [float(x) for x in velocity]
    if effort is not None:
        msg.effort = [float(x) for x in effort]
    return msg


def diag_status(name: str, level: int | bytes, message: str, hardware_id: str,
                values: dict[str, object]) -> DiagnosticStatus:
    """``level`` as an int or as the message's own constants (``DiagnosticStatus.OK`` is
    ``b'\\x00'`` in the Python message classes)."""
    return DiagnosticStatus(
        level=level if isinstance(level, bytes) else bytes([level]), name=name,
        message=message, hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def run_node(make_node, name: str, startup_errors: tuple[type[BaseException], ...] = (),
             threads: int = 1, args=None) -> None:
    """Every node's ``main()``: init, build the node, spin until SIGINT/SIGTERM or an external
    shutdown, then destroy the node and only then shut rclpy down.

    rclpy's own signal handler shuts every context down the moment SIGINT arrives, so a
    node's worker thread (sim physics, the arm's control loop, a camera) that publishes
    before ``destroy_node`` has joined it fails with "publisher's context is invalid", and a
    second Ctrl-C raises KeyboardInterrupt inside whatever the node is closing (a bag's
    metadata). Here the signals only ask the spin loop to stop: the context stays valid until
    the node is destroyed, and further signals while it stops are logged, never raised. A
    signal while the node is still being built (a policy loading) aborts the build.

    An exception in ``startup_errors`` while building (a bad parameter, a missing file, a
    servo that does not answer) ends the process with one FATAL line naming the problem and
    exit status 1. ``threads`` > 1 spins a MultiThreadedExecutor (for nodes whose callbacks
    may block, e.g. a service doing bus I/O beside subscriptions).
    """
    import signal
    import sys
    import threading

    import rclpy
    from rclpy.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    spinning = threading.Event()
    logger = rclpy.logging.get_logger(name)

    def on_signal(signum, frame):
        if stop.is_set():
            print(f'[{name}] {signal.Signals(signum).name} again: already stopping',
                  file=sys.stderr, flush=True)
            return
        stop.set()
        if not spinning.is_set():  # still building (a policy loads for minutes): abort that
            raise KeyboardInterrupt

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        try:
            node = make_node()
        except startup_errors as err:
            logger.fatal(str(err))
            raise SystemExit(1) from err
        except KeyboardInterrupt:
            print(f'[{name}] stopped while starting', file=sys.stderr, flush=True)
            return
        executor = (MultiThreadedExecutor(num_threads=threads) if threads > 1
                    else SingleThreadedExecutor())
        executor.add_node(node)
        spinning.set()
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown(timeout_sec=5.0)
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    # on_signal stays installed: a late Ctrl-C while the interpreter exits is logged, not a
    # KeyboardInterrupt traceback and a non-zero exit after a clean shutdown.


def float_range(lo: float, hi: float) -> list:
    """``floating_point_range`` of a ParameterDescriptor: any value in [lo, hi]."""
    from rcl_interfaces.msg import FloatingPointRange

    return [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]


def log_outcome(logger, outcome: Outcome, text: str) -> None:
    """Log a trajectory's fate as the arm and the sim do: rejected = ERROR at most once a
    second (any process can send a flood; diagnostics count every one), ignored (its source
    is not in control) = throttled WARN, accepted = DEBUG."""
    if outcome is Outcome.REJECTED:
        logger.error(text, throttle_duration_sec=1.0)
    elif outcome is Outcome.IGNORED:
        logger.warning(text, throttle_duration_sec=2.0)
    else:
        logger.debug(text)
