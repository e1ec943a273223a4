"""A LeRobot policy checkpoint as a function from (images, joint radians, task) to radians.

No rclpy here. ``PolicyRuntime`` loads a ``pretrained_model/`` folder as ``lerobot-train``
writes it (``config.json``, ``model.safetensors``, ``policy_preprocessor.json``,
``policy_postprocessor.json`` and their ``*.safetensors`` state files) through LeRobot's own
factory (``get_policy_class(type).from_pretrained``, ``make_pre_post_processors``), so every
normalisation, tokenisation and image step is LeRobot's. Around it:

* inputs: camera images (HxWx3 RGB uint8, by ROS camera name) go to
  ``observation.images.<key>`` through a mapping checked against the checkpoint's declared
  features; joint radians go to ``observation.state`` in the units the training data used
  (LeRobot degrees or -100..100 for body joints, 0..100 for the gripper) through
  ``so101_driver.feetech.calibration``; the task string goes to ``task``;
* outputs: the chunk (K actions in LeRobot units) converted back to radians, clipped to the
  joint limits (URDF limits intersected with the calibrated range, as the arm node uses);
* timings of the stages (preprocessing, model, postprocessing) for the node's status.

Bad input fails before any model is built, with an error naming what the checkpoint
expects and what was configured (``CheckpointError``).

**Model loader** (``RuntimeConfig.model_loader``), for checkpoints that LeRobot's
``get_policy_class(cfg.type).from_pretrained(folder, config=cfg)`` (the default, ``''``)
cannot build: a ``"package.module:function"`` string, imported on construction, naming
``loader(policy_class, folder: str, config) -> policy`` (the checkpoint type's policy class,
the ``pretrained_model/`` folder, its ``PreTrainedConfig`` with device, dtype and compile
set); the policy it returns gets the same weight check, device and processors. The one
loader here, ``REDUCED_PI05_LOADER``, is for the test Pi0.5 of
``pi05_policy.tiny_checkpoints`` (folders with ``reduced_architecture.json``, refused on the
default path, which imports nothing of that module and changes nothing in LeRobot).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from so101_driver.feetech.calibration import ArmCalibration, NormMode, so101_norm_modes
from so101_driver.joints import JOINT_NAMES, JointLimits, urdf_limits

log = logging.getLogger(__name__)

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


def parse_cameras(entries) -> dict[str, str]:
    """``['front', 'handeye:wrist']`` -> ``{'front': 'front', 'handeye': 'wrist'}``: the
    syntax of the policy node's ``cameras`` parameter (also read by ``so101 dataset``)."""
    cameras = {}
    for entry in entries:
        name, _, key = str(entry).partition(':')
        name, key = name.strip(), (key or name).strip()
        if not name or not key or '/' in name:
            raise ValueError(f'cameras entry {entry!r} must be "ros_name" or '
                             '"ros_name:image_key" (topic cameras/<ros_name>/image_raw)')
        if name in cameras:
            raise ValueError(f'cameras lists {name!r} twice: {entries}')
        cameras[name] = key
    return cameras


class CheckpointError(ValueError):
    """A checkpoint folder cannot serve this robot; the message says what and how to fix it."""


class NonFiniteActions(ValueError):
    """The model returned NaN or inf; the chunk must not be used."""


class Device(str, Enum):
    AUTO = 'auto'  # cuda if available, then mps, then cpu
    CUDA = 'cuda'
    CPU = 'cpu'
    MPS = 'mps'


class DType(str, Enum):
    AUTO = 'auto'  # what the checkpoint's config says
    FLOAT32 = 'float32'
    BFLOAT16 = 'bfloat16'


