"""User SQL against the lake, read-only: one SELECT-like statement, on a READ_ONLY attachment."""

from __future__ import annotations

import duckdb
import polars as pl

from retro.errors import LakeError
from retro.store.lake import Lake

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def check_readonly(sql: str) -> str:
    """Return the single statement if it only reads; raise LakeError naming what was refused."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise LakeError(f"cannot parse the query: {str(err).splitlines()[0]}") from None
    if len(statements) != 1:
        raise LakeError(f"retro sql runs exactly one statement, got {len(statements)}: split the query")
    statement = statements[0]
    if statement.type not in ALLOWED:
        kind = statement.type.name
        raise LakeError(f"retro sql is read-only: {kind} statements are refused; use SELECT (writes go through retro commands)")
    return statement.query


def run_readonly(lake: Lake, sql: str, snapshot: int | None = None) -> pl.DataFrame:
    """Run one read-only statement; the READ_ONLY attachment stops anything the parser let through."""
    query = check_readonly(sql)
    with lake.connect(write=False, snapshot=snapshot) as con:
        try:
            return con.execute(query).pl()
        except duckdb.Error as err:
            raise LakeError(f"query failed: {str(err).splitlines()[0]}") from None
