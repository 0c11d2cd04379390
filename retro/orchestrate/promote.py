"""Evaluate a candidate adapter against the incumbent on a held-out split, and promote only if better.

Both run the same tasks with the same seed; the incumbent is the promoted adapter, or the frozen base
retrospective model (reflexion mode) before anything was promoted. Ties keep the incumbent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from retro.agent.rollout import Models, check_counts, load_models, rollout
from retro.agent.runner import RunResult
from retro.config import Settings
from retro.envs import held_out_split
from retro.store import queries
from retro.store.lake import Lake

log = logging.getLogger(__name__)

BASE = "base"  # the model id that stands for the frozen base retrospective model

ModelsFor = Callable[[str, str | None], Models]  # (mode, adapter) -> models; tests pass scripted ones


@dataclass
class Comparison:
    candidate: str
    incumbent: str
    candidate_curve: list[float]
    incumbent_curve: list[float]
    candidate_run: str
    incumbent_run: str
    promoted: bool

    @property
    def reason(self) -> str:
        c, i = self.candidate_curve[-1], self.incumbent_curve[-1]
        verdict = "promoted" if self.promoted else "kept incumbent"
        return f"{verdict}: final success {c:.2%} (candidate {self.candidate}) vs {i:.2%} (incumbent {self.incumbent})"


def held_out_settings(settings: Settings) -> Settings:
    """Settings for a held-out evaluation: the Reflexion protocol, one reflection per failure (branches
    are a way to collect training data; the main line they leave is the same)."""
    rollout = settings.rollout.model_copy(update={"reflections_per_failure": 1})
    return settings.model_copy(update={"rollout": rollout})


def _record(lake: Lake, model_id: str, result: RunResult, env: str, split: str) -> None:
    lake.append({"model_evaluations": [{
        "model_id": model_id, "run_id": result.run_id, "env": env, "split": split,
        "final_success": result.success_by_trial[-1],
        "metrics": json.dumps({f"eval/success_trial_{i}": v for i, v in enumerate(result.success_by_trial)}),
        "evaluated_at": queries.now(),
    }]})


def evaluate_candidate(settings: Settings, lake: Lake, candidate: str, *, env: str | None = None,
                       tasks: int | None = None, trials: int | None = None, tag: str = "",
                       flow_run_id: str | None = None, models_for: ModelsFor | None = None) -> Comparison:
    """Run candidate and incumbent on the held-out split, record both, promote the candidate if better."""
    from retro.train import registry

    settings = held_out_settings(settings)
    env = env or settings.rollout.env
    check_counts(tasks, trials)  # before `or` turns an explicit 0 into the default
    split, tasks, trials = held_out_split(env, settings), tasks or settings.eval.tasks, trials or settings.eval.trials
    models_for = models_for or (lambda mode, adapter: load_models(settings, lake, mode, adapter))
    promoted = registry.promoted_model(lake)
    incumbent = promoted.model_id if promoted else BASE

    def run(mode: str, adapter: str | None) -> RunResult:
        return rollout(settings, lake, env=env, split=split, mode=mode, tasks=tasks, trials=trials, tag=tag,
                       flow_run_id=flow_run_id, models=models_for(mode, adapter))

    cand = run("retroformer", candidate)
    inc = run("retroformer", incumbent) if promoted else run("reflexion", None)
    _record(lake, candidate, cand, env, split)
    _record(lake, incumbent, inc, env, split)
    better = cand.success_by_trial[-1] > inc.success_by_trial[-1]
    comparison = Comparison(candidate, incumbent, cand.success_by_trial, inc.success_by_trial,
                            cand.run_id, inc.run_id, better)
    if better:
        registry.promote(lake, candidate, reason=comparison.reason, previous=None if incumbent == BASE else incumbent)
    log.info("evaluation on %s/%s: %s", env, split, comparison.reason)
    return comparison
