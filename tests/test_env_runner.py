"""Every environment played by the agent end to end: the batched runner, the environment's own action
syntax, the lake.

Fast: a scripted actor writes a known-good trajectory (gold path, walkthrough) as its Action lines, the
runner parses them with the environment's parser and steps the real environment, and every task is won.
Slow: the embedded SmolLM2 plays a few steps of each environment, and some of its actions reach the game.
"""

from __future__ import annotations

import importlib.util
import re
import time

import pytest

from retro.agent.request import rollout_request
from retro.agent.runner import Runner
from retro.agent.spec import Models, load_models, make_spec
from retro.config import load_settings
from retro.envs import get_env, select_tasks
from retro.envs.webshop import WebShop
from retro.llm.scripted import ScriptedLLM
from retro.orchestrate.rollout import rollout
from retro.store import Lake

WEBSHOP_GOALS = 1500  # a catalogue of the first goals only: a few seconds to build (test_env_webshop.py)
# find_spec, not importorskip: importing alfworld writes ~/.cache
needs_alfworld = pytest.mark.skipif(importlib.util.find_spec("alfworld") is None,
                                    reason="the alfworld extra is not installed: just setup")


def replay(plans: dict[str, list[str]]) -> ScriptedLLM:
    """An actor that writes plans[question][n-1] as its n-th action, for the task whose question comes
    last in the prompt (the worked examples before it may ask other questions)."""

    def respond(prompt: str) -> str:
        question = max(plans, key=lambda q: prompt.rfind(q.strip()))
        kind, n = re.search(r"(Thought|Action) (\d+):$", prompt).groups()
        return " I follow the plan.\n" if kind == "Thought" else f" {plans[question][int(n) - 1]}\n"

    return ScriptedLLM(respond, name="replay")


def steps_of(lake, run_id: str):
    return lake.read("SELECT task_id, step, action, observation, valid FROM lake.steps WHERE run_id = ? "
                     "ORDER BY task_id, step", [run_id])


# -- the scripted actor wins every environment through the runner -------------------------------------------
def test_hotpotqa_gold_paths_win_through_the_runner(settings, lake):
    tasks = get_env("hotpotqa", settings).load_tasks("eval")[:2]
    plans = {t.question: [*(f"Search[{title}]" for title in dict.fromkeys(f[0] for f in
                                                                          t.metadata["supporting_facts"])),
                          f"Finish[{t.answer}]"] for t in tasks}
    settings.rollout.task_ids = [t.task_id for t in tasks]
    result = rollout(settings, lake, rollout_request(settings, lake, env="hotpotqa", split="eval",
                                                     mode="react", trials=1),
                     models=Models(replay(plans), None, None))
    assert result.success_by_trial == [1.0]
    steps = steps_of(lake, result.run_id)
    assert steps["valid"].all() and steps["action"].to_list()[-1].startswith("Finish[")


@needs_alfworld
def test_alfworld_walkthroughs_win_through_the_runner(settings, lake):
    """Plain commands as the actor writes them, ReAct's `put X in/on Y` included."""
    env = get_env("alfworld", settings)
    tasks = [next(t for t in env.load_tasks("valid_unseen") if t.metadata["task_type"] == kind)
             for kind in ("pick_and_place", "look_at_obj_in_light")]
    plans = {t.question: [re.sub(r"^move (.+) to (.+)$", r"put \1 in/on \2", action)
                          for action in t.metadata["walkthrough"]] for t in tasks}
    settings.rollout.task_ids = [t.task_id for t in tasks]
    settings.actor.constrain_actions = False  # ReAct's free text: `put` is no admissible command, the parser reads it
    result = rollout(settings, lake, rollout_request(settings, lake, env="alfworld", split="valid_unseen",
                                                     mode="react", trials=1),
                     models=Models(replay(plans), None, None))
    assert result.success_by_trial == [1.0]
    steps = steps_of(lake, result.run_id)
    assert steps["valid"].all() and "put " in " ".join(steps["action"])
    assert steps.height == sum(len(plan) for plan in plans.values())


def test_webshop_gold_paths_win_through_the_runner(settings, lake):
    env = WebShop(settings, limit=WEBSHOP_GOALS)
    tasks = env.load_tasks("eval")[:2]
    plans = {t.question: env.gold_path(t) for t in tasks}
    actor = replay(plans)
    task_ids = [t.task_id for t in tasks]
    spec = make_spec(settings, Models(actor, None, None), "react", "webshop", "eval", task_ids, 1)
    assert spec.max_steps == 15
    result = Runner(lake, env, actor, None, spec).run()
    assert result.success_by_trial == [1.0]
    assert steps_of(lake, result.run_id)["action"].to_list()[-1] == "click[buy now]"


# -- the embedded model reaches every game ------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """One home, lake and embedded actor for the module (the model converts once, ~20 s)."""
    home = tmp_path_factory.mktemp("embedded-home")
    settings = load_settings(home=home, preset="tiny", rollout={"max_steps": 4})
    lake = Lake(settings)
    lake.init()
    return settings, lake, load_models(settings, rollout_request(settings, lake, mode="react"))


def _reaches_the_game(embedded, environment, split: str) -> None:
    """React on 2 tasks for 4 steps: every action parses and reaches the game (free text, measured before the
    constraint: HotPotQA 6 of 6 valid, ALFWorld 8 reached and 3 valid, WebShop 8 reached and 2 valid; 90 s in all)."""
    settings, lake, models = embedded
    started = time.perf_counter()
    task_ids = select_tasks(environment.load_tasks(split), 2)
    spec = make_spec(settings, models, "react", environment.name, split, task_ids, 1)
    result = Runner(lake, environment, models.actor, None, spec).run()
    steps = steps_of(lake, result.run_id)
    reached = steps.filter(steps["observation"] != environment.invalid_action)
    print(f"{environment.name}: {reached.height} of {steps.height} actions reached the game, "
          f"{int(steps['valid'].sum())} valid, {time.perf_counter() - started:.0f} s: "
          f"{steps['action'].to_list()}")
    assert reached.height > 0 and steps["valid"].any()  # some actions parse, and some the game accepts
    # on by default for the embedded actor: the engine decodes each action within the step's actions
    assert spec.constrain_actions and steps["valid"].all()


@pytest.mark.slow
def test_embedded_model_reaches_hotpotqa(embedded):
    _reaches_the_game(embedded, get_env("hotpotqa", embedded[0]), "eval")


@pytest.mark.slow
@needs_alfworld
def test_embedded_model_reaches_alfworld(embedded):
    _reaches_the_game(embedded, get_env("alfworld", embedded[0]), "valid_unseen")


@pytest.mark.slow
def test_embedded_model_reaches_webshop(embedded):
    _reaches_the_game(embedded, WebShop(embedded[0], limit=WEBSHOP_GOALS), "eval")
