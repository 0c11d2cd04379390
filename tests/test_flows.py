# ruff: noqa: F811 (fixtures imported from trainkit come back as test arguments)
"""Flows on the real Prefect engine (prefect_test_harness) with scripted models on the toy env."""

from __future__ import annotations

from pathlib import Path

import pytest
import toyworker
from trainkit import tiny_model_dir  # noqa: F401 (fixture)

from retro.envs import ENVS


@pytest.fixture
def harness(prefect_harness):
    """The session's temporary Prefect API (tests/conftest.py)."""


@pytest.fixture
def scripted(monkeypatch, settings):
    """Every model load in the flows returns the scripted toy models."""
    import retro.agent.spec as spec_module

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", toyworker.load_models)


def test_rollout_and_label_flows_write_the_lake_once(harness, scripted, lake):
    from flows.label import label_flow
    from flows.rollout import rollout_flow

    first = rollout_flow(env="toy", split="train", mode="reflexion", tasks=3, trials=2)
    assert first["success_by_trial"] == [0.0, 1.0]
    assert first["written"]["trials"] == 6
    assert label_flow() == 3
    # a rerun of both flows is idempotent
    again = rollout_flow(env="toy", split="train", mode="reflexion", tasks=3, trials=2)
    assert again["written"] == {"trials": 0, "steps": 0, "reflections": 0}
    assert label_flow() == 0
    runs = lake.read("SELECT run_id, flow_run_id FROM lake.runs")
    assert runs.height == 1
    assert runs["flow_run_id"][0]  # the Prefect flow-run id joins the lake to Prefect
    assert lake.read("SELECT count(*) FROM lake.ratings").item() == 3


def test_a_transient_failure_is_retried_a_data_error_is_not():
    from prefect.states import Failed

    from flows.common import retry_transient
    from retro.errors import DataError, LakeBusyError

    def state(exc):
        return Failed(data=exc)

    assert retry_transient(None, None, state(LakeBusyError("busy")))
    assert not retry_transient(None, None, state(DataError("bad file")))


def test_deployments_carry_the_nightly_schedule(settings):
    from flows.serve import deployments

    settings.schedule.nightly_cron = "30 3 * * *"
    built = {d.name: d for d in deployments(settings)}
    assert set(built) == {"nightly", "rollout", "label", "build-datasets", "train", "evaluate"}
    (nightly,) = built["nightly"].schedules
    assert (nightly.schedule.cron, nightly.schedule.timezone) == ("30 3 * * *", settings.schedule.timezone)
    assert all(not d.schedules for name, d in built.items() if name != "nightly")


def test_prefect_yaml_runs_nightly_on_the_settings_schedule():
    """prefect.yaml (Prefect workers) and `retro serve` (settings.schedule) start the night at the same time."""
    import yaml

    from retro.config import ScheduleSettings

    spec = yaml.safe_load((Path(__file__).resolve().parent.parent / "prefect.yaml").read_text())
    (nightly,) = [d for d in spec["deployments"] if d["name"] == "nightly"]
    (schedule,) = nightly["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == (ScheduleSettings().nightly_cron, ScheduleSettings().timezone)


def test_flows_put_prefect_home_in_the_home_retro_toml_names(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "retro.toml").write_text('home = "from-toml"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRO_", "PREFECT_"))}
    done = subprocess.run([sys.executable, "-c", "import flows, os; print(os.environ['PREFECT_HOME'])"], cwd=tmp_path,
                          env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.stdout.strip() == str(tmp_path / "from-toml" / "prefect"), done.stderr


COUNTED = ("runs", "trials", "steps", "reflections", "ratings", "dataset_versions", "model_evaluations")


def counts(lake) -> dict[str, int]:
    return {t: lake.read(f"SELECT count(*) FROM lake.{t}").item() for t in COUNTED}


def train_counts(lake) -> dict[str, int]:
    return {t: lake.read(f"SELECT count(*) FROM lake.{t} JOIN lake.runs USING (run_id) WHERE split = 'train'").item()
            for t in ("trials", "steps", "reflections", "ratings")}


def test_nightly_flow_collects_rates_trains_evaluates_and_reruns_idempotently(harness, scripted, lake,
                                                                              tiny_model_dir):
    """The whole night on the real engine: scripted actor on the toy env, real trainers on a tiny model."""
    from flows.nightly import nightly_flow
    from retro.config import load_settings

    overrides = {"preset": "tiny", "retrospective": {"model": str(tiny_model_dir), "max_new_tokens": 8},
                 "train": {"max_length": 256, "batch_size": 2, "ppo_total_episodes": 4,
                           "ppo_epochs": 1}, "eval": {"tasks": 3, "trials": 2}}
    night = nightly_flow(env="toy", tasks=4, trials=2, tag="night-1", overrides=overrides)

    assert night["rollout"]["success_by_trial"] == [0.0, 1.0]  # toy reflections carry the fix
    G = load_settings().nightly.reflections_per_failure  # the night's branches: G reflections per failure
    assert night["ratings"] == 4 * G  # the toy's reflections are all alike: every branch succeeds, rated 1
    assert set(night["datasets"]) == {"sft", "reward", "reward_pairs", "ppo", "replay"}
    candidate = night["trained"]["candidate"]
    assert candidate == night["trained"]["sft"]  # every rating is 1: one class, so no reward model and no PPO
    assert set(night["trained"]["skipped"]) == {"rm", "ppo"}
    evaluation = night["evaluation"]
    assert evaluation["candidate"] == candidate and evaluation["incumbent"] == "base"
    assert evaluation["promoted"] is False  # the scripted candidate ties the base model: ties keep the incumbent
    runs = lake.read("SELECT split, mode, retro_model_version, flow_run_id FROM lake.runs ORDER BY split, mode")
    assert runs.select("split", "mode", "retro_model_version").rows() == [
        ("eval", "reflexion", "base"), ("eval", "retroformer", candidate), ("train", "reflexion", "base")]
    assert runs["flow_run_id"].null_count() == 0  # every row joins back to its Prefect flow run
    assert lake.read("SELECT stage FROM lake.model_versions").rows() == [("sft",)]
    before = counts(lake)
    assert before["model_evaluations"] == 2
    night_train = train_counts(lake)
    unrated = lake.read(  # the evaluation's reflections came after tonight's labelling
        "SELECT count(*) FROM lake.reflections f WHERE EXISTS (SELECT 1 FROM lake.trials t WHERE t.run_id = f.run_id"
        " AND t.task_id = f.task_id AND t.trial = f.trial + 1) AND NOT EXISTS (SELECT 1 FROM lake.ratings r"
        " WHERE r.run_id = f.run_id AND r.task_id = f.task_id AND r.trial = f.trial)").item()
    assert unrated > 0

    again = nightly_flow(env="toy", tasks=4, trials=2, tag="night-1", overrides=overrides)
    after = counts(lake)
    assert again["rollout"]["success_by_trial"] == [0.0, 1.0]
    assert again["ratings"] == unrated  # only what was new; nothing rated twice
    assert train_counts(lake) == night_train  # the night's collection and labels are not redone
    keys = "SELECT count(*) - count(DISTINCT (run_id, task_id, trial, sample, label_version)) FROM lake.ratings"
    assert lake.read(keys).item() == 0  # nothing rated twice
    # the same rows, settings and code give the same (content-addressed) candidate: nothing is trained or
    # evaluated twice
    assert again["trained"]["candidate"] == candidate
    assert lake.read("SELECT count(*) FROM lake.model_versions").item() == 1
    assert after["runs"] == before["runs"] and after["model_evaluations"] == before["model_evaluations"]