@dataclass
class RuntimeConfig:
    """What to load and how the robot's signals map onto the checkpoint's features."""

    checkpoint: Path  # pretrained_model/ folder (lerobot-train output or a Hub snapshot)
    calibration_file: Path  # LeRobot calibration JSON of the arm the training data came from
    cameras: dict[str, str]  # ROS camera name -> image key (observation.images.<key>)
    use_degrees: bool = True  # body joints in degrees (LeRobot 0.6.1 SO-101 default) or +-100
    device: Device = Device.AUTO  # torch device
    dtype: DType = DType.AUTO  # model precision, for policies that have one (pi0/pi05)
    compile: bool = False  # torch.compile the model (pi05: its own compile_model switch)
    tokenizer_path: str = ''  # local tokenizer folder replacing the checkpoint's Hub name
    limit_margin: float = 0.0  # rad; clip actions this far inside the joint limits
    model_loader: str = ''  # "package.module:function" building the policy ('' = LeRobot's)

    def __post_init__(self):
        self.checkpoint = Path(self.checkpoint).expanduser()
        self.calibration_file = Path(self.calibration_file).expanduser()
        self.device = Device(self.device)
        self.dtype = DType(self.dtype)
        if not self.cameras:
            raise ValueError('cameras is empty: map at least one ROS camera to an image key')
        keys = list(self.cameras.values())
        if len(set(keys)) != len(keys):
            raise ValueError(f'cameras map two ROS cameras to the same image key: {self.cameras}')
        if not 0.0 <= self.limit_margin < 0.5:
            raise ValueError(f'limit_margin must be in [0, 0.5) rad, got {self.limit_margin}')

    @property
    def norm_modes(self) -> tuple[NormMode, ...]:
        return so101_norm_modes(self.use_degrees)


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


def command_limits(calibration: ArmCalibration, margin: float = 0.0) -> JointLimits:
    """URDF limits intersected with the calibrated range, minus ``margin`` (as the arm node)."""
    urdf = urdf_limits()
    lo, hi = calibration.radians_range()
    return JointLimits(lower=np.maximum(urdf.lower, lo) + margin,
                       upper=np.minimum(urdf.upper, hi) - margin)


@dataclass
class Observation:
    """One synchronised observation, ROS units."""

    images: dict[str, np.ndarray]  # ROS camera name -> HxWx3 RGB uint8
    joint_positions: np.ndarray  # radians, JOINT_NAMES order
    task: str  # language instruction


@dataclass
class InferenceResult:
    """A chunk in radians plus what it cost."""

    positions: np.ndarray  # (K, 6) radians, clipped to the limits
    lerobot_actions: np.ndarray  # (K, 6) as the policy returned them (LeRobot units)
    clipped: int  # values moved onto a joint limit
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


def resolve_device(device: Device) -> str:
    """The torch device string; a device asked for by name must exist (no silent fallback)."""
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, 'mps', None)) and torch.backends.mps.is_available()
    if device is Device.AUTO:
        return 'cuda' if cuda else 'mps' if mps else 'cpu'
    if device is Device.CUDA and not cuda:
        raise CheckpointError('device cuda requested but torch sees no CUDA device '
                              f'(torch {torch.__version__}); use device auto or cpu')
    if device is Device.MPS and not mps:
        raise CheckpointError('device mps requested but torch reports MPS unavailable')
    return device.value


def lerobot_loader(policy_class, folder: str, config):
    """The default model loader: LeRobot's own ``from_pretrained``."""
    return policy_class.from_pretrained(folder, config=config)


def resolve_model_loader(spec: str) -> Callable:
    """``"package.module:function"`` -> the function; ``''`` -> ``lerobot_loader``."""
    if not spec:
        return lerobot_loader
    module_name, sep, attr = spec.partition(':')
    if not (sep and attr.isidentifier() and all(w.isidentifier() for w in module_name.split('.'))):
        raise CheckpointError(f'model_loader {spec!r} is not "package.module:function" (empty '
                              'for LeRobot\'s own from_pretrained)')
    try:
        target = getattr(importlib.import_module(module_name), attr, None)
    except Exception as err:  # noqa: BLE001 - any failure means the loader cannot be used
        raise CheckpointError(f'model_loader {spec!r}: module {module_name!r} cannot be '
                              f'imported ({type(err).__name__}: {err})') from err
    if target is None:
        raise CheckpointError(f'model_loader {spec!r}: {module_name} has no {attr!r}')
    if not callable(target):
        raise CheckpointError(f'model_loader {spec!r} is a {type(target).__name__}, not a '
                              'function (policy_class, folder, config) -> policy')
    return target


