"""Training recipes: ``so101 train --recipe NAME --dataset DIR`` runs LeRobot's own training.

No training code here. A recipe (``config/train/<name>.yaml``) is a LeRobot
``TrainPipelineConfig``; ``so101 train`` checks the dataset against the policy node's
parameters (``features``), applies ``--set`` overrides and resolves the configuration with
LeRobot's loader (``recipes``), prints the learning rate LeRobot's scheduler will give beside
the reference's table (``schedule``), and hands the file to ``lerobot-train`` (``cli``).
Nothing here imports rclpy; LeRobot is imported only to resolve a configuration.
"""

from pi05_policy.train.features import DatasetContract, DatasetReport, TrainError, check_dataset
from pi05_policy.train.recipes import (
    apply_overrides,
    available_recipes,
    load_recipe,
    recipe_dir,
    resolve,
)
from pi05_policy.train.schedule import REFERENCE_LR, TABLE_STEPS, learning_rates, schedule_table

__all__ = [
    'DatasetContract', 'DatasetReport', 'REFERENCE_LR', 'TABLE_STEPS', 'TrainError',
    'apply_overrides', 'available_recipes', 'check_dataset', 'learning_rates', 'load_recipe',
    'recipe_dir', 'resolve', 'schedule_table',
]
