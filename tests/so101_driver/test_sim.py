"""The MuJoCo cell (so101_driver.sim), in-process, no ROS: physics, ground truth, rendering."""

import os

import numpy as np
import pytest
from so101_driver.joints import JOINT_NAMES, urdf_limits
from so101_driver.sim.cell import CUBE_HALF, SimCell, SimConfig
from so101_driver.sim.renderer import SimRenderer, camera_intrinsics, world_to_optical
from so101_driver.sim.expert import AttemptOutcome, ExpertConfig, ScriptedExpert, run_episodes
from so101_driver.arm.trajectory import CommandSource, Outcome, Trajectory

NOISY = {'grasp_xy_noise_m': 0.014, 'grasp_z_noise_m': 0.01, 'close_timing_noise_s': 0.4,
         'speed_noise': 0.3, 'reaction_delay_s': 0.3}


def chunk(positions, start, dt=0.05):
    positions = np.atleast_2d(positions)
    return Trajectory(joint_names=JOINT_NAMES, start=start,
                      time_from_start=np.arange(len(positions)) * dt, positions=positions)


def test_mjcf_joint_ranges_are_the_urdf_limits():
    cell = SimCell()
    limits = urdf_limits()
    for i, name in enumerate(JOINT_NAMES):
        lo, hi = cell.model.jnt_range[cell.model.joint(name).id]
        assert (lo, hi) == pytest.approx((limits.lower[i], limits.upper[i]), abs=1e-4), \
            f'{name}: MJCF range {(lo, hi)} != URDF {(limits.lower[i], limits.upper[i])}'


def test_same_seed_gives_the_same_cubes_and_outcomes():
    runs = []
    for _ in range(2):
        cell = SimCell(SimConfig(seed=7))
        expert = ScriptedExpert(ExpertConfig(seed=7, **NOISY))
        outcomes = run_episodes(cell, expert, 3)
        runs.append((outcomes, cell.cube_pose()[0], cell.present()))
    assert runs[0][0] == runs[1][0], f'outcomes differ: {runs[0][0]} vs {runs[1][0]}'
    np.testing.assert_array_equal(runs[0][1], runs[1][1], 'cube positions differ')
    np.testing.assert_array_equal(runs[0][2], runs[1][2], 'joint positions differ')
    other = SimCell(SimConfig(seed=8))
    assert not np.allclose(other.cube_pose()[0], SimCell(SimConfig(seed=7)).cube_pose()[0]), \
        'a different seed should place the cube elsewhere'


def test_expert_without_noise_puts_the_cube_in_the_bowl_8_of_10():
    cell = SimCell(SimConfig(seed=11))
    outcomes = run_episodes(cell, ScriptedExpert(ExpertConfig(seed=11)), 10)
    successes = outcomes.count(AttemptOutcome.SUCCESS)
    assert successes >= 8, f'expected >= 8/10 successes, got {successes}: {outcomes}'
    assert cell.counters.episode_success.count(True) == successes, \
        f'sim ground truth {cell.counters.episode_success} disagrees with the expert {outcomes}'


def test_noisy_expert_fails_some_grasps_but_not_all():
    cell = SimCell(SimConfig(seed=5))
    outcomes = run_episodes(cell, ScriptedExpert(ExpertConfig(seed=5, **NOISY)), 12)
    failures = [o for o in outcomes if o is not AttemptOutcome.SUCCESS]
    assert failures, f'expected some failed attempts with noise, got {outcomes}'
    assert len(failures) < len(outcomes), f'expected some successes too, got {outcomes}'


def _run_until(cell, expert, predicate, seconds):
    for _ in range(round(seconds / cell.dt)):
        expert.observe(truth := cell.truth())
        if predicate(truth):
            return truth
        if cell.counters.ticks % 25 == 0:
            traj = expert.act(cell.time, cell.present())
            if traj is not None:
                assert cell.submit(CommandSource.POLICY, traj)[0] is Outcome.ACCEPTED
        cell.step()
    raise AssertionError(f'condition not reached within {seconds} s of sim time')


