"""The scripted expert's core (so101_driver.sim.expert): IK, chunks, delay, seeding."""

import numpy as np
import pytest
from so101_driver.eval_topics import SimTruth
from so101_driver.joints import JOINT_NAMES, urdf_limits
from so101_driver.sim.cell import HOME
from so101_driver.sim.expert import ExpertConfig, Kinematics, Phase, ScriptedExpert
from so101_driver.arm.trajectory import ArmController, CommandSource, ExecutorConfig, Outcome


def truth(stamp, episode=0, cube=(0.22, -0.05, 0.015), **flags):
    return SimTruth(stamp=stamp, cube_position=cube, held=flags.get('held', False),
                    lifted=flags.get('lifted', False), in_bowl=flags.get('in_bowl', False),
                    episode=episode, extra={'bowl_position': [0.14, 0.2, 0.0],
                                            'cube_quat_wxyz': [1.0, 0.0, 0.0, 0.0]})


@pytest.mark.parametrize('target', [(0.17, -0.12, 0.015), (0.26, 0.06, 0.015),
                                    (0.22, 0.0, 0.09), (0.14, 0.2, 0.08)])
def test_ik_reaches_the_workspace_pointing_down(target):
    kin = Kinematics()
    q, err = kin.solve(np.array(target), 0.3, np.array(HOME), iterations=200)
    pos, approach, jaw = kin.forward(q)
    assert err < 1e-3, f'grasp point {pos} misses {target} by {err * 1e3:.1f} mm'
    assert approach[2] < -0.99, f'approach axis {approach} is not pointing down'
    assert np.degrees(np.arccos(abs(np.cos(np.arctan2(jaw[1], jaw[0]) - 0.3)))) < 2, \
        f'jaw axis {jaw} not at yaw 0.3 rad'
    limits = urdf_limits()
    assert not limits.violations(q), f'IK left the joint limits: {q}'


def test_chunk_starts_at_the_measured_position_and_passes_the_executor():
    expert = ScriptedExpert(ExpertConfig())
    expert.observe(truth(1.0))
    present = np.array(HOME)
    traj = expert.act(1.0, present)
    assert traj.joint_names == JOINT_NAMES and traj.start == 1.0
    np.testing.assert_allclose(traj.positions[0], present)
    assert np.all(np.diff(traj.time_from_start) > 0)
    # even when the arm lags far behind the plan (a jaw blocked by the cube), the chunk
    # starts where the arm is, so max_jump never refuses it
    lagging = present + np.array([0, 0, 0, 0, 0, 0.5])
    later = expert.act(3.5, lagging)
    controller = ArmController(ExecutorConfig(limits=urdf_limits()))
    controller.hold_present(lagging, 3.5)
    outcome, text = controller.on_trajectory(CommandSource.POLICY, later, 3.5, lagging)
    assert outcome is Outcome.ACCEPTED, text


def test_reaction_delay_hides_newer_truth():
    expert = ScriptedExpert(ExpertConfig(reaction_delay_s=0.5))
    expert.observe(truth(1.0))
    assert expert.act(1.2, np.array(HOME)) is None, 'acted on truth younger than the delay'
    assert expert.act(1.5, np.array(HOME)) is not None
    assert expert.phase(1.5) is Phase.REACH


def test_miss_is_noticed_after_the_lift_and_the_expert_backs_off():
    expert = ScriptedExpert(ExpertConfig())
    expert.observe(truth(0.5))
    expert.act(0.5, np.array(HOME))
    t = 0.5
    while not expert.finished and t < 20:
        t += 0.25
        expert.observe(truth(t))  # never held: the grasp missed
        expert.act(t, np.array(HOME))
    assert expert.outcome is not None and expert.outcome.value == 'miss', expert.outcome
    assert expert.phase(t) is Phase.ABORT


def test_same_seed_same_noisy_plan():
    chunks = []
    for _ in range(2):
        expert = ScriptedExpert(ExpertConfig(seed=3, grasp_xy_noise_m=0.01, speed_noise=0.2))
        expert.observe(truth(1.0))
        chunks.append(expert.act(2.0, np.array(HOME)).positions)
    np.testing.assert_array_equal(chunks[0], chunks[1])


def test_config_names_the_bad_field():
    with pytest.raises(ValueError, match='grasp_xy_noise_m'):
        ExpertConfig(grasp_xy_noise_m=-0.1)
    with pytest.raises(ValueError, match='chunk_dt_s'):
        ExpertConfig(chunk_dt_s=2.0, chunk_horizon_s=1.0)


