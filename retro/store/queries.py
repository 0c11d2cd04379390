"""Named reads and writes of lake facts for the agent, labelling and evaluation (all SQL stays here)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from retro.store.lake import Lake


def now() -> datetime:
    return datetime.now(UTC)


# -- runs -----------------------------------------------------------------------------------------------
def record_run(lake: Lake, run: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The run's start facts and the tasks it uses (both idempotent by key)."""
    return lake.append({"runs": [{**run, "started_at": now()}], "tasks": [{**t, "created_at": now()} for t in tasks]})


def record_run_end(lake: Lake, run_id: str, status: str, summary: Mapping[str, Any]) -> int:
    row = {"run_id": run_id, "status": status, "finished_at": now(), "summary": json.dumps(summary, sort_keys=True)}
    return lake.append({"run_ends": [row]})["run_ends"]


def append_trials(lake: Lake, trials: list[dict], steps: list[dict], reflections: list[dict]) -> dict[str, int]:
    """Finished trials with their steps and reflections, in one transaction: all or nothing."""
    return lake.append({"trials": trials, "steps": steps, "reflections": reflections})


def committed_trials(lake: Lake, run_id: str) -> pl.DataFrame:
    """What a run has committed so far (for resuming it), branch trials (sample > 0) included."""
    return lake.read(
        "SELECT task_id, trial, sample, episode_return, success FROM lake.trials WHERE run_id = ? "
        "ORDER BY task_id, trial, sample",
        [run_id],
    )


def committed_reflections(lake: Lake, run_id: str) -> pl.DataFrame:
    return lake.read(
        "SELECT task_id, trial, sample, text FROM lake.reflections WHERE run_id = ? ORDER BY task_id, trial, sample",
        [run_id],
    )


# -- ratings ----------------------------------------------------------------------------------------------
def rating_candidates(lake: Lake, label_version: str) -> pl.DataFrame:
    """Reflections whose next trial exists and that have no rating under `label_version` yet.

    Reflection (trial i, sample g) followed main-line trial i (sample 0) and was tried by trial i + 1 of
    branch g, so its rating compares those two returns.
    """
    return lake.read(
        """
        SELECT f.run_id, f.task_id, f.trial, f.sample,
               before.episode_return AS return_before, after.episode_return AS return_after
        FROM lake.reflections f
        JOIN lake.trials before ON before.run_id = f.run_id AND before.task_id = f.task_id
                               AND before.trial = f.trial AND before.sample = 0
        JOIN lake.trials after ON after.run_id = f.run_id AND after.task_id = f.task_id
                              AND after.trial = f.trial + 1 AND after.sample = f.sample
        WHERE NOT EXISTS (
            SELECT 1 FROM lake.ratings r
            WHERE r.run_id = f.run_id AND r.task_id = f.task_id AND r.trial = f.trial AND r.sample = f.sample
              AND r.label_version = ?
        )
        ORDER BY f.run_id, f.task_id, f.trial, f.sample
        """,
        [label_version],
    )


def record_ratings(lake: Lake, ratings: pl.DataFrame) -> int:
    return lake.append({"ratings": ratings.with_columns(pl.lit(now()).alias("labelled_at"))})["ratings"]


def rating_spread(lake: Lake, run_id: str) -> dict[str, Any]:
    """How a run's reflections were rated (newest label version): counts by sign, and over the failures with
    several reflections (branches) how many were rated apart, the spread, and the reward pairs they give."""
    return lake.read(
        """
        WITH rated AS (
            SELECT task_id, trial, sample, rating FROM lake.reflection_quality
            WHERE run_id = $run_id AND rating IS NOT NULL
        ),
        groups AS (SELECT * FROM lake.reflection_groups WHERE run_id = $run_id AND n_samples > 1)
        SELECT (SELECT count(*) FROM rated) AS rated,
               (SELECT count(*) FILTER (WHERE rating > 0) FROM rated) AS positive,
               (SELECT count(*) FILTER (WHERE rating = 0) FROM rated) AS zero,
               (SELECT count(*) FILTER (WHERE rating < 0) FROM rated) AS negative,
               (SELECT round(avg(rating), 4) FROM rated) AS mean_rating,
               (SELECT count(*) FROM groups) AS failures_with_branches,
               (SELECT count(*) FILTER (WHERE NOT all_equal) FROM groups) AS rated_apart,
               (SELECT round(avg(spread), 4) FROM groups) AS mean_spread,
               (SELECT max(spread) FROM groups) AS max_spread,
               (SELECT count(*) FROM rated a JOIN rated b USING (task_id, trial) WHERE a.rating > b.rating) AS pairs
        """,
        {"run_id": run_id},
    ).row(0, named=True)
