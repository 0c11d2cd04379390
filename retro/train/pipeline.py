"""The offline training pipeline: build the datasets at one lake snapshot, then SFT -> reward model ->
policy gradient (settings train.trainer: PPO, the paper's, or GRPO / RLOO). A stage with nothing to learn
from is skipped and the later stages degrade: the policy stage starts from the base model without SFT,
and is skipped without a reward model."""

from __future__ import annotations

import logging
from typing import Any

from retro.config import Settings
from retro.store.lake import Lake
from retro.store.registry import ModelVersion
from retro.train.datasets import build_datasets
from retro.train.grpo import train_group
from retro.train.ppo import train_ppo
from retro.train.result import Skipped, skip
from retro.train.reward import train_reward_model
from retro.train.sft import train_sft

log = logging.getLogger(__name__)


def train_all(settings: Settings, lake: Lake, snapshot: int | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns small values for flows and the CLI:

    {"snapshot": int, "datasets": {name: version}, "rows": {name: row count},
     "sft"|"rm"|<trainer>: model_id or None, "trainer": "ppo"|"grpo"|"rloo", "skipped": {stage: reason},
     "candidate": the adapter to evaluate (the policy stage's, else sft's, else None)}
    """
    trainer = settings.train.trainer
    data = build_datasets(settings, lake, snapshot)
    sft = train_sft(settings, lake, data["sft"])
    if settings.train.reward == "environment":  # the environment scores the policy: no reward model needed
        rm: ModelVersion | Skipped = skip("rm", "skip reward model: train.reward=environment scores reflections")
    else:
        rm = train_reward_model(settings, lake, data["reward"], data["reward_pairs"])
    if trainer == "ppo":
        policy = train_ppo(settings, lake, data["ppo"], sft=sft, reward_model=rm)
    else:
        prompts = data["replay"] if settings.train.reward == "environment" else data["ppo"]
        policy = train_group(settings, lake, prompts, sft=sft, reward_model=rm)

    stages: dict[str, ModelVersion | Skipped] = {"sft": sft, "rm": rm, trainer: policy}
    result: dict[str, Any] = {
        "trainer": trainer,
        "snapshot": data["sft"].snapshot_id if snapshot is None else snapshot,
        "datasets": {name: dv.version for name, dv in data.items()},
        "rows": {name: dv.row_count for name, dv in data.items()},
        "skipped": {stage: r.reason for stage, r in stages.items() if isinstance(r, Skipped)},
    }
    for stage, r in stages.items():
        result[stage] = r.model_id if isinstance(r, ModelVersion) else None
    result["candidate"] = result[trainer] or result["sft"]
    log.info("train: sft %s, rm %s, %s %s", result["sft"] or "skipped", result["rm"] or "skipped", trainer,
             result[trainer] or "skipped")
    return result
