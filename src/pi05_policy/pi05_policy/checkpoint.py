"""What a LeRobot checkpoint folder declares, read from its files without building the model.

``inspect_checkpoint`` checks that a ``pretrained_model/`` folder is complete (config, weights,
both processor pipelines and their state files) and of a policy type this LeRobot knows, and
returns its features, chunk size, tokenizer and whether its config takes an ``rtc_config``
(Real-Time Chunking); ``check_features`` compares the features with the robot's cameras and
joints. Both run before any model is built, so a bad folder or mapping fails at node start
with a ``CheckpointError`` naming what the checkpoint expects and what was configured. No
torch and no rclpy here (LeRobot's config registry only).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from so101_driver.joints import JOINT_NAMES

IMAGE_PREFIX = 'observation.images.'
STATE_KEY = 'observation.state'
ACTION_KEY = 'action'
CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
PREPROCESSOR_FILE = 'policy_preprocessor.json'
POSTPROCESSOR_FILE = 'policy_postprocessor.json'
#: Marks a reduced-size test Pi0.5 (``pi05_policy.tiny_checkpoints``), and its model_loader.
REDUCED_ARCHITECTURE_FILE = 'reduced_architecture.json'
REDUCED_PI05_LOADER = 'pi05_policy.tiny_checkpoints:load_reduced_pi05'


class CheckpointError(ValueError):
    """A checkpoint folder cannot serve this robot; the message says what and how to fix it."""



@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint folder declares, read from its files without building the model."""

    folder: Path
    policy_type: str
    image_keys: tuple[str, ...]  # without the observation.images. prefix
    state_shape: tuple[int, ...] | None
    action_shape: tuple[int, ...] | None
    other_inputs: tuple[str, ...]  # input features the node cannot provide
    chunk_size: int | None
    n_action_steps: int | None
    tokenizer_name: str | None  # Hub name the preprocessor loads its tokenizer from

    @property
    def supports_rtc(self) -> bool:
        """The policy type runs LeRobot's Real-Time Chunking (``config_supports_rtc``)."""
        return config_supports_rtc(self.policy_type)

    def expects(self) -> str:
        return (f'images {list(self.image_keys)}, state {self.state_shape}, '
                f'action {self.action_shape}'
                + (f', other inputs {list(self.other_inputs)}' if self.other_inputs else ''))


def _features(config: dict, key: str, source: Path) -> dict[str, dict]:
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise CheckpointError(f'{source}: "{key}" is a {type(value).__name__}, expected an '
                              'object of feature name -> {"type", "shape"}')
    return value


def inspect_checkpoint(folder: str | Path) -> CheckpointInfo:
    """Check that ``folder`` is a complete LeRobot checkpoint of a known policy type."""
    folder = Path(folder).expanduser()
    needed = (CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE, POSTPROCESSOR_FILE)
    if not folder.is_dir():
        raise CheckpointError(
            f'checkpoint folder {folder} does not exist; expected a pretrained_model/ folder '
            f'with {list(needed)} (lerobot-train writes it to '
            'outputs/train/<run>/checkpoints/<step>/pretrained_model)')
    missing = [name for name in needed if not (folder / name).is_file()]
    states = []
    for name in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        if (folder / name).is_file():
            for step in _pipeline_steps(folder / name):
                if step.get('state_file'):
                    states.append(step['state_file'])
    missing += [name for name in states if not (folder / name).is_file()]
    if missing:
        present = sorted(p.name for p in folder.iterdir())
        raise CheckpointError(
            f'checkpoint {folder} is missing {missing}; a LeRobot checkpoint holds '
            f'{list(needed)} plus the processors\' state files {states}; found {present}. '
            'Point checkpoint at the pretrained_model/ folder of a lerobot-train run.')
    config = _read_json(folder / CONFIG_FILE)
    policy_type = config.get('type')
    known = _known_policy_types()
    if policy_type not in known:
        raise CheckpointError(f'{folder / CONFIG_FILE}: unknown policy type {policy_type!r}; '
                              f'this LeRobot knows {sorted(known)}')
    inputs = _features(config, 'input_features', folder / CONFIG_FILE)
    outputs = _features(config, 'output_features', folder / CONFIG_FILE)
    images, other, state = [], [], None
    for name, feature in inputs.items():
        kind = str(feature.get('type', '')).upper()
        if kind == 'VISUAL' and name.startswith(IMAGE_PREFIX):
            images.append(name[len(IMAGE_PREFIX):])
        elif name == STATE_KEY:
            state = tuple(feature.get('shape', ()))
        else:
            other.append(name)
    action = tuple(outputs[ACTION_KEY]['shape']) if ACTION_KEY in outputs else None
    tokenizer = None
    for step in _pipeline_steps(folder / PREPROCESSOR_FILE):
        if step.get('registry_name') == 'tokenizer_processor':
            tokenizer = step.get('config', {}).get('tokenizer_name')
    return CheckpointInfo(
        folder=folder, policy_type=policy_type, image_keys=tuple(images), state_shape=state,
        action_shape=action, other_inputs=tuple(other), chunk_size=config.get('chunk_size'),
        n_action_steps=config.get('n_action_steps'), tokenizer_name=tokenizer)


