"""Training sets: SQL files with headers, versions pinned to lake snapshots, env filter, held-out split."""

from __future__ import annotations

import duckdb
import pytest
from trainkit import fill_branches, fill_lake

from retro.errors import ConfigError
from retro.store import export
from retro.train.datasets import NAMES, SQL_DIR, build_dataset, build_datasets, get_dataset_version


@pytest.mark.parametrize("name", NAMES)
def test_sql_file_has_header_naming_inputs_outputs_and_parameters(name):
    text = (SQL_DIR / f"{name}.sql").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("--"))
    assert text.startswith(f"-- {name}:"), "first line: purpose"
    for part in ("Inputs:", "Output:", "Parameters:"):
        assert part in header
    for table in export.tables_read(text):
        assert f"lake.{table}" in header, f"input table {table} not named in the header"
    for param in export.parameters_used(text):
        assert f"${param}" in header, f"parameter ${param} not described in the header"
    code = export.strip_comments(text)
    assert "WITH " in code and len(duckdb.extract_statements(code)) == 1  # named CTEs, one final select
    assert "ORDER BY" in code.rsplit("SELECT", 1)[1]  # deterministic rows


def test_rebuild_at_same_snapshot_is_idempotent_and_new_data_is_a_new_version(settings, lake):
    fill_lake(lake, n=6)
    first = build_datasets(settings, lake)
    rows = {name: dv.frame() for name, dv in first.items()}
    registered = lake.read("SELECT count(*) FROM lake.dataset_versions").item()
    assert registered == len(NAMES)
    assert first["sft"].row_count == 3 and first["reward"].row_count == 6 and first["ppo"].row_count == 6
    assert first["reward_pairs"].row_count == 0  # one reflection per prompt: nothing to compare

    again = build_datasets(settings, lake)  # later snapshots only added registry rows
    assert {n: d.version for n, d in again.items()} == {n: d.version for n, d in first.items()}
    assert all(again[n].frame().equals(rows[n]) for n in NAMES)
    assert lake.read("SELECT count(*) FROM lake.dataset_versions").item() == registered

    fill_lake(lake, n=4, run_id="run-b")
    newer = build_dataset(settings, lake, "reward")
    assert newer.version != first["reward"].version and newer.row_count == 10
    assert newer.snapshot_id > first["reward"].snapshot_id

    pinned = build_dataset(settings, lake, "reward", snapshot=first["reward"].snapshot_id)
    assert pinned.version == first["reward"].version and pinned.frame().equals(rows["reward"])
    assert get_dataset_version(lake, "reward").version == newer.version  # the newest by snapshot
    frame = pinned.frame()
    assert frame.columns == ["run_id", "task_id", "trial", "sample", "env", "prompt", "reflection", "rating", "label"]
    assert frame["label"].to_list() == [r > 0 for r in frame["rating"].to_list()]


def test_env_filter_and_pooling(settings, lake):
    fill_lake(lake, n=4, env="hotpotqa")
    fill_lake(lake, n=4, env="alfworld")
    pooled = build_dataset(settings, lake, "reward").frame()
    assert sorted(set(pooled["env"].to_list())) == ["alfworld", "hotpotqa"] and pooled.height == 8
    settings.dataset.env = "alfworld"
    only = build_dataset(settings, lake, "reward")
    assert set(only.frame()["env"].to_list()) == {"alfworld"} and only.row_count == 4
    assert only.params["env"] == "alfworld"


def test_held_out_split_is_never_training_data(settings, lake):
    fill_lake(lake, n=4, run_id="train-run")
    fill_lake(lake, n=4, run_id="eval-run")
    lake.append({"runs": [{"run_id": "eval-run", "env": "hotpotqa", "split": "eval"},
                          {"run_id": "train-run", "env": "hotpotqa", "split": "train"}]})
    for dv in build_datasets(settings, lake).values():
        if "run_id" in dv.frame().columns:
            assert set(dv.frame()["run_id"].to_list()) == {"train-run"}
    assert build_dataset(settings, lake, "ppo").row_count == 4  # the eval run's prompts are the same text


def test_ppo_prompts_come_from_failed_trials_only(settings, lake):
    fill_lake(lake, n=3)
    lake.append({
        "trials": [{"run_id": "won", "task_id": "x", "trial": 0, "env": "hotpotqa", "success": True}],
        "reflections": [{"run_id": "won", "task_id": "x", "trial": 0, "env": "hotpotqa", "prompt": "odd", "text": "t"}],
    })
    prompts = build_dataset(settings, lake, "ppo").frame()
    assert "odd" not in prompts["prompt"].to_list() and prompts.height == 3
    assert prompts.columns == ["env", "prompt"]


def test_unknown_names_fail_with_the_fix(settings, lake):
    with pytest.raises(ConfigError, match="the datasets are"):
        build_dataset(settings, lake, "nope")
    with pytest.raises(ConfigError, match="retro train build-datasets"):
        get_dataset_version(lake, "sft")


