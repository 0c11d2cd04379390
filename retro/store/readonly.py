"""User SQL against the lake, read-only: one SELECT-like statement, on a READ_ONLY attachment.

The READ_ONLY attachment refuses changes to the catalog, but not everything a SELECT-typed statement
can do, so the text is checked first:
- it is parsed on a sandboxed connection: parsing expands PRAGMAs, and `PRAGMA import_database('dir')`
  would read files, `PRAGMA create_fts_index(...)` would download and install an extension;
- `EXPLAIN ANALYZE` runs the statement it explains (`EXPLAIN ANALYZE COPY ... TO 'file'` writes the file);
- DuckLake's maintenance functions write Parquet files before their commit is refused (an orphan file
  in the lake per call), and `query('...')` runs SQL this check cannot see.
"""

from __future__ import annotations

import re

import duckdb
import polars as pl

from retro.errors import LakeError
from retro.store.lake import Lake

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

# Table functions that write (DuckLake maintenance) or run SQL given as a string.
REFUSED_FUNCTIONS = (
    "ducklake_add_data_files", "ducklake_cleanup_old_files", "ducklake_delete_orphaned_files",
    "ducklake_expire_snapshots", "ducklake_flush_inlined_data", "ducklake_merge_adjacent_files",
    "ducklake_rewrite_data_files", "ducklake_set_commit_message", "ducklake_set_option", "query",
)
_EXPLAIN = re.compile(r"\s*explain\s*(?:\((?P<options>[^)]*)\))?\s*(?P<analyze>analy[sz]e\b)?", re.IGNORECASE)
_CALL = re.compile(r"\b(" + "|".join(REFUSED_FUNCTIONS) + r")\b\s*\"?\s*\(", re.IGNORECASE)


def _sandbox() -> duckdb.DuckDBPyConnection:
    """A connection that can parse but not touch files or fetch extensions."""
    return duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                  "autoload_known_extensions": False})


def check_readonly(sql: str) -> str:
    """Return the single statement if it only reads; raise LakeError naming what was refused."""
    con = _sandbox()
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise LakeError(f"cannot parse the query: {str(err).splitlines()[0]}") from None
    finally:
        con.close()
    if len(statements) != 1:
        raise LakeError(f"retro sql runs exactly one statement, got {len(statements)}: split the query")
    statement = statements[0]
    if statement.type not in ALLOWED:
        kind = statement.type.name
        raise LakeError(f"retro sql is read-only: {kind} statements are refused; use SELECT (writes go through retro commands)")
    query = statement.query
    if statement.type == duckdb.StatementType.EXPLAIN:
        explain = _EXPLAIN.match(query)
        if explain is None:
            raise LakeError("retro sql: start the query with EXPLAIN (no comment before it)")
        if explain["analyze"] or "analy" in (explain["options"] or "").lower():
            raise LakeError("retro sql refuses EXPLAIN ANALYZE (it runs the statement): use EXPLAIN SELECT ...")
        check_readonly(query[explain.end():])  # what is explained must be a read too
    called = _CALL.search(query)  # string literals too: query('...') hides a call in one
    if called:
        raise LakeError(f"retro sql is read-only: {called.group(1).lower()}() is refused (it writes, or runs SQL "
                        "this check cannot see); lake maintenance goes through retro commands")
    return query


def run_readonly(lake: Lake, sql: str, snapshot: int | None = None) -> pl.DataFrame:
    """Run one read-only statement; the READ_ONLY attachment stops anything the parser let through."""
    query = check_readonly(sql)
    with lake.connect(write=False, snapshot=snapshot) as con:
        try:
            return con.execute(query).pl()
        except duckdb.Error as err:
            raise lake._read_error(err) from None  # a corrupt data file gets the message with the fix
