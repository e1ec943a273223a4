"""The dataset a recipe trains on, checked before ``lerobot-train`` starts.

``lerobot-train`` takes whatever observation features a dataset has as the policy's inputs
and trains for hours before anything runs the result. The checkpoint it writes is then run
by the policy node with ``config/pi05_policy.yaml``: the node feeds the cameras that file
names, the six SO-101 joints converted to the units it names (``use_degrees``) and steps the
chunk at its ``control_fps``. A dataset that differs in any of these trains a checkpoint the
node refuses, or worse, one it runs wrongly (actions in the wrong units, a chunk played three
times too fast). So the dataset's ``meta/info.json`` (and the ``<root>.summary.json`` that
``so101 dataset`` writes beside it, the only place its units are recorded) is held against
that file first, every problem listed at once with what to change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from so101_driver.feetech.calibration import so101_norm_modes
from so101_driver.joints import JOINT_NAMES, package_root

from pi05_policy.dataset.config import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, DatasetError

#: Observation features LeRobot gives a policy as inputs (``dataset_to_policy_features``).
OBSERVATION_PREFIX = 'observation.'


class TrainError(ValueError):
    """A recipe, an override or a dataset that cannot be trained; the message says why."""


def default_policy_params() -> Path:
    """The policy node's parameters file of the suite (``config/pi05_policy.yaml``)."""
    return package_root() / 'config' / 'pi05_policy.yaml'


@dataclass(frozen=True)
class DatasetContract:
    """What the policy node will feed the trained checkpoint, so what the dataset must hold."""

    cameras: tuple[str, ...]  # image keys: observation.images.<key>
    names: tuple[str, ...]  # state and action names, in order
    units: tuple[str, ...]  # LeRobot MotorNormMode per joint (degrees, range_0_100, ...)
    fps: int  # the node's control_fps: the rate the chunk is played at
    source: Path  # the parameters file it came from

    @classmethod
    def from_policy_params(cls, path: Path | None = None) -> DatasetContract:
        """Read cameras, ``use_degrees`` and ``control_fps`` as ``so101 dataset`` does."""
        from pi05_policy.dataset.cli import policy_params

        path = Path(path) if path else default_policy_params()
        try:
            values = policy_params(path)
        except DatasetError as err:
            raise TrainError(str(err)) from err
        cameras = values.get('cameras') or {'front': 'front', 'handeye': 'handeye'}
        return cls(cameras=tuple(cameras.values()),
                   names=tuple(f'{j}.pos' for j in JOINT_NAMES),
                   units=tuple(m.value for m in so101_norm_modes(values.get('use_degrees',
                                                                            True))),
                   fps=int(values.get('fps', 30)), source=path)


@dataclass
class DatasetReport:
    """What was found: the dataset's size, and notes (checks that could not be made)."""

    root: Path
    fps: int
    episodes: int
    frames: int
    cameras: dict[str, tuple[int, ...]]  # image key -> (height, width, channels)
    notes: list[str] = field(default_factory=list)


def summary_path(root: Path) -> Path:
    """Where ``so101 dataset`` writes its summary by default: beside the root."""
    return Path(str(Path(root)).rstrip('/') + '.summary.json')


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as err:
        raise TrainError(f'cannot read {what} {path}: {err}') from err
    if not isinstance(data, dict):
        raise TrainError(f'{what} {path} is not a JSON object')
    return data


def check_dataset(root: Path, contract: DatasetContract, policy_type: str,
                  recipe: str) -> DatasetReport:
    """Hold the dataset at ``root`` against ``contract``; raise TrainError listing every
    problem, return what was found when it fits."""
    root = Path(root).expanduser()
    info_path = root / 'meta' / 'info.json'
    if not info_path.is_file():
        raise TrainError(f'{root} is not a LeRobot dataset (no meta/info.json); make one from '
                         'bags with `so101 dataset BAG... --root DIR`')
    info = _read_json(info_path, 'dataset info')
    features = info.get('features') or {}
    problems: list[str] = []
    want = list(contract.names)
    for key in (STATE_KEY, ACTION_KEY):
        feature = features.get(key)
        if feature is None:
            problems.append(f'no {key} feature')
            continue
        shape, names = tuple(feature.get('shape') or ()), feature.get('names')
        if shape != (len(want),) or list(names or []) != want:
            problems.append(f'{key} is shape {shape} named {names}; the node gives '
                            f'({len(want)},) named {want}')
    images = {k[len(IMAGE_PREFIX):]: v for k, v in features.items() if k.startswith(IMAGE_PREFIX)}
    for key in contract.cameras:
        if key not in images:
            problems.append(f'no camera {IMAGE_PREFIX}{key} (the dataset has '
                            f'{sorted(IMAGE_PREFIX + k for k in images) or "none"})')
    for key in sorted(set(images) - set(contract.cameras)):
        problems.append(f'camera {IMAGE_PREFIX}{key} is not one the node feeds '
                        f'({list(contract.cameras)}): LeRobot would make it a policy input')
    others = sorted(k for k in features if k.startswith(OBSERVATION_PREFIX)
                    and k != STATE_KEY and not k.startswith(IMAGE_PREFIX))
    if others:
        problems.append(f'observation features {others} are not fed by the node: LeRobot '
                        'would make them policy inputs')
    fps = info.get('fps')
    if fps != contract.fps:
        problems.append(f'fps {fps}, but the node plays chunks at control_fps {contract.fps} '
                        '(convert at that rate: `so101 dataset --fps`)')
    if not info.get('total_frames'):
        problems.append('no frames')
    if policy_type in ('pi0', 'pi05', 'smolvla') and not info.get('total_tasks'):
        problems.append(f'no task strings: {policy_type} is prompted with the task')
    notes: list[str] = []
    summary = summary_path(root)
    if summary.is_file():
        units = (_read_json(summary, 'dataset summary').get('units') or {}).get(
            'state_and_action')
        if list(units or []) != list(contract.units):
            problems.append(f'units {units} ({summary.name}), but the node converts to '
                            f'{list(contract.units)} (use_degrees in {contract.source.name})')
    else:
        notes.append(f'units not checked: no {summary.name} beside the dataset (written by '
                     f'so101 dataset); the node converts to {list(contract.units)}')
    if problems:
        raise TrainError(
            f'dataset {root} does not fit recipe {recipe}: the checkpoint will be run by the '
            f'policy node with {contract.source}, and\n'
            + '\n'.join(f'  - {p}' for p in problems)
            + '\nConvert the bags again with `so101 dataset --policy-params '
              f'{contract.source}`, or pass the parameters the node will run with '
              '(--policy-params FILE).')
    return DatasetReport(root=root, fps=int(fps), episodes=int(info.get('total_episodes') or 0),
                         frames=int(info.get('total_frames') or 0),
                         cameras={k: tuple(images[k].get('shape') or ())
                                  for k in contract.cameras},
                         notes=notes)
