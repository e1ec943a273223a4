"""The command line ``so101-train --recipe NAME --dataset DIR`` (``so101 train``).

Order matters: the dataset is checked first (cheap, and the most likely mistake), then the
recipe is resolved by LeRobot (its imports take seconds), the schedule printed, and only
then does ``lerobot-train`` start, in its own process, on the very file that was resolved.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from pi05_policy.train.features import DatasetContract, TrainError, check_dataset
from pi05_policy.train.recipes import (
    apply_overrides,
    available_recipes,
    load_recipe,
    pretrained_source,
    resolve,
    resolved_document,
    write_document,
)
from pi05_policy.train.schedule import format_table, schedule_explanation, schedule_table

#: LeRobot's training entry point (the ``lerobot-train`` console script runs its ``main``).
LEROBOT_TRAIN = 'lerobot.scripts.lerobot_train'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='so101-train',
        description='Train a policy on an SO-101 LeRobot dataset with a recipe from '
                    'config/train/ (a LeRobot training config), by running LeRobot\'s own '
                    'lerobot-train. The dataset is first checked against the policy node\'s '
                    'parameters (cameras, joint names, units, fps) and the learning-rate '
                    'schedule LeRobot will run is printed.')
    parser.add_argument('--recipe', help=f'recipe name ({", ".join(available_recipes())}) or '
                                         'the path of a recipe YAML file')
    parser.add_argument('--dataset', type=Path, help='LeRobot dataset folder (so101 dataset '
                                                     '--root)')
    parser.add_argument('--output', type=Path, help='run directory lerobot-train creates '
                                                    '(default outputs/train/<recipe>_<time>)')
    parser.add_argument('--set', action='append', default=[], dest='overrides',
                        metavar='KEY=VALUE', help='override a LeRobot setting of the recipe '
                        '(dotted key, YAML value), repeatable: --set steps=2000 --set '
                        'policy.device=cpu --set policy.pretrained_path=/data/pi05_base')
    parser.add_argument('--policy-params', type=Path,
                        help='parameters YAML of the policy node that will run the checkpoint '
                             '(default: the suite\'s config/pi05_policy.yaml); the dataset '
                             'must give its cameras, units and fps')
    parser.add_argument('--dry-run', action='store_true',
                        help='check and print the resolved configuration and schedule; do not '
                             'train')
    parser.add_argument('--list', action='store_true', help='list the recipes and exit')
    return parser


def prepare(args: argparse.Namespace, folder: Path, out=None) -> tuple[Path, object]:
    """Check, resolve and print; returns (the config file lerobot-train gets, the config)."""
    out = out or sys.stdout
    if not args.recipe or not args.dataset:
        raise TrainError('--recipe and --dataset are required (see --help)')
    name, document = load_recipe(args.recipe)
    document, notes = apply_overrides(document, args.overrides)
    policy_type = str((document.get('policy') or {}).get('type', ''))
    contract = DatasetContract.from_policy_params(args.policy_params)
    found = check_dataset(args.dataset, contract, policy_type, name)
    document.setdefault('dataset', {})['root'] = str(found.root.resolve())
    output = args.output or Path('outputs/train') / f'{name}_{time.strftime("%Y%m%d_%H%M%S")}'
    document['output_dir'] = str(Path(output).expanduser().resolve())
    config_file = write_document(document, folder / f'{name}.yaml')
    cfg, warnings = resolve(config_file)
    weights = pretrained_source(cfg)

    print(f'recipe {name}: {cfg.policy.type}, {cfg.steps} steps, batch {cfg.batch_size}, '
          f'device {cfg.policy.device}', file=out)
    print(f'dataset {found.root}: {found.episodes} episodes, {found.frames} frames at '
          f'{found.fps} fps, cameras ' + ', '.join(
              f'{k} {"x".join(map(str, s[:2]))}' for k, s in found.cameras.items())
          + f'; fits {contract.source.name} (cameras {list(contract.cameras)}, units '
          f'{contract.units[0]}/{contract.units[-1]}, {contract.fps} fps)', file=out)
    print(f'output {cfg.output_dir}', file=out)
    print(f'weights: {weights or "none (trained from scratch)"}', file=out)
    for line in [*notes, *found.notes, *warnings]:
        print(f'note: {line}', file=out)
    print('\nlearning rate (LeRobot\'s scheduler for this configuration):', file=out)
    for line in format_table(schedule_table(cfg, name)):
        print('  ' + line, file=out)
    for line in schedule_explanation(cfg):
        print(line, file=out)
    return config_file, cfg


def main(argv: Sequence[str] | None = None) -> int:
    """``so101-train``: lerobot-train's exit code; 2 when the recipe, an override or the
    dataset cannot be used (nothing is trained)."""
    args = build_parser().parse_args(argv)
    if args.list:
        for name in available_recipes():
            print(name)
        return 0
    with tempfile.TemporaryDirectory(prefix='so101_train_') as tmp:
        try:
            config_file, cfg = prepare(args, Path(tmp))
        except TrainError as err:
            print(f'so101-train: error: {err}', file=sys.stderr)
            return 2
        if args.dry_run:
            print('\nresolved configuration (what lerobot-train gets; LeRobot fills in the '
                  'dataset\'s features when it builds the policy):')
            print(yaml.safe_dump(resolved_document(cfg), sort_keys=False).rstrip())
            print('\ndry run: nothing trained')
            return 0
        command = [sys.executable, '-m', LEROBOT_TRAIN, f'--config_path={config_file}']
        print(f'\nrunning: lerobot-train --config_path={config_file}', flush=True)
        try:
            return subprocess.call(command, env=os.environ.copy())
        except KeyboardInterrupt:
            return 130


if __name__ == '__main__':
    sys.exit(main())
