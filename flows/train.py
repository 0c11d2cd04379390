"""Train: build the data sets at one lake snapshot, then SFT -> reward model -> PPO (LoRA adapters).

    python -m flows.train              (or: prefect deployment run 'train/train')
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import open_lake, retry_transient


@task(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def build_datasets_task(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every training set at the current snapshot; same snapshot -> same versions (idempotent)."""
    from retro.train.datasets import build_datasets

    settings, lake = open_lake(overrides)
    versions = {name: dv.version for name, dv in build_datasets(settings, lake).items()}
    get_run_logger().info("data sets: %s", versions)
    return versions


@task
def train_task(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Data sets at one snapshot, then SFT -> reward model -> PPO; a stage without data is skipped."""
    from retro.train.pipeline import train_all

    settings, lake = open_lake(overrides)
    result = train_all(settings, lake)
    get_run_logger().info("training: %s", result)
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
