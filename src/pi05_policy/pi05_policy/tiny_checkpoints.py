"""Tiny LeRobot checkpoints (Pi0.5 and ACT) for tests, benchmarks and the demo — not policies.

Nothing here is on the path of a real checkpoint: the runtime never imports this module
unless a node or test names its loader (``model_loader``, see ``runtime``). The checkpoints
are built with LeRobot's own classes (``PI05Config``/``PI05Policy``, ``ACTConfig``/
``ACTPolicy``, their processor factories) and saved the way ``lerobot-train`` saves one:
``policy.save_pretrained``, ``preprocessor.save_pretrained`` and
``postprocessor.save_pretrained`` into one ``pretrained_model/`` folder.

Two things LeRobot 0.6.1 does not let a config express, and how they are handled here:

* **Model size.** Pi0.5's widths and depths come from ``get_gemma_config(variant)``, the
  SigLIP tower keeps PaliGemma's defaults (27 layers, width 1152), the projection to the
  language model is fixed at 2048 and the vocabulary at 257152 — there is no knob for a
  small model (``paligemma_variant=gemma_300m`` crashes on the 2048 projection). A reduced
  model is made by ``reduced_pi05_architecture``: a context manager that, for its duration
  only, substitutes those sizes at the three points where LeRobot's pi05 module builds the
  networks. All of LeRobot's forward code (prefix/suffix embedding, attention masks, KV
  cache, flow-matching integration, processors) runs unchanged. The sizes are written
  beside the checkpoint in ``reduced_architecture.json``; ``load_reduced_pi05`` (the
  runtime's ``model_loader`` ``pi05_policy.tiny_checkpoints:load_reduced_pi05``) re-enters
  the same context to load it in a process that did not build it (the demo's node). The
  runtime refuses such a folder on its default path, naming that loader, rather than build
  a full-size model the weights do not fit.
* **Tokenizer.** The pi05 preprocessor loads ``google/paligemma-3b-pt-224`` from the Hub.
  ``build_offline_tokenizer`` trains a word-level tokenizer on the prompt vocabulary (task
  words, the 256 state bins, ``Task:``/``State:``/``Action:``) and saves it as a tokenizer
  folder. The processors are built while that folder is reachable under the Hub name (a
  relative path ``transformers`` resolves before asking the Hub), so the saved
  ``policy_preprocessor.json`` names the Hub tokenizer exactly as a real checkpoint does,
  and loading needs the node's ``tokenizer_path`` override, as on a machine without the
  Hub cache.

``python -m pi05_policy.tiny_checkpoints --type pi05 --out DIR`` builds one from the shell.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from pi05_policy.runtime import REDUCED_ARCHITECTURE_FILE, REDUCED_PI05_LOADER, CheckpointError
from so101_driver.joints import JOINT_NAMES

log = logging.getLogger(__name__)

#: The tokenizer name the pi05 processor factory hard-codes (LeRobot 0.6.1).
PALIGEMMA_TOKENIZER = 'google/paligemma-3b-pt-224'
#: Task the tests, the bench and the demo give the policy.
DEMO_TASK = 'pick the red cube and place it in the gray bowl'
#: Home pose in LeRobot units: body joints in degrees (0 = mid-range), gripper 0..100.
HOME_LEROBOT = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 20.0])


class PolicyType(str, Enum):
    PI05 = 'pi05'
    ACT = 'act'


@dataclass(frozen=True)
class ReducedPi05:
    """Sizes of a reduced Pi0.5; LeRobot's full model is 2048/18 text, 1024/18 expert,
    1152/27 SigLIP, vocabulary 257152. ``num_heads`` stays 8 (LeRobot's attention hard-codes
    8 query heads) and ``num_kv_heads`` 1."""

    text_width: int = 64  # PaliGemma language model hidden size (and SigLIP projection)
    text_depth: int = 2  # language model layers (must equal expert_depth: layers run paired)
    text_mlp: int = 128  # language model MLP size
    expert_width: int = 32  # action expert hidden size
    expert_depth: int = 2  # action expert layers
    expert_mlp: int = 64  # action expert MLP size
    head_dim: int = 16  # attention head size, both models
    vision_width: int = 32  # SigLIP hidden size
    vision_depth: int = 1  # SigLIP layers
    vision_heads: int = 2  # SigLIP attention heads
    vision_mlp: int = 64  # SigLIP MLP size
    vocab_size: int = 512  # embedding rows; must exceed the tokenizer's largest id

    def __post_init__(self):
        sizes = asdict(self)
        bad = [k for k, v in sizes.items() if not isinstance(v, int) or v <= 0]
        if bad:
            raise ValueError(f'ReducedPi05 sizes must be positive integers: {bad}')
        if self.text_depth != self.expert_depth:
            raise ValueError(f'text_depth ({self.text_depth}) must equal expert_depth '
                             f'({self.expert_depth}): LeRobot runs the two models layer by layer')
        if self.vision_width % self.vision_heads:
            raise ValueError(f'vision_width {self.vision_width} is not a multiple of '
                             f'vision_heads {self.vision_heads}')

    def save(self, folder: Path) -> None:
        (Path(folder) / REDUCED_ARCHITECTURE_FILE).write_text(
            json.dumps(asdict(self), indent=2) + '\n')

    @classmethod
    def load(cls, folder: Path) -> ReducedPi05 | None:
        path = Path(folder) / REDUCED_ARCHITECTURE_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:  # JSON, unknown or bad sizes
            raise CheckpointError(f'{path} does not hold ReducedPi05 sizes ({err})') from err


@contextlib.contextmanager
def reduced_pi05_architecture(arch: ReducedPi05) -> Iterator[None]:
    """Build (or load) LeRobot's pi05 model with ``arch``'s sizes inside this block only.

    The three names LeRobot's ``modeling_pi05`` builds the networks from are substituted
    and restored on exit; nothing else in LeRobot changes. Not thread-safe: build or load
    one policy at a time inside it.
    """
    from lerobot.policies.pi05 import modeling_pi05 as m

    original = (m.get_gemma_config, m.PaliGemmaForConditionalGenerationWithPiGemma,
                m.PiGemmaForCausalLM)
    get_config, paligemma_cls, expert_cls = original

    def gemma_config(variant: str):
        if variant == 'gemma_2b':  # the PaliGemma language model
            return m.GemmaConfig(width=arch.text_width, depth=arch.text_depth,
                                 mlp_dim=arch.text_mlp, num_heads=8, num_kv_heads=1,
                                 head_dim=arch.head_dim)
        if variant == 'gemma_300m':  # the action expert
            return m.GemmaConfig(width=arch.expert_width, depth=arch.expert_depth,
                                 mlp_dim=arch.expert_mlp, num_heads=8, num_kv_heads=1,
                                 head_dim=arch.head_dim)
        return get_config(variant)

    def paligemma(config):
        vision = config.vision_config
        vision.hidden_size = arch.vision_width
        vision.num_hidden_layers = arch.vision_depth
        vision.num_attention_heads = arch.vision_heads
        vision.intermediate_size = arch.vision_mlp
        vision.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = arch.vocab_size
        config._vocab_size = arch.vocab_size  # noqa: SLF001 - the field PaliGemma reads
        return paligemma_cls(config=config)

    def expert(config):
        config.vocab_size = arch.vocab_size
        return expert_cls(config=config)

    m.get_gemma_config = gemma_config
    m.PaliGemmaForConditionalGenerationWithPiGemma = paligemma
    m.PiGemmaForCausalLM = expert
    try:
        yield
    finally:
        (m.get_gemma_config, m.PaliGemmaForConditionalGenerationWithPiGemma,
         m.PiGemmaForCausalLM) = original


def load_reduced_pi05(policy_class, folder: str, config):
    """``model_loader`` for a checkpoint made by ``build_tiny_pi05`` (see ``runtime``).

    Loads it with LeRobot's ``from_pretrained`` inside ``reduced_pi05_architecture`` with
    the sizes in ``reduced_architecture.json``; a folder without that file is refused, so
    this loader never touches a real checkpoint.
    """
    arch = ReducedPi05.load(Path(folder))
    if arch is None or config.type != PolicyType.PI05.value:
        raise CheckpointError(
            f'{folder}: model_loader {REDUCED_PI05_LOADER} loads only reduced-size Pi0.5 test '
            f'checkpoints (type pi05 with {REDUCED_ARCHITECTURE_FILE}); this one is type '
            f'{config.type!r}' + ('' if arch else f' without {REDUCED_ARCHITECTURE_FILE}')
            + '. Leave model_loader empty for a real checkpoint.')
    log.warning('%s is a reduced-size Pi0.5 (%s): a test/demo model, not a policy', folder, arch)
    with reduced_pi05_architecture(arch):
        return policy_class.from_pretrained(folder, config=config)


def build_offline_tokenizer(folder: str | Path, extra_text: Sequence[str] = ()) -> Path:
    """A word-level tokenizer folder that covers Pi0.5's prompt; returns ``folder``.

    The prompt is ``"Task: <task>, State: <6 bins 0..255>;\\nAction: "``; words outside
    the training text map to ``<unk>``, which a random-weight model does not mind.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = [f'Task: {DEMO_TASK}, State: ' + ' '.join(str(i) for i in range(256)) + ';\nAction: ',
            'pick place push open close the a red green blue cube bowl gray in on to it and',
            *extra_text]
    tokenizer = Tokenizer(models.WordLevel(unk_token='<unk>'))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        text, trainers.WordLevelTrainer(special_tokens=['<pad>', '<eos>', '<bos>', '<unk>']))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token='<pad>', eos_token='<eos>',
                            bos_token='<bos>', unk_token='<unk>').save_pretrained(str(folder))
    return folder


