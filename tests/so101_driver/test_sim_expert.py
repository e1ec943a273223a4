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
