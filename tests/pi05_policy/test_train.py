"""so101-train: recipes are LeRobot training configs, the dataset is checked against the policy
node's parameters before training, and the dry run prints LeRobot's real schedule.

The dataset is a small synthetic bag converted by ``so101 dataset`` at the node's 30 fps
(images, not video: fast). Nothing here trains; ``tests/test_loop.py`` does, end to end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import yaml  # noqa: E402

for _module in ('datasets', 'pyarrow', 'av'):
    pytest.importorskip(_module, reason=f'{_module} missing: so101-dataset needs lerobot\'s '
                        'dataset extra (requirements.txt)')

from pi05_policy.train import TABLE_STEPS, recipe_dir  # noqa: E402
from pi05_policy.train.cli import main  # noqa: E402
from tests.pi05_policy.test_dataset import config, write_small_bag  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REFERENCE = {200: 1.9e-5, 400: 2.4e-5, 600: 2.3e-5, 800: 2.2e-5, 1000: 1.8e-5, 3000: 2.5e-6}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> Path:
    from pi05_policy.dataset import convert

    tmp = tmp_path_factory.mktemp('train_ds')
    bag = write_small_bag(tmp / 'bag')
    result = convert(config([bag], tmp / 'ds', video=False, fps=30))
    return result.root


def dry_run(capsys, recipe, dataset, *extra, output=None):
    """(exit code, stdout, stderr) of ``so101-train --dry-run``."""
    out = output or dataset.parent / f'never_created_{recipe}'
    code = main(['--recipe', recipe, '--dataset', str(dataset), '--output', str(out),
                 '--dry-run', *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lerobot_rates(recipe: str, steps: int, **policy) -> list[float]:
    """The learning rate after each update, stepped the way lerobot-train steps it: the
    policy's own optimizer and scheduler presets on a real torch optimizer."""
    import torch

    import lerobot.policies  # noqa: F401 - registers the policy types
    from lerobot.configs.policies import PreTrainedConfig

    document = yaml.safe_load((recipe_dir() / f'{recipe}.yaml').read_text())['policy']
    document.update(policy, device='cpu')
    cls = PreTrainedConfig.get_choice_class(document.pop('type'))
    cfg = cls(**{k: v for k, v in document.items() if k != 'pretrained_path'})
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = cfg.get_optimizer_preset().build([param])
    scheduler = cfg.get_scheduler_preset().build(optimizer, steps)
    rates = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]['lr'])
    return rates


def table_rows(out: str) -> dict[int, list[str]]:
    rows = {}
    for line in out.splitlines():
        match = re.match(r'\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)$', line)
        if match and int(match.group(1)) in TABLE_STEPS:
            rows[int(match.group(1))] = list(match.groups()[1:])
    return rows


# ------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize('recipe', ['pi05_so101', 'act_so101'])
def test_each_recipe_is_a_lerobot_training_config_as_it_stands(recipe, tmp_path):
    """LeRobot's own loader (what lerobot-train --config_path calls) reads the file unchanged."""
    import lerobot.policies  # noqa: F401
    from lerobot.configs.train import TrainPipelineConfig

    cfg = TrainPipelineConfig.from_pretrained(
        str(recipe_dir() / f'{recipe}.yaml'),
        cli_args=[f'--dataset.root={tmp_path}', f'--output_dir={tmp_path / "out"}'])
    cfg.validate()
    assert cfg.batch_size == 8 and cfg.policy.push_to_hub is False and not cfg.wandb.enable
    if recipe == 'pi05_so101':
        p = cfg.policy
        assert (p.type, str(p.pretrained_path), cfg.steps) == ('pi05', 'lerobot/pi05_base', 3000)
        assert (p.dtype, p.gradient_checkpointing) == ('bfloat16', True)
        assert (cfg.optimizer.lr, cfg.scheduler.peak_lr, cfg.scheduler.decay_lr) == \
            (2.5e-5, 2.5e-5, 2.5e-6)
        assert cfg.scheduler.num_warmup_steps == 1000
    else:
        assert (cfg.policy.type, cfg.steps, cfg.scheduler) == ('act', 100_000, None)


def test_an_unknown_recipe_names_the_available_ones(capsys, dataset):
    code, _, err = dry_run(capsys, 'pi06_so101', dataset)
    assert code == 2 and 'no recipe' in err and 'act_so101' in err and 'pi05_so101' in err, err


# ------------------------------------------------------------------------------- dry run


