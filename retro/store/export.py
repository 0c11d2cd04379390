"""Exporting a query's result at a pinned lake snapshot (how training sets are built).

Dataset SQL lives in `datasets/*.sql`; `retro.train.datasets` names the file and binds its parameters,
and the functions here run it against the lake as it was at one snapshot and write the rows to Parquet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from retro.store.lake import Lake
from retro.store.readonly import LAKE, nodes, syntax_tree

# Change kinds that only add rows: a snapshot made only of these, on tables a query does not read,
# leaves that query's result unchanged.
_INSERT_ONLY = {"tables_inserted_into", "inlined_insert"}


def strip_comments(sql_text: str) -> str:
    """The SQL without `--` comment lines (so names in a header comment are not taken as code)."""
    return "\n".join(line.split("--", 1)[0] for line in sql_text.splitlines())


def tables_read(sql_text: str) -> list[str]:
    """The lake tables a query reads (its `lake.<name>` table references, as DuckDB parses them), sorted."""
    return sorted({node["table_name"].lower() for node in nodes(syntax_tree(sql_text))
                   if node.get("type") == "BASE_TABLE" and LAKE in (node.get("schema_name"), node.get("catalog_name"))})


def parameters_used(sql_text: str) -> list[str]:
    """The `$name` parameters a query binds (DuckDB's parse of its one statement), sorted."""
    (statement,) = duckdb.extract_statements(sql_text)
    return sorted(name.lower() for name in statement.named_parameters)


def data_snapshot(lake: Lake, tables: Iterable[str], at: int | None = None) -> int:
    """The newest snapshot, up to `at` (default: the newest), that changed any of `tables` (or did
    anything but plain inserts into other tables).

    A query over `tables` reads the same rows at `at` and at this snapshot, so pinning to it means
    that writes the query cannot see (registry rows, other tables) leave a dataset's version unchanged.
    """
    wanted = set(tables)
    with lake.connect() as con:
        snaps = con.execute(
            "SELECT snapshot_id, to_json(changes) FROM lake.snapshots() "
            "WHERE $at IS NULL OR snapshot_id <= $at ORDER BY snapshot_id DESC",
            {"at": at},
        ).fetchall()
        ids = con.execute(
            "SELECT CAST(table_id AS VARCHAR), table_name FROM __ducklake_metadata_lake.ducklake_table"
        ).fetchall()
    names = dict(ids)
    for snapshot_id, changes_json in snaps:
        changes: dict[str, list[str]] = json.loads(changes_json or "{}")
        if set(changes) - _INSERT_ONLY:
            return int(snapshot_id)
        touched = {names.get(str(t), str(t)) for kind in changes.values() for t in kind}
        if touched & wanted:
            return int(snapshot_id)
    return int(snaps[-1][0]) if snaps else 0


def export_query(lake: Lake, sql_text: str, params: Mapping[str, Any], snapshot: int, out_path: Path) -> int:
    """Run one trusted SELECT at `snapshot`, write its rows to `out_path` atomically; returns the row count.

    The rows are written in the query's own order (dataset SQL ends in ORDER BY, so the file is
    deterministic); a crash leaves no partial file at `out_path`.
    """
    with lake.connect(snapshot=snapshot) as con:
        try:
            df = con.execute(sql_text, dict(params)).pl()
        except duckdb.Error as err:
            raise lake._read_error(err) from None
    write_parquet_atomic(df, out_path)
    return df.height


def write_parquet_atomic(df: pl.DataFrame, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        df.write_parquet(tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
