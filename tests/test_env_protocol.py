"""What every environment declares for the agent (its action syntax, its invalid-action text, its steps per
trial), how a run picks its tasks, and reflections that end at a sentence. No game, corpus or model."""

from __future__ import annotations

import pytest
import toyenv

from retro.agent.retrospect import clean_reflection
from retro.config import load_settings
from retro.envs import ENVS, env_class
from retro.envs.actions import bracket_action
from retro.envs.alfworld import parse_command
from retro.envs.base import Task
from retro.envs.selection import select_tasks, stratified_sample, task_kind
from retro.errors import UnknownEnvError


# -- action syntax -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,action", [
    (" Search[Milhouse]", "Search[Milhouse]"),
    ("Action 2: Lookup[ name ] and more", "Lookup[name]"),
    ("I will Finish[yes]\nObservation", "Finish[yes]"),
    ("click[Buy Now]", "click[Buy Now]"),
    ("nothing here", None),
    ("", None),
    ("Search[unclosed", None),
])
def test_bracket_actions(text, action):
    assert bracket_action(text) == action


@pytest.mark.parametrize("text,command", [
    ("go to desk 1", "go to desk 1"),
    ("Go to  Desk 1.", "go to desk 1"),
    ("> take the apple 1 from the countertop 2", "take apple 1 from countertop 2"),
    ("I go to sidetable 2 to look for the lamp", "go to sidetable 2"),
    ("move mug 1 to shelf 2", "move mug 1 to shelf 2"),
    ("put mug 1 in/on shelf 2", "put mug 1 in/on shelf 2"),  # the episode maps it to `move` if it must
    ("heat egg 1 with microwave 1", "heat egg 1 with microwave 1"),
    ("use desklamp 1\nObservation 3: ...", "use desklamp 1"),
    ("look", "look"),
    ("inventory.", "inventory"),
    ("I look for the apple", None),  # `look` counts only as the whole line
    ("go to desk", None),  # every place has its number
    ("Search[desk 1]", None),
    ("", None),
])
def test_alfworld_reads_its_plain_commands(text, command):
    assert parse_command(text) == command


def test_each_environment_declares_its_actions_and_steps():
    expected = {"hotpotqa": ("Search[<topic>]", 7), "alfworld": ("go to <place>", 50),
                "webshop": ("click[<button>]", 15)}
    for name, (form, steps) in expected.items():
        cls = env_class(name)
        assert cls.max_steps == steps
        assert cls.invalid_action.startswith("Invalid action") and form in cls.invalid_action
    assert env_class("alfworld").parse_action(None, "Action: go to desk 1") == "go to desk 1"


def test_unknown_environment_is_one_line_naming_the_choices():
    with pytest.raises(UnknownEnvError, match="unknown environment 'nope': choose one of ") as err:
        env_class("nope")
    assert all(name in str(err.value) for name in ("hotpotqa", "alfworld", "webshop"))
    assert "\n" not in str(err.value)


def test_max_steps_is_the_environments_unless_set(retro_home, monkeypatch):
    from retro.agent.spec import make_spec

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    models = toyenv.models()
    default = load_settings(home=retro_home)
    assert default.rollout.max_steps is None
    assert make_spec(default, models, "react", "alfworld", "valid_unseen", ["a"], 1).max_steps == 50
    assert make_spec(default, models, "react", "hotpotqa", "eval", ["a"], 1).max_steps == 7
    assert make_spec(default, models, "react", "toy", "eval", ["a"], 1).max_steps == toyenv.ToyEnv.max_steps
    explicit = load_settings(home=retro_home, preset="tiny", rollout={"max_steps": 3})
    assert make_spec(explicit, models, "react", "alfworld", "valid_unseen", ["a"], 1).max_steps == 3


# -- task selection ----------------------------------------------------------------------------------------
def _alfworld_like() -> list[Task]:
    """3 task types; each task in 3 trial folders (variants), like ALFWorld's splits."""
    tasks = []
    for kind, n_tasks in (("heat", 2), ("look", 5), ("pick_two", 3)):
        for k in range(n_tasks):
            for trial in range(3):
                folder = f"{kind}-{k}"
                tasks.append(Task("alfworld", "valid", f"{folder}/trial_{trial}", f"goal {folder}", "",
                                  {"task_type": kind, "variant_of": folder}))
    return tasks


def test_first_n_takes_one_variant_per_task():
    tasks = _alfworld_like()
    assert select_tasks(tasks, 3) == ["heat-0/trial_0", "heat-1/trial_0", "look-0/trial_0"]
    every = select_tasks(tasks, 3, all_variants=True)
    assert every == ["heat-0/trial_0", "heat-0/trial_1", "heat-0/trial_2"]


