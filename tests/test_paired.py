"""Arms on the same tasks: per-trial F1 and success, paired differences with bootstrap CIs, and the report."""

from __future__ import annotations

import numpy as np
import pytest

from retro.eval.paired import bootstrap_ci, comparable_groups, compare_arms
from retro.store import queries


def add_run(lake, run_id: str, mode: str, scores: dict[str, list[float]], version: str | None = None,
            tag: str = "bench") -> None:
    """A completed run on 4 tasks x 3 trials; scores[task] = F1 of each trial it ran (1.0 = solved, stops)."""
    trials = [{"run_id": run_id, "task_id": task, "trial": j, "sample": 0, "score": f1, "success": f1 == 1.0,
               "episode_return": f1} for task, f1s in scores.items() for j, f1 in enumerate(f1s)]
    lake.append({"runs": [{"run_id": run_id, "mode": mode, "env": "hotpotqa", "split": "eval", "n_tasks": 4,
                           "n_trials": 3, "retro_model_version": version, "tag": tag}],
                 "trials": trials})
    queries.record_run_end(lake, run_id, "completed", {})


BASE = {"a": [0.0, 0.2, 0.2], "b": [0.5, 0.5, 0.5], "c": [0.0, 1.0], "d": [0.0, 0.0, 0.0]}
BETTER = {"a": [0.0, 1.0], "b": [0.5, 1.0], "c": [0.0, 1.0], "d": [0.0, 0.4, 0.4]}


def test_per_trial_values_carry_forward_and_differences_are_paired(lake):
    add_run(lake, "r-base", "reflexion", BASE)
    add_run(lake, "r-new", "retroformer", BETTER, version="ppo-1")
    table = compare_arms(lake, {"reflexion": "r-base", "retroformer ppo-1": "r-new"}, n_boot=2000)
    base = table.filter(table["arm"] == "reflexion")
    assert base["f1"].to_list() == pytest.approx([0.125, 0.425, 0.425])  # c solved at trial 1 counts at trial 2
    assert base["success"].to_list() == pytest.approx([0.0, 0.25, 0.25])
    new = table.filter(table["arm"] == "retroformer ppo-1")
    assert new["d_f1"].to_list() == pytest.approx([0.0, (0.8 + 0.5 + 0.0 + 0.4) / 4, (0.8 + 0.5 + 0.0 + 0.4) / 4])
    assert new["d_success"].to_list() == pytest.approx([0.0, 0.5, 0.5])
    lo, hi = new["d_f1_lo"][1], new["d_f1_hi"][1]
    assert 0.0 <= lo < new["d_f1"][1] < hi <= 0.8  # the 4 paired differences are 0.8, 0.5, 0.0, 0.4
    assert new["d_f1_lo"][0] == new["d_f1_hi"][0] == 0.0  # identical at trial 0: no uncertainty
    assert base["d_f1"].null_count() == 3  # the baseline has no difference to itself


def test_bootstrap_interval_covers_the_mean_and_is_seeded():
    values = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    lo, hi = bootstrap_ci(values, n_boot=5000, seed=3)
    assert lo < values.mean() < hi and (lo, hi) == bootstrap_ci(values, n_boot=5000, seed=3)
    assert bootstrap_ci(np.array([0.3, 0.3])) == (pytest.approx(0.3), pytest.approx(0.3))


def test_comparable_groups_need_a_reflexion_run_with_the_same_tag(lake):
    add_run(lake, "r-base", "reflexion", BASE)
    add_run(lake, "r-react", "react", BASE)
    add_run(lake, "r-other", "retroformer", BETTER, version="ppo-1", tag="other-night")
    groups = comparable_groups(lake)
    assert list(groups.values()) == [{"reflexion": "r-base", "react": "r-react"}]


def test_report_draws_the_comparison_with_its_table(lake, tmp_path):
    from retro.eval.report import write_report

    add_run(lake, "r-base", "reflexion", BASE)
    add_run(lake, "r-new", "retroformer", BETTER, version="ppo-1")
    index = write_report(lake, tmp_path / "report")
    page = index.read_text()
    assert "Arms on the same held-out tasks" in page and "F1 - reflexion" in page
    assert (tmp_path / "report" / "comparison_0.png").stat().st_size > 1000