class PolicyRuntime:
    """Validated on construction (cheap); ``load()`` builds the model (slow); then ``infer``."""

    def __init__(self, config: RuntimeConfig):
        from so101_driver.feetech.calibration import load_calibration

        self.config = config
        self.info = inspect_checkpoint(config.checkpoint)
        check_features(self.info, config.cameras)
        if (self.info.folder / REDUCED_ARCHITECTURE_FILE).is_file() and not config.model_loader:
            raise CheckpointError(f'{self.info.folder} is a reduced-size test checkpoint (it has '
                                  f'{REDUCED_ARCHITECTURE_FILE}); load it with model_loader '
                                  f'{REDUCED_PI05_LOADER!r}')
        self.model_loader = resolve_model_loader(config.model_loader)
        self.calibration = ArmCalibration(load_calibration(config.calibration_file))
        self.modes = config.norm_modes
        self.limits = command_limits(self.calibration, config.limit_margin)
        self.device = resolve_device(config.device)
        self.policy = None
        self.preprocessor = None
        self.postprocessor = None
        self._predict = None
        self._image_shapes: dict[str, tuple[int, int]] = {}

    @property
    def loaded(self) -> bool:
        return self.policy is not None

    # -- loading -------------------------------------------------------------------
    def load(self) -> None:
        """Build the policy (the model loader) and its processors (LeRobot's factory)."""
        from lerobot.configs import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        folder = str(self.info.folder)
        cfg = PreTrainedConfig.from_pretrained(folder)
        cfg.device = self.device
        if self.config.dtype is not DType.AUTO and hasattr(cfg, 'dtype'):
            cfg.dtype = self.config.dtype.value
        if self.config.compile and hasattr(cfg, 'compile_model'):
            cfg.compile_model = True
        policy = self.model_loader(get_policy_class(cfg.type), folder, cfg)
        if not callable(getattr(policy, 'predict_action_chunk', None)):
            raise CheckpointError(f'model_loader {self.config.model_loader!r} returned a '
                                  f'{type(policy).__name__}, not a LeRobot policy')
        self._check_weights(policy)
        policy.to(self.device)
        policy.eval()
        pre_over, post_over = self._processor_overrides()
        try:
            pre, post = make_pre_post_processors(
                policy.config, pretrained_path=folder, preprocessor_overrides=pre_over,
                postprocessor_overrides=post_over)
        except OSError as err:  # a tokenizer (or other file) the Hub would have to supply
            raise CheckpointError(
                f'{folder}: the preprocessor could not load {self.info.tokenizer_name!r} '
                f'({err}). Without the Hugging Face Hub cache, set tokenizer_path to a local '
                'copy, e.g. `huggingface-cli download google/paligemma-3b-pt-224 --include '
                '"tokenizer*" "special_tokens_map.json" --local-dir ~/paligemma-tokenizer`'
            ) from err
        self._predict = policy.predict_action_chunk
        if self.config.compile and not hasattr(cfg, 'compile_model'):
            import torch

            self._predict = torch.compile(policy.predict_action_chunk)
        self.policy, self.preprocessor, self.postprocessor = policy, pre, post
        self._image_shapes = {}
        for key in self.info.image_keys:
            shape = policy.config.input_features[IMAGE_PREFIX + key].shape
            self._image_shapes[key] = (int(shape[1]), int(shape[2]))

    def _processor_overrides(self) -> tuple[dict, dict]:
        pre = {}
        steps = {s.get('registry_name') for s in _pipeline_steps(
            self.info.folder / PREPROCESSOR_FILE)}
        if 'device_processor' in steps:
            pre['device_processor'] = {'device': self.device}
        if self.config.tokenizer_path:
            if 'tokenizer_processor' not in steps:
                log.warning('tokenizer_path %s ignored: %s has no tokenizer step',
                            self.config.tokenizer_path, self.info.folder)
            else:
                path = Path(self.config.tokenizer_path).expanduser()
                if not path.is_dir():
                    raise CheckpointError(f'tokenizer_path {path} is not a folder; expected a '
                                          'tokenizer folder (tokenizer.json, '
                                          'tokenizer_config.json)')
                pre['tokenizer_processor'] = {'tokenizer_name': str(path)}
        return pre, {}

    def _check_weights(self, policy) -> None:
        """LeRobot's pi05 loader only prints when weights do not fit; refuse such a model."""
        from safetensors import safe_open

        model = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
        bad = []
        with safe_open(str(self.info.folder / WEIGHTS_FILE), framework='pt') as f:
            keys = list(f.keys())
            for key in keys:
                have = model.get(key, model.get(f'model.{key}'))
                shape = tuple(f.get_slice(key).get_shape())
                if have is None or have != shape:
                    bad.append(f'{key} {shape} (model: {have})')
        if not keys or bad:
            raise CheckpointError(
                f'{self.info.folder / WEIGHTS_FILE} does not fit the {self.info.policy_type} '
                f'model built from config.json: {len(bad)} of {len(keys)} tensors differ, e.g. '
                f'{bad[:3]}')

    # -- units -----------------------------------------------------------------------
    def state_to_policy(self, radians: np.ndarray) -> np.ndarray:
        """Joint radians -> the LeRobot units of ``observation.state``."""
        return self.calibration.radians_to_lerobot(radians, self.modes)

    def actions_to_radians(self, actions: np.ndarray) -> np.ndarray:
        """(K, 6) LeRobot-unit actions -> radians (through ticks, as the servos get them)."""
        return np.stack([self.calibration.lerobot_to_radians(a, self.modes) for a in actions])

    # -- inference -------------------------------------------------------------------
    def infer(self, obs: Observation) -> InferenceResult:
        """One chunk. Raises ``NonFiniteActions`` when the model returns NaN/inf."""
        if not self.loaded:
            raise RuntimeError('PolicyRuntime.infer() before load()')
        import torch

        if not obs.task.strip():
            raise ValueError('the task string is empty; the policy needs an instruction')
        timings = {}
        t0 = time.perf_counter()
        batch = {STATE_KEY: torch.from_numpy(
            self.state_to_policy(obs.joint_positions).astype(np.float32)), 'task': obs.task}
        for ros_name, key in self.config.cameras.items():
            rgb = obs.images[ros_name]
            want = self._image_shapes.get(key)
            if want and rgb.shape[:2] != want:
                import cv2

                rgb = cv2.resize(rgb, (want[1], want[0]), interpolation=cv2.INTER_AREA)
            # LeRobot's camera frames: float CxHxW in [0, 1] (a new, writable array)
            frame = np.multiply(rgb, 1.0 / 255.0, dtype=np.float32)
            batch[IMAGE_PREFIX + key] = torch.from_numpy(frame).permute(2, 0, 1)
        with torch.inference_mode():
            batch = self.preprocessor(batch)
            t1 = self._sync(time.perf_counter())
            actions = self._predict(batch)
            t2 = self._sync(time.perf_counter())
            actions = self.postprocessor(actions)
        out = actions.detach().float().cpu().numpy().reshape(-1, actions.shape[-1])
        if not np.all(np.isfinite(out)):
            bad = int(np.count_nonzero(~np.isfinite(out)))
            raise NonFiniteActions(f'the model returned {bad} non-finite values in a chunk of '
                                   f'{out.shape[0]} actions')
        radians = self.actions_to_radians(out)
        clipped_pos = self.limits.clip(radians)
        clipped = int(np.count_nonzero(np.abs(clipped_pos - radians) > 1e-9))
        t3 = time.perf_counter()
        timings.update(preprocess=t1 - t0, model=t2 - t1, postprocess=t3 - t2)
        return InferenceResult(positions=clipped_pos, lerobot_actions=out, clipped=clipped,
                               timings=timings)

    def reset(self) -> None:
        """Forget the policy's internal queues (episode start, after an override)."""
        if self.policy is not None:
            self.policy.reset()

    def _sync(self, t: float) -> float:
        if self.device == 'cuda':
            import torch

            torch.cuda.synchronize()
            return time.perf_counter()
        return t


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
