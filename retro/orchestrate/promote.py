"""Evaluate a candidate adapter against the incumbent on a held-out split, and promote only if better.

Both run the same tasks with the same seed; the incumbent is the promoted adapter, or the frozen base
retrospective model (reflexion mode) before anything was promoted. Ties keep the incumbent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from retro.agent import spec as run_spec  # through the module: tests swap load_models for scripted LLMs
from retro.agent.request import RolloutRequest, with_mode
from retro.agent.runner import ProgressFn, RunResult
from retro.config import Settings
from retro.orchestrate.rollout import rollout
from retro.store import queries, registry
from retro.store.lake import Lake

log = logging.getLogger(__name__)

BASE = "base"  # the model id that stands for the frozen base retrospective model

ModelsFor = Callable[[RolloutRequest], run_spec.Models]  # tests pass scripted models


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


def evaluate_candidate(settings: Settings, lake: Lake, request: RolloutRequest, candidate: str, *,
                       flow_run_id: str | None = None, models_for: ModelsFor | None = None,
                       progress: ProgressFn | None = None) -> Comparison:
    """Run candidate and incumbent on the held-out request (`held_out_request`), record both, promote the
    candidate if better. `progress` hears both arms' runners as they go."""
    settings = held_out_settings(settings)
    models_for = models_for or (lambda arm: run_spec.load_models(settings, arm))
    promoted = registry.promoted_model(lake)
    incumbent = promoted.model_id if promoted else BASE

    def run(arm: RolloutRequest) -> RunResult:
        return rollout(settings, lake, arm, flow_run_id=flow_run_id, models=models_for(arm), progress=progress)

    # both arms resolved (their adapters checked) before either loads a model
    candidate_arm = with_mode(settings, lake, request, "retroformer", candidate)
    incumbent_arm = (with_mode(settings, lake, request, "retroformer", incumbent) if promoted
                     else with_mode(settings, lake, request, "reflexion"))
    cand, inc = run(candidate_arm), run(incumbent_arm)
    _record(lake, candidate, cand, request.env, request.split)
    _record(lake, incumbent, inc, request.env, request.split)
    better = cand.success_by_trial[-1] > inc.success_by_trial[-1]
    comparison = Comparison(candidate, incumbent, cand.success_by_trial, inc.success_by_trial,
                            cand.run_id, inc.run_id, better)
    if better:
        registry.promote(lake, candidate, reason=comparison.reason, previous=None if incumbent == BASE else incumbent)
    log.info("evaluation on %s/%s: %s", request.env, request.split, comparison.reason)
    return comparison
