"""Roll the lake back to a snapshot: one new snapshot whose rows are exactly those of the old one.

DuckLake keeps every snapshot readable but has no "make snapshot N current". Rows here are never
updated in place (a key, once written, keeps its values), so rolling back is one transaction that, table
by table, deletes the rows the old snapshot did not have and re-inserts, by key, the ones it had that
are gone. Nothing is lost: every snapshot, the rolled-back ones included, stays readable with
`retro sql --snapshot N`, and a rollback is undone by rolling back to the snapshot just before it.
"""

from __future__ import annotations

import contextlib
import logging

import duckdb

from retro.errors import LakeError
from retro.store.lake import KEYS, Lake

log = logging.getLogger(__name__)


def rollback(lake: Lake, snapshot: int) -> dict[str, tuple[int, int]]:
    """Make the rows of `snapshot` current again; returns table -> (rows removed, rows restored)."""
    snapshot = int(snapshot)  # formatted into AT (VERSION => n): an int and nothing else
    current = lake.current_snapshot()
    if not 0 <= snapshot <= current:
        raise LakeError(f"lake snapshot {snapshot} does not exist (the newest is {current}): "
                        "list them with `retro lake snapshots`")
    existed = set(lake.read("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake' "
                            "AND table_type = 'BASE TABLE'", snapshot=snapshot)["table_name"])
    changed: dict[str, tuple[int, int]] = {}
    with lake.connect(write=True) as con:
        try:
            con.execute("BEGIN")
            for table, keys in KEYS.items():
                changed[table] = _roll_back_table(con, table, keys, snapshot, table in existed)
            con.execute("COMMIT")
        except duckdb.Error as err:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise lake._write_error(err) from None  # a full disk, a corrupt file: the same one-line errors
    log.info("lake rolled back to snapshot %d: %s", snapshot, {t: c for t, c in changed.items() if any(c)})
    return changed


def _roll_back_table(con: duckdb.DuckDBPyConnection, table: str, keys: tuple[str, ...], snapshot: int,
                     existed: bool) -> tuple[int, int]:
    if not existed:  # created after the snapshot: it had no rows then
        return int(con.execute(f"DELETE FROM lake.{table}").fetchone()[0]), 0
    old = f"(SELECT * FROM lake.{table} AT (VERSION => {snapshot}))"
    match = " AND ".join(f"o.{k} IS NOT DISTINCT FROM c.{k}" for k in keys)
    removed = con.execute(
        f"DELETE FROM lake.{table} AS c WHERE NOT EXISTS (SELECT 1 FROM {old} AS o WHERE {match})"
    ).fetchone()[0]
    columns = ", ".join(row[0] for row in con.execute(f"DESCRIBE {old}").fetchall())
    restored = con.execute(
        f"INSERT INTO lake.{table} ({columns}) SELECT {columns} FROM {old} AS o "
        f"WHERE NOT EXISTS (SELECT 1 FROM lake.{table} AS c WHERE {match})"
    ).fetchone()[0]
    return int(removed), int(restored)