def test_pairs_compare_the_reflections_of_one_prompt_by_their_ratings(settings, lake):
    fill_branches(lake, n=3, ratings=(0.0, 1.0, 0.5, 1.0))
    pairs = build_dataset(settings, lake, "reward_pairs").frame()
    # per prompt, ratings 0, 1, 0.5, 1: pairs (1 > 0) x2, (1 > 0.5) x2, (0.5 > 0); the two 1.0s make none
    assert pairs.height == 3 * 5
    assert (pairs["margin"] > 0).all()
    assert (pairs["chosen_rating"] - pairs["rejected_rating"] == pairs["margin"]).all()
    for prompt, chosen, rejected in pairs.select("prompt", "chosen", "rejected").iter_rows():
        task = prompt.split("question ")[1].split(".")[0]
        assert chosen.startswith(f"{task} plan") and rejected.startswith(f"{task} plan")  # never across prompts
    assert pairs.columns[:4] == ["env", "prompt", "chosen", "rejected"]


def test_sft_takes_the_best_reflection_of_each_group_when_it_is_positive(settings, lake):
    fill_branches(lake, n=2, ratings=(0.0, 0.5, 1.0, 1.0))
    fill_branches(lake, n=1, ratings=(0.0, 0.0, -1.0), run_id="run-flat")
    sft = build_dataset(settings, lake, "sft").frame()
    assert sft.height == 2  # run-flat's best rating is 0: not positive, no row
    assert sft["sample"].to_list() == [2, 2] and sft["rating"].to_list() == [1.0, 1.0]  # ties: lowest sample


def test_pairs_leave_out_the_held_out_split(settings, lake):
    fill_branches(lake, n=2, ratings=(0.0, 1.0), run_id="train-run")
    fill_branches(lake, n=2, ratings=(0.0, 1.0), run_id="eval-run")
    lake.append({"runs": [{"run_id": "eval-run", "env": "hotpotqa", "split": "eval"},
                          {"run_id": "train-run", "env": "hotpotqa", "split": "train"}]})
    pairs = build_dataset(settings, lake, "reward_pairs").frame()
    assert pairs.height == 2 and all(k.startswith("train-run/") for k in pairs["chosen_key"].to_list())


@pytest.mark.parametrize("eval_split", [None, "valid_unseen", "eval"])
def test_pooled_environments_keep_every_held_out_split_out(settings, lake, eval_split):
    """HotPotQA's held-out split is eval, ALFWorld's valid_unseen: pooled, neither reaches a training set,
    whatever settings eval.split says (it only adds a split)."""
    settings.eval.split = eval_split
    runs = {"hq-train": ("hotpotqa", "train"), "hq-eval": ("hotpotqa", "eval"),
            "alf-train": ("alfworld", "train"), "alf-unseen": ("alfworld", "valid_unseen")}
    for run_id, (env, split) in runs.items():
        fill_branches(lake, n=2, ratings=(0.0, 1.0), env=env, run_id=run_id)
        fill_lake(lake, n=2, env=env, run_id=run_id + "-single")
    lake.append({"runs": [{"run_id": r + suffix, "env": env, "split": split}
                          for r, (env, split) in runs.items() for suffix in ("", "-single")]})
    for name, dv in build_datasets(settings, lake).items():
        frame = dv.frame()
        ids = frame["run_id"].to_list() if "run_id" in frame.columns else []
        ids += [key.split("/")[0] for column in ("chosen_key", "rejected_key") if column in frame.columns
                for key in frame[column].to_list()]
        assert ids or name == "ppo", name
        assert not {i.removesuffix("-single") for i in ids} & {"hq-eval", "alf-unseen"}, name
        assert {i.removesuffix("-single") for i in ids} <= {"hq-train", "alf-train"}, name


def test_tasks_record_whether_they_are_held_out(settings, lake, monkeypatch):
    import toyenv

    from retro.agent.request import rollout_request
    from retro.envs import ENVS
    from retro.orchestrate.rollout import rollout

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(toyenv.ToyEnv, "held_out_split", "eval", raising=False)
    for split in ("train", "eval"):
        rollout(settings, lake, rollout_request(settings, lake, env="toy", split=split, mode="react", tasks=2,
                                                trials=1), models=toyenv.models())
    held = lake.read("SELECT split, bool_and(held_out) AS held FROM lake.tasks GROUP BY split ORDER BY split")
    assert held.rows() == [("eval", True), ("train", False)]


def test_an_environment_without_a_declared_held_out_split_keeps_eval_out(settings, lake, monkeypatch):
    """Evaluations of an environment that declares no held-out split run on "eval": its "eval" runs are held
    out in the lake and in every data set alike."""
    from retro.envs import ENVS, held_out_split

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    assert held_out_split("toy", settings) == "eval"
    fill_branches(lake, n=2, ratings=(0.0, 1.0), env="toy", run_id="toy-eval")
    fill_branches(lake, n=2, ratings=(0.0, 1.0), env="toy", run_id="toy-train")
    lake.append({"runs": [{"run_id": "toy-eval", "env": "toy", "split": "eval"},
                          {"run_id": "toy-train", "env": "toy", "split": "train"}]})
    pairs = build_dataset(settings, lake, "reward_pairs").frame()
    assert {k.split("/")[0] for k in pairs["chosen_key"].to_list()} == {"toy-train"}
