"""Side by side: the three modes of one runner on the same held-out tasks (the paper's comparison)."""

from __future__ import annotations

import logging

import polars as pl

from retro.agent import spec as run_spec  # through the module: tests swap load_models for scripted LLMs
from retro.agent.request import RolloutRequest, with_mode
from retro.config import MODES, Settings
from retro.errors import ModelNotFoundError
from retro.orchestrate.promote import ModelsFor, held_out_settings
from retro.orchestrate.rollout import rollout
from retro.store.lake import Lake

log = logging.getLogger(__name__)


def compare_modes(settings: Settings, lake: Lake, request: RolloutRequest, *, modes: tuple[str, ...] = MODES,
                  adapter: str | None = None, models_for: ModelsFor | None = None) -> pl.DataFrame:
    """Success after each trial for every mode on the held-out request (`held_out_request`); retroformer uses
    `adapter`, else the promoted one, and is skipped when there is none.

    Returns one row per mode: mode, model version, run id, success_trial_0..K-1.
    """
    settings = held_out_settings(settings)
    models_for = models_for or (lambda arm: run_spec.load_models(settings, arm))
    rows = []
    for mode in modes:
        try:
            arm = with_mode(settings, lake, request, mode, adapter)
            models = models_for(arm)
        except ModelNotFoundError as err:
            log.info("compare: skip %s (%s)", mode, err)
            continue
        result = rollout(settings, lake, arm, models=models)
        row = {"mode": mode, "model_version": models.retro_version or "-", "run_id": result.run_id}
        row.update({f"success_trial_{i}": v for i, v in enumerate(result.success_by_trial)})
        rows.append(row)
    return pl.DataFrame(rows)
