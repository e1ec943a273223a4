"""Tiny LeRobot checkpoints built once per test session (LeRobot's own classes, random weights)."""

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Camera images the fake publishers send; the checkpoints declare this shape.
IMAGE_SHAPE = (3, 96, 128)


@pytest.fixture(scope='session')
def calibration_file() -> Path:
    return REPO / 'config' / 'calibration' / 'so101_demo.json'


@pytest.fixture(scope='session')
def offline_tokenizer(tmp_path_factory) -> Path:
    from pi05_policy.tiny_checkpoints import build_offline_tokenizer

    return build_offline_tokenizer(tmp_path_factory.mktemp('tokenizer'))


@pytest.fixture(scope='session')
def tiny_pi05(tmp_path_factory, offline_tokenizer) -> Path:
    """pretrained_model/ of a reduced-size Pi0.5, cameras front + handeye; load it with
    ``model_loader=REDUCED_PI05_LOADER`` (and ``tokenizer_path=offline_tokenizer``)."""
    from pi05_policy.tiny_checkpoints import build_tiny_pi05

    return build_tiny_pi05(tmp_path_factory.mktemp('pi05'), offline_tokenizer,
                           image_shape=IMAGE_SHAPE)


@pytest.fixture(scope='session')
def tiny_act(tmp_path_factory) -> Path:
    """pretrained_model/ of a small ACT, cameras front + handeye."""
    from pi05_policy.tiny_checkpoints import build_tiny_act

    return build_tiny_act(tmp_path_factory.mktemp('act'), image_shape=IMAGE_SHAPE)


@pytest.fixture
def checkpoint_copy(tmp_path):
    """Copy a checkpoint folder to a scratch place a test may damage."""

    def copy(folder: Path) -> Path:
        target = tmp_path / 'pretrained_model'
        shutil.copytree(folder, target)
        return target

    return copy
