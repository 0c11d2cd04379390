"""Train: build the data sets at one lake snapshot, then SFT -> reward model -> PPO (LoRA adapters).

    python -m flows.train              (or: prefect deployment run 'train/train')
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task

from flows.artifacts import EXAMPLE_PAIRS, publish_datasets, publish_training
from flows.common import open_lake, retry_transient
from flows.logs import run_logger


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def build_datasets_task(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every training set at the current snapshot; same snapshot -> same versions (idempotent)."""
    from retro.train.datasets import build_datasets

    settings, lake = open_lake(overrides)
    versions = {name: dv.version for name, dv in build_datasets(settings, lake).items()}
    run_logger().info("data sets: %s", versions)
    return versions


@task
def train_task(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Data sets at one snapshot, then SFT -> reward model -> PPO, each step logged as it trains; a stage
    without data is skipped, and says so (log and `training` artifact) with what to change."""
    from retro.store.registry import get_model_version
    from retro.train.datasets import get_dataset_version
    from retro.train.pipeline import train_all
    from retro.train.result import NEXT_STEP

    log = run_logger()
    settings, lake = open_lake(overrides)
    result = train_all(settings, lake)
    log.info("training: %s", result)
    for stage, why in result["skipped"].items():
        log.warning("%s trained nothing tonight: %s. What to change: %s", stage, why,
                    NEXT_STEP.get(stage, NEXT_STEP["policy"]))
    pairs = get_dataset_version(lake, "reward_pairs", result["datasets"]["reward_pairs"]).frame()
    publish_datasets(result, pairs.head(EXAMPLE_PAIRS).to_dicts())
    stages = ("sft", "rm", result["trainer"])
    publish_training(result, {s: get_model_version(lake, result[s]).metrics for s in stages if result[s]})
    return result


@flow(name="build-datasets")
def build_datasets_flow(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build and register the SFT, reward and PPO data sets from the lake."""
    return build_datasets_task(overrides)


@flow(name="train")
def train_flow(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the data sets, then train sft -> rm -> ppo; returns the model ids (or skip reasons)."""
    return train_task(overrides)


if __name__ == "__main__":
    train_flow()
