"""so101-dataset: bags of the simulated cell -> a LeRobot dataset that LeRobot loads and trains on.

The main bag is recorded in-process from the simulation (SimCell + ScriptedExpert +
SimRenderer at 64x64, physics speed): two pick-and-place episodes, one operator takeover
(the expert's chunks go to teleop/joint_trajectory while teleop/override is true), a
stalled handeye camera in the second episode, front camera raw and handeye compressed. The
ground truth (the cell's own setpoints) is kept beside it. Small synthetic bags cover bad
input.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault('MUJOCO_GL', 'egl')  # before mujoco is imported (offscreen rendering)
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # read before huggingface_hub is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# LeRobot's dataset API needs its [dataset] extra (datasets, pyarrow, pandas, av) and
# lerobot-train needs accelerate; without them (an old .venv) these tests say so.
for _module in ('datasets', 'pyarrow', 'av', 'accelerate'):
    pytest.importorskip(_module, reason=f'{_module} missing: so101-dataset needs lerobot\'s '
                        'dataset extra and accelerate (requirements.txt)')

from eval_monitor.bag import BagReader, BagWriter  # noqa: E402
from pi05_policy.dataset import (  # noqa: E402
    ConversionConfig,
    DatasetError,
    MismatchAction,
    Segments,
    convert,
    main,
)

REPO = Path(__file__).resolve().parents[2]
CALIBRATION = REPO / 'config' / 'calibration' / 'so101_demo.json'
TASK = 'pick the red cube and place it in the gray bowl'
FPS = 10
CAMERA_EVERY = 10  # ticks of 10 ms: cameras at 10 Hz
STATE_EVERY = 2  # joint states at 50 Hz
OVERRIDE = (2.0, 3.5)  # operator takeover (sim time, s) in the first episode
STALL = (8.0, 9.0)  # no handeye image in this window (second episode)
IMAGE_TOLERANCE = 0.15
JOINTS = ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper')


def ns(t: float) -> int:
    return int(round(t * 1e9))


@dataclass
class SimBag:
    path: Path
    truth_times: np.ndarray  # control tick times (s)
    truth_setpoints: np.ndarray  # the cell's plan setpoint at each tick (rad)
    marks: list = field(default_factory=list)  # (event, stamp)


def record_sim_bag(path: Path) -> SimBag:
    """Two expert episodes of the simulated cell, recorded as the sim node would publish."""
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
    from so101_driver.images import numpy_to_image, rgb_to_compressed
    from so101_driver.joints import urdf_text
    from so101_driver.ros_io import joint_state_msg, time_msg, trajectory_msg
    from so101_driver.sim.cell import SimCell, SimConfig
    from so101_driver.sim.renderer import SimRenderer
    from so101_driver.sim.expert import ExpertConfig, ScriptedExpert, run_episodes
    from so101_driver.arm.trajectory import CommandSource
    from std_msgs.msg import Bool, String

    writer = BagWriter(path)
    truth_t: list[float] = []
    truth_q: list[np.ndarray] = []
    marks: list = []

    class RecordingCell(SimCell):
        """SimCell that records what the sim node would publish, and the takeover."""

        def __init__(self):
            super().__init__(SimConfig(seed=1))
            try:
                self.renderer = SimRenderer(self, 64, 64)
            except Exception:  # noqa: BLE001 - no offscreen GL here: synthetic images
                self.renderer = None
            self.operator = False
            self.resets = 0
            writer.write_msg('/robot_description', String(data=urdf_text()), 0)
            writer.write_msg('/policy/task', String(data=TASK), 0)
            self._mark(EpisodeEvent.START, None, 'sim started')
            self._override()
            self._joint_state()

        def _joint_state(self):
            sample = self.joint_sample()
            writer.write_msg('/joint_states', joint_state_msg(
                time_msg(self.time), sample.position, sample.velocity, sample.effort),
                ns(self.time))

        def _mark(self, event, success, note):
            mark = EpisodeMark(event=event, stamp=self.time, success=success, source='sim',
                               note=note)
            marks.append((event, self.time))
            writer.write_msg('/eval/episode', String(data=mark.to_json()), ns(self.time))

        def _override(self):
            writer.write_msg('/teleop/override', Bool(data=self.operator), ns(self.time))

        def _image(self, camera):
            if self.renderer is not None:
                return self.renderer.render(camera)
            level = int(self.time * 20) % 256
            return np.full((64, 64, 3), level, dtype=np.uint8)

        def submit(self, source, traj):
            source = CommandSource.TELEOP if self.operator else CommandSource.POLICY
            topic = '/teleop/joint_trajectory' if self.operator else '/joint_trajectory'
            writer.write_msg(topic, trajectory_msg(traj.positions, traj.time_from_start,
                                                   traj.start), ns(self.time))
            return super().submit(source, traj)

        def step(self):
            truth_t.append(self.time)
            truth_q.append(self.controller.executor.setpoint(self.time))
            super().step()
            t, tick = self.time, self.counters.ticks
            stamp = time_msg(t)
            if tick % STATE_EVERY == 0:
                self._joint_state()
            active = OVERRIDE[0] <= t < OVERRIDE[1]
            if active != self.operator:
                self.operator = active
                self.set_override(active)
                self._override()
            elif tick % 50 == 0:
                self._override()  # re-sent periodically, as the leader does
            if tick % CAMERA_EVERY == 0:
                msg = numpy_to_image(self._image('front'), 'rgb8', stamp, 'front')
                writer.write_msg('/cameras/front/image_raw', msg, ns(t))
                if not STALL[0] <= t < STALL[1]:
                    msg = rgb_to_compressed(self._image('handeye'), stamp=stamp)
                    writer.write_msg('/cameras/handeye/image_raw/compressed', msg, ns(t))

        def reset(self):
            success, cube = super().reset()
            self.resets += 1
            self._mark(EpisodeEvent.END, success, 'cube in bowl' if success else 'not in bowl')
            if self.resets < 2:
                self._mark(EpisodeEvent.START, None, 'sim reset')
            return success, cube

    cell = RecordingCell()
    expert = ScriptedExpert(ExpertConfig(
        seed=1, reach_s=1.0, descend_s=0.6, close_s=0.5, lift_s=0.6, carry_s=1.0, lower_s=0.5,
        release_s=0.4, retreat_s=0.6, settle_s=0.4))
    run_episodes(cell, expert, 2)
    cell.run(0.3)  # a little beyond the last END, as a recorder stops later
    writer.close()
    if cell.renderer is not None:
        cell.renderer.close()
    return SimBag(path, np.array(truth_t), np.array(truth_q), marks)


def write_small_bag(path: Path, joint_names=JOINTS, urdf: str | None = None, task: bool = True,
                    joint_states: bool = True, seconds: float = 2.0) -> Path:
    """A synthetic bag: joint states 50 Hz, one trajectory, two 8x8 raw cameras at 10 Hz."""
    from so101_driver.joints import urdf_text
    from so101_driver.ros_io import joint_state_msg, time_msg, trajectory_msg
    from std_msgs.msg import String

    t0 = 100.0
    with BagWriter(path) as writer:
        writer.write_msg('/robot_description', String(data=urdf or urdf_text()), ns(t0))
        if task:
            writer.write_msg('/policy/task', String(data=TASK), ns(t0))
        steps = int(seconds * 50)
        for k in range(steps):
            t = t0 + k / 50
            q = np.array([0.0, -0.5, 0.5, 0.3, 0.0, 0.2]) + 0.1 * np.sin(t)
            if joint_states:
                msg = joint_state_msg(time_msg(t), q)
                msg.name = list(joint_names)
                writer.write_msg('/joint_states', msg, ns(t))
            if k == 2:
                traj = trajectory_msg(np.array([q, q + 0.05]), np.array([0.0, 1.0]), t)
                writer.write_msg('/joint_trajectory', traj, ns(t))
            if k % 5 == 0:
                from so101_driver.images import numpy_to_image

                for cam in ('front', 'handeye'):
                    img = np.full((8, 8, 3), k % 256, dtype=np.uint8)
                    writer.write_msg(f'/cameras/{cam}/image_raw',
                                     numpy_to_image(img, 'rgb8', time_msg(t)), ns(t))
    return path


def config(bags, root, **kw) -> ConversionConfig:
    values = dict(calibration_file=CALIBRATION, fps=FPS, image_tolerance_s=IMAGE_TOLERANCE)
    values.update(kw)
    return ConversionConfig(bags=list(bags), root=root, **values)


def load(root: Path, repo_id: str = 'local/so101'):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id, root=root)


def column(dataset, key: str) -> np.ndarray:
    return np.array([np.asarray(v) for v in dataset.hf_dataset[key]])


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def sim_bag(tmp_path_factory) -> SimBag:
    return record_sim_bag(tmp_path_factory.mktemp('sim') / 'bag')


@pytest.fixture(scope='module')
def whole(sim_bag, tmp_path_factory):
    """The sim bag converted with whole episodes, as video: (result, loaded dataset)."""
    root = tmp_path_factory.mktemp('ds') / 'whole'
    result = convert(config([sim_bag.path], root))
    return result, load(root)


# ------------------------------------------------------------------------------- tests


def test_sim_bag_becomes_a_dataset_lerobot_loads_with_the_right_features(whole, sim_bag):
    result, ds = whole
    assert ds.fps == FPS, f'fps: expected {FPS}, got {ds.fps}'
    assert len(ds) == result.frames == ds.meta.total_frames, \
        f'frames: summary {result.frames}, dataset {len(ds)}, meta {ds.meta.total_frames}'
    names = [f'{j}.pos' for j in JOINTS]
    features = ds.features
    for key in ('observation.state', 'action'):
        assert features[key]['shape'] == (6,) and features[key]['names'] == names, \
            f'{key}: expected shape (6,) names {names}, got {features[key]}'
    for key in ('observation.images.front', 'observation.images.handeye'):
        kind, shape = features[key]['dtype'], tuple(features[key]['shape'])
        assert kind == 'video' and shape == (64, 64, 3), \
            f'{key}: expected a 64x64x3 video, got {features[key]}'
    assert features['intervention']['dtype'] == 'bool'
    assert not [k for k in features if k.startswith('observation.')
                and k not in ('observation.state', 'observation.images.front',
                              'observation.images.handeye')], 'extra policy inputs in features'
    item = ds[len(ds) // 2]
    assert tuple(item['observation.images.front'].shape) == (3, 64, 64), \
        f'decoded image shape: got {tuple(item["observation.images.front"].shape)}'
    assert item['task'] == TASK, f'task: expected {TASK!r}, got {item["task"]!r}'
    # two bag episodes; the stalled camera splits the second: three dataset episodes
    assert ds.meta.total_episodes == 3, \
        f'episodes: expected 3 (2 + a split at the stall), got {ds.meta.total_episodes}'
    # every frame time lies on its episode's grid: start + k / fps, no shifted frame
    times = column(ds, 'bag_time_ns').ravel() / 1e9
    episodes = column(ds, 'episode_index').ravel()
    stamps = column(ds, 'timestamp').ravel()
    for e in np.unique(episodes):
        t = times[episodes == e]
        np.testing.assert_allclose(t - t[0], stamps[episodes == e], atol=1e-4,
                                   err_msg=f'episode {e}: bag times are not on the fps grid')


def test_state_at_a_known_time_is_the_bag_joint_state_through_the_calibration(whole, sim_bag):
    from so101_driver.feetech.calibration import ArmCalibration, so101_norm_modes

    _, ds = whole
    js = [(m.header.stamp.sec + m.header.stamp.nanosec / 1e9, np.array(m.position))
          for _, _, _, m in BagReader(sim_bag.path).messages(topics=['/joint_states'])]
    stamps = np.array([s for s, _ in js])
    cal = ArmCalibration.from_file(CALIBRATION)
    times, states = column(ds, 'bag_time_ns').ravel() / 1e9, column(ds, 'observation.state')
    for k in (0, len(ds) // 3, len(ds) - 1):
        i = int(np.searchsorted(stamps, times[k], side='right')) - 1
        expected = cal.radians_to_lerobot(js[i][1], so101_norm_modes(True)).astype(np.float32)
        np.testing.assert_array_equal(
            states[k], expected,
            err_msg=f'frame {k} at {times[k]:.3f} s: expected the joint state stamped '
                    f'{stamps[i]:.3f} s in LeRobot degrees / 0..100')


def test_action_is_the_commanded_setpoint_of_policy_and_operator(whole, sim_bag):
    from so101_driver.feetech.calibration import ArmCalibration, so101_norm_modes

    _, ds = whole
    cal = ArmCalibration.from_file(CALIBRATION)
    modes = so101_norm_modes(True)
    times, actions = column(ds, 'bag_time_ns').ravel() / 1e9, column(ds, 'action')
    flags = column(ds, 'intervention').ravel().astype(bool)
    errors = []
    for t, action in zip(times, actions, strict=True):
        tick = int(np.argmin(np.abs(sim_bag.truth_times - t)))
        assert abs(sim_bag.truth_times[tick] - t) < 1e-6, f'frame at {t} s is not on a tick'
        errors.append(np.abs(action - cal.radians_to_lerobot(sim_bag.truth_setpoints[tick],
                                                            modes)).max())
    errors = np.array(errors)
    assert errors.max() < 0.05, \
        f'action vs the cell\'s setpoint: max error {errors.max():.4f} (LeRobot units) at ' \
        f'{times[np.argmax(errors)]:.2f} s, expected < 0.05'
    assert flags.any() and errors[flags].max() < 0.05, 'operator frames: action is not teleop'
    states = column(ds, 'observation.state')
    assert np.abs(actions - states).max() > 1.0, 'action equals the measured state: not a target'


def test_intervention_flags_cover_exactly_the_override_span(whole, sim_bag):
    _, ds = whole
    overrides = [(log / 1e9, m.data) for _, _, log, m in
                 BagReader(sim_bag.path).messages(topics=['/teleop/override'])]
    rise = next(t for t, v in overrides if v)
    fall = next(t for t, v in overrides if t > rise and not v)
    times, flags = column(ds, 'bag_time_ns').ravel() / 1e9, column(ds, 'intervention').ravel()
    expected = (times >= rise) & (times < fall)
    wrong = times[flags.astype(bool) != expected]
    assert not len(wrong), f'intervention flag wrong at {wrong} (override [{rise}, {fall}))'
    assert expected.sum() == round((fall - rise) * FPS), \
        f'expected {round((fall - rise) * FPS)} flagged frames, got {expected.sum()}'


def test_segment_filters_keep_only_interventions_or_everything_but_them(whole, sim_bag,
                                                                      tmp_path):
    result, ds = whole
    all_flags = column(ds, 'intervention').ravel().astype(bool)
    only = convert(config([sim_bag.path], tmp_path / 'only', segments=Segments.INTERVENTIONS,
                          video=False))
    rest = convert(config([sim_bag.path], tmp_path / 'rest', segments=Segments.AUTONOMOUS,
                          video=False))
    a, b = load(tmp_path / 'only'), load(tmp_path / 'rest')
    assert column(a, 'intervention').all() and len(a) == all_flags.sum(), \
        f'interventions only: expected {all_flags.sum()} flagged frames, got {len(a)} with ' \
        f'{int(column(a, "intervention").sum())} flagged'
    assert not column(b, 'intervention').any() and len(b) == (~all_flags).sum(), \
        f'autonomous: expected {(~all_flags).sum()} unflagged frames, got {len(b)}'
    assert only.summary['episodes'][0]['kind'] == 'intervention'
    # the takeover splits the first episode in two autonomous parts
    kinds = [e['kind'] for e in rest.summary['episodes']]
    assert kinds.count('autonomous') == len(kinds) == result.episodes + 1, \
        f'autonomous: expected {result.episodes + 1} autonomous episodes, got {kinds}'
    assert only.summary['filtered_frames'] == len(b) and rest.summary['filtered_frames'] == len(a)


def test_stalled_camera_span_is_reported_and_skipped_not_filled(whole, sim_bag):
    result, ds = whole
    last_before = STALL[0] - CAMERA_EVERY / 100
    spans = [s for s in result.summary['skipped_spans']
             if any('stale camera handeye' in r for r in s['reasons'])]
    assert len(spans) == 1, \
        f'expected one stale-camera span, got {result.summary["skipped_spans"]}'
    span = spans[0]
    start = max(t for event, t in sim_bag.marks if event.value == 'start')  # episode 2
    assert start < STALL[0], f'the stall {STALL} must lie in episode 2 (starts {start} s)'
    grid = start + np.arange(200) / FPS
    stale = grid[(grid - last_before > IMAGE_TOLERANCE + 1e-9) & (grid < STALL[1])]
    assert span['frames'] == len(stale) and abs(span['start_s'] - stale[0]) < 1e-6, \
        f'stale span: expected {len(stale)} frames from {stale[0]:.3f} s, got {span}'
    times = column(ds, 'bag_time_ns').ravel() / 1e9
    inside = times[(times > last_before + IMAGE_TOLERANCE + 1e-9) & (times < STALL[1])]
    assert not len(inside), f'frames written while the camera was stalled: {inside}'
    summary = json.loads(result.summary_path.read_text())
    assert summary['skipped_spans'] == result.summary['skipped_spans']


@pytest.mark.slow
def test_act_trains_a_few_steps_on_the_dataset_with_lerobot_train(whole, tmp_path):
    result, _ = whole
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
           'WANDB_MODE': 'disabled', 'CUDA_VISIBLE_DEVICES': ''}
    args = [
        sys.executable, '-m', 'lerobot.scripts.lerobot_train',
        '--dataset.repo_id=local/so101', f'--dataset.root={result.root}',
        '--policy.type=act', '--policy.device=cpu', '--policy.push_to_hub=false',
        '--policy.pretrained_backbone_weights=null', '--policy.dim_model=32',
        '--policy.n_heads=2', '--policy.dim_feedforward=64', '--policy.n_encoder_layers=1',
        '--policy.n_decoder_layers=1', '--policy.n_vae_encoder_layers=1',
        '--policy.latent_dim=8', '--policy.chunk_size=5', '--policy.n_action_steps=5',
        '--steps=2', '--batch_size=2', '--num_workers=0', '--log_freq=1',
        '--save_checkpoint=true', '--save_freq=2', '--wandb.enable=false',
        f'--output_dir={tmp_path / "train"}',
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, env=env,
                          cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f'lerobot-train exit {done.returncode}:\n{output[-3000:]}'
    assert 'step:2' in output and 'End of training' in output, output[-2000:]
    # the checkpoint takes what the policy node gives it: both cameras and the state
    from pi05_policy.runtime import check_features, inspect_checkpoint

    checkpoints = sorted((tmp_path / 'train' / 'checkpoints').glob('*/pretrained_model'))
    assert checkpoints, f'no checkpoint written:\n{output[-2000:]}'
    info = inspect_checkpoint(checkpoints[-1])
    check_features(info, {'front': 'front', 'handeye': 'handeye'})
    assert sorted(info.image_keys) == ['front', 'handeye'] and info.state_shape == (6,), \
        f'checkpoint inputs: {info.expects()}'


# ------------------------------------------------------------------------------- bad input


def test_missing_joint_states_topic_is_an_error_naming_bag_and_topic(tmp_path):
    bag = write_small_bag(tmp_path / 'bag', joint_states=False)
    with pytest.raises(DatasetError, match=r'bag .*bag.*/joint_states'):
        convert(config([bag], tmp_path / 'ds', video=False))
    assert not (tmp_path / 'ds').exists(), 'a dataset was created for unusable input'


def test_missing_camera_topic_is_an_error_naming_the_expected_topics(tmp_path):
    bag = write_small_bag(tmp_path / 'bag')
    with pytest.raises(DatasetError, match=r"camera 'wrist' has no topic.*/cameras/wrist/"):
        convert(config([bag], tmp_path / 'ds', cameras={'front': 'front', 'wrist': 'wrist'}))


def test_joint_names_of_another_robot_are_refused(tmp_path):
    names = ('j1', 'j2', 'j3', 'j4', 'j5', 'j6')
    bag = write_small_bag(tmp_path / 'bag', joint_names=names)
    with pytest.raises(DatasetError, match=r"names joints \['j1'.*expected the SO-101 joints"):
        convert(config([bag], tmp_path / 'ds', video=False))


def test_bags_from_different_robots_are_refused(tmp_path):
    from so101_driver.joints import urdf_text

    other = urdf_text().replace('name="gripper"', 'name="gripper2"', 1)
    assert other != urdf_text()
    a = write_small_bag(tmp_path / 'a')
    b = write_small_bag(tmp_path / 'b', urdf=other)
    with pytest.raises(DatasetError, match=r'come from different robots.*gripper'):
        convert(config([a, b], tmp_path / 'ds', video=False))


def test_calibration_mismatch_stops_or_skips_the_bag(tmp_path):
    a = write_small_bag(tmp_path / 'a')
    b = write_small_bag(tmp_path / 'b')
    data = json.loads(CALIBRATION.read_text())
    data['elbow_flex']['range_max'] -= 100
    (b / 'calibration.json').write_text(json.dumps(data))
    shutil.copy(CALIBRATION, a / 'calibration.json')
    with pytest.raises(DatasetError, match=r'differs from .*elbow_flex.range_max'):
        convert(config([a, b], tmp_path / 'ds', video=False))
    result = convert(config([a, b], tmp_path / 'ds', video=False,
                            on_calibration_mismatch=MismatchAction.SKIP))
    skipped = [bag for bag in result.summary['bags'] if 'skipped' in bag]
    assert [s['path'] for s in skipped] == [str(b)], f'expected bag b skipped, got {skipped}'
    assert {e['bag'] for e in result.summary['episodes']} == {str(a)}


def test_task_comes_from_the_option_when_the_bag_has_none(tmp_path):
    bag = write_small_bag(tmp_path / 'bag', task=False)
    with pytest.raises(DatasetError, match=r'no /policy/task message and no --task'):
        convert(config([bag], tmp_path / 'ds', video=False))
    result = convert(config([bag], tmp_path / 'ds', video=False, task='stack the cubes'))
    assert result.summary['episodes'][0]['tasks'] == ['stack the cubes']


def test_cli_writes_the_dataset_and_summary_and_refuses_an_existing_root(tmp_path, capsys):
    bag = write_small_bag(tmp_path / 'bag')
    root = tmp_path / 'ds'
    argv = [str(bag), '--root', str(root), '--calibration', str(CALIBRATION), '--fps', '10',
            '--no-video', '--camera', 'front', '--camera', 'handeye:wrist']
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert 'no eval/episode marks: the whole bag is one episode' in out, out
    summary = json.loads((tmp_path / 'ds.summary.json').read_text())
    assert 'observation.images.wrist' in summary['dataset']['features']
    assert summary['dataset']['frames'] == len(load(root)) > 0
    assert main(argv) == 2
    assert 'exists; choose another --root or pass --overwrite' in capsys.readouterr().err
    assert main([*argv, '--overwrite']) == 0


def test_staged_video_writing_gives_the_same_frames_as_streaming(whole, sim_bag, tmp_path):
    from pi05_policy.dataset import dropped_video_frames

    result, ds = whole
    assert result.summary['dataset']['video_writing'] == 'streaming'
    staged_config = config([sim_bag.path], tmp_path / 'staged', streaming_encoding=False)
    staged = convert(staged_config)
    assert staged.summary['dataset']['video_writing'] == 'staged'
    other = load(tmp_path / 'staged')
    for key in ('observation.state', 'action', 'bag_time_ns', 'intervention'):
        np.testing.assert_array_equal(column(other, key), column(ds, key),
                                      err_msg=f'{key} differs between staged and streaming')
    assert dropped_video_frames(staged_config) == []
    assert dropped_video_frames(config([sim_bag.path], result.root)) == []


def test_a_video_shorter_than_its_episode_is_detected(whole, sim_bag, tmp_path):
    import pandas as pd

    from pi05_policy.dataset import dropped_video_frames

    result, _ = whole
    root = tmp_path / 'copy'
    shutil.copytree(result.root, root)
    table = next((root / 'meta' / 'episodes').rglob('*.parquet'))
    episodes = pd.read_parquet(table)
    key = 'videos/observation.images.handeye/to_timestamp'
    episodes.loc[0, key] = episodes.loc[0, key] - 1.0 / FPS  # one frame dropped
    episodes.to_parquet(table)
    problems = dropped_video_frames(config([sim_bag.path], root))
    assert len(problems) == 1 and 'episode 0 observation.images.handeye' in problems[0], problems


def test_policy_params_file_gives_the_policy_node_units_cameras_and_fps():
    from pi05_policy.dataset import ImageSource, policy_params

    values = policy_params(REPO / 'config' / 'pi05_policy.yaml')
    assert values['calibration_file'].resolve() == CALIBRATION.resolve(), values
    assert values['cameras'] == {'front': 'front', 'handeye': 'handeye'}
    assert values['use_degrees'] is True and values['fps'] == 30
    assert values.get('image_source', ImageSource.AUTO) is ImageSource.AUTO
