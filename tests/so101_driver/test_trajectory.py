"""Trajectory executor semantics and override arbitration (core, no ROS)."""

import numpy as np
import pytest

from so101_driver.joints import JOINT_NAMES, urdf_limits
from so101_driver.arm.trajectory import (
    ArmController,
    CommandSource,
    ExecutorConfig,
    Outcome,
    RejectReason,
    Trajectory,
    TrajectoryExecutor,
    TrajectoryRejected,
)

HOME = np.zeros(6)


def traj(points, times, start=None, names=JOINT_NAMES):
    return Trajectory(tuple(names), start, np.asarray(times, float), np.asarray(points, float))


def line(a, b, n, duration):
    """n points from a to b (exclusive of a), evenly over duration."""
    s = np.linspace(0, 1, n + 1)[1:, None]
    return a + s * (np.asarray(b) - a), np.linspace(0, duration, n + 1)[1:]


@pytest.fixture
def executor():
    ex = TrajectoryExecutor(ExecutorConfig(limits=urdf_limits(), max_jump=0.5,
                                           max_relative_target=0.2))
    ex.hold(HOME, 0.0)
    return ex


def test_setpoint_interpolates_linearly_and_holds_after_the_last_point(executor):
    target = np.full(6, 0.3)
    pts, t = line(HOME, target, 3, 3.0)
    executor.submit(traj(pts, t), now=10.0, present=HOME)
    np.testing.assert_allclose(executor.setpoint(10.5), target * 0.5 / 3, atol=1e-12)
    np.testing.assert_allclose(executor.setpoint(12.0), target * 2 / 3, atol=1e-12)
    np.testing.assert_allclose(executor.setpoint(20.0), target, atol=1e-12)


def test_new_chunk_replaces_the_tail_without_a_jump(executor):
    a_pts, a_t = line(HOME, np.full(6, 0.4), 4, 2.0)
    executor.submit(traj(a_pts, a_t), now=0.0, present=HOME)
    before = executor.setpoint(1.0)
    b_target = np.array([-0.2] * 5 + [0.1])
    b_pts, b_t = line(before, b_target, 4, 2.0)
    kept = executor.submit(traj(b_pts, b_t), now=1.0, present=before)
    assert kept == 4
    np.testing.assert_allclose(executor.setpoint(1.0), before, atol=1e-12,
                               err_msg='setpoint jumped at the splice')
    # the old plan is gone after the splice: B's end, not A's, is where the arm ends up
    np.testing.assert_allclose(executor.setpoint(5.0), b_target, atol=1e-12)
    # and the setpoint moves continuously through the splice (no stop, no jump)
    samples = np.array([executor.setpoint(t) for t in np.arange(0.9, 1.3, 0.01)])
    assert np.max(np.abs(np.diff(samples, axis=0))) < 0.02


def test_future_start_keeps_the_current_plan_until_then(executor):
    a_pts, a_t = line(HOME, np.full(6, 0.4), 4, 2.0)
    executor.submit(traj(a_pts, a_t), now=0.0, present=HOME)
    expected_at_1_2 = executor.setpoint(1.2)
    b_pts = np.full((2, 6), 0.1)
    executor.submit(traj(b_pts, [0.5, 1.0], start=1.5), now=1.0, present=executor.setpoint(1.0))
    np.testing.assert_allclose(executor.setpoint(1.2), expected_at_1_2, atol=1e-12)
    np.testing.assert_allclose(executor.setpoint(3.0), np.full(6, 0.1), atol=1e-12)


def test_points_in_the_past_are_skipped(executor):
    pts = np.array([[0.01 * k] * 6 for k in range(5)])
    kept = executor.submit(traj(pts, [0.0, 0.25, 0.5, 0.75, 1.0], start=9.3), now=10.0,
                           present=HOME)
    assert kept == 2, 'only the points at 0.75 s and 1.0 s lie in the future'


def test_a_trajectory_entirely_in_the_past_is_rejected_and_the_plan_kept(executor):
    with pytest.raises(TrajectoryRejected) as err:
        executor.submit(traj(np.zeros((2, 6)), [0.1, 0.2], start=5.0), now=10.0, present=HOME)
    assert err.value.reason is RejectReason.ALL_IN_PAST


def test_joint_order_of_the_message_is_respected(executor):
    names = list(reversed(JOINT_NAMES))
    point = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.1]])  # 0.1 for shoulder_pan (listed last)
    executor.submit(traj(point, [1.0], names=names), now=0.0, present=HOME)
    assert executor.setpoint(2.0)[0] == pytest.approx(0.1)
    assert executor.setpoint(2.0)[5] == pytest.approx(0.0)


