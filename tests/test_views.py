"""The analysts' views and the SQL cookbook (docs/cookbook/*.sql) on a lake filled by scripted rollouts.

The lake holds three runs of the toy environment, 4 tasks x 3 trials each:
react (no reflections), reflexion with a weak base model (it names the fix for even codes only,
else repeats "Try harder"), and retroformer with adapter ppo-001 (always names the fix).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import toyenv

from retro.agent.rating import rate_reflections
from retro.agent.request import RolloutRequest, rollout_request
from retro.agent.spec import Models
from retro.envs import ENVS
from retro.llm.scripted import ScriptedLLM
from retro.orchestrate.rollout import rollout
from retro.store import Lake, run_readonly
from retro.store.readonly import check_readonly

COOKBOOK = Path(__file__).resolve().parents[1] / "docs" / "cookbook"


def weak_retro(prompt: str) -> str:
    k = int(re.search(r"code (\d+)", prompt).group(1))
    if k % 2 == 0:
        return f"I guessed. Next time use the word {toyenv.secret(k)}.\n"
    return "Try harder.\n"


def fill_lake(settings) -> Lake:
    """Scripted rollouts in three modes, ratings, and a small model registry (sft -> ppo, promoted)."""
    from retro.store.queries import now

    lake = Lake(settings)
    lake.init()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ENVS, "toy", "toyenv:ToyEnv")
        common = {"env": "toy", "split": "eval", "tasks": 4, "trials": 3}
        rollout(settings, lake, rollout_request(settings, lake, mode="react", **common),
                models=Models(toyenv.models().actor, None, None))
        weak = Models(toyenv.models().actor, ScriptedLLM(weak_retro, name="scripted-retro"), "base")
        rollout(settings, lake, rollout_request(settings, lake, mode="reflexion", **common), models=weak)
        snapshot = lake.current_snapshot()  # the SFT set saw react + reflexion
        strong = toyenv.models()
        strong.retro_version = "ppo-001"
        rollout(settings, lake, RolloutRequest(mode="retroformer", **common), models=strong)  # no registry here
    rate_reflections(lake, "v1")
    lake.append({
        "dataset_versions": [
            {"dataset": "sft", "version": "d1", "sql_hash": "abc", "snapshot_id": snapshot, "row_count": 7,
             "path": "/tmp/sft.parquet", "params": "{}", "created_at": now()},
            {"dataset": "ppo", "version": "d2", "sql_hash": "def", "snapshot_id": lake.current_snapshot(),
             "row_count": 9, "path": "/tmp/ppo.parquet", "params": "{}", "created_at": now()},
        ],
        "model_versions": [
            {"model_id": "sft-001", "stage": "sft", "base_model": "tiny", "parent_model_id": None,
             "adapter_path": "/a/sft", "dataset": "sft", "dataset_version": "d1", "config": "{}",
             "metrics": json.dumps({"train_loss": 1.5}), "created_at": now()},
            {"model_id": "ppo-001", "stage": "ppo", "base_model": "tiny", "parent_model_id": "sft-001",
             "adapter_path": "/a/ppo", "dataset": "ppo", "dataset_version": "d2", "config": "{}",
             "metrics": json.dumps({"history": [{"step": 1, "objective/scores": 0.1, "objective/kl": 0.0},
                                                {"step": 2, "objective/scores": 0.4, "objective/kl": 0.02},
                                                {"step": 3, "objective/scores": 0.7, "objective/kl": 0.05}],
                                    "objective/scores": 0.7, "objective/kl": 0.05}),
             "created_at": now()},
        ],
        "promotions": [{"model_id": "ppo-001", "promoted_at": now(), "previous_model_id": None, "reason": "test"}],
    })
    return lake


_FILLED: dict = {}  # "lake": the filled Lake, "cookbook": its query results


def filled_lake(tmp_path_factory) -> Lake:
    """One filled lake per test session (rollouts cost seconds), shared by test_views and test_report."""
    if "lake" not in _FILLED:
        from retro.config import load_settings

        home = tmp_path_factory.mktemp("filled") / "home"
        _FILLED["lake"] = fill_lake(load_settings(home=home, preset="tiny"))
    return _FILLED["lake"]


@pytest.fixture
def filled(tmp_path_factory, monkeypatch):
    lake = filled_lake(tmp_path_factory)
    monkeypatch.setenv("RETRO_HOME", str(lake.settings.home))
    return lake


@pytest.fixture
def cookbook(filled):
    """Every cookbook query's rows (as dicts), run as `retro sql -f` runs them, on one connection."""
    if "cookbook" not in _FILLED:
        results = {}
        with filled.connect() as con:
            for path in sorted(COOKBOOK.glob("*.sql")):
                results[path.stem] = con.execute(check_readonly(path.read_text())).pl().to_dicts()
        _FILLED["cookbook"] = results
    return _FILLED["cookbook"]


