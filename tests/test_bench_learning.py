"""The learning benchmark's mechanics at its smallest size, on the real models (bench/learning.py): every
arm ran on the same held-out tasks, the confidence intervals are computed, the candidates' lineage is
recorded. It asserts no gain: at this size a difference means nothing (bench/RESULTS.md has the answer)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_learning_bench_runs_every_arm_with_confidence_intervals(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for key in [k for k in os.environ if k.startswith("RETRO_")]:
        monkeypatch.delenv(key)
    import learning

    from retro.eval.paired import comparable_groups, compare_arms
    from retro.store import Lake

    lines = learning.run(quick=True, size="smoke", home=tmp_path / "home")
    text = "\n".join(lines)
    lake = Lake(learning.settings_for(tmp_path / "home", "smoke"))
    groups = [arms for name, arms in comparable_groups(lake).items() if learning.TAG in name]
    assert len(groups) == 1
    arms = groups[0]
    assert {"react", "reflexion"} <= set(arms) and any(a.startswith("retroformer") for a in arms), arms
    table = compare_arms(lake, arms)
    assert table.height == len(arms) * learning.SIZES["smoke"]["trials"]
    assert not any(math.isnan(v) for v in table["f1_lo"].to_list() + table["f1_hi"].to_list())
    assert "F1 - reflexion" in text and "retroformer" in text and "| stage |" in text
    lineage = lake.read("SELECT model_id, stage, dataset_version, n_runs FROM lake.model_lineage")
    for arm in arms:
        if arm.startswith("retroformer"):
            model_id = arm.split(" ", 1)[1]
            row = lineage.filter(lineage["model_id"] == model_id)
            assert row.height == 1 and row["n_runs"][0] > 0 and row["dataset_version"][0], (arm, lineage)
    sys.modules.pop("learning", None)
