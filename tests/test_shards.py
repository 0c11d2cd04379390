"""Rollouts over several workers: shards run into Parquet, one commit, rows equal to a single process."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import toyenv
import toyworker
from lakerows import TABLES, lake_rows

from retro.agent.request import rollout_request
from retro.config import load_settings
from retro.envs import ENVS
from retro.orchestrate.rollout import rollout
from retro.orchestrate.shards import commit_shards, plan_shards, run_shard, split_tasks
from retro.store import Lake
from retro.store.staging import StagingLake

# What may differ between two runs of the same tasks: timings, timestamps, the Prefect flow run, the
# config (the two lakes live in different homes; test_workers_hash_the_planners_config covers it) and
# the code version (a commit may land between the two runs).
VOLATILE = {"seconds", "created_at", "started_at", "finished_at", "flow_run_id", "config", "config_hash",
            "code_version"}


def assert_same_rows(a: Lake, b: Lake) -> None:
    left, right = lake_rows(a, VOLATILE), lake_rows(b, VOLATILE)
    for name in TABLES:
        assert left[name].height > 0 or name == "run_ends", name
        assert left[name].equals(right[name]), f"{name} differs:\n{left[name]}\n{right[name]}"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    import retro.agent.spec as spec_module

    monkeypatch.setattr(spec_module, "load_models", toyworker.load_models)


def other_lake(tmp_path: Path, name: str) -> Lake:
    settings = load_settings(home=tmp_path / name, preset="tiny")
    lake = Lake(settings)
    lake.init()
    return lake


def test_split_tasks_round_robin_without_empty_shards():
    ids = [f"t{i}" for i in range(5)]
    assert split_tasks(ids, 2) == (("t0", "t2", "t4"), ("t1", "t3"))
    assert split_tasks(ids, 9) == tuple((t,) for t in ids)
    assert split_tasks([], 3) == ((),)
    assert sorted(sum(split_tasks(ids, 3), ())) == ids


def test_staging_lake_appends_idempotently_and_flushes_parquet(tmp_path):
    staging = StagingLake()
    row = {"run_id": "r", "task_id": "a", "trial": 0, "step": 1, "thought": "t", "action": "Look[]",
           "observation": "o", "reward": 0.0, "valid": True}
    assert staging.append({"steps": [row, row]}) == {"steps": 1}
    assert staging.append({"steps": [row]}) == {"steps": 0}
    assert staging.read("SELECT count(*) FROM lake.steps WHERE run_id = ?", ["r"]).item() == 1
    assert staging.flush(tmp_path / "shard-00") == {"steps": 1}
    assert pl.read_parquet(tmp_path / "shard-00" / "steps.parquet")["action"].to_list() == ["Look[]"]


def test_two_shards_give_the_rows_of_one_process(settings, lake, tmp_path, toy):
    single = other_lake(tmp_path, "single")
    rollout(single.settings, single, rollout_request(single.settings, single, env="toy", split="train",
                                                     mode="reflexion", tasks=8, trials=2),
            models=toyenv.models())

    plan = plan_shards(settings, lake, rollout_request(settings, lake, env="toy", split="train",
                                                       mode="reflexion", tasks=8, trials=2,
                                                       workers=2))
    assert [len(s) for s in plan.shards] == [4, 4]
    before = lake.current_snapshot()
    results = [run_shard(plan, i) for i in range(2)]
    assert lake.current_snapshot() == before  # shard workers never write the lake
    assert {r.run_id for r in results} == {single.read("SELECT run_id FROM lake.runs").item()}
    assert all(Path(r.folder, "trials.parquet").exists() for r in results)

    result = commit_shards(settings, lake, plan, results)
    assert result.success_by_trial == [0.0, 1.0]
    assert result.written == {"trials": 16, "steps": 16, "reflections": 8}
    assert lake.current_snapshot() == before + 2  # one commit of the shards, one for the run's end
    assert_same_rows(single, lake)
    assert not Path(results[0].folder).exists()  # staged files go once committed

    # a rerun finds everything committed: its shards stage nothing new and the commit writes nothing
    again = commit_shards(settings, lake, plan, [run_shard(plan, i) for i in range(2)])
    assert again.written == {"trials": 0, "steps": 0, "reflections": 0}
    assert_same_rows(single, lake)


def test_workers_hash_the_planners_config(settings, lake, toy):
    plan = plan_shards(settings, lake, rollout_request(settings, lake, env="toy", split="train", mode="react",
                                                       tasks=2, trials=1, workers=2))
    commit_shards(settings, lake, plan, [run_shard(plan, i) for i in range(2)])
    assert lake.read("SELECT config_hash FROM lake.runs").item() == settings.config_hash()


def test_a_shard_resumes_from_the_lake(settings, lake, toy):
    plan = plan_shards(settings, lake, rollout_request(settings, lake, env="toy", split="train",
                                                       mode="reflexion", tasks=4, trials=2,
                                                       workers=2))
    first = run_shard(plan, 0)
    commit = commit_shards(settings, lake, plan, [first, run_shard(plan, 1)])
    assert commit.written["trials"] == 8
    # shard 0 again: it reads its committed trials from the lake and runs nothing
    again = run_shard(plan, 0)
    assert again.staged["trials"] == 4  # the seeded rows, which the commit skips by key
    assert again.completion_tokens == 0


def test_rollout_flow_over_two_dask_workers_matches_one_process(prefect_harness, tmp_path, monkeypatch, settings,
                                                                lake, toy):
    """8 tasks over 2 Dask worker processes (prefect-dask, LocalCluster) vs the same tasks in one process."""
    pytest.importorskip("prefect_dask", reason="the `scale` extra (prefect-dask) is not installed")
    import dask

    from flows.rollout import rollout_flow

    single = other_lake(tmp_path, "single")
    rollout(single.settings, single, rollout_request(single.settings, single, env="toy", split="train",
                                                     mode="reflexion", tasks=8, trials=2),
            models=toyenv.models())
    monkeypatch.setenv("RETRO_PRESET", "tiny")  # the flow loads its settings from the environment
    preload = str(Path(toyworker.__file__).resolve())
    with dask.config.set({"distributed.worker.preload": [preload]}):
        out = rollout_flow(env="toy", split="train", mode="reflexion", tasks=8, trials=2, workers=2)
    assert out["success_by_trial"] == [0.0, 1.0]
    assert out["written"] == {"trials": 16, "steps": 16, "reflections": 8}
    assert_same_rows(single, lake)
    pids = lake.read("SELECT DISTINCT flow_run_id FROM lake.runs")
    assert pids.height == 1 and pids.item()  # the fan-out's flow run, as for a single-process rollout


def test_retro_rollout_with_workers_runs_the_fanout_flow(retro_home, monkeypatch):
    import json

    from typer.testing import CliRunner

    retro_home.mkdir(parents=True)  # flows/__init__ puts PREFECT_HOME inside it
    import flows.rollout
    from retro.cli import app

    calls = {}

    def fake_flow(**kwargs):
        calls.update(kwargs)
        return {"run_id": "r1", "success_by_trial": [0.5], "written": {"trials": 2}}

    monkeypatch.setattr(flows.rollout, "rollout_flow", fake_flow)
    monkeypatch.setenv("RETRO_ROLLOUT__WORKERS", "3")
    result = CliRunner().invoke(app, ["rollout", "--tasks", "4", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    assert calls["workers"] == 3 and calls["tasks"] == 4
    assert json.loads(result.stdout)["run_id"] == "r1"
