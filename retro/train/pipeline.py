"""The offline training pipeline: build the three datasets at one lake snapshot, then SFT -> reward
model -> PPO. A stage with nothing to learn from is skipped and the later stages degrade: PPO starts
from the base model without SFT, and is skipped without a reward model."""

from __future__ import annotations

import logging
from typing import Any

from retro.config import Settings
from retro.errors import ConfigError
from retro.store.lake import Lake
from retro.train.datasets import build_datasets
from retro.train.ppo import train_ppo
from retro.train.registry import ModelVersion
from retro.train.result import Skipped
from retro.train.reward import train_reward_model
from retro.train.sft import train_sft

log = logging.getLogger(__name__)


def train_all(settings: Settings, lake: Lake, snapshot: int | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns small values for flows and the CLI:

    {"snapshot": int, "datasets": {name: version}, "sft"|"rm"|"ppo": model_id or None,
     "skipped": {stage: reason}, "candidate": the adapter to evaluate (ppo, else sft, else None)}
    """
    if settings.train.trainer != "ppo":
        raise ConfigError(f"train.trainer '{settings.train.trainer}' is not available yet: "
                          "set RETRO_TRAIN__TRAINER=ppo")
    data = build_datasets(settings, lake, snapshot)
    sft = train_sft(settings, lake, data["sft"])
    rm = train_reward_model(settings, lake, data["reward"])
    ppo = train_ppo(settings, lake, data["ppo"], sft=sft, reward_model=rm)

    stages: dict[str, ModelVersion | Skipped] = {"sft": sft, "rm": rm, "ppo": ppo}
    result: dict[str, Any] = {
        "snapshot": data["sft"].snapshot_id if snapshot is None else snapshot,
        "datasets": {name: dv.version for name, dv in data.items()},
        "skipped": {stage: r.reason for stage, r in stages.items() if isinstance(r, Skipped)},
    }
    for stage, r in stages.items():
        result[stage] = r.model_id if isinstance(r, ModelVersion) else None
    result["candidate"] = result["ppo"] or result["sft"]
    log.info("train: sft %s, rm %s, ppo %s", result["sft"] or "skipped", result["rm"] or "skipped",
             result["ppo"] or "skipped")
    return result
