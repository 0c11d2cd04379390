"""Training the retrospective model offline: versioned datasets (datasets/*.sql), SFT, reward model,
PPO (trl, LoRA only) and the model registry."""

from retro.train.datasets import DatasetVersion, build_dataset, build_datasets, get_dataset_version
from retro.train.pipeline import train_all
from retro.train.ppo import train_ppo
from retro.train.registry import (
    ModelVersion,
    get_model_version,
    latest_model_version,
    list_model_versions,
    promote,
    promoted_model,
    register_model_version,
)
from retro.train.result import Skipped
from retro.train.reward import train_reward_model
from retro.train.sft import train_sft

__all__ = [
    "DatasetVersion", "ModelVersion", "Skipped", "build_dataset", "build_datasets", "get_dataset_version",
    "get_model_version", "latest_model_version", "list_model_versions", "promote", "promoted_model",
    "register_model_version", "train_all", "train_ppo", "train_reward_model", "train_sft",
]
