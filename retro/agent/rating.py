"""Rating reflections by what they did: r = G(k, i+1) - G(k, i). Its own step, after rollouts."""

from __future__ import annotations

import logging

import polars as pl

from retro.store import queries
from retro.store.lake import Lake

log = logging.getLogger(__name__)


def compute_ratings(candidates: pl.DataFrame, label_version: str) -> pl.DataFrame:
    """Ratings from (return_before, return_after) pairs: the return difference, exactly."""
    return candidates.select(
        "run_id", "task_id", "trial", "sample",
        pl.lit(label_version).alias("label_version"),
        pl.col("return_before").cast(pl.Float64),
        pl.col("return_after").cast(pl.Float64),
        (pl.col("return_after").cast(pl.Float64) - pl.col("return_before").cast(pl.Float64)).alias("rating"),
    )


def rate_reflections(lake: Lake, label_version: str) -> int:
    """Rate every reflection whose next trial exists and is not yet rated; returns rows written."""
    candidates = queries.rating_candidates(lake, label_version)
    if candidates.is_empty():
        log.info("label %s: no unrated reflections with a next trial", label_version)
        return 0
    written = queries.record_ratings(lake, compute_ratings(candidates, label_version))
    log.info("label %s: rated %d reflections", label_version, written)
    return written
