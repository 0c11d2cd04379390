"""Side by side: the three modes of one runner on the same held-out tasks (the paper's comparison)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import polars as pl

from retro.agent.rollout import Models, load_models, rollout
from retro.config import MODES, Settings
from retro.envs import held_out_split
from retro.errors import ModelNotFoundError
from retro.eval.promote import held_out_settings
from retro.store.lake import Lake

log = logging.getLogger(__name__)


def compare_modes(settings: Settings, lake: Lake, *, env: str, tasks: int, trials: int, tag: str = "",
                  modes: tuple[str, ...] = MODES,
                  models_for: Callable[[str, str | None], Models] | None = None) -> pl.DataFrame:
    """Success after each trial for every mode (retroformer uses the promoted adapter; skipped if none).

    Returns one row per mode: mode, model version, run id, success_trial_0..K-1.
    """
    settings = held_out_settings(settings)
    models_for = models_for or (lambda mode, adapter: load_models(settings, lake, mode, adapter))
    rows = []
    for mode in modes:
        try:
            models = models_for(mode, None)
        except ModelNotFoundError as err:
            log.info("compare: skip %s (%s)", mode, err)
            continue
        result = rollout(settings, lake, env=env, split=held_out_split(env, settings), mode=mode, tasks=tasks,
                         trials=trials, tag=tag, models=models)
        row = {"mode": mode, "model_version": models.retro_version or "-", "run_id": result.run_id}
        row.update({f"success_trial_{i}": v for i, v in enumerate(result.success_by_trial)})
        rows.append(row)
    return pl.DataFrame(rows)
