"""User SQL against the lake (`retro sql`): read-only by construction, bounded in time.

The engine enforces it, on a connection of its own:
- the lake is attached READ_ONLY, so no statement can change the catalog;
- then only the lake's own files stay reachable: `allowed_paths` lists the data files that exist (the
  attachment adds its catalog file), `enable_external_access=false` closes every other file, extension
  and network access, and `lock_configuration` keeps a query from undoing that. A DuckLake maintenance
  function cannot write its new file, nor delete one DuckLake has scheduled for deletion (those are left
  out: no snapshot reads them);
- DuckDB's own parser checks the text: exactly one statement, and a SELECT (DESCRIBE, SUMMARIZE, SHOW,
  FROM-first and UNPIVOT parse as SELECTs). `allowed_paths` opens a file for writing as well as reading, so
  COPY could overwrite a lake file; EXPLAIN ANALYZE would run any statement it explains (`--explain`
  explains a checked SELECT instead). A PIVOT without an IN list is the one statement DuckDB's parser
  expands into more: CREATE TYPE statements it generates (a temporary ENUM of the pivoted values, with no
  text of their own) before the SELECT; those are admitted, and nothing a user wrote but one statement.
The parser's tree also names every function called (for a PIVOT, which DuckDB cannot serialize, the
tokenizer finds every `name(` instead, which can only find more). DuckLake's functions are allowed only
when they read (READ_FUNCTIONS): the engine stops the others' writes, but `ducklake_set_option` crashes
the process on a read-only lake. For the same reason functions that run SQL given as text, out of the
parser's sight, are refused (SQL_RUNNERS). With `--read-dir` folders open, so are the two functions that
write a file where they are told (FILE_WRITERS): the folders are opened for reading.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl

from retro.errors import LakeError
from retro.store.lake import OBJECT_STORES, Lake

LAKE = "lake"  # the catalog name the lake is attached as; `lake.snapshots()` is `ducklake_snapshots('lake')`

# DuckLake's functions that only read. Any other DuckLake function (today's maintenance functions and
# whatever a later version adds) is refused.
READ_FUNCTIONS = frozenset({
    "ducklake_snapshots", "ducklake_current_snapshot", "ducklake_last_committed_snapshot", "ducklake_table_info",
    "ducklake_list_files", "ducklake_options", "ducklake_settings", "ducklake_table_changes",
    "ducklake_table_insertions", "ducklake_table_deletions",
})
SQL_RUNNERS = frozenset({"query", "json_execute_serialized_sql"})  # run SQL text the check never sees
FILE_WRITERS = frozenset({"enable_profiling", "enable_logging"})  # write a file in any folder the query may open
_NAME = re.compile(r'"(?:[^"]|"")*"|[\w$]+')  # an identifier or keyword token's text, quoted or not


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


Call = tuple[str, set[str]]  # a function's name and its qualifiers (catalog, schema), lower case


def _calls(tree: object) -> Iterator[Call]:
    """Every function call (scalar, aggregate, window, table) in json_serialize_sql's tree."""
    for node in nodes(tree):
        if "function_name" in node:
            yield str(node["function_name"]).lower(), {str(node.get(k) or "").lower() for k in ("catalog", "schema")}


def _tokens(sql: str) -> list[str]:
    """DuckDB's tokens of `sql` as text (strings and comments never split or hide one)."""
    starts = [start for start, _ in duckdb.tokenize(sql)]
    tokens = []
    for start, end in zip(starts, [*starts[1:], len(sql)], strict=True):
        name = _NAME.match(sql, start, end)
        tokens.append(name.group() if name else sql[start])
    return tokens


def _statement_count(tokens: list[str]) -> int:
    """How many statements the user wrote: runs of tokens between `;` (a trailing one ends the last)."""
    count, open_statement = 0, False
    for token in [*tokens, ";"]:
        if token == ";":
            count += open_statement
            open_statement = False
        else:
            open_statement = True
    return count


def _token_calls(tokens: list[str]) -> Iterator[Call]:
    """Every `name(` in the tokens, with the `a.b.` before it; a quoted name loses its quotes."""
    def bare(token: str) -> str:
        return token[1:-1].replace('""', '"').lower() if token.startswith('"') else token.lower()

    for i, token in enumerate(tokens[:-1]):
        if tokens[i + 1] == "(" and _NAME.fullmatch(token):
            qualifiers = {bare(tokens[j - 1]) for j in (i - 1, i - 3) if j >= 1 and tokens[j] == "."}
            yield bare(token), qualifiers