def test_truth_reports_held_lifted_effort_and_a_drop_outside_the_bowl():
    cell = SimCell(SimConfig(seed=2))
    expert = ScriptedExpert(ExpertConfig(seed=2))
    open_effort = abs(cell.joint_sample().effort[-1])
    held = _run_until(cell, expert, lambda t: t.held and t.lifted, 15.0)
    assert not held.in_bowl and not held.dropped
    squeeze = abs(cell.joint_sample().effort[-1])
    assert squeeze > 1.0 > open_effort, \
        f'gripper effort: expected > 1 N·m pinching, ~0 open; got {squeeze}, {open_effort}'
    # open the jaws where the cube is (over the table, not the bowl): a drop
    q = cell.present()
    q[-1] = 1.2
    assert cell.submit(CommandSource.POLICY, chunk([cell.present(), q], cell.time))[0] \
        is Outcome.ACCEPTED
    dropped = []
    for _ in range(150):
        cell.step()
        dropped.append(cell.truth().dropped)
    assert dropped.count(True) == 1, \
        f'expected exactly one dropped sample, got {dropped.count(True)}'
    final = cell.truth()
    assert not (final.held or final.lifted or final.in_bowl), \
        f'cube should lie on the table: {final}'
    assert cell.counters.drops == 1


def test_reset_moves_the_cube_homes_the_arm_and_keeps_the_clock():
    cell = SimCell(SimConfig(seed=3))
    cell.run(0.5)
    before, t_before = cell.cube_pose()[0], cell.time
    success, (x, y, _) = cell.reset()
    after = cell.cube_pose()[0]
    assert success is False, 'the cube was not in the bowl'
    assert cell.episode == 1
    assert not np.allclose(before[:2], after[:2]), f'cube did not move: {before} -> {after}'
    assert (x, y) == pytest.approx(tuple(after[:2]))
    assert cell.config.cube_x_range[0] <= x <= cell.config.cube_x_range[1]
    assert cell.time == t_before, 'reset must not rewind the sim clock'
    np.testing.assert_allclose(cell.present(), cell.config.home, atol=1e-9)


def test_config_rejects_a_cube_range_reaching_into_the_bowl():
    with pytest.raises(ValueError, match='reaches into the bowl'):
        SimConfig(cube_x_range=(0.1, 0.2), cube_y_range=(0.1, 0.25), bowl_xy=(0.14, 0.2))
    with pytest.raises(ValueError, match='cube_y_range'):
        SimConfig(cube_y_range=(0.1, -0.1))


def test_intrinsics_follow_the_camera_fovy():
    cell = SimCell()
    intr = camera_intrinsics(cell.model, 'front', 224, 224)
    fovy = np.radians(cell.model.cam_fovy[cell.model.camera('front').id])
    assert intr.fy == pytest.approx(112 / np.tan(fovy / 2))
    assert (intr.cx, intr.cy) == (112, 112)


@pytest.mark.skipif(os.environ.get('MUJOCO_GL') not in ('egl', 'osmesa'),
                    reason='offscreen rendering needs MUJOCO_GL=egl or osmesa')
def test_front_image_shows_the_red_cube_where_ground_truth_projects_it():
    cell = SimCell(SimConfig(seed=4))
    cell.run(0.2)
    renderer = SimRenderer(cell, 224, 224)
    try:
        image = renderer.render('front')
        hand = renderer.render('handeye')
        intr = renderer.intrinsics('front')
    finally:
        renderer.close()
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert hand.shape == (224, 224, 3)
    top = cell.cube_pose()[0] + [0, 0, CUBE_HALF * 0.9]  # the top face is surely visible
    u, v = intr.project(world_to_optical(cell.data, cell.model, 'front', top))
    patch = image[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2].reshape(-1, 3).astype(int)
    red = (patch[:, 0] > 120) & (patch[:, 1] < 70) & (patch[:, 2] < 70)
    assert red.all(), f'expected red pixels at ({u:.0f}, {v:.0f}), got {patch.tolist()}'
    # and the cube is small: most of the image is not red
    all_red = (image[..., 0] > 120) & (image[..., 1] < 70) & (image[..., 2] < 70)
    assert 4 < all_red.sum() < 0.05 * 224 * 224, f'{all_red.sum()} red pixels'
