"""Staging for rollouts spread over workers: each shard writes Parquet files, one commit adds them to the lake.

A shard worker never opens the lake for writing. Its runner writes into a `StagingLake`, a private
DuckDB in memory with the lake's tables and keys that answers the two calls a runner makes of a lake
(`append`, `read`); `flush` writes one Parquet file per table into the shard's folder. The commit
step, one process, reads every shard's files and appends them to the lake in one transaction through
`Lake.append`, so the keys are checked as for any write and a second commit adds nothing.

    <staging>/<run_id>/shard-00/trials.parquet, steps.parquet, reflections.parquet, runs.parquet, tasks.parquet
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from retro.store.lake import KEYS, SCHEMA_SQL, Lake, _df


def shard_dir(run_dir: Path, index: int) -> Path:
    return run_dir / f"shard-{index:02d}"


class StagingLake:
    """A shard's own lake in memory: the same schema, the same idempotent appends, no catalog."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        self.con.execute("ATTACH ':memory:' AS lake")
        self.con.execute("USE lake")
        self.con.execute(SCHEMA_SQL.read_text())

    def append(self, tables: Mapping[str, pl.DataFrame | Sequence[Mapping[str, Any]]]) -> dict[str, int]:
        """Like Lake.append: rows whose key is already staged are skipped; returns rows written per table."""
        written = {name: 0 for name in tables}
        self.con.execute("BEGIN")
        for name, rows in tables.items():
            df = _df(rows)
            if df.height:
                written[name] = Lake._insert_new(self.con, name, df)
        self.con.execute("COMMIT")
        return written

    def read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        return self.con.execute(sql, params).pl()

    def seed(self, lake: Lake, run_id: str, task_ids: Sequence[str]) -> int:
        """Copy what the lake already holds of this run's tasks (what a resumed runner reads)."""
        params = [run_id, list(task_ids)]
        where = "WHERE run_id = ? AND list_contains(?, task_id)"
        frames = {name: lake.read(f"SELECT * FROM lake.{name} {where}", params) for name in ("trials", "reflections")}
        return sum(self.append(frames).values())

    def flush(self, folder: Path) -> dict[str, int]:
        """Write every non-empty table to `folder/<table>.parquet` (replacing an earlier attempt's files)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        rows = {}
        for name in KEYS:
            df = self.read(f"SELECT * FROM lake.{name}")
            if df.height:
                df.write_parquet(folder / f"{name}.parquet")
                rows[name] = df.height
        return rows

    def close(self) -> None:
        self.con.close()


def staged_frames(run_dir: Path) -> dict[str, pl.DataFrame]:
    """Every shard's rows per table, shards in order (a key staged twice keeps the first shard's row)."""
    frames = {}
    for name in KEYS:
        files = sorted(run_dir.glob(f"shard-*/{name}.parquet"))
        if files:
            frames[name] = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    return frames


def commit_staged(lake: Lake, run_dir: Path) -> dict[str, int]:
    """Add every shard's staged rows to the lake in one transaction (keys checked); then drop the files.

    Returns the rows actually written per table: a rerun, or rows the lake already held, add nothing.
    """
    written = lake.append(staged_frames(run_dir)) if run_dir.exists() else {}
    shutil.rmtree(run_dir, ignore_errors=True)
    return written
