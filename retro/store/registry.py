"""Reads of the training registry: dataset versions, model versions and promotions (writes go
through Lake.append; retro.train.registry turns these rows into ModelVersion objects)."""

from __future__ import annotations

from typing import Any

import polars as pl

from retro.store.lake import Lake


def dataset_version_row(lake: Lake, dataset: str, version: str) -> dict[str, Any] | None:
    df = lake.read("SELECT * FROM lake.dataset_versions WHERE dataset = ? AND version = ?", [dataset, version])
    return df.row(0, named=True) if df.height else None


def latest_dataset_version_row(lake: Lake, dataset: str) -> dict[str, Any] | None:
    """The newest registered version of a dataset (by the snapshot it read, then registration time)."""
    df = lake.read(
        "SELECT * FROM lake.dataset_versions WHERE dataset = ? "
        "ORDER BY snapshot_id DESC, created_at DESC, version LIMIT 1",
        [dataset],
    )
    return df.row(0, named=True) if df.height else None


def model_version_row(lake: Lake, model_id: str) -> dict[str, Any] | None:
    df = lake.read("SELECT * FROM lake.model_versions WHERE model_id = ?", [model_id])
    return df.row(0, named=True) if df.height else None


def promoted_model_id(lake: Lake) -> str | None:
    """The model of the newest promotions row (ties on time broken by model_id), or None."""
    df = lake.read("SELECT model_id FROM lake.promotions ORDER BY promoted_at DESC, model_id DESC LIMIT 1")
    return df.item() if df.height else None


def model_versions_frame(lake: Lake) -> pl.DataFrame:
    """Every model version, oldest first, with `promoted` true on the one named by the newest promotion and
    `served` saying where it was last seen served (NULL: never)."""
    return lake.read(
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