def test_sample_is_seeded_and_spread_over_the_task_types():
    tasks = _alfworld_like()
    picked = select_tasks(tasks, 99, sample=6, seed=1)
    assert picked == select_tasks(tasks, 99, sample=6, seed=1) == sorted(picked)
    assert picked != select_tasks(tasks, 99, sample=6, seed=2)
    kinds = [t.split("-")[0] for t in picked]
    assert sorted(kinds) == ["heat", "heat", "look", "look", "pick_two", "pick_two"]
    assert len({t.split("/")[0] for t in picked}) == 6  # six different tasks, never two trials of one
    big = select_tasks(tasks, 99, sample=9, seed=0)
    assert [t.split("-")[0] for t in big].count("heat") == 2  # a type with only 2 tasks gives 2
    assert len(big) == 9
    everything = select_tasks(tasks, 99, sample=100)
    assert len(everything) == 10  # one variant of each of the 10 tasks


def test_sample_without_types_is_uniform_and_hotpotqa_types_are_read():
    plain = [Task("webshop", "eval", f"ws-{k:03d}", "q", "a") for k in range(50)]
    assert task_kind(plain[0]) == ""
    assert len(stratified_sample(plain, 5, 0)) == 5
    qa = Task("hotpotqa", "eval", "x", "q", "a", {"type": "bridge"})
    assert task_kind(qa) == "bridge"


def test_task_ids_are_taken_as_given_and_unknown_ones_named():
    tasks = _alfworld_like()
    chosen = ["look-2/trial_1", "heat-0/trial_2"]
    assert select_tasks(tasks, 1, task_ids=chosen, sample=3) == chosen
    with pytest.raises(UnknownEnvError, match=r"no task 'nope' in alfworld split 'valid'.*retro envs tasks"):
        select_tasks(tasks, 1, task_ids=["heat-0/trial_0", "nope"])


def test_rollout_cli_takes_task_ids_and_sample(retro_home, monkeypatch):
    """`retro rollout --task-ids` / `--sample` reach the runner (toy environment, scripted models)."""
    import json

    import toyworker
    from typer.testing import CliRunner

    from retro.agent import spec as spec_module
    from retro.cli import app

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", toyworker.load_models)
    runner = CliRunner()
    base = ["rollout", "--env", "toy", "--split", "eval", "--mode", "react", "--trials", "1", "--json"]
    out = runner.invoke(app, [*base, "--task-ids", "eval-03,eval-07"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output.strip().splitlines()[-1])["written"]["trials"] == 2
    out = runner.invoke(app, [*base, "--sample", "5"], catch_exceptions=False)
    assert json.loads(out.output.strip().splitlines()[-1])["written"]["trials"] == 5
    bad = runner.invoke(app, [*base, "--sample", "0"])
    assert "--sample must be at least 1, got 0" in str(bad.exception)


# -- reflections ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,kept", [
    ("Reflection: I searched the wrong page. Next I will search X and then look up the",
     "I searched the wrong page."),
    ("I gave up early. Next, desk 1 first!\n\nmore", "I gave up early. Next, desk 1 first!"),
    ('It answered "no." Then I', 'It answered "no."'),
    ("I used step 2.5 wrongly", "I used step 2.5 wrongly"),  # no complete sentence: kept as it is
])
def test_reflections_end_at_a_sentence(text, kept):
    assert clean_reflection(text) == kept


def test_reflection_budget_is_the_environments_unless_set(retro_home, monkeypatch):
    """HotPotQA's reflections get 96 new tokens, ALFWorld's and WebShop's 128 (plans name places and objects);
    retrospective.max_new_tokens wins when set, and setting another retrospective field keeps the budget."""
    from retro.agent.spec import Models, make_spec
    from retro.config import load_settings
    from retro.llm.scripted import ScriptedLLM

    models = Models(ScriptedLLM(str), ScriptedLLM(str), "base")

    def budget(env: str, **overrides) -> int:
        settings = load_settings(**overrides)
        task = env_class(env)(settings)
        split = next(iter(task.splits()))
        return make_spec(settings, models, "reflexion", env, split, ["t"], 2).retro_max_new_tokens

    assert [budget(env) for env in ("hotpotqa", "alfworld", "webshop")] == [96, 128, 128]
    assert budget("alfworld", retrospective={"model": "embedded"}) == 128
    assert budget("alfworld", retrospective={"max_new_tokens": 40}) == 40


def test_training_budget_pools_environments_and_takes_rows_of_unknown_ones(retro_home):
    """Training sizes a sampled reflection by the largest budget of the environments in its rows; rows of an
    environment this machine lacks (a plugin installed only where the rollouts ran) count with the default."""
    import polars as pl

    from retro.envs.base import DEFAULT_REFLECTION_TOKENS
    from retro.train.lora import reflection_budget

    settings = load_settings()
    assert reflection_budget(settings, pl.DataFrame({"env": ["hotpotqa", "hotpotqa"]})) == 96
    assert reflection_budget(settings, pl.DataFrame({"env": ["hotpotqa", "webshop"]})) == 128
    assert reflection_budget(settings, pl.DataFrame({"env": ["not-installed"]})) == DEFAULT_REFLECTION_TOKENS
    assert reflection_budget(load_settings(retrospective={"max_new_tokens": 40}),
                             pl.DataFrame({"env": ["not-installed"]})) == 40
