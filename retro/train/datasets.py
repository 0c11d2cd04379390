"""Training sets: each is one SQL file in `datasets/`, run at a pinned lake snapshot, written as Parquet
and registered in `dataset_versions`.

A version is the hash of the SQL text, the snapshot and the bound parameters, so rebuilding at the
same snapshot gives the same rows and the same version (and registers nothing new), while new data
gives a new version. The recorded snapshot is the newest one (up to the requested snapshot, default
now) that changed a table the SQL reads, so writes it cannot see (registry rows, other tables) do
not make a new version. Runs on a held-out split (each environment's, recorded as tasks.held_out, and
settings eval.split when set) are never training data, whatever environments a data set pools.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from retro.config import DATASETS_DIR, Settings
from retro.errors import ConfigError
from retro.store import export, registry
from retro.store.artifacts import dataset_place, stored_path
from retro.store.lake import Lake

log = logging.getLogger(__name__)

SQL_DIR = DATASETS_DIR
NAMES = ("sft", "reward", "reward_pairs", "ppo", "replay")  # datasets/<name>.sql


@dataclass(frozen=True)
class DatasetVersion:
    """One built training set: which SQL, which snapshot, which parameters, how many rows, where."""

    dataset: str
    version: str
    sql_hash: str
    snapshot_id: int
    row_count: int
    path: Path
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How logs name it: "reward v3f9a0c2d1b7e"."""
        return f"{self.dataset} v{self.version}"

    def frame(self) -> pl.DataFrame:
        return pl.read_parquet(self.path)


# -- helpers ----------------------------------------------------------------------------------------------
def sql_path(name: str) -> Path:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SQL_DIR.glob("*.sql")))
        raise ConfigError(f"unknown dataset '{name}': the datasets are {known} (files in {SQL_DIR})")
    return path


def dataset_params(settings: Settings) -> dict[str, Any]:
    """Every parameter a dataset SQL may bind, from settings (each file binds the ones it names)."""
    return {
        "label_version": settings.label.version,
        "threshold": settings.dataset.positive_threshold,
        "env": settings.dataset.env,
        "held_out": held_out_splits(settings),
    }


def held_out_splits(settings: Settings) -> list[str]:
    """"env/split" of every environment's held-out split, and of settings eval.split in each when it is set."""
    from retro.envs import available_envs, env_class, own_held_out_split

    splits = set()
    for env in available_envs():
        own = own_held_out_split(env_class(env))
        splits |= {f"{env}/{split}" for split in (own, settings.eval.split) if split}
    return sorted(splits)


def dataset_version_id(sql_text: str, snapshot: int, params: dict[str, Any]) -> str:
    blob = json.dumps({"sql": sql_text, "snapshot": snapshot, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def dataset_path(settings: Settings, name: str, version: str) -> Path:
    return (settings.home / dataset_place(name, version)).resolve()


def _from_row(row: dict[str, Any]) -> DatasetVersion:
    return DatasetVersion(
        dataset=row["dataset"], version=row["version"], sql_hash=row["sql_hash"],
        snapshot_id=int(row["snapshot_id"]), row_count=int(row["row_count"]), path=Path(row["path"]),
        params=json.loads(row["params"] or "{}"),
    )


# -- public -------------------------------------------------------------------------------------------------
def build_dataset(settings: Settings, lake: Lake, name: str, snapshot: int | None = None) -> DatasetVersion:
    """Run datasets/<name>.sql as of `snapshot` (default: now), write the Parquet file and register the
    version; idempotent.

    The recorded snapshot is the newest one up to `snapshot` that changed a table the SQL reads (the
    rows are the same), so two builds over the same data get the same version.
    """
    sql_text = sql_path(name).read_text()
    used = export.parameters_used(sql_text)
    params = {k: v for k, v in dataset_params(settings).items() if k in used}
    missing = sorted(set(used) - set(params))
    if missing:
        raise ConfigError(f"datasets/{name}.sql binds unknown parameters {missing}: known are {sorted(dataset_params(settings))}")
    snapshot = export.data_snapshot(lake, export.tables_read(sql_text), at=snapshot)
    version = dataset_version_id(sql_text, snapshot, params)
    path = dataset_path(settings, name, version)

    known = registry.dataset_version_row(lake, name, version)
    if known is not None and Path(known["path"]).is_file():
        log.info("dataset %s v%s already built at snapshot %d (%d rows)", name, version, snapshot, known["row_count"])
        return _from_row(known)

    rows = export.export_query(lake, sql_text, params, snapshot, path)
    built = DatasetVersion(
        dataset=name, version=version, sql_hash=hashlib.sha256(sql_text.encode()).hexdigest()[:16],
        snapshot_id=snapshot, row_count=rows, path=path, params=params,
    )
    lake.append({"dataset_versions": [{
        "dataset": name, "version": version, "sql_hash": built.sql_hash, "snapshot_id": snapshot,
        "row_count": rows, "path": stored_path(settings.home, path), "params": json.dumps(params, sort_keys=True),
        "created_at": datetime.now(UTC),
    }]})
    log.info("built dataset %s v%s at snapshot %d: %d rows -> %s", name, version, snapshot, rows, path)
    return built


def build_datasets(settings: Settings, lake: Lake, snapshot: int | None = None) -> dict[str, DatasetVersion]:
    """The three training sets as of one snapshot (now, unless given)."""
    if snapshot is None:
        snapshot = lake.current_snapshot()
    return {name: build_dataset(settings, lake, name, snapshot) for name in NAMES}


def get_dataset_version(lake: Lake, name: str, version: str | None = None) -> DatasetVersion:
    """A registered dataset version (the newest when `version` is None)."""
    sql_path(name)
    row = (registry.dataset_version_row(lake, name, version) if version
           else registry.latest_dataset_version_row(lake, name))
    if row is None:
        what = f"version {version} of dataset '{name}'" if version else f"no version of dataset '{name}'"
        raise ConfigError(f"{what} is not registered: build it with `retro train build-datasets`")
    found = _from_row(row)
    if not found.path.is_file():
        raise ConfigError(f"{found.label} is registered but {found.path} is missing: rebuild with "
                          "`retro train build-datasets`")
    return found