def dataset_stats(spread: float = 2.0, images: Sequence[str] = ()) -> dict:
    """Normalisation statistics as a LeRobot dataset would hold them, around ``HOME_LEROBOT``.

    ``spread`` (LeRobot units) is the half-width of the action and state distributions, so
    a random-weight model's actions stay within a few ``spread`` of home: inside the joint
    limits and within the driver's jump limit of an arm resting at home.
    """
    import torch

    def joint_stats():
        home = torch.tensor(HOME_LEROBOT, dtype=torch.float32)
        width = torch.full((len(JOINT_NAMES),), float(spread))
        return {'mean': home, 'std': width, 'min': home - 3 * width, 'max': home + 3 * width,
                'q01': home - width, 'q99': home + width, 'q10': home - width / 2,
                'q50': home, 'q90': home + width / 2}

    stats = {'observation.state': joint_stats(), 'action': joint_stats()}
    for key in images:
        stats[f'observation.images.{key}'] = {
            'mean': torch.full((3, 1, 1), 0.5), 'std': torch.full((3, 1, 1), 0.25),
            'min': torch.zeros(3, 1, 1), 'max': torch.ones(3, 1, 1)}
    return stats


def _features(images: Sequence[str], image_shape: tuple[int, int, int]):
    from lerobot.configs import FeatureType, PolicyFeature

    inputs = {'observation.state': PolicyFeature(FeatureType.STATE, (len(JOINT_NAMES),))}
    for key in images:
        inputs[f'observation.images.{key}'] = PolicyFeature(FeatureType.VISUAL, tuple(image_shape))
    outputs = {'action': PolicyFeature(FeatureType.ACTION, (len(JOINT_NAMES),))}
    return inputs, outputs


