"""The rows of a run's tables, minus the columns allowed to differ, for comparing two lakes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import polars as pl

from retro.store import Lake

TABLES = ("runs", "tasks", "trials", "steps", "reflections", "run_ends")


def lake_rows(lake: Lake, volatile: Iterable[str],
              adjust: Callable[[str, pl.DataFrame], pl.DataFrame] | None = None) -> dict[str, pl.DataFrame]:
    """Every table's rows without the `volatile` columns (after `adjust(table, frame)`, if given), sorted."""
    volatile = set(volatile)
    out = {}
    with lake.connect() as con:
        for name in TABLES:
            df = con.execute(f"SELECT * FROM lake.{name}").pl()
            df = df.drop([c for c in df.columns if c in volatile])
            if adjust is not None:
                df = adjust(name, df)
            out[name] = df.sort(df.columns)
    return out
