"""Arms compared on the same held-out tasks: per trial, mean F1 and success of each arm, and the paired
difference to a baseline arm with a bootstrap 95% confidence interval over tasks.

An arm is one run (react, reflexion with the frozen base model, retroformer with one adapter). Per task
and trial the values are those of the task's main line after that trial: success is cumulative (a task
stops at its first success, which then counts at every later trial, as in the paper's curves), and F1
(`trials.score`) is the last trial's so far. Differences are paired by task, so the tasks' difficulty
cancels; resampling tasks with replacement gives the interval.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from retro.store.lake import Lake

TRIALS_SQL = """
SELECT task_id, trial, score, success
FROM lake.trials
WHERE run_id = ? AND sample = 0
ORDER BY task_id, trial
"""


def task_values(trials: pl.DataFrame, task_ids: list[str], n_trials: int) -> dict[str, np.ndarray]:
    """{"f1", "success"}: arrays (tasks x trials) of each task's main line after each trial."""
    f1 = np.zeros((len(task_ids), n_trials))
    success = np.zeros((len(task_ids), n_trials))
    rows = {task_id: i for i, task_id in enumerate(task_ids)}
    for task_id, part in trials.group_by("task_id", maintain_order=True):
        i = rows.get(task_id[0])
        if i is None:
            continue
        score, solved = 0.0, 0.0
        by_trial = {t: (s, ok) for t, s, ok in part.select("trial", "score", "success").iter_rows()}
        for j in range(n_trials):
            if j in by_trial and not solved:
                score = float(by_trial[j][0] or 0.0)
                solved = float(bool(by_trial[j][1]))
            f1[i, j], success[i, j] = score, solved
    return {"f1": f1, "success": success}


def bootstrap_ci(values: np.ndarray, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (one per task) over `n_boot` resamples of the tasks."""
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def compare_arms(lake: Lake, arms: dict[str, str], baseline: str = "reflexion", n_boot: int = 10_000,
                 seed: int = 0) -> pl.DataFrame:
    """One row per (arm, trial): mean F1 and success with their 95% CIs, and for every arm but the baseline
    the paired difference to it (d_f1, d_success) with its 95% CI. `arms`: name -> run id; every run must
    cover the same tasks (the baseline's) with the same number of trials."""
    runs = lake.read("SELECT run_id, n_trials FROM lake.runs WHERE list_contains(?, run_id)", [list(arms.values())])
    n_trials = int(runs["n_trials"].max())
    base_trials = lake.read(TRIALS_SQL, [arms[baseline]])
    task_ids = sorted(set(base_trials["task_id"].to_list()))
    values = {name: task_values(lake.read(TRIALS_SQL, [run_id]), task_ids, n_trials) for name, run_id in arms.items()}
    rows = []
    for name in arms:
        for j in range(n_trials):
            row: dict = {"arm": name, "trial": j, "n_tasks": len(task_ids)}
            for metric in ("f1", "success"):
                column = values[name][metric][:, j]
                row[metric] = float(column.mean()) if len(column) else float("nan")
                row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_ci(column, n_boot, seed)
                if name != baseline:
                    diff = column - values[baseline][metric][:, j]
                    row[f"d_{metric}"] = float(diff.mean()) if len(diff) else float("nan")
                    row[f"d_{metric}_lo"], row[f"d_{metric}_hi"] = bootstrap_ci(diff, n_boot, seed)
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def comparable_groups(lake: Lake) -> dict[str, dict[str, str]]:
    """Completed runs that form a comparison: the same env, split, tag, task count and trials, with a
    reflexion run among them. Returns "env/split/tag (N tasks x K trials)" -> {arm: run id}; an arm is the
    mode, with the adapter for retroformer. The newest run wins when two share an arm."""
    runs = lake.read("""
        SELECT r.run_id, r.mode, r.env, r.split, coalesce(r.tag, '') AS tag, r.n_tasks, r.n_trials,
               coalesce(r.retro_model_version, '-') AS version
        FROM lake.runs r JOIN lake.run_ends e USING (run_id)
        WHERE e.status = 'completed'
        ORDER BY r.started_at, r.run_id""")
    groups: dict[str, dict[str, str]] = {}
    for run_id, mode, env, split, tag, n_tasks, n_trials, version in runs.iter_rows():
        key = f"{env}/{split}/{tag or '-'} ({n_tasks} tasks x {n_trials} trials)"
        groups.setdefault(key, {})[mode if mode != "retroformer" else f"retroformer {version}"] = run_id
    return {key: arms for key, arms in groups.items() if "reflexion" in arms and len(arms) > 1}
