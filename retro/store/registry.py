"""The registry: data set versions, model versions and promotions. Every trained adapter is a
`model_versions` row, and the newest `promotions` row names the adapter the retroformer mode uses. Any
adapter traces back, through its dataset version and that version's lake snapshot, to the trials it
learned from. No torch here: a rollout picks its adapter without loading a trainer.

Next to every adapter lie `retro_config.json` (the resolved settings it was trained with, as
nanoGPT keeps `config` in its checkpoints) and `metrics.json`. Adapter folders and data set files are
recorded relative to the home and resolved against the reader's (retro.store.artifacts): every row read
here carries the path in the current home.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from retro.errors import ModelNotFoundError
from retro.store.artifacts import adapter_place, dataset_place, home_path, stored_path
from retro.store.lake import Lake

log = logging.getLogger(__name__)

STAGES = ("sft", "rm", "ppo", "grpo", "rloo")
CONFIG_FILE = "retro_config.json"
METRICS_FILE = "metrics.json"


class UnknownModelVersionError(ModelNotFoundError):
    """A model_id that is not in the registry."""


@dataclass(frozen=True)
class ModelVersion:
    """One trained adapter and where it came from."""

    model_id: str
    stage: str  # sft | rm | ppo | grpo | rloo
    base_model: str  # settings.retrospective.model it was trained on ("embedded" or an HF folder)
    adapter_path: Path  # a peft adapter folder that loads on the base model alone
    dataset: str
    dataset_version: str
    parent_model_id: str | None = None  # ppo: the sft adapter it started from (None = the base model)
    config: dict[str, Any] = field(default_factory=dict)  # the resolved settings (Settings.model_dump)
    metrics: dict[str, Any] = field(default_factory=dict)  # trl-style names: objective/kl, eval/accuracy...
    created_at: datetime | None = None


def _finite(value: Any) -> Any:
    """NaN and infinities become null, so the JSON stays valid for DuckDB's JSON functions."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json(value: dict[str, Any]) -> str:
    return json.dumps(_finite(value), sort_keys=True, default=str)


def _from_row(row: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        model_id=row["model_id"], stage=row["stage"], base_model=row["base_model"],
        adapter_path=Path(row["adapter_path"]), dataset=row["dataset"], dataset_version=row["dataset_version"],
        parent_model_id=row["parent_model_id"], config=json.loads(row["config"] or "{}"),
        metrics=json.loads(row["metrics"] or "{}"), created_at=row["created_at"],
    )


# -- rows ------------------------------------------------------------------------------------------------
def _dataset_row(lake: Lake, df: pl.DataFrame) -> dict[str, Any] | None:
    """The first row, its data set file resolved in this lake's home."""
    if not df.height:
        return None
    row = df.row(0, named=True)
    place = dataset_place(row["dataset"], row["version"])
    return {**row, "path": str(home_path(lake.settings.home, row["path"], place))}


def _adapter_path(lake: Lake, model_id: str, stored: str | None) -> str | None:
    return None if stored is None else str(home_path(lake.settings.home, stored, adapter_place(model_id)))


def dataset_version_row(lake: Lake, dataset: str, version: str) -> dict[str, Any] | None:
    df = lake.read("SELECT * FROM lake.dataset_versions WHERE dataset = ? AND version = ?", [dataset, version])
    return _dataset_row(lake, df)


def latest_dataset_version_row(lake: Lake, dataset: str) -> dict[str, Any] | None:
    """The newest registered version of a dataset (by the snapshot it read, then registration time)."""
    df = lake.read(
        "SELECT * FROM lake.dataset_versions WHERE dataset = ? "
        "ORDER BY snapshot_id DESC, created_at DESC, version LIMIT 1",
        [dataset],
    )
    return _dataset_row(lake, df)


def model_version_row(lake: Lake, model_id: str) -> dict[str, Any] | None:
    """The row of `model_id`, its adapter folder resolved in this lake's home."""
    df = lake.read("SELECT * FROM lake.model_versions WHERE model_id = ?", [model_id])
    if not df.height:
        return None
    row = df.row(0, named=True)
    return {**row, "adapter_path": _adapter_path(lake, model_id, row["adapter_path"])}


def promoted_model_id(lake: Lake) -> str | None:
    """The model of the newest promotions row (ties on time broken by model_id), or None."""
    df = lake.read("SELECT model_id FROM lake.promotions ORDER BY promoted_at DESC, model_id DESC LIMIT 1")
    return df.item() if df.height else None


