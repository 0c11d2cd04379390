"""Branches: G reflections per failed trial, each tried by its own branch of the next trial, rated by it.

The toy environment's actor answers with the word its newest reflection names; the scripted
retrospective model names a wrong word greedily (sample 0) and, when sampling, the right word for even
seeds only. So each branch's outcome is decided by its reflection's content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import polars as pl
import pytest
import toyenv

from retro.agent.rating import rate_reflections
from retro.agent.request import rollout_request
from retro.agent.runner import LATER_FIELDS, RolloutSpec, seed_for
from retro.agent.spec import Models
from retro.envs import ENVS
from retro.llm.scripted import ScriptedLLM
from retro.orchestrate.rollout import rollout

G = 4


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")


def sampled_retro(prompt: str, seed: int | None) -> str:
    if seed is None:
        return "I guessed. Next time use the word nothing."
    right = toyenv.retro_policy(prompt).split("\n")[0]
    return right if seed % 2 == 0 else f"Next time use the word wrong{seed % 5}."


def branch_models() -> Models:
    retro = ScriptedLLM(sampled_retro, name="scripted-retro", seeded=True)
    return Models(ScriptedLLM(toyenv.actor_policy, name="scripted-actor"), retro, "base")


def run(settings, lake, branches=G, tasks=4, trials=3, models=None):
    settings.rollout.reflections_per_failure = branches
    return rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="reflexion",
                                                   tasks=tasks, trials=trials),
                   models=models or branch_models())


def right_seed(task_id: str, trial: int, sample: int, seed: int = 0) -> bool:
    return seed_for(seed, task_id, trial, sample) % 2 == 0


def test_each_failure_gets_g_reflections_each_tried_by_its_own_branch(settings, lake):
    result = run(settings, lake)
    # the main line is sample 0 only: its greedy reflections name a wrong word, so it never succeeds
    assert result.success_by_trial == [0.0, 0.0, 0.0]
    trials = lake.read("SELECT task_id, trial, sample, success, memory FROM lake.trials ORDER BY ALL")
    main = trials.filter(pl.col("sample") == 0)
    assert main.height == 4 * 3
    branches = trials.filter(pl.col("sample") > 0)
    assert branches.height == 4 * 2 * (G - 1)  # after trials 0 and 1 of each task; the last trial has no next
    refl = lake.read("SELECT task_id, trial, sample, text, gen_params FROM lake.reflections ORDER BY ALL")
    assert refl.height == 4 * 2 * G
    for task_id, trial, sample, success, memory in branches.iter_rows():
        text = refl.filter((pl.col("task_id") == task_id) & (pl.col("trial") == trial - 1)
                           & (pl.col("sample") == sample))["text"].item()
        assert json.loads(memory)[-1] == text  # the branch tried its own reflection, newest last
        assert success == right_seed(task_id, trial - 1, sample)
    seeds = [json.loads(p)["seed"] for p in refl.filter(pl.col("sample") > 0)["gen_params"]]
    assert len(set(seeds)) == len(seeds)  # one seed per (task, trial, sample)


def test_branch_ratings_are_the_exact_return_differences(settings, lake):
    run(settings, lake)
    assert rate_reflections(lake, "v1") == 4 * 2 * G
    ratings = lake.read("SELECT task_id, trial, sample, return_before, return_after, rating FROM lake.ratings")
    for task_id, trial, sample, before, after, rating in ratings.iter_rows():
        assert before == 0.0  # the main line never succeeds
        expected = float(sample > 0 and right_seed(task_id, trial, sample))
        assert (after, rating) == (expected, expected - before)
    assert rate_reflections(lake, "v1") == 0


def test_a_rerun_adds_nothing_and_a_fresh_run_repeats_every_text(settings, lake, tmp_path):
    first = run(settings, lake)
    again = run(settings, lake)
    assert again.run_id == first.run_id and sum(again.written.values()) == 0
    texts = lake.read("SELECT task_id, trial, sample, text FROM lake.reflections ORDER BY ALL")
    from retro.config import load_settings
    from retro.store import Lake

    other = load_settings(home=tmp_path / "other", preset="tiny")
    other_lake = Lake(other)
    run(other, other_lake)
    assert other_lake.read("SELECT task_id, trial, sample, text FROM lake.reflections ORDER BY ALL").equals(texts)


def test_one_reflection_per_failure_keeps_todays_rows_and_run_ids(settings, lake):
    result = run(settings, lake, branches=1, models=toyenv.models())
    assert result.success_by_trial == [0.0, 1.0, 1.0]
    assert lake.read("SELECT count(*) FROM lake.trials WHERE sample <> 0").item() == 0
    spec = RolloutSpec(env="toy", split="eval", mode="reflexion", task_ids=("a",), trials=2, max_steps=4,
                       memory_size=3, seed=0, actor_model="m")
    before_branches = {k: v for k, v in asdict(spec).items() if k not in LATER_FIELDS}  # the spec as it was
    digest = hashlib.sha256(json.dumps(before_branches, sort_keys=True).encode()).hexdigest()[:12]
    assert spec.run_id == f"reflexion-toy-eval-{digest}"
    branched = RolloutSpec(**{**asdict(spec), "task_ids": ("a",), "reflections_per_failure": 4,
                              "branch_temperature": 1.0})
    assert branched.run_id != spec.run_id


def test_react_mode_ignores_branches(settings, lake):
    models = toyenv.models()
    models.retro, models.retro_version = None, None
    plain = rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="react",
                                                    tasks=2, trials=2), models=models)
    settings.rollout.reflections_per_failure = G
    branched = rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="react",
                                                       tasks=2, trials=2), models=models)
    assert branched.run_id == plain.run_id


def test_the_views_show_each_groups_spread_and_whether_the_best_beat_sample_0(settings, lake):
    run(settings, lake, trials=2)
    rate_reflections(lake, "v1")
    groups = lake.read("SELECT task_id, n_samples, spread, greedy_rating, best_beats_greedy, all_equal "
                       "FROM lake.reflection_groups ORDER BY task_id")
    assert groups.height == 4 and set(groups["n_samples"]) == {G}
    for task_id, _, spread, greedy, beats, all_equal in groups.iter_rows():
        wins = any(right_seed(task_id, 0, g) for g in range(1, G))
        assert (greedy, spread, beats, all_equal) == (0.0, float(wins), wins, not wins)
    curve = lake.read("SELECT trial, success_rate FROM lake.success_by_trial ORDER BY trial")
    assert curve["success_rate"].to_list() == [0.0, 0.0]  # branch successes are not the main line's


def test_the_report_shows_how_branches_rated_apart(settings, lake, tmp_path):
    from retro.eval.report import read_report_data, write_report

    run(settings, lake, trials=2)
    rate_reflections(lake, "v1")
    branches = read_report_data(lake).branches
    wins = sum(any(right_seed(f"eval-{k:02d}", 0, g) for g in range(1, G)) for k in range(4))
    assert branches.select("reflections_per_failure", "failures", "rated_apart", "best_beat_sample_0").row(0) == (
        G, 4, wins, wins)
    assert "Branches: several reflections per failure" in write_report(lake, tmp_path / "report").read_text()