def _save(folder: Path, policy, preprocessor, postprocessor) -> Path:
    """Save as ``lerobot-train``'s ``save_checkpoint`` does into ``pretrained_model/``."""
    folder.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(folder)
    preprocessor.save_pretrained(folder)
    postprocessor.save_pretrained(folder)
    return folder


def build_tiny_pi05(out_dir: str | Path, tokenizer_dir: str | Path,
                    images: Sequence[str] = ('front', 'handeye'),
                    image_shape: tuple[int, int, int] = (3, 480, 640),
                    chunk_size: int = 20, num_inference_steps: int = 2,
                    image_resolution: int = 56, arch: ReducedPi05 = ReducedPi05(),
                    spread: float = 2.0, seed: int = 0) -> Path:
    """A reduced-size Pi0.5 with random weights saved as ``out_dir/pretrained_model``.

    ``tokenizer_dir`` is a folder made by ``build_offline_tokenizer``; the checkpoint's
    processor names the Hub tokenizer, so loading it needs ``tokenizer_path=tokenizer_dir``.
    ``image_resolution`` is SigLIP's input (a multiple of its 14-pixel patch); camera
    images of ``image_shape`` are resized to it by LeRobot's own pi05 code.
    """
    import torch
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors

    torch.manual_seed(seed)
    inputs, outputs = _features(images, image_shape)
    config = PI05Config(
        input_features=inputs, output_features=outputs, device='cpu',
        chunk_size=chunk_size, n_action_steps=chunk_size,
        num_inference_steps=num_inference_steps,
        image_resolution=(image_resolution, image_resolution),
        max_state_dim=8, max_action_dim=8, tokenizer_max_length=48)
    with reduced_pi05_architecture(arch):
        policy = PI05Policy(config)
    # The processor factory loads the tokenizer by its Hub name: serve it from a folder of
    # that name under a temporary working directory (see the module docstring).
    staging = Path(out_dir) / '.tokenizer_staging'
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(tokenizer_dir, staging / PALIGEMMA_TOKENIZER)
    try:
        with contextlib.chdir(staging):
            pre, post = make_pi05_pre_post_processors(config, dataset_stats(spread))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    folder = _save(Path(out_dir) / 'pretrained_model', policy, pre, post)
    arch.save(folder)
    return folder


