"""Policy gradient from the environment itself: the reward of a sampled reflection is what it does.

`EnvironmentReward` is a trl reward function (GRPOTrainer / RLOOTrainer call it with each batch's
prompts, sampled completions and the dataset's other columns). For every sampled reflection the actor
plays a new trial of the failed trial's task with that trial's memory plus the reflection, all of them
stepping together in the batched runner; the reward is the new trial's return minus the failed trial's,
exactly the rating the reflection would get in the lake. No learned reward model sits in between.

Every trial played this way is stored like any rollout: one run per trained adapter (tag = its model
id, mode retroformer, split of the tasks), trial = the optimizer step, sample = the completion's place in
the batch + 1, so a restarted training replays into the same keys and stores nothing twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import polars as pl

from retro.agent.runner import Branch, Runner
from retro.agent.spec import Models, make_spec
from retro.config import Settings
from retro.envs import get_env
from retro.llm.base import LLM
from retro.provenance import code_version
from retro.store import queries
from retro.store.lake import Lake

log = logging.getLogger(__name__)


class EnvironmentReward:
    """trl reward function: G(trial with the sampled reflection) - G(failed trial), played by the actor."""

    __name__ = "environment"  # trl logs rewards under the function's name

    def __init__(self, settings: Settings, lake: Lake, actor: LLM, replay: pl.DataFrame, model_id: str):
        """`replay`: rows of datasets/replay.sql (the failed trials the prompts come from)."""
        self.settings, self.lake, self.actor, self.model_id = settings, lake, actor, model_id
        self.runners: dict[tuple[str, str], Runner] = {}
        for (env, split), rows in replay.group_by(["env", "split"], maintain_order=True):
            self.runners[(env, split)] = self._runner(env, split, sorted(set(rows["task_id"].to_list())))
        self.played = 0

    def _runner(self, env: str, split: str, task_ids: list[str]) -> Runner:
        models = Models(self.actor, None, self.model_id)
        spec = make_spec(self.settings, models, "retroformer", env, split, task_ids, trials=1,
                         tag=f"env-reward-{self.model_id}")
        return Runner(self.lake, get_env(env, self.settings), self.actor, None, spec,
                      config_json=self.settings.config_json(), config_hash=self.settings.config_hash(),
                      code_version=code_version())

    @property
    def run_ids(self) -> list[str]:
        """The runs that hold the played trials (the adapter's lineage names them)."""
        return [runner.spec.run_id for runner in self.runners.values()]

    def __call__(self, prompts: list, completions: list, *, task_id: list[str], env: list[str],
                 split: list[str], memory: list[str], return_before: list[float], trainer_state: Any = None,
                 **_: Any) -> list[float]:
        step = int(getattr(trainer_state, "global_step", 0))
        rewards = [0.0] * len(completions)
        for key, runner in self.runners.items():
            mine = [i for i in range(len(completions)) if (env[i], split[i]) == key]
            if not mine:
                continue
            branches = [Branch(task_id[i], step, i + 1, [*json.loads(memory[i]), completions[i][-1]["content"].strip()])
                        for i in mine]
            for i, after in zip(mine, runner.play(branches), strict=True):
                rewards[i] = after - float(return_before[i])
        self.played += len(completions)
        return rewards

    def finish(self) -> None:
        """Close the runs of the played trials (what the report and SQL read as 'completed')."""
        for runner in self.runners.values():
            queries.record_run_end(self.lake, runner.spec.run_id, "completed", {"played": self.played})