BAD = {
    'empty': (dict(points=np.zeros((0, 6)), times=[]), RejectReason.EMPTY),
    'unknown': (dict(points=np.zeros((1, 6)), times=[1.0],
                     names=JOINT_NAMES[:5] + ('jaw',)), RejectReason.UNKNOWN_JOINT),
    'missing': (dict(points=np.zeros((1, 5)), times=[1.0], names=JOINT_NAMES[:5]),
                RejectReason.MISSING_JOINT),
    'duplicate': (dict(points=np.zeros((1, 7)), times=[1.0], names=JOINT_NAMES + ('gripper',)),
                  RejectReason.DUPLICATE_JOINT),
    'nan': (dict(points=[[0, 0, np.nan, 0, 0, 0]], times=[1.0]), RejectReason.NON_FINITE),
    'inf': (dict(points=[[0, 0, 0, 0, np.inf, 0]], times=[1.0]), RejectReason.NON_FINITE),
    'time_equal': (dict(points=np.zeros((2, 6)), times=[1.0, 1.0]),
                   RejectReason.TIME_NOT_INCREASING),
    'time_back': (dict(points=np.zeros((2, 6)), times=[1.0, 0.5]),
                  RejectReason.TIME_NOT_INCREASING),
    'limits': (dict(points=[[0, 0, 0, 0, 0, 3.0]], times=[1.0]), RejectReason.OUT_OF_LIMITS),
    'jump': (dict(points=[[0.6, 0, 0, 0, 0, 0]], times=[1.0]), RejectReason.JUMP_TOO_LARGE),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_trajectory_is_rejected_whole_and_the_plan_is_unchanged(executor, case):
    good_pts, good_t = line(HOME, np.full(6, 0.3), 3, 3.0)
    executor.submit(traj(good_pts, good_t), now=0.0, present=HOME)
    before = [executor.setpoint(t).copy() for t in (0.5, 1.5, 4.0)]
    kwargs, reason = BAD[case]
    with pytest.raises(TrajectoryRejected) as err:
        executor.submit(traj(**kwargs), now=0.2, present=HOME)
    assert err.value.reason is reason, f'expected {reason}, got {err.value.reason}: {err.value}'
    after = [executor.setpoint(t) for t in (0.5, 1.5, 4.0)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_goal_is_clamped_per_tick_around_the_present_position(executor):
    executor.submit(traj([[0.3] * 5 + [0.0]], [0.01]), now=0.0, present=HOME)
    goal = executor.goal(now=1.0, present=HOME)
    np.testing.assert_allclose(goal, [0.2] * 5 + [0.0], err_msg='goal not clamped to +-0.2 rad')


def test_goal_is_clipped_to_the_joint_limits(executor):
    limits = urdf_limits()
    present = limits.upper - 0.05
    executor.hold(limits.upper, 0.0)
    goal = executor.goal(now=1.0, present=present)
    assert np.all(goal <= limits.upper)


def controller():
    c = ArmController(ExecutorConfig(limits=urdf_limits(), max_jump=0.5))
    c.hold_present(HOME, 0.0)
    return c


def test_policy_is_ignored_while_the_operator_has_override():
    c = controller()
    c.on_override(True, 1.0, HOME)
    outcome, _ = c.on_trajectory(CommandSource.POLICY, traj([[0.1] * 6], [0.5]), 1.0, HOME)
    assert outcome is Outcome.IGNORED
    outcome, _ = c.on_trajectory(CommandSource.TELEOP, traj([[0.2] * 6], [0.5]), 1.0, HOME)
    assert outcome is Outcome.ACCEPTED
    np.testing.assert_allclose(c.executor.setpoint(3.0), 0.2)
    assert c.counters.ignored['policy'] == 1 and c.counters.accepted['teleop'] == 1


def test_override_release_holds_and_ignores_teleop_until_the_policy_commands():
    c = controller()
    c.on_override(True, 1.0, HOME)
    c.on_trajectory(CommandSource.TELEOP, traj([[0.2] * 6], [1.0]), 1.0, HOME)
    mid = c.executor.setpoint(1.5)
    assert c.on_override(False, 1.5, mid) is True
    np.testing.assert_allclose(c.executor.setpoint(5.0), mid,
                               err_msg='teleop plan kept running after hand-back')
    outcome, _ = c.on_trajectory(CommandSource.TELEOP, traj([[0.3] * 6], [1.0]), 2.0, mid)
    assert outcome is Outcome.IGNORED
    assert c.on_override(False, 2.0, mid) is False, 'a repeated sample is not an edge'


def test_rejections_are_counted_by_reason():
    c = controller()
    c.on_trajectory(CommandSource.POLICY, traj([[np.nan] * 6], [0.5]), 1.0, HOME)
    c.on_trajectory(CommandSource.POLICY, traj([[2.0] + [0] * 5], [0.5]), 1.0, HOME)
    assert c.counters.rejected == {'non_finite': 1, 'out_of_limits': 1}
    assert 'out_of_limits' in c.last_message


@pytest.mark.parametrize('names, points, reason', [
    ([], [[]], RejectReason.MISSING_JOINT),  # once raised ValueError (reshape) and killed the arm
    ([], [], RejectReason.MISSING_JOINT),
    (list(JOINT_NAMES), [[0.0] * 6, [0.0] * 5], RejectReason.BAD_SHAPE),
    (list(JOINT_NAMES), [[0.0] * 7], RejectReason.BAD_SHAPE),
])
def test_malformed_messages_become_rejections_not_exceptions(names, points, reason):
    from so101_driver.ros_io import trajectory_from_msg
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory(joint_names=names,
                          points=[JointTrajectoryPoint(positions=p) for p in points])
    with pytest.raises(TrajectoryRejected) as info:
        trajectory_from_msg(msg)
    assert info.value.reason is reason
