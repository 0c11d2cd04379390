"""The training plan the nightly flow follows: data sets at one snapshot, then sft -> rm -> ppo.

Each stage may return Skipped (no data to learn from); later stages degrade gracefully and the
candidate is the last adapter actually trained (ppo, else sft), or None.
"""

from __future__ import annotations

import logging
from typing import Any

from retro.config import Settings
from retro.store.lake import Lake

log = logging.getLogger(__name__)

DATASETS = ("sft", "reward", "ppo")


def build_datasets(settings: Settings, lake: Lake) -> dict[str, str]:
    """Build every training set at the current snapshot; returns dataset -> version."""
    from retro.train.datasets import build_dataset

    snapshot = lake.current_snapshot()
    return {name: build_dataset(settings, lake, name, snapshot=snapshot).version for name in DATASETS}


def train_stages(settings: Settings, lake: Lake, versions: dict[str, str]) -> dict[str, Any]:
    """sft -> rm -> ppo on the given data set versions; returns stage -> model_id or 'skipped: why'."""
    from retro.train.pipeline import train_on_versions

    return train_on_versions(settings, lake, versions)


def candidate_of(trained: dict[str, Any]) -> str | None:
    """The adapter to evaluate tonight: PPO's, else SFT's; None when every stage was skipped."""
    for stage in ("ppo", "sft"):
        model_id = trained.get(stage)
        if isinstance(model_id, str) and not model_id.startswith("skipped"):
            return model_id
    return None