def model_versions_frame(lake: Lake) -> pl.DataFrame:
    """Every model version, oldest first, with `promoted` true on the one named by the newest promotion and
    `served` saying where it was last seen served (NULL: never); adapter folders in this lake's home."""
    frame = lake.read(
        """
        WITH newest AS (
            SELECT model_id FROM lake.promotions ORDER BY promoted_at DESC, model_id DESC LIMIT 1
        ),
        served AS (  -- where each adapter was last seen served
            SELECT model_id, arg_max(server || ' ' || base_url || coalesce(' lora ' || lora_id, ''), recorded_at)
                   AS served
            FROM lake.model_servings GROUP BY model_id
        )
        SELECT m.model_id, m.stage, m.base_model, m.parent_model_id, m.dataset, m.dataset_version,
               m.adapter_path, m.metrics, m.created_at,
               coalesce(m.model_id IN (SELECT model_id FROM newest), false) AS promoted, s.served
        FROM lake.model_versions m LEFT JOIN served s USING (model_id)
        ORDER BY m.created_at, m.model_id
        """
    )
    paths = [_adapter_path(lake, m, p) for m, p in zip(frame["model_id"], frame["adapter_path"], strict=True)]
    return frame.with_columns(pl.Series("adapter_path", paths, dtype=pl.String))


# -- model versions --------------------------------------------------------------------------------------
def write_adapter_card(version: ModelVersion) -> None:
    """The resolved config and the metrics, saved as JSON next to the adapter weights."""
    folder = Path(version.adapter_path)
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in ((CONFIG_FILE, version.config), (METRICS_FILE, version.metrics)):
        (folder / name).write_text(json.dumps(_finite(value), indent=2, sort_keys=True, default=str) + "\n")


def register_model_version(lake: Lake, version: ModelVersion) -> int:
    """Record a trained adapter (idempotent by model_id) and save its config and metrics beside it;
    returns the rows written (0 when the model_id was already registered)."""
    write_adapter_card(version)
    row = {
        "model_id": version.model_id, "stage": version.stage, "base_model": version.base_model,
        "parent_model_id": version.parent_model_id,
        "adapter_path": stored_path(lake.settings.home, version.adapter_path),
        "dataset": version.dataset, "dataset_version": version.dataset_version,
        "config": _json(version.config), "metrics": _json(version.metrics),
        "created_at": version.created_at or datetime.now(UTC),
    }
    return lake.append({"model_versions": [row]})["model_versions"]


def get_model_version(lake: Lake, model_id: str) -> ModelVersion:
    row = model_version_row(lake, model_id)
    if row is None:
        raise UnknownModelVersionError(f"unknown model version '{model_id}': list them with `retro models list`")
    return _from_row(row)


def trained_before(lake: Lake, model_id: str) -> ModelVersion | None:
    """The registered version with this (content-addressed) id whose adapter is still on disk, else None."""
    row = model_version_row(lake, model_id)
    if row is None or not Path(row["adapter_path"]).is_dir():
        return None
    log.info("%s: already trained on the same rows, parents, settings and code; kept", model_id)
    return _from_row(row)


def list_model_versions(lake: Lake) -> pl.DataFrame:
    """Every model version, oldest first: model_id, stage, base_model, parent_model_id, dataset,
    dataset_version, adapter_path, metrics (JSON), created_at, promoted (bool)."""
    return model_versions_frame(lake)


def promoted_model(lake: Lake) -> ModelVersion | None:
    """The adapter named by the newest promotion, or None before the first one."""
    model_id = promoted_model_id(lake)
    return None if model_id is None else get_model_version(lake, model_id)


def promote(lake: Lake, model_id: str, reason: str, previous: str | None = None) -> int:
    """Make `model_id` the promoted adapter (a new promotions row); returns rows written.

    `previous` is the incumbent it replaces; by default the currently promoted one.
    """
    get_model_version(lake, model_id)  # unknown ids fail here, with the fix in the message
    if previous is None:
        previous = promoted_model_id(lake)
    row = {"model_id": model_id, "promoted_at": datetime.now(UTC), "previous_model_id": previous, "reason": reason}
    return lake.append({"promotions": [row]})["promotions"]


def record_serving(lake: Lake, model_id: str, llm: Any) -> int:
    """Record where `llm` (a backend built with this adapter) serves it, if served (OpenAIBackend.served_adapter);
    returns rows written (0 for a local model)."""
    served = getattr(llm, "served_adapter", None)
    if served is None:
        return 0
    row = {"model_id": model_id, "server": served.server, "base_url": served.base_url, "lora_id": served.lora_id,
           "recorded_at": datetime.now(UTC)}
    return lake.append({"model_servings": [row]})["model_servings"]


def latest_model_version(lake: Lake, stage: str, base_model: str | None = None) -> ModelVersion | None:
    """The newest registered version of a stage (optionally on one base model), or None."""
    frame = list_model_versions(lake).filter(pl.col("stage") == stage)
    if base_model is not None:
        frame = frame.filter(pl.col("base_model") == base_model)
    if frame.is_empty():
        return None
    return get_model_version(lake, frame["model_id"][-1])