def test_failure_rates_and_episode_limits_are_checked():
    with pytest.raises(ValueError, match='add up'):
        ExpertConfig(miss_rate=0.6, slip_rate=0.5)
    with pytest.raises(ValueError, match='miss_rate'):
        ExpertConfig(miss_rate=-0.1)
    with pytest.raises(ValueError, match='forever'):
        ExpertConfig(max_attempts=0)


def run_truth(expert, t, until, **flags):
    while t < until and not expert.finished:
        t += 0.25
        expert.observe(truth(t, **flags))
        expert.act(t, np.array(HOME))
    return t


def test_expert_retries_after_misses_until_out_of_attempts():
    expert = ScriptedExpert(ExpertConfig(max_attempts=3))
    expert.observe(truth(0.5))
    expert.act(0.5, np.array(HOME))
    t = run_truth(expert, 0.5, 100)  # never held: every attempt misses
    assert [a.outcome.value for a in expert.attempts] == ['miss'] * 3
    assert expert.finished and expert.outcome.value == 'miss'
    assert all(a.episode == 0 for a in expert.attempts)
    # the next attempt started from the arm after backing off, without going home between
    starts = [a.start for a in expert.attempts]
    assert all(b - a < 12 for a, b in zip(starts, starts[1:])), starts
    assert t < 100


def test_episode_timeout_ends_the_episode_and_injected_modes_are_recorded():
    expert = ScriptedExpert(ExpertConfig(max_attempts=0, episode_timeout_s=20.0,
                                         miss_rate=0.5, slip_rate=0.5, seed=4))
    expert.observe(truth(0.5))
    expert.act(0.5, np.array(HOME))
    t = run_truth(expert, 0.5, 100)
    assert expert.finished and 19 < t < 23, t
    assert {a.mode.value for a in expert.attempts} <= {'miss', 'slip'}
    assert len(expert.attempts) >= 2


def test_takeover_pauses_the_expert_and_a_cube_left_in_the_bowl_ends_the_episode():
    expert = ScriptedExpert(ExpertConfig(max_attempts=6))
    expert.observe(truth(0.5))
    assert expert.act(0.5, np.array(HOME)) is not None
    expert.set_override(True, 1.0)
    assert expert.attempts[-1].outcome.value == 'interrupted'
    expert.observe(truth(1.5))
    assert expert.act(1.5, np.array(HOME)) is None, 'the expert commanded during a takeover'
    expert.set_override(False, 6.0)
    expert.observe(truth(6.0, in_bowl=True))
    expert.act(6.0, np.array(HOME))
    assert expert.finished and expert.rescued and expert.outcome.value == 'success'


def test_after_a_takeover_the_next_attempt_is_clean_and_replanned_from_the_present():
    expert = ScriptedExpert(ExpertConfig(max_attempts=6, miss_rate=1.0))
    expert.observe(truth(0.5))
    expert.act(0.5, np.array(HOME))
    assert expert.attempts[-1].mode.value == 'miss'
    expert.set_override(True, 1.0)
    expert.set_override(False, 4.0)
    elsewhere = np.array(HOME) + np.array([0.2, 0, 0, 0, 0, 0.4])  # turned, still pointing down
    expert.observe(truth(4.5))
    chunk = expert.act(4.5, elsewhere)
    assert expert.attempts[-1].mode.value == 'none' and expert.attempts[-1].after_assist
    assert expert.attempts[-1].start == 4.5 and expert.phase(4.5) is Phase.REACH
    np.testing.assert_allclose(chunk.positions[0], elsewhere)


def test_operator_takes_over_after_failures_moves_the_arm_and_hands_back():
    from so101_driver.sim.operator import OperatorConfig, SimOperator

    operator = SimOperator(OperatorConfig(rescue_after_failures=2, move_s=1.0,
                                          hand_back_s=0.5))
    operator.episode_started(0.0, 1)
    seen = truth(1.0, episode=1)
    present = np.array(HOME)
    operator.failure(1.0)
    assert operator.step(1.0, seen, present) == (None, None)
    operator.failure(2.0)
    edge, chunk = operator.step(2.0, seen, present)
    assert edge is True and chunk is not None
    np.testing.assert_allclose(chunk.positions[0], present)
    assert chunk.positions[-1][-1] > 0.8, 'the operator should open the jaws wide'
    assert operator.step(2.5, seen, present)[0] is None
    assert operator.step(3.6, seen, present)[0] is False
    operator.failure(4.0)
    operator.failure(5.0)
    assert operator.step(5.0, seen, present) == (None, None), 'more than one takeover'
    assert operator.total == 1
