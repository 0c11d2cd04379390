"""The nightly retraining: rollout (train split, promoted adapter) -> label -> data sets + train
-> evaluate candidate vs incumbent (held-out split) -> promote if better.

    python -m flows.nightly            (or: prefect deployment run 'nightly-retrain/nightly')

A rerun on the same day (same tag) is idempotent: finished runs resume as no-ops, ratings and data
set versions already stored are not written again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger

from flows.evaluate import evaluate_task
from flows.label import label_task
from flows.rollout import run_rollout
from flows.train import train_task


@flow(name="nightly-retrain")
def nightly_flow(env: str | None = None, tasks: int | None = None, trials: int | None = None,
                 tag: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One night of Retroformer: collect trials, rate reflections, train, evaluate, maybe promote."""
    log = get_run_logger()
    tag = tag or datetime.now(UTC).strftime("nightly-%Y-%m-%d")
    # "auto": the promoted adapter (retroformer mode), or the base model (reflexion) before any promotion
    # one rollout task, or a fan-out over Dask workers when settings rollout.workers > 1
    collected = run_rollout({"env": env, "split": "train", "mode": "auto", "tasks": tasks, "trials": trials,
                             "tag": tag}, overrides)
    rated = label_task(None, overrides)
    trained = train_task(overrides)  # builds the data sets at one snapshot, then sft -> rm -> ppo
    datasets = trained["datasets"]
    candidate = trained["candidate"]
    if candidate is None:
        log.info("no candidate adapter tonight (%s): nothing to evaluate", trained)
        return {"rollout": collected, "ratings": rated, "datasets": datasets, "trained": trained, "evaluation": None}
    evaluation = evaluate_task(candidate, env, tag=tag, overrides=overrides)
    return {"rollout": collected, "ratings": rated, "datasets": datasets, "trained": trained,
            "evaluation": evaluation}


if __name__ == "__main__":
    nightly_flow()
