# ruff: noqa: F811 (fixtures imported from other test modules come back as test arguments)
"""Policy gradient from the environment: GRPO whose reward is the return of the actor's next trial with
the sampled reflection, played by the batched runner (no reward model), raises the held-out rating.

The toy world of test_train_learning: the tiny retrospective model writes one of four plans; here a
scripted actor *plays* the replayed task and answers right iff its newest reflection says to search.
"""

from __future__ import annotations

import json
import random
import re

import pytest
from test_train_learning import (
    HELD_OUT_NAMES,
    TRAIN_NAMES,
    configure,
    make_tasks,
    mean_rating,
    toy_base_model,  # noqa: F401 (fixture)
)
from trainkit import one_thread  # noqa: F401 (fixture)

from retro.envs import ENVS
from retro.envs.base import StepResult, Task
from retro.llm.scripted import ScriptedLLM
from retro.train import lora
from retro.train.grpo import train_group
from retro.train.result import Skipped

N_TRAIN = 16


class LearnEpisode:
    def __init__(self, task: Task):
        self.task = task

    def reset(self) -> str:
        return self.task.question

    def step(self, action: str) -> StepResult:
        ok = action == "Finish[yes]"
        return StepResult("Correct." if ok else "Wrong.", float(ok), True, {"success": ok})

    def close(self) -> None:
        pass


class LearnEnv:
    """The training tasks of the toy world; the answer is always yes (the actor knows it only by searching)."""

    name = "learn"
    action_help = "Finish[answer] answers."
    max_steps = 2

    def __init__(self, settings=None):
        self.tasks = make_tasks(random.Random(0), TRAIN_NAMES, N_TRAIN)

    def splits(self) -> dict[str, int]:
        return {"train": N_TRAIN}

    def load_tasks(self, split: str) -> list[Task]:
        return [Task("learn", split, t["task_id"], t["prompt"], "yes") for t in self.tasks]

    def few_shot(self, task=None) -> str:
        return "Action 1: Finish[yes]"

    def parse_action(self, text: str) -> str | None:
        return text.strip() or None

    def start(self, task: Task) -> LearnEpisode:
        return LearnEpisode(task)


def actor_policy(prompt: str) -> str:
    """Answers right iff the newest reflection in memory says to search."""
    if re.search(r"Thought \d+:$", prompt):
        return " Let me answer.\n"
    reflections = re.findall(r"Reflection \d+: (.*)", prompt)
    return " Finish[yes]\n" if reflections and "search" in reflections[-1].lower() else " Finish[no]\n"


def failed_trials(lake, env: LearnEnv) -> None:
    """Trial 0 of every training task failed; its reflection prompt is the task's."""
    tasks = env.load_tasks("train")
    key = {"run_id": "night-1", "trial": 0, "sample": 0, "env": "learn"}
    lake.append({
        "runs": [{"run_id": "night-1", "split": "train", "env": "learn", "mode": "reflexion"}],
        "tasks": [{"env": "learn", "split": "train", "task_id": t.task_id, "question": t.question} for t in tasks],
        "trials": [{**key, "task_id": t.task_id, "episode_return": 0.0, "success": False, "memory": "[]"}
                   for t in tasks],
        "reflections": [{**key, "task_id": t.task_id, "prompt": t.question, "text": "I will think."} for t in tasks],
    })


def test_environment_reward_raises_held_out_reflections(settings, lake, toy_base_model, one_thread, monkeypatch):
    monkeypatch.setitem(ENVS, "learn", "test_train_env_reward:LearnEnv")
    configure(settings, toy_base_model)
    settings.train.trainer, settings.train.reward, settings.train.num_generations = "grpo", "environment", 4
    settings.train.ppo_total_episodes, settings.train.ppo_kl_coef = 256, 0.05
    env = LearnEnv()
    failed_trials(lake, env)
    actor = ScriptedLLM(actor_policy, name="scripted-actor")

    trained = train_group(settings, lake, sft=Skipped("sft", "left out"), actor=actor)
    assert not isinstance(trained, Skipped)
    assert trained.config["reward_model_id"] is None and trained.config["reward"] == "environment:scripted-actor"

    # every sampled reflection was played by the actor and stored as a branch trial of the adapter's runs
    run_ids = trained.config["reward_run_ids"]
    played = lake.read("SELECT task_id, trial, sample, memory, episode_return FROM lake.trials WHERE run_id = ?",
                       [run_ids[0]])
    assert played.height == trained.metrics["group/updates"] * settings.train.batch_size  # 2 prompts x 4
    assert (played["sample"] >= 1).all() and all(len(json.loads(m)) == 1 for m in played["memory"])
    run = lake.read("SELECT mode, split, retro_model_version FROM lake.runs WHERE run_id = ?", [run_ids[0]])
    assert run.row(0) == ("retroformer", "train", trained.model_id)
    assert 0.0 < played["episode_return"].mean() < 1.0

    # held-out tasks: the adapter's reflections say "search" more often than the base model's
    tokenizer = lora.load_tokenizer(toy_base_model)
    held_out = make_tasks(random.Random(1), HELD_OUT_NAMES, 16)
    base = mean_rating(lora.load_causal_lm(toy_base_model, tokenizer), tokenizer, held_out)
    after = mean_rating(lora.load_policy(toy_base_model, trained.adapter_path, tokenizer), tokenizer, held_out)
    assert after >= base + 0.15, (base, after, {k: v for k, v in trained.metrics.items() if "reward" in k or "kl" in k or "updates" in k or "entropy" in k})


def test_ppo_cannot_take_the_environment_reward(settings):
    from retro.config import load_settings
    from retro.errors import ConfigError

    with pytest.raises(ConfigError, match="needs train.trainer grpo or rloo"):
        load_settings(home=settings.home, train={"reward": "environment"})
