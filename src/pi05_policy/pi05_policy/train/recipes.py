"""Recipes: LeRobot training configs in ``config/train/``, overridden and resolved by LeRobot.

A recipe file is a ``TrainPipelineConfig`` in YAML, nothing of ours in it, so LeRobot's own
loader reads it and ``lerobot-train --config_path`` runs it. ``so101 train`` changes it only
as a user would on LeRobot's command line: ``--set key=value`` (dotted keys, YAML values),
the dataset root and the output directory. The document that results is written to a file
and resolved with the very calls ``lerobot-train`` makes on that file
(``TrainPipelineConfig.from_pretrained`` then ``validate``: the policy's optimizer and
scheduler presets filled in, the output directory checked), which build configs only, never a
model or its weights, so a dry run works without the base checkpoint or a GPU.
"""

from __future__ import annotations

import copy
import enum
import logging
from pathlib import Path
from typing import Any

import yaml

from so101_driver.joints import package_root

from pi05_policy.train.features import TrainError

RECIPE_SUFFIX = '.yaml'


def recipe_dir() -> Path:
    """``config/train/`` of the suite (source tree or installed share)."""
    return package_root() / 'config' / 'train'


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob(f'*{RECIPE_SUFFIX}'))


def recipe_path(name: str) -> Path:
    """A recipe by name (``pi05_so101``) or by the path of a YAML file."""
    path = Path(name).expanduser()
    if path.suffix in ('.yaml', '.yml') and path.is_file():
        return path
    found = recipe_dir() / f'{name}{RECIPE_SUFFIX}'
    if found.is_file():
        return found
    raise TrainError(f'no recipe {name!r}: choose one of {", ".join(available_recipes())} '
                     f'(in {recipe_dir()}) or give the path of a YAML file')


def load_recipe(name: str) -> tuple[str, dict]:
    """(name, document) of a recipe."""
    path = recipe_path(name)
    try:
        document = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as err:
        raise TrainError(f'cannot read recipe {path}: {err}') from err
    if not isinstance(document, dict):
        raise TrainError(f'recipe {path} is not a mapping of LeRobot training settings')
    return path.stem, document


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``'policy.dim_model=32'`` -> (['policy', 'dim_model'], 32); the value is YAML, so
    ``null``, ``true``, numbers and ``[1, 2]`` mean what they do in the recipe file."""
    key, sep, value = text.partition('=')
    parts = key.strip().split('.')
    if not sep or not all(parts):
        raise TrainError(f'--set {text!r}: expected key=value with a dotted LeRobot key, e.g. '
                         'steps=2000 or policy.device=cpu')
    try:
        return parts, yaml.safe_load(value) if value.strip() else ''
    except yaml.YAMLError as err:
        raise TrainError(f'--set {text!r}: the value is not YAML ({err})') from err


def apply_overrides(document: dict, assignments: list[str]) -> tuple[dict, list[str]]:
    """The recipe with ``--set`` assignments applied, and notes on what was translated.

    ``policy.path`` is LeRobot's "start from this checkpoint's config.json": it would drop
    the recipe's policy settings for the base's. Where the recipe names a policy type, the
    folder is the weights to start from, which is ``policy.pretrained_path``.
    """
    document = copy.deepcopy(document)
    notes: list[str] = []
    for text in assignments:
        parts, value = parse_assignment(text)
        policy = document.get('policy')
        if parts == ['policy', 'path'] and isinstance(policy, dict) and 'type' in policy:
            notes.append(f'policy.path={value} taken as policy.pretrained_path: the recipe '
                         f'sets policy.type {policy["type"]!r} and its settings are kept; the '
                         'weights come from that folder')
            parts = ['policy', 'pretrained_path']
        node = document
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise TrainError(f'--set {text!r}: {".".join(parts[:i + 1])} is {child!r}, not '
                                 'a group of settings')
            node = child
        node[parts[-1]] = value
    return document, notes


def _plain(value: Any) -> Any:
    """JSON/YAML-safe copy of a config dict (enums to values, paths to strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def write_document(document: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(_plain(document), sort_keys=False), encoding='utf-8')
    return path


class _Captured(logging.Handler):
    """Collects LeRobot's config warnings during resolution (a device switch, an AMP
    downgrade), to print them as notes of the run rather than as log noise."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def resolve(config_file: Path) -> tuple[Any, list[str]]:
    """``TrainPipelineConfig`` of ``config_file`` as ``lerobot-train --config_path`` builds
    and validates it, and the warnings LeRobot logged doing so."""
    import lerobot.policies  # noqa: F401 - registers every policy type with the config parser
    from lerobot.configs.train import TrainPipelineConfig

    handler = _Captured()
    logger = logging.getLogger('lerobot.configs')
    logger.addHandler(handler)
    # the dataset config's default video backend probes torchcodec and logs a page-long
    # traceback where it cannot load; the resolved video_backend shows the outcome
    probe = logging.getLogger('lerobot.utils.import_utils')
    level, probe.level = probe.level, logging.ERROR
    try:
        cfg = TrainPipelineConfig.from_pretrained(str(config_file), cli_args=[])
        cfg.validate()
    except FileExistsError as err:
        raise TrainError(f'{err} (choose another --output)') from err
    except Exception as err:  # noqa: BLE001 - draccus and LeRobot raise many kinds
        raise TrainError(f'LeRobot does not accept the configuration: '
                         f'{type(err).__name__}: {err}') from err
    finally:
        logger.removeHandler(handler)
        probe.setLevel(level)
    return cfg, handler.messages


def resolved_document(cfg: Any) -> dict:
    """The resolved configuration as a plain dict (LeRobot's own encoding)."""
    return _plain(cfg.to_dict())


def pretrained_source(cfg: Any) -> str | None:
    """Where the weights come from: a line for the summary, or None (from scratch).
    A local folder is checked here, as lerobot-train would find out only after loading the
    dataset; a Hub id is left to lerobot-train (the dry run downloads nothing)."""
    path = getattr(cfg.policy, 'pretrained_path', None)
    if not path:
        return None
    text = str(path)
    local = Path(text).expanduser()
    if local.is_dir():
        missing = [f for f in ('config.json', 'model.safetensors') if not (local / f).is_file()]
        if missing:
            raise TrainError(f'policy.pretrained_path {local} lacks {missing}: not a LeRobot '
                             'pretrained_model folder')
        return f'{local} (local folder)'
    if text.startswith(('/', '.', '~')) or text.count('/') != 1:
        raise TrainError(f'policy.pretrained_path {text} is neither an existing folder nor a '
                         'Hub repo id (owner/name)')
    return (f'{text} from the Hub, when lerobot-train starts (the dry run loads no weights; '
            'offline: --set policy.pretrained_path=/path/to/local/copy)')