def _refused_call(call: Call, read_dirs: Sequence[Path]) -> str | None:
    """Why this call is refused, or None. `lake.merge_adjacent_files()` is DuckLake's function too."""
    name, qualifiers = call
    if LAKE in qualifiers:
        name = "ducklake_" + name
    if name in SQL_RUNNERS:
        return f"{name}() runs SQL given as text, which this check cannot see; write that SQL directly"
    if name.startswith("ducklake_") and name not in READ_FUNCTIONS:
        return f"{name}() maintains the lake; lake changes go through retro commands"
    if name in FILE_WRITERS and read_dirs:
        return f"{name}() could write into a --read-dir folder; call it without --read-dir"
    return None


def _refused_kind(parts: list[duckdb.Statement]) -> str:
    """The statement type to name in a refusal: the user's, not a transaction DuckDB wraps around it."""
    kinds = [part.type for part in parts if part.type != duckdb.StatementType.SELECT]
    return ([kind for kind in kinds if kind != duckdb.StatementType.TRANSACTION] or kinds)[-1].name


def _checked(sql: str, read_dirs: Sequence[Path]) -> tuple[str, bool]:
    """(the text to run, whether DuckDB expands it into more statements: a PIVOT without IN list)."""
    con = _parser()
    try:
        parts = con.extract_statements(sql)
        written = _statement_count(_tokens(sql))
        if written != 1 or not parts:
            raise LakeError(f"retro sql runs exactly one statement, got {written}: split the query")
        *generated, statement = parts
        pivot_types = all(part.type == duckdb.StatementType.CREATE and not part.query for part in generated)
        if statement.type != duckdb.StatementType.SELECT or not pivot_types:
            raise LakeError(f"retro sql is read-only: {_refused_kind(parts)} statements are refused; use SELECT "
                            "(writes go through retro commands; for a plan, pass --explain)")
        tree = {} if generated else syntax_tree(statement.query)
        calls = list(_token_calls(_tokens(sql)) if generated else _calls(tree))
    except (duckdb.Error, RecursionError) as err:
        raise LakeError(f"cannot parse the query: {str(err).splitlines()[0]}") from None
    finally:
        con.close()
    if tree.get("error"):
        raise LakeError(f"cannot parse the query: {tree.get('error_message')}")
    for call in calls:
        why = _refused_call(call, read_dirs)
        if why:
            raise LakeError(f"retro sql is read-only: {why}")
    return (sql, True) if generated else (statement.query, False)


def check_readonly(sql: str, read_dirs: Sequence[Path] = ()) -> str:
    """Return the statement to run if it is one SELECT (a PIVOT: with the types DuckDB generates for it)
    calling no refused function; else a one-line LakeError."""
    return _checked(sql, read_dirs)[0]


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


def _in_lake(lake: Lake, named: str) -> bool:
    """Whether a path a query named (absolute or relative, a glob or a file) lies under the lake's data path."""
    if not named or lake.data_path.startswith(OBJECT_STORES):
        return named.startswith(lake.data_path) if named else False
    return Path(named).expanduser().absolute().is_relative_to(Path(lake.data_path).expanduser().absolute())


def _outside_error(lake: Lake, text: str) -> LakeError:
    """A file the query may not read; a lake data file the catalog names but the folder lacks is damage."""
    named = text.split('"')[1] if text.count('"') >= 2 else ""
    glob = any(c in named for c in "*?[")
    if _in_lake(lake, named) and not glob and not Path(named).exists():
        return lake.unreadable_data_error(f"{named} is missing")
    readable = ("the lake's own files are readable: its tables (lake.trials, ...), and its Parquet files each by "
                "name (SELECT data_file FROM ducklake_list_files('lake', 'trials') lists them)")
    if _in_lake(lake, named):
        return LakeError(f"retro sql cannot read {named}: {readable}; a glob lists the lake's folder, which needs "
                         f"--read-dir {lake.data_path}")
    return LakeError(f"retro sql reads only the lake's own files, not {named or text}: {readable}; to read other "
                     "files too, pass --read-dir DIR")


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
    query, expanded = _checked(sql, read_dirs)
    if explain and expanded:
        raise LakeError("--explain cannot show a PIVOT without an IN list (DuckDB runs it as several statements): "
                        "name the values, PIVOT ... ON col IN (v1, v2) ...")
    with lake.connect(write=False, snapshot=snapshot) as con:
        try:
            _confine(con, lake, read_dirs)
        except duckdb.Error as err:
            raise lake._read_error(err) from None
        return _run(con, lake, "EXPLAIN " + query if explain else query, timeout_s)