def test_dry_run_prints_lerobots_schedule_beside_the_reference_and_says_why(capsys, dataset):
    code, out, err = dry_run(capsys, 'pi05_so101', dataset)
    assert code == 0, err
    rates = lerobot_rates('pi05_so101', 3000)
    rows = table_rows(out)
    assert sorted(rows) == list(TABLE_STEPS), out
    for step, (at_step, logged, reference, verdict) in rows.items():
        assert float(at_step) == pytest.approx(rates[step - 1], rel=1e-2), \
            f'step {step}: printed {at_step}, LeRobot\'s scheduler gives {rates[step - 1]:.3e}'
        if step % 200:  # log_freq 200: no log line at this step
            assert logged == '-', f'step {step}: LeRobot prints no log line, got {logged}'
        else:  # LeRobot's logged lr is the mean over the log window
            mean = sum(rates[step - 200:step]) / 200
            assert float(logged) == pytest.approx(mean, rel=1e-2), f'step {step}: {logged}'
        if step in REFERENCE:
            assert float(reference) == REFERENCE[step]
    # the reference's 1.9e-5 at step 200 is the logged mean over a 100-step warmup
    assert rows[200][3].startswith('same as the logged value'), rows[200]
    assert float(rows[200][0]) > 2.4e-5, 'at step 200 the warmup must be over (100 steps)'
    assert rows[3000][3].startswith('same'), rows[3000]
    assert 'DIFFERS' in rows[1000][3], f'1000: LeRobot 1.9e-5..2.0e-5 vs 1.8e-5: {rows[1000]}'
    assert 'warmup really lasts 100 steps (not 1000)' in out, out
    assert 'spans the 3000 steps (not 30000)' in out, out
    # the whole resolved configuration, as LeRobot encodes it
    resolved = yaml.safe_load(out.split('resolved configuration', 1)[1].split('\n', 1)[1]
                              .rsplit('dry run:', 1)[0])
    assert resolved['policy']['type'] == 'pi05' and resolved['steps'] == 3000
    assert resolved['scheduler']['num_warmup_steps'] == 1000
    assert resolved['dataset']['root'] == str(dataset.resolve())
    assert 'lerobot/pi05_base from the Hub' in out and 'loads no weights' in out
    assert not (dataset.parent / 'never_created_pi05_so101').exists()


def test_set_overrides_reach_the_configuration_and_the_schedule(capsys, dataset):
    code, out, err = dry_run(capsys, 'pi05_so101', dataset, '--set',
                             'policy.scheduler_decay_steps=3000', '--set', 'batch_size=4')
    assert code == 0, err
    assert 'batch 4' in out and 'not rescaled' in out, out
    rows = table_rows(out)
    rates = lerobot_rates('pi05_so101', 3000, scheduler_decay_steps=3000)
    assert float(rows[200][0]) == pytest.approx(rates[199], rel=1e-2) == pytest.approx(5.0e-6,
                                                                                      rel=0.01)
    assert 'DIFFERS' in rows[200][3], 'a real 1000-step warmup is not the reference\'s table'


def test_act_recipe_has_a_constant_rate(capsys, dataset):
    code, out, err = dry_run(capsys, 'act_so101', dataset, '--set',
                             'policy.pretrained_backbone_weights=null')
    assert code == 0, err
    assert 'the learning rate stays 1.00e-05' in out, out
    assert 'none (trained from scratch)' in out
    assert {row[0] for row in table_rows(out).values()} == {'1.00e-05'}


def test_policy_path_is_the_weights_folder_and_the_recipe_settings_stay(capsys, dataset,
                                                                        tmp_path):
    base = tmp_path / 'pi05_base'
    base.mkdir()
    code, _, err = dry_run(capsys, 'pi05_so101', dataset, '--set', f'policy.path={base}')
    assert code == 2 and 'lacks' in err and 'model.safetensors' in err, err
    for name in ('config.json', 'model.safetensors'):
        (base / name).write_text('{}')
    code, out, err = dry_run(capsys, 'pi05_so101', dataset, '--set', f'policy.path={base}')
    assert code == 0, err
    assert f'weights: {base} (local folder)' in out and 'taken as policy.pretrained_path' in out
    assert 'gradient_checkpointing: true' in out


