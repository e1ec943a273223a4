"""Loading checkpoints through LeRobot's factory; bad checkpoints fail with what they expect."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from pi05_policy import tiny_checkpoints
from pi05_policy.runtime import (
    REDUCED_ARCHITECTURE_FILE,
    REDUCED_PI05_LOADER,
    CheckpointError,
    Device,
    NonFiniteActions,
    Observation,
    PolicyRuntime,
    RuntimeConfig,
    lerobot_loader,
    resolve_device,
    resolve_model_loader,
)
from pi05_policy.tiny_checkpoints import DEMO_TASK
from tests.pi05_policy.conftest import IMAGE_SHAPE, REPO

CAMERAS = {'front': 'front', 'handeye': 'handeye'}


def make_runtime(checkpoint, calibration_file, cameras=CAMERAS, **kwargs) -> PolicyRuntime:
    return PolicyRuntime(RuntimeConfig(checkpoint=checkpoint, calibration_file=calibration_file,
                                       cameras=dict(cameras), **kwargs))


def observation(task=DEMO_TASK, height=IMAGE_SHAPE[1], width=IMAGE_SHAPE[2]) -> Observation:
    rng = np.random.default_rng(0)
    return Observation(
        images={n: rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for n in CAMERAS},
        joint_positions=np.zeros(6), task=task)


def test_reduced_pi05_loads_with_its_loader_and_returns_a_chunk_in_radians(
        tiny_pi05, offline_tokenizer, calibration_file):
    runtime = make_runtime(tiny_pi05, calibration_file, tokenizer_path=str(offline_tokenizer),
                           model_loader=REDUCED_PI05_LOADER)
    assert runtime.model_loader is tiny_checkpoints.load_reduced_pi05
    runtime.load()
    # camera frames of another size are resized to the checkpoint's declared shape
    result = runtime.infer(observation(height=240, width=320))
    assert result.positions.shape == (20, 6), f'expected 20 actions x 6 joints, got ' \
                                              f'{result.positions.shape}'
    assert np.all(np.isfinite(result.positions))
    inside = (result.positions >= runtime.limits.lower - 1e-9) & \
             (result.positions <= runtime.limits.upper + 1e-9)
    assert inside.all(), 'actions must be clipped into the joint limits'
    assert set(result.timings) == {'preprocess', 'model', 'postprocess'}
    # the checkpoint's processor keeps the Hub name, as lerobot-train writes it
    assert runtime.info.tokenizer_name == 'google/paligemma-3b-pt-224'


def test_act_checkpoint_loads_through_the_same_path(tiny_act, calibration_file):
    runtime = make_runtime(tiny_act, calibration_file)
    assert runtime.model_loader is lerobot_loader
    runtime.load()
    result = runtime.infer(observation())
    assert result.positions.shape == (20, 6) and np.all(np.isfinite(result.positions))


def test_reduced_checkpoint_without_its_loader_is_refused_naming_the_loader(
        tiny_pi05, calibration_file):
    with pytest.raises(CheckpointError, match='reduced-size test checkpoint') as err:
        make_runtime(tiny_pi05, calibration_file)
    assert repr(REDUCED_PI05_LOADER) in str(err.value), f'loader not named: {err.value}'


@pytest.mark.parametrize('spec, why', [
    ('pi05_policy.tiny_checkpoints', 'is not "package.module:function"'),
    ('pi05_policy.tiny_checkpoints:', 'is not "package.module:function"'),
    (':load_reduced_pi05', 'is not "package.module:function"'),
    ('pi05 policy:load', 'is not "package.module:function"'),
    ('pi05_policy.no_such_module:load', "module 'pi05_policy.no_such_module' cannot be imported"),
    ('pi05_policy.tiny_checkpoints:no_such_loader', "has no 'no_such_loader'"),
    ('pi05_policy.tiny_checkpoints:DEMO_TASK', 'is a str, not a function'),
])
def test_bad_model_loader_is_refused_naming_it(tiny_act, calibration_file, spec, why):
    with pytest.raises(CheckpointError) as err:
        make_runtime(tiny_act, calibration_file, model_loader=spec)
    text = str(err.value)
    assert f'model_loader {spec!r}' in text and why in text, text


def test_reduced_loader_refuses_a_checkpoint_that_is_not_reduced(tiny_act, calibration_file):
    runtime = make_runtime(tiny_act, calibration_file, model_loader=REDUCED_PI05_LOADER)
    with pytest.raises(CheckpointError, match='loads only reduced-size Pi0.5 test checkpoints'):
        runtime.load()


def test_the_default_path_imports_nothing_of_the_test_checkpoints(tiny_act, calibration_file):
    # a fresh interpreter: this test process has imported the module for its fixtures
    script = textwrap.dedent(f'''
        import sys
        from pi05_policy.runtime import PolicyRuntime, RuntimeConfig
        runtime = PolicyRuntime(RuntimeConfig(
            checkpoint={str(tiny_act)!r}, calibration_file={str(calibration_file)!r},
            cameras={{'front': 'front', 'handeye': 'handeye'}}, device='cpu'))
        runtime.load()
        assert runtime.loaded
        print(sorted(m for m in sys.modules if m.startswith('pi05_policy')))
        ''')
    done = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    modules = done.stdout.strip().splitlines()[-1]
    assert 'pi05_policy.runtime' in modules and 'tiny_checkpoints' not in modules, modules


def test_model_loader_resolves_the_reduced_loader_and_defaults_to_lerobot():
    assert resolve_model_loader('') is lerobot_loader
    assert resolve_model_loader(REDUCED_PI05_LOADER) is tiny_checkpoints.load_reduced_pi05


@pytest.mark.parametrize('victim', ['model.safetensors', 'config.json',
                                    'policy_postprocessor.json', 'state_file'])
def test_checkpoint_missing_a_file_names_it(tiny_act, checkpoint_copy, calibration_file, victim):
    folder = checkpoint_copy(tiny_act)
    if victim == 'state_file':
        victim = next(p.name for p in folder.glob('policy_preprocessor*.safetensors'))
    (folder / victim).unlink()
    with pytest.raises(CheckpointError, match=victim.replace('.', r'\.')) as err:
        make_runtime(folder, calibration_file)
    assert 'pretrained_model' in str(err.value), f'the fix is not suggested: {err.value}'


def test_unknown_policy_type_lists_the_known_ones(tiny_act, checkpoint_copy, calibration_file):
    folder = checkpoint_copy(tiny_act)
    config = json.loads((folder / 'config.json').read_text())
    config['type'] = 'pi99'
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unknown policy type 'pi99'.*'act'.*'pi05'"):
        make_runtime(folder, calibration_file)


def test_camera_mismatch_lists_what_the_checkpoint_expects_and_what_was_configured(
        tiny_pi05, calibration_file):
    with pytest.raises(CheckpointError) as err:
        make_runtime(tiny_pi05, calibration_file, cameras={'front': 'front', 'side': 'side'})
    text = str(err.value)
    for needle in ("no camera configured for images ['handeye']",
                   "no image feature for ['side']", "expects images ['front', 'handeye']",
                   "configured: cameras {'front': 'front', 'side': 'side'}"):
        assert needle in text, f'expected {needle!r} in the error, got: {text}'


def test_state_shape_mismatch_is_refused(tiny_act, checkpoint_copy, calibration_file):
    folder = checkpoint_copy(tiny_act)
    config = json.loads((folder / 'config.json').read_text())
    config['input_features']['observation.state']['shape'] = [7]
    config['input_features']['observation.environment_state'] = {'type': 'ENV', 'shape': [3]}
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r'state shape \(7,\) is not \(6,\).*'
                                              r'observation\.environment_state'):
        make_runtime(folder, calibration_file)


def test_weights_that_do_not_fit_the_config_are_refused(tiny_pi05, checkpoint_copy,
                                                        offline_tokenizer, calibration_file):
    # LeRobot's pi05 loader only prints a warning and keeps random weights; we refuse.
    folder = checkpoint_copy(tiny_pi05)
    arch = json.loads((folder / REDUCED_ARCHITECTURE_FILE).read_text())
    arch['text_mlp'] *= 2
    (folder / REDUCED_ARCHITECTURE_FILE).write_text(json.dumps(arch))
    runtime = make_runtime(folder, calibration_file, tokenizer_path=str(offline_tokenizer),
                           model_loader=REDUCED_PI05_LOADER)
    with pytest.raises(CheckpointError, match=r'model\.safetensors does not fit the pi05 model'):
        runtime.load()


def test_non_finite_model_output_raises_instead_of_returning_a_chunk(
        tiny_act, checkpoint_copy, calibration_file):
    folder = checkpoint_copy(tiny_act)
    weights = load_file(folder / 'model.safetensors')
    weights['model.action_head.bias'][:] = float('nan')
    save_file(weights, folder / 'model.safetensors', metadata={'format': 'pt'})
    runtime = make_runtime(folder, calibration_file)
    runtime.load()
    with pytest.raises(NonFiniteActions, match='non-finite'):
        runtime.infer(observation())


def test_empty_task_is_refused(tiny_act, calibration_file):
    runtime = make_runtime(tiny_act, calibration_file)
    runtime.load()
    with pytest.raises(ValueError, match='task string is empty'):
        runtime.infer(observation(task='   '))


def test_cuda_requested_without_cuda_fails_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with pytest.raises(CheckpointError, match='device cuda requested but torch sees no CUDA'):
        resolve_device(Device.CUDA)