def check_features(info: CheckpointInfo, cameras: Mapping[str, str]) -> None:
    """The configured cameras and the SO-101 state must match the checkpoint's features."""
    n = len(JOINT_NAMES)
    configured = (f'cameras {dict(cameras)} -> images {sorted(cameras.values())}, '
                  f'state ({n},) = {list(JOINT_NAMES)}, action ({n},)')
    problems = []
    # pi05 adds placeholder cameras itself (config.empty_cameras); they need no topic
    wanted = {k for k in info.image_keys if not k.startswith('empty_camera_')}
    given = set(cameras.values())
    if wanted - given:
        problems.append(f'no camera configured for images {sorted(wanted - given)}')
    if given - wanted:
        problems.append(f'the checkpoint has no image feature for {sorted(given - wanted)}')
    if info.state_shape != (n,):
        problems.append(f'state shape {info.state_shape} is not ({n},)')
    if info.action_shape != (n,):
        problems.append(f'action shape {info.action_shape} is not ({n},)')
    if info.other_inputs:
        problems.append(f'inputs {list(info.other_inputs)} cannot be provided by this node')
    if problems:
        raise CheckpointError(f'checkpoint {info.folder} does not fit the configuration: '
                              f'{"; ".join(problems)}. The checkpoint expects {info.expects()}; '
                              f'configured: {configured}. Fix the camera mapping (node '
                              'parameter cameras: "ros_name" or "ros_name:image_key").')



def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f'{path} is not readable JSON ({err})') from err
    if not isinstance(data, dict):
        raise CheckpointError(f'{path} holds a {type(data).__name__}, expected a JSON object')
    return data


def _pipeline_steps(path: Path) -> list[dict]:
    steps = _read_json(path).get('steps', [])
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _known_policy_types() -> set[str]:
    import lerobot.policies  # noqa: F401 - registers every policy config type
    from lerobot.configs import PreTrainedConfig

    return set(PreTrainedConfig.get_known_choices())


@functools.lru_cache(maxsize=None)
def config_supports_rtc(policy_type: str) -> bool:
    """Whether ``policy_type`` runs LeRobot's RTC guidance in ``predict_action_chunk``: its
    config class has an ``rtc_config`` field (pi05, pi0, smolvla, ...) and its policy class
    declares ``supports_rtc`` (pi0_fast has the field but decodes tokens, no flow). Known from
    the classes, before any model is built; imports the policy's module (cached)."""
    import lerobot.policies  # noqa: F401 - registers every policy config type
    from lerobot.configs import PreTrainedConfig

    try:
        config_class = PreTrainedConfig.get_choice_class(policy_type)
    except (KeyError, ValueError):
        return False
    if not any(f.name == 'rtc_config' for f in dataclasses.fields(config_class)):
        return False
    from lerobot.policies.factory import get_policy_class
    from lerobot.policies.pretrained import PreTrainedPolicy

    try:
        policy_class = get_policy_class(policy_type)
    except Exception:  # noqa: BLE001 - an optional dependency of that policy is missing
        return False
    return policy_class.supports_rtc is not PreTrainedPolicy.supports_rtc
