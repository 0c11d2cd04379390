"""The nightly retraining: rollout (train split, promoted adapter) -> label -> data sets + train
-> evaluate candidate vs incumbent (held-out split) -> promote if better -> the report.

    python -m flows.nightly            (or: prefect deployment run 'nightly-retrain/nightly')

The night's rollout collects training data, so it plays settings.nightly on top of settings.rollout
(reflections_per_failure = 4 branches per failure, F1 returns on HotPotQA: what the branches bench measured
to give ratings that differ); `retro rollout` keeps rollout's own values, and the held-out evaluation always
plays one reflection per failure. Each task logs its progress and publishes its Prefect artifacts as it goes
(flows/logs.py, flows/artifacts.py); a stage with nothing to learn from says so and what to change, and the
run still ends Completed.

A rerun on the same day (same tag) is idempotent: finished runs resume as no-ops, ratings and data
set versions already stored are not written again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, task

from flows.artifacts import publish_report
from flows.common import open_lake
from flows.evaluate import evaluate_task
from flows.label import label_task
from flows.logs import run_logger
from flows.rollout import run_rollout
from flows.train import train_task


def night_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The overrides of the night's rollout: settings.nightly's values put over settings.rollout's."""
    settings, _ = open_lake(overrides)
    overrides = dict(overrides or {})
    overrides["rollout"] = {**overrides.get("rollout", {}), **settings.nightly.model_dump()}
    return overrides


@task
def report_task(overrides: dict[str, Any] | None = None) -> str:
    """The whole lake's report (retro report) in $RETRO_HOME/report, linked as the `report` artifact."""
    from retro.eval.report import write_report  # matplotlib loads only here

    settings, lake = open_lake(overrides)
    index = write_report(lake, settings.home / "report")
    run_logger().info("report: %s", index)
    publish_report(index)
    return str(index)


@flow(name="nightly-retrain")
def nightly_flow(env: str | None = None, tasks: int | None = None, trials: int | None = None,
                 tag: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One night of Retroformer: collect trials, rate reflections, train, evaluate, maybe promote."""
    log = run_logger()
    tag = tag or datetime.now(UTC).strftime("nightly-%Y-%m-%d")
    # "auto": the promoted adapter (retroformer mode), or the base model (reflexion) before any promotion
    # one rollout task, or a fan-out over Dask workers when settings rollout.workers > 1
    collected = run_rollout({"env": env, "split": "train", "mode": "auto", "tasks": tasks, "trials": trials,
                             "tag": tag}, night_overrides(overrides))
    rated = label_task(None, overrides, run_id=collected["run_id"])
    trained = train_task(overrides)  # builds the data sets at one snapshot, then sft -> rm -> ppo
    night = {"rollout": collected, "ratings": rated, "datasets": trained["datasets"], "trained": trained,
             "evaluation": None}
    candidate = trained["candidate"]
    if candidate is None:
        log.warning("no candidate adapter tonight, nothing to evaluate: %s (the `training` artifact says what "
                    "to change)", "; ".join(trained["skipped"].values()))
    else:
        night["evaluation"] = evaluate_task(candidate, env, tag=tag, overrides=overrides)
    night["report"] = report_task(overrides)
    return night


if __name__ == "__main__":
    nightly_flow()
