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
    from retro.train.plan import build_datasets

    settings, lake = open_lake(overrides)
    versions = build_datasets(settings, lake)
    get_run_logger().info("data sets: %s", versions)
    return versions


@task
def train_task(datasets: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """SFT -> reward model -> PPO on those data set versions; a stage without data is skipped, not failed."""
    from retro.train.plan import train_stages

    settings, lake = open_lake(overrides)
    result = train_stages(settings, lake, datasets)
    get_run_logger().info("training: %s", result)
    return result


@flow(name="build-datasets")
def build_datasets_flow(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build and register the SFT, reward and PPO data sets from the lake."""
    return build_datasets_task(overrides)


@flow(name="train")
def train_flow(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the data sets, then train sft -> rm -> ppo; returns the model ids (or skip reasons)."""
    return train_task(build_datasets_task(overrides), overrides)


if __name__ == "__main__":
    train_flow()