def project(rows: list[dict], *keys: str) -> list[tuple]:
    return [tuple(row[k] for k in keys) for row in rows]


# -- views -------------------------------------------------------------------------------------------------
def test_trial_outcomes_has_one_row_per_trial_with_run_facts(filled):
    rows = filled.read("SELECT mode, count(*) AS n, count(DISTINCT actor_model) AS actors, "
                       "any_value(retro_model_version) AS version FROM lake.trial_outcomes GROUP BY mode ORDER BY mode")
    assert project(rows.to_dicts(), "mode", "n", "actors", "version") == [
        ("react", 12, 1, None), ("reflexion", 10, 1, "base"), ("retroformer", 8, 1, "ppo-001")]
    assert filled.read("SELECT count(*) FROM lake.trials").item() == 30


def test_success_by_trial_is_cumulative_over_n_tasks(filled):
    rows = filled.read("SELECT mode, trial, n_solved, n_tasks, success_rate FROM lake.success_by_trial ORDER BY mode, trial")
    assert project(rows.to_dicts(), "mode", "trial", "success_rate") == [
        ("react", 0, 0.0), ("react", 1, 0.0), ("react", 2, 0.0),
        ("reflexion", 0, 0.0), ("reflexion", 1, 0.5), ("reflexion", 2, 0.5),
        ("retroformer", 0, 0.0), ("retroformer", 1, 1.0), ("retroformer", 2, 1.0)]
    assert set(rows["n_tasks"]) == {4}


def test_success_by_trial_matches_the_python_metric(filled):
    from retro.eval.metrics import success_by_trial

    trials = filled.read("SELECT run_id, task_id, trial, success FROM lake.trials")
    view = filled.read("SELECT run_id, success_rate FROM lake.success_by_trial ORDER BY run_id, trial")
    for (run_id,), rates in view.group_by("run_id", maintain_order=True):
        expected = success_by_trial(trials.filter(trials["run_id"] == run_id), 4, 3)
        assert rates["success_rate"].to_list() == expected


def test_reflection_quality_joins_rating_length_and_next_trial(filled):
    rows = filled.read("SELECT * FROM lake.reflection_quality ORDER BY model_version, task_id, trial").to_dicts()
    assert len(rows) == 10  # reflexion: 4 at trial 0 + 2 repeats at trial 1; retroformer: 4
    assert all(r["length_chars"] == len(r["text"]) for r in rows)
    assert all(r["label_version"] == "v1" for r in rows)
    weak = [r for r in rows if r["model_version"] == "base"]
    assert {(r["text"], r["rating"], r["next_success"], r["flipped"]) for r in weak} == {
        ("I guessed. Next time use the word word0.", 1.0, True, True),
        ("I guessed. Next time use the word word1.", 1.0, True, True),
        ("Try harder.", 0.0, False, False)}
    assert {r["env"] for r in rows} == {"toy"}


def test_model_lineage_links_adapter_dataset_snapshot_runs(filled):
    rows = {r["model_id"]: r for r in filled.read("SELECT * FROM lake.model_lineage").to_dicts()}
    assert set(rows) == {"sft-001", "ppo-001"}
    sft, ppo = rows["sft-001"], rows["ppo-001"]
    assert (sft["stage"], sft["dataset"], sft["dataset_version"], sft["row_count"], sft["promoted"]) == (
        "sft", "sft", "d1", 7, False)
    assert (ppo["parent_model_id"], ppo["sql_hash"], ppo["promoted"]) == ("sft-001", "def", True)
    assert sft["n_runs"] == 2 and all(not r.startswith("retroformer") for r in sft["run_ids"])
    assert ppo["n_runs"] == 3 and sft["snapshot_id"] < ppo["snapshot_id"]


def test_views_read_through_retro_sql_and_at_a_snapshot(filled):
    early = filled.read("SELECT snapshot_id FROM lake.model_lineage WHERE model_id = 'sft-001'").item()
    then = run_readonly(filled, "SELECT count(DISTINCT run_id) FROM lake.trial_outcomes", snapshot=early)
    assert then.item() == 2  # the retroformer run came later


# -- cookbook ------------------------------------------------------------------------------------------------
def test_cookbook_has_8_to_10_queries_each_with_a_question(cookbook):
    assert 8 <= len(cookbook) <= 10
    for path in COOKBOOK.glob("*.sql"):
        assert path.read_text().startswith("-- Q: "), path.name