@pytest.mark.parametrize('override, message', [
    ('policy.no_such_setting=1', 'no_such_setting'),
    ('steps=many', 'steps'),
    ('policy', 'expected key=value'),
])
def test_a_bad_override_is_refused_with_lerobots_reason(capsys, dataset, override, message):
    code, out, err = dry_run(capsys, 'pi05_so101', dataset, '--set', override)
    assert code == 2 and message in err, err
    assert 'learning rate' not in out


def test_an_existing_output_directory_is_refused_before_training(capsys, dataset, tmp_path):
    (tmp_path / 'run').mkdir()
    code, _, err = dry_run(capsys, 'act_so101', dataset, output=tmp_path / 'run')
    assert code == 2 and 'already exists' in err and 'another --output' in err, err


# ------------------------------------------------------------------------------- the dataset


def _damaged(dataset: Path, tmp_path: Path, change) -> Path:
    root = tmp_path / 'ds'
    shutil.copytree(dataset, root)
    summary = dataset.parent / 'ds.summary.json'
    if summary.exists():
        shutil.copy(summary, tmp_path / 'ds.summary.json')
    info_path = root / 'meta' / 'info.json'
    info = json.loads(info_path.read_text())
    change(info, tmp_path / 'ds.summary.json')
    info_path.write_text(json.dumps(info))
    return root


def _rename(old, new):
    def change(info, _):
        info['features'][new] = info['features'].pop(old)
    return change


def _set(key, field, value):
    def change(info, _):
        info['features'][key][field] = value
    return change


def _fps(info, _):
    info['fps'] = 10


def _units(_, summary):
    data = json.loads(summary.read_text())
    data['units']['state_and_action'] = ['range_m100_100'] * 5 + ['range_0_100']
    summary.write_text(json.dumps(data))


def _extra_observation(info, _):
    info['features']['observation.environment_state'] = {'dtype': 'float32', 'shape': [3],
                                                         'names': None}


@pytest.mark.parametrize('change, message', [
    (_rename('observation.images.handeye', 'observation.images.wrist'),
     r'no camera observation\.images\.handeye .*observation\.images\.wrist'),
    (_rename('observation.images.front', 'observation.images.front2'),
     r'camera observation\.images\.front2 is not one the node feeds'),
    (_set('observation.state', 'names', [f'j{i}' for i in range(6)]),
     r"observation\.state is shape \(6,\) named \['j0'.*'shoulder_pan\.pos'"),
    (_set('action', 'shape', [7]), r'action is shape \(7,\)'),
    (_fps, r'fps 10, but the node plays chunks at control_fps 30'),
    (_units, r"units \['range_m100_100'.*converts to \['degrees'"),
    (_extra_observation, r'observation\.environment_state.* not fed by the node'),
], ids=['camera-missing', 'camera-extra', 'joint-names', 'action-shape', 'fps', 'units',
        'other-input'])
def test_a_dataset_that_does_not_fit_the_node_is_refused_before_training(
        capsys, dataset, tmp_path, change, message):
    root = _damaged(dataset, tmp_path, change)
    code, out, err = dry_run(capsys, 'pi05_so101', root)
    assert code == 2, out
    assert re.search(message, err), err
    assert 'pi05_policy.yaml' in err and 'learning rate' not in out


def test_the_policy_params_file_sets_what_is_expected(capsys, dataset, tmp_path):
    params = yaml.safe_load((REPO / 'config' / 'pi05_policy.yaml').read_text())
    params['pi05_policy']['ros__parameters']['cameras'] = ['front']
    params['pi05_policy']['ros__parameters']['calibration_file'] = str(
        REPO / 'config' / 'calibration' / 'so101_demo.json')
    (tmp_path / 'one_camera.yaml').write_text(yaml.safe_dump(params))
    code, _, err = dry_run(capsys, 'act_so101', dataset, '--policy-params',
                           str(tmp_path / 'one_camera.yaml'))
    assert code == 2 and 'observation.images.handeye is not one the node feeds' in err, err


def test_a_folder_that_is_no_dataset_is_refused(capsys, tmp_path):
    code, _, err = dry_run(capsys, 'act_so101', tmp_path)
    assert code == 2 and 'not a LeRobot dataset' in err and 'so101 dataset' in err, err


def test_missing_units_are_a_note_not_an_error(capsys, dataset, tmp_path):
    root = tmp_path / 'copy'
    shutil.copytree(dataset, root)
    code, out, err = dry_run(capsys, 'act_so101', root)
    assert code == 0, err
    assert 'note: units not checked: no copy.summary.json' in out, out
