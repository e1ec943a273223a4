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
  joint limits (URDF limits intersected with the calibrated range, as the arm node uses),
  and the same chunk in the model's action space (before the postprocessor), which Real-Time
  Chunking hands back to the model as the leftover;
* Real-Time Chunking (``RuntimeConfig.rtc``, see ``pi05_policy.rtc``): for a policy whose
  config has ``rtc_config`` the runtime sets ``cfg.rtc_config = RTCConfig(...)`` before the
  model is built (a fine-tuned checkpoint has none; LeRobot's ``init_rtc_processor`` picks it
  up in the policy's constructor), and ``infer(obs, rtc=RtcRequest)`` passes
  ``inference_delay`` and ``prev_chunk_left_over`` to ``predict_action_chunk``. Asking for
  it with another policy type fails on construction;
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
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from pi05_policy.checkpoint import (  # noqa: F401 - re-exported: the runtime's public names
    ACTION_KEY,
    CONFIG_FILE,
    IMAGE_PREFIX,
    POSTPROCESSOR_FILE,
    PREPROCESSOR_FILE,
    REDUCED_ARCHITECTURE_FILE,
    REDUCED_PI05_LOADER,
    STATE_KEY,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointInfo,
    _pipeline_steps,
    check_features,
    inspect_checkpoint,
)
from pi05_policy.rtc import RtcRequest, RtcSettings
from so101_driver.feetech.calibration import ArmCalibration, NormMode, so101_norm_modes
from so101_driver.joints import JointLimits, urdf_limits

log = logging.getLogger(__name__)


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
    rtc: RtcSettings | None = None  # install LeRobot's RTC (policies with rtc_config only)

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
    model_actions: np.ndarray  # (K, 6) before the postprocessor (the model's action space)
    clipped: int  # values moved onto a joint limit
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    rtc: RtcRequest | None = None  # what predict_action_chunk was given (rtc mode)


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
        if config.rtc is not None:
            self.enable_rtc(config.rtc)

    @property
    def loaded(self) -> bool:
        return self.policy is not None

    def enable_rtc(self, settings: RtcSettings) -> None:
        """Install LeRobot's RTC with ``settings`` when the model is built (before ``load``);
        a policy type whose config has no ``rtc_config`` is refused (``CheckpointError``)."""
        if not self.info.supports_rtc:
            from pi05_policy.rtc import refusal

            raise CheckpointError(refusal(self.info.policy_type))
        if self.loaded:
            raise RuntimeError('enable_rtc() after load(): RTC is set up when the model is built')
        self.config.rtc = settings

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
        if self.config.rtc is not None:
            cfg.rtc_config = self.config.rtc.to_lerobot()
        policy = self.model_loader(get_policy_class(cfg.type), folder, cfg)
        if not callable(getattr(policy, 'predict_action_chunk', None)):
            raise CheckpointError(f'model_loader {self.config.model_loader!r} returned a '
                                  f'{type(policy).__name__}, not a LeRobot policy')
        if self.config.rtc is not None and (getattr(policy, 'rtc_processor', None) is None
                                            or not policy.supports_rtc()):
            raise CheckpointError(f'{folder}: rtc_config was set but the {cfg.type} policy '
                                  'built no RTCProcessor or does not support RTC inference; '
                                  'use chunk_mode async or sync')
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
    def infer(self, obs: Observation, rtc: RtcRequest | None = None) -> InferenceResult:
        """One chunk. Raises ``NonFiniteActions`` when the model returns NaN/inf.

        ``rtc``: the delay and leftover for LeRobot's RTC guidance (needs ``config.rtc``).
        The guidance differentiates the denoiser (``torch.enable_grad`` inside LeRobot), which
        ``inference_mode`` would forbid, so such a chunk runs under ``no_grad`` instead.
        """
        if not self.loaded:
            raise RuntimeError('PolicyRuntime.infer() before load()')
        import torch

        kwargs = {}
        if rtc is not None:
            if self.config.rtc is None:
                raise RuntimeError('infer(rtc=...) on a runtime built without RuntimeConfig.rtc')
            leftover = rtc.prev_chunk_left_over
            kwargs = {'inference_delay': int(rtc.inference_delay), 'prev_chunk_left_over': (
                None if leftover is None else torch.as_tensor(
                    np.asarray(leftover, dtype=np.float32), device=self.device))}

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
        with torch.no_grad() if kwargs else torch.inference_mode():
            batch = self.preprocessor(batch)
            t1 = self._sync(time.perf_counter())
            actions = self._predict(batch, **kwargs)
            t2 = self._sync(time.perf_counter())
            model_actions = np.array(actions.detach().float().cpu().numpy(), copy=True).reshape(
                -1, actions.shape[-1])  # a copy: the postprocessor may work in place
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
        return InferenceResult(positions=clipped_pos, lerobot_actions=out,
                               model_actions=model_actions, clipped=clipped, timings=timings,
                               rtc=rtc)

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
