"""User SQL against the lake (`retro sql`): read-only by construction, bounded in time.

The engine enforces it, on a connection of its own:
- the lake is attached READ_ONLY, so no statement can change the catalog;
- then only the lake's own files stay reachable: `allowed_paths` lists the data files that exist (the
  attachment adds its catalog file), `enable_external_access=false` closes every other file, extension
  and network access, and `lock_configuration` keeps a query from undoing that. A DuckLake maintenance
  function cannot write its new file, nor delete one DuckLake has scheduled for deletion (those are left
  out: no snapshot reads them);
- DuckDB's own parser checks the text: exactly one statement, and a SELECT. `allowed_paths` opens a file
  for writing as well as reading, so COPY could overwrite a lake file; EXPLAIN ANALYZE would run any
  statement it explains (`--explain` explains a checked SELECT instead).
The parser's tree also names every function called. DuckLake's functions are allowed only when they read
(READ_FUNCTIONS): the engine stops the others' writes, but `ducklake_set_option` crashes the process on
a read-only lake. For the same reason functions that run SQL given as text, out of the parser's sight,
are refused (SQL_RUNNERS).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl

from retro.errors import LakeError
from retro.store.lake import Lake

LAKE = "lake"  # the catalog name the lake is attached as; `lake.snapshots()` is `ducklake_snapshots('lake')`

# DuckLake's functions that only read. Any other DuckLake function (today's maintenance functions and
# whatever a later version adds) is refused.
READ_FUNCTIONS = frozenset({
    "ducklake_snapshots", "ducklake_current_snapshot", "ducklake_last_committed_snapshot", "ducklake_table_info",
    "ducklake_list_files", "ducklake_options", "ducklake_settings", "ducklake_table_changes",
    "ducklake_table_insertions", "ducklake_table_deletions",
})
SQL_RUNNERS = frozenset({"query", "json_execute_serialized_sql"})  # run SQL text the check never sees


def _parser() -> duckdb.DuckDBPyConnection:
    """A connection that parses only: parsing expands PRAGMAs, which must not reach files or extensions."""
    return duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                  "autoload_known_extensions": False})


def syntax_tree(sql: str) -> dict:
    """DuckDB's own parse of `sql` (json_serialize_sql), for reading what a query does without running it."""
    con = _parser()
    try:
        return json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()


def nodes(tree: object) -> Iterator[dict]:
    """Every node of a syntax tree (statements, table references, expressions, function calls)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _calls(tree: object) -> Iterator[dict]:
    """Every function call (scalar, aggregate, window, table) in json_serialize_sql's tree."""
    return (node for node in nodes(tree) if "function_name" in node)


def _refused_call(call: dict) -> str | None:
    """Why this call is refused, or None. `lake.merge_adjacent_files()` is DuckLake's function too."""
    name = str(call["function_name"]).lower()
    qualifiers = {str(call.get(key) or "").lower() for key in ("catalog", "schema")}
    if LAKE in qualifiers:
        name = "ducklake_" + name
    if name in SQL_RUNNERS:
        return f"{name}() runs SQL given as text, which this check cannot see; write that SQL directly"
    if name.startswith("ducklake_") and name not in READ_FUNCTIONS:
        return f"{name}() maintains the lake; lake changes go through retro commands"
    return None


def check_readonly(sql: str) -> str:
    """Return the single statement if it is a SELECT calling no refused function; else a one-line LakeError."""
    con = _parser()
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1:
            raise LakeError(f"retro sql runs exactly one statement, got {len(statements)}: split the query")
        statement = statements[0]
        if statement.type != duckdb.StatementType.SELECT:
            raise LakeError(f"retro sql is read-only: {statement.type.name} statements are refused; use SELECT "
                            "(writes go through retro commands; for a plan, pass --explain)")
        tree = syntax_tree(statement.query)
    except (duckdb.Error, RecursionError) as err:
        raise LakeError(f"cannot parse the query: {str(err).splitlines()[0]}") from None
    finally:
        con.close()
    if tree.get("error"):
        raise LakeError(f"cannot parse the query: {tree.get('error_message')}")
    for call in _calls(tree):
        why = _refused_call(call)
        if why:
            raise LakeError(f"retro sql is read-only: {why}")
    return statement.query


def _lake_files(con: duckdb.DuckDBPyConnection, lake: Lake) -> list[str]:
    """The data files a snapshot may read: every file under the data path but those DuckLake has
    scheduled for deletion (no snapshot reads them, and a reader must not be able to delete them)."""
    found = [row[0] for row in con.execute("SELECT file FROM glob(?)", [lake.data_path + "**"]).fetchall()]
    scheduled = {
        lake.data_path + path if relative else path for path, relative in con.execute(
            f"SELECT path, path_is_relative FROM __ducklake_metadata_{LAKE}.ducklake_files_scheduled_for_deletion"
        ).fetchall()
    }
    return [file for file in found if file not in scheduled]


def _confine(con: duckdb.DuckDBPyConnection, lake: Lake, read_dirs: Sequence[Path]) -> None:
    """From here on the connection reaches the lake's own files (and `read_dirs`) and nothing else."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET allowed_paths = ?", [_lake_files(con, lake)])
    if read_dirs:
        con.execute("SET allowed_directories = ?", [[str(Path(d).expanduser().resolve()) + "/" for d in read_dirs]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _outside_error(lake: Lake, text: str) -> LakeError:
    """A file the query may not read; a lake data file the catalog names but the folder lacks is damage."""
    named = text.split('"')[1] if text.count('"') >= 2 else ""
    lost = named.startswith(lake.data_path) and not any(c in named for c in "*?[") and not Path(named).exists()
    if lost:
        return lake.unreadable_data_error(f"{named} is missing")
    return LakeError(f"retro sql reads only the lake's own files ({text}): to read other files too, pass "
                     "--read-dir DIR")


def _run(con: duckdb.DuckDBPyConnection, lake: Lake, query: str, timeout_s: float) -> pl.DataFrame:
    """Run `query`, interrupted after `timeout_s` (the lake's shared lock is held meanwhile)."""
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        return con.execute(query).pl()
    except duckdb.InterruptException:
        raise LakeError(f"query stopped after {timeout_s:g} s: narrow it (WHERE, LIMIT) or raise --timeout") from None
    except duckdb.PermissionException as err:
        raise _outside_error(lake, str(err).splitlines()[0]) from None
    except duckdb.Error as err:
        raise lake._read_error(err) from None  # a corrupt data file gets the message with the fix
    finally:
        timer.cancel()


def run_readonly(lake: Lake, sql: str, snapshot: int | None = None, timeout_s: float = 60.0,
                 explain: bool = False, read_dirs: Sequence[Path] = ()) -> pl.DataFrame:
    """Run one SELECT on a confined, read-only connection; `explain`: its plan instead."""
    query = check_readonly(sql)
    with lake.connect(write=False, snapshot=snapshot) as con:
        try:
            _confine(con, lake, read_dirs)
        except duckdb.Error as err:
            raise lake._read_error(err) from None
        return _run(con, lake, "EXPLAIN " + query if explain else query, timeout_s)