def test_cookbook_success_per_trial_per_mode(cookbook):
    rows = cookbook["01_success_per_trial_per_mode"]
    assert project(rows, "mode", "model_version", "trial", "success_rate") == [
        ("react", "-", 0, 0.0), ("react", "-", 1, 0.0), ("react", "-", 2, 0.0),
        ("reflexion", "base", 0, 0.0), ("reflexion", "base", 1, 0.5), ("reflexion", "base", 2, 0.5),
        ("retroformer", "ppo-001", 0, 0.0), ("retroformer", "ppo-001", 1, 1.0), ("retroformer", "ppo-001", 2, 1.0)]


def test_cookbook_flipped_reflections(cookbook):
    rows = cookbook["02_flipped_reflections"]
    assert project(rows, "mode", "task_id", "trial") == [
        ("reflexion", "eval-00", 0), ("reflexion", "eval-02", 0),
        ("retroformer", "eval-00", 0), ("retroformer", "eval-01", 0),
        ("retroformer", "eval-02", 0), ("retroformer", "eval-03", 0)]
    assert all("use the word" in r["text"] and r["rating"] == 1.0 for r in rows)


def test_cookbook_rating_distribution(cookbook):
    assert project(cookbook["03_rating_distribution"], "model_version", "rating", "n_reflections") == [
        ("base", 0.0, 4), ("base", 1.0, 2), ("ppo-001", 1.0, 4)]


def test_cookbook_failing_actions(cookbook):
    # react 12 failures, reflexion 4 + 2 + 2, retroformer 4: all end with the wrong guess
    assert project(cookbook["04_failing_actions"], "env", "action", "n_failed_trials") == [
        ("toy", "Finish[nothing]", 24)]


def test_cookbook_repeated_reflections(cookbook):
    assert project(cookbook["05_repeated_reflections"], "model_version", "task_id", "trial", "text") == [
        ("base", "eval-01", 1, "Try harder."), ("base", "eval-03", 1, "Try harder.")]


def test_cookbook_reflection_length_vs_outcome(cookbook):
    rows = cookbook["06_reflection_length_vs_outcome"]
    assert project(rows, "model_version", "next_success", "n_reflections", "avg_rating") == [
        ("base", False, 4, 0.0), ("base", True, 2, 1.0), ("ppo-001", True, 4, 1.0)]
    assert rows[0]["avg_chars"] == len("Try harder.")


def test_cookbook_trials_to_success(cookbook):
    assert project(cookbook["07_trials_to_success"], "mode", "n_tasks", "n_solved", "n_never_solved",
                   "avg_first_success_trial") == [
        ("react", 4, 0, 4, None), ("reflexion", 4, 2, 2, 1.0), ("retroformer", 4, 4, 0, 1.0)]


def test_cookbook_token_cost_per_solved_task(cookbook, filled):
    rows = {r["mode"]: r for r in cookbook["08_token_cost_per_solved_task"]}
    assert [rows[m]["n_solved"] for m in ("react", "reflexion", "retroformer")] == [0, 2, 4]
    assert rows["react"]["tokens_per_solved_task"] is None
    total = filled.read("SELECT sum(prompt_tokens + completion_tokens)::BIGINT FROM lake.trials t "
                        "JOIN lake.runs USING (run_id) WHERE mode = 'retroformer'").item()
    assert rows["retroformer"]["actor_tokens"] == total > 0
    assert rows["retroformer"]["tokens_per_solved_task"] == round(total / 4, 1)


def test_cookbook_promoted_lineage(cookbook):
    rows = cookbook["09_promoted_lineage"]
    assert project(rows, "model_id", "stage", "parent_model_id", "dataset_version", "n_runs", "promoted") == [
        ("sft-001", "sft", None, "d1", 2, False), ("ppo-001", "ppo", "sft-001", "d2", 3, True)]


def test_cookbook_model_version_gain(cookbook):
    assert project(cookbook["10_model_version_gain"], "mode", "model_version", "first_trial", "last_trial",
                   "gain") == [
        ("retroformer", "ppo-001", 0.0, 1.0, 1.0), ("reflexion", "base", 0.0, 0.5, 0.5), ("react", "-", 0.0, 0.0, 0.0)]


def test_retro_sql_runs_a_cookbook_file(filled):
    from typer.testing import CliRunner

    from retro.cli import app

    result = CliRunner().invoke(app, ["sql", "-f", str(COOKBOOK / "07_trials_to_success.sql"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "mode,n_tasks,n_solved,n_never_solved,avg_first_success_trial"
    assert "retroformer,4,4,0,1.0" in result.output