def build_tiny_act(out_dir: str | Path, images: Sequence[str] = ('front', 'handeye'),
                   image_shape: tuple[int, int, int] = (3, 480, 640), chunk_size: int = 20,
                   spread: float = 2.0, seed: int = 0) -> Path:
    """A small ACT (ResNet-18 backbone, no pretrained weights) in ``out_dir/pretrained_model``."""
    import torch
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    torch.manual_seed(seed)
    inputs, outputs = _features(images, image_shape)
    config = ACTConfig(
        input_features=inputs, output_features=outputs, device='cpu',
        chunk_size=chunk_size, n_action_steps=chunk_size, pretrained_backbone_weights=None,
        dim_model=32, n_heads=2, dim_feedforward=64, n_encoder_layers=1, n_decoder_layers=1,
        use_vae=False)
    policy = ACTPolicy(config)
    pre, post = make_act_pre_post_processors(config, dataset_stats(spread, images))
    return _save(Path(out_dir) / 'pretrained_model', policy, pre, post)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Build a tiny random-weight LeRobot '
                                     'checkpoint (tests, benchmarks, demo).')
    parser.add_argument('--type', choices=[t.value for t in PolicyType], default='pi05')
    parser.add_argument('--out', required=True, help='folder; the checkpoint goes to '
                        'OUT/pretrained_model (pi05: the tokenizer to OUT/tokenizer)')
    parser.add_argument('--cameras', default='front,handeye', help='image keys, comma-separated')
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--chunk-size', type=int, default=20)
    args = parser.parse_args(argv)
    out = Path(args.out)
    cameras = tuple(c for c in args.cameras.split(',') if c)
    shape = (3, args.height, args.width)
    if args.type == PolicyType.PI05.value:
        tokenizer = build_offline_tokenizer(out / 'tokenizer')
        folder = build_tiny_pi05(out, tokenizer, cameras, shape, args.chunk_size)
        print(f'{folder}\n(give the node tokenizer_path:={tokenizer} and '
              f'model_loader:={REDUCED_PI05_LOADER})')
    else:
        print(build_tiny_act(out, cameras, shape, args.chunk_size))


if __name__ == '__main__':
    main()
