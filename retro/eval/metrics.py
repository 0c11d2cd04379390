"""Pure metrics over trial rows (polars frames with the lake's column names)."""

from __future__ import annotations

import polars as pl


def success_by_trial(trials: pl.DataFrame, n_tasks: int, n_trials: int) -> list[float]:
    """Success rate after each trial 0..K-1: the share of tasks solved at that trial or earlier.

    A task stops after its first success, so a solved task counts at every later trial too (the
    paper's curves are cumulative in the same way).
    """
    if n_tasks <= 0:
        return [0.0] * n_trials
    solved = trials.filter(pl.col("success")).group_by("task_id").agg(pl.col("trial").min().alias("first"))
    firsts = solved["first"].to_list()
    return [sum(1 for f in firsts if f <= i) / n_tasks for i in range(n_trials)]
