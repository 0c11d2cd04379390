"""`retro sql` is read-only by construction (issue 18, findings 1-3), tried as a hostile user would.

Every attack runs against a lake with live, deleted, merged (scheduled for deletion) and orphaned files,
so a maintenance function would have work to do; after each one every file under the lake folder is
byte-identical. The engine is what stops the writes (a test runs them past the parser check); the parser
check turns them into one-line errors, and keeps `ducklake_set_option` from crashing the process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import clirun
import pytest

from retro.errors import LakeBusyError, LakeError
from retro.store import Lake, run_readonly
from retro.store.lock import HOLDERS, file_lock, holders
from retro.store.readonly import _confine

# Refused: each raises a one-line LakeError. Comment, case, quoting and catalog-prefix tricks included.
# {data_file} is one of the lake's Parquet files, {catalog} the catalog file.
REFUSED = [
    # finding 2: DuckLake maintenance behind a comment, in any spelling
    "SELECT * FROM ducklake_merge_adjacent_files/**/('lake')",
    "SELECT * FROM DuckLake_Merge_Adjacent_Files /* x */ ('lake')",
    "SELECT * FROM \"ducklake_merge_adjacent_files\"('lake')",
    "SELECT * FROM lake.merge_adjacent_files()",
    "select * from LAKE . MERGE_ADJACENT_FILES ( )",
    "SELECT * FROM ducklake_cleanup_old_files('lake', cleanup_all => true)",
    "SELECT * FROM lake.cleanup_old_files(cleanup_all => true)",
    "SELECT * FROM ducklake_delete_orphaned_files('lake', cleanup_all => true)",
    "SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())",
    "SELECT * FROM ducklake_rewrite_data_files('lake', delete_threshold => 0)",
    "SELECT * FROM ducklake_flush_inlined_data('lake')",
    "SELECT * FROM ducklake_add_data_files('lake', 'trials', '{data_file}')",
    "SELECT * FROM ducklake_set_commit_message('lake', 'me', 'hi')",
    "WITH x AS (SELECT * FROM ducklake_merge_adjacent_files('lake')) SELECT * FROM x",
    "SELECT (SELECT count(*) FROM ducklake_merge_adjacent_files('lake'))",
    "CALL ducklake_merge_adjacent_files('lake')",
    "CALL ducklake_expire_snapshots('lake', older_than => now())",
    "SELECT * FROM checkpoint('lake')",
    # SQL hidden in a string
    "SELECT * FROM query/**/('SELECT 42')",
    "SELECT * FROM QUERY('SELECT * FROM ducklake_' || 'merge_adjacent_files(''lake'')')",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM ducklake_merge_adjacent_files(''lake'')'))",
    # files outside the lake
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/root/**')",
    "SELECT * FROM glob('{data_dir}**')",
    "SELECT * FROM read_text('PWNED')",
    "SELECT * FROM 'PWNED.csv'",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT getenv('HOME')",
    # statements that are not a SELECT
    "COPY lake.trials TO 'PWNED.csv'",
    "COPY (SELECT * FROM lake.trials) TO 'PWNED.parquet' (FORMAT parquet)",
    "COPY (SELECT 1 AS x) TO '{data_file}' (FORMAT parquet, USE_TMP_FILE false)",
    "copy (select 1) to '{catalog}' (use_tmp_file false)",
    "EXPORT DATABASE 'PWNED'",
    "ATTACH 'PWNED.duckdb' AS other",
    "ATTACH ':memory:' AS other",
    "DETACH lake",
    "USE memory",
    "INSTALL httpfs",
    "FORCE INSTALL httpfs",
    "LOAD fts",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
    "PRAGMA import_database('PWNED')",
    "CHECKPOINT lake",
    "VACUUM",
    "EXPLAIN SELECT 1",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO 'PWNED.csv'",
    "EXPLAIN (ANALYZE) CREATE TABLE x AS SELECT 1",
    "EXPLAIN COPY (SELECT 1) TO 'PWNED.csv'",
    "/* hidden */ explain analyse COPY (SELECT 1) TO 'PWNED.csv'",
    "DROP TABLE lake.trials",
    "DELETE FROM lake.trials",
    "TRUNCATE lake.trials",
    "ALTER TABLE lake.trials ADD COLUMN x INTEGER",
    "UPDATE lake.trials SET env = 'x'",
    "INSERT INTO lake.trials (run_id) VALUES ('x')",
    "WITH x AS (SELECT 1) INSERT INTO lake.trials (run_id) SELECT 'x'",
    "CREATE TABLE lake.x AS SELECT 1",
    "CREATE MACRO m() AS 1",
    # more than one statement
    "SELECT 1; DROP TABLE lake.trials",
    "SELECT 1;DROP TABLE lake.trials",
    "SELECT 1 -- a comment\n; DROP TABLE lake.trials",
    "/* a */ SELECT 1 /* b */ ;/* c */DELETE FROM lake.trials",
    "SELECT * FROM lake.trials; SELECT * FROM ducklake_merge_adjacent_files('lake')",
    # a PIVOT without IN list is several statements to DuckDB (issue 29): only DuckDB's own may come along
    "PIVOT lake.trials ON env USING count(*); DROP TABLE lake.trials",
    "PIVOT lake.trials ON env USING count(*); PIVOT lake.trials ON env USING count(*)",
    "CREATE TYPE e AS ENUM (SELECT DISTINCT env FROM lake.trials); SELECT 1",
    "COPY (PIVOT lake.trials ON env USING count(*)) TO 'PWNED.csv'",
    "CREATE TABLE lake.x AS PIVOT lake.trials ON env USING count(*)",
    "EXPLAIN ANALYZE PIVOT lake.trials ON env USING count(*)",
    "PIVOT (FROM ducklake_merge_adjacent_files('lake')) ON files_processed USING count(*)",
    "PIVOT (FROM lake . Merge_Adjacent_Files /* x */ ()) ON files_processed USING count(*)",
    "PIVOT (SELECT * FROM \"ducklake_set_option\"('lake', 'data_inlining_row_limit', 10)) ON 1 USING count(*)",
    "PIVOT (FROM query('SELECT 42 AS x')) ON x USING count(*)",
    "PIVOT (FROM read_text('/etc/passwd')) ON filename USING count(*)",
]
# Allowed to run, and harmless: settings they touch cannot reach a file, and they only read the lake.
HARMLESS = [
    "SELECT * FROM enable_logging(storage='file', storage_path='PWNED')",
    "SELECT * FROM enable_profiling(save_location='PWNED.txt')",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM duckdb_secrets()",
    "SELECT count(*) FROM read_duckdb('{catalog}', table_name => 'ducklake_snapshot')",
    "SELECT count(*) FROM read_parquet('{data_file}')",
]


@pytest.fixture
def battered_lake(lake):
    """A lake whose files give every maintenance function work: merged files scheduled for deletion,
    a delete file, live files, and an orphan (a file no snapshot names)."""
    for task in ("a", "b", "c"):
        lake.append({"trials": [{"run_id": "r", "task_id": task, "trial": 0, "env": "toy", "success": False}]})
    with lake.connect(write=True) as con:
        con.execute("SELECT * FROM ducklake_merge_adjacent_files('lake')").fetchall()
        con.execute("DELETE FROM lake.trials WHERE task_id = 'a'")
    lake.append({"trials": [{"run_id": "r", "task_id": "d", "trial": 0, "env": "toy", "success": True}]})
    live = _data_files(lake)[0]
    shutil.copy(live, live.with_name("orphan.parquet"))
    return lake


def _data_files(lake: Lake) -> list[Path]:
    return sorted(p for p in Path(lake.data_path).rglob("*.parquet") if "delete" not in p.name)


def _fingerprint(lake: Lake) -> dict[str, str]:
    """Every file under the lake folder and its SHA-256 (holder notes come and go with each command)."""
    return {str(p.relative_to(lake.dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(lake.dir.rglob("*")) if p.is_file() and HOLDERS not in p.parts}


def _fill(query: str, lake: Lake) -> str:
    return query.format(data_file=_data_files(lake)[-1], data_dir=lake.data_path, catalog=lake.catalog)


def test_every_attack_is_refused_in_one_line_and_the_lake_is_byte_identical(battered_lake, tmp_path):
    before = _fingerprint(battered_lake)
    let_through, multi_line, changed = [], [], []
    for query in REFUSED:
        try:
            run_readonly(battered_lake, _fill(query, battered_lake))
            let_through.append(query)
        except LakeError as refused:
            if "\n" in str(refused):
                multi_line.append(query)
        if _fingerprint(battered_lake) != before:
            changed.append(query)
    assert not let_through and not multi_line and not changed, (let_through, multi_line, changed)
    assert not list(tmp_path.rglob("PWNED*"))


def test_harmless_calls_run_and_change_nothing(battered_lake, tmp_path):
    before = _fingerprint(battered_lake)
    for query in HARMLESS:
        run_readonly(battered_lake, _fill(query, battered_lake))
        assert _fingerprint(battered_lake) == before, query
    assert not list(tmp_path.rglob("PWNED*"))


MAINTENANCE = [  # ducklake_set_option is left out: it crashes the process (next test)
    "SELECT * FROM ducklake_merge_adjacent_files('lake')",
    "SELECT * FROM ducklake_cleanup_old_files('lake', cleanup_all => true)",
    "SELECT * FROM ducklake_delete_orphaned_files('lake', cleanup_all => true)",
    "SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())",
    "SELECT * FROM ducklake_rewrite_data_files('lake', delete_threshold => 0)",
    "SELECT * FROM ducklake_add_data_files('lake', 'trials', '{data_file}')",
    "SELECT * FROM checkpoint('lake')",
    "SELECT * FROM query('SELECT * FROM ducklake_merge_adjacent_files(''lake'')')",
    "SELECT * FROM read_text('/etc/passwd')",
]  # not COPY: allowed_paths lets it overwrite a lake file; only SELECT statements run, for that reason


@pytest.mark.parametrize("query", MAINTENANCE)
def test_the_engine_alone_stops_writes_the_parser_check_would_refuse(battered_lake, query):
    """Safe by construction: past the parser check, on the confined connection, DuckDB refuses the writes
    of every SELECT-typed call (the statement-type check is what keeps COPY off the lake's own files)."""
    import duckdb

    before = _fingerprint(battered_lake)
    with battered_lake.connect(write=False) as con:
        _confine(con, battered_lake, ())
        try:
            con.execute(_fill(query, battered_lake)).fetchall()
        except duckdb.Error:
            pass
    assert _fingerprint(battered_lake) == before


def _retro_subprocess(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from retro.cli import main; main()", *args],
                          capture_output=True, text=True, env=dict(os.environ), timeout=timeout, check=False)


@pytest.mark.parametrize("query", [
    "SELECT * FROM ducklake_set_option/**/('lake','data_inlining_row_limit',10)",
    "SELECT * FROM lake.Set_Option('data_inlining_row_limit', 10)",
    "CALL ducklake_set_option('lake', 'data_inlining_row_limit', 10)",
    "SELECT * FROM query('SELECT * FROM ducklake_set_option(''lake'',''data_inlining_row_limit'',10)')",
])
def test_set_option_is_refused_not_a_crash(battered_lake, query):
    """DuckDB 1.5.5's DuckLake segfaults on this call, READ_ONLY or not: only refusing it keeps the process."""
    before = _fingerprint(battered_lake)
    proc = _retro_subprocess("sql", query)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    assert "read-only" in errors[0]
    assert _fingerprint(battered_lake) == before


def test_reads_still_work(battered_lake):
    before = _fingerprint(battered_lake)
    first = 2  # after the first append
    reads = {
        "SELECT * FROM lake.trials": 3,
        "FROM lake.trials": 3,
        "SELECT 1; -- a trailing comment": 1,
        "SELECT * FROM lake.snapshots()": None,
        "SELECT * FROM ducklake_table_info('lake')": None,
        "SELECT * FROM query_table('lake.trials')": 3,
        "SELECT 'x' AS query": 1,
        "SUMMARIZE lake.trials": None,
        f"SELECT * FROM lake.trials AT (VERSION => {first})": 1,
        "SELECT * FROM lake.table_changes('trials', 0, 4)": None,
    }
    for query, rows in reads.items():
        height = run_readonly(battered_lake, query).height
        assert height == rows if rows is not None else height >= 1, query
    assert run_readonly(battered_lake, "SELECT task_id FROM lake.trials", snapshot=first)["task_id"].to_list() == ["a"]
    plan = run_readonly(battered_lake, "SELECT count(*) FROM lake.trials", explain=True)
    assert "explain_value" in plan.columns
    assert _fingerprint(battered_lake) == before


def test_read_dir_widens_reading_on_purpose(lake, tmp_path):
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "labels.csv").write_text("task_id,label\na,1\n")
    query = f"SELECT * FROM read_csv('{folder / 'labels.csv'}')"
    with pytest.raises(LakeError, match="reads only the lake's own files.*--read-dir"):
        run_readonly(lake, query)
    assert run_readonly(lake, query, read_dirs=[folder]).height == 1


# -- finding 3: a time limit, and a busy lake that says who holds it ----------------------------------
def test_a_runaway_query_stops_at_the_timeout_and_frees_the_lake(lake):
    start = time.monotonic()
    with pytest.raises(LakeError, match=r"query stopped after 0.5 s: narrow it .* or raise --timeout"):
        run_readonly(lake, "SELECT count(*) FROM range(1000000000000000)", timeout_s=0.5)
    assert time.monotonic() - start < 10
    assert lake.append({"runs": [{"run_id": "after"}]}) == {"runs": 1}  # the reader's lock is gone


def test_timeout_is_one_line_on_the_cli(lake):
    line = clirun.retro("sql", "--timeout", "0.3", "SELECT count(*) FROM range(1000000000000000)").one_line_error
    assert "query stopped after 0.3 s" in line and "--timeout" in line


def _wait_for_holder(lake: Lake, role: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [h for h in holders(lake.dir / ".lock") if h["role"] == role]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {role} note appeared")


def test_busy_lake_names_the_reader_and_its_pid(lake, settings, monkeypatch):
    reader = subprocess.Popen([sys.executable, "-c", "from retro.cli import main; main()", "sql", "--timeout",
                               "120", "SELECT count(*) FROM range(1000000000000000)"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        note = _wait_for_holder(lake, "reader")
        assert note["pid"] == reader.pid and note["command"].endswith("sql")
        monkeypatch.setattr(settings, "lake_lock_timeout_s", 0.3)
        with pytest.raises(LakeBusyError) as busy:
            Lake(settings).append({"runs": [{"run_id": "x"}]})
        message = str(busy.value)
        assert "held by a reader" in message and f"PID {reader.pid}" in message and "sql" in message
        assert "RETRO_LAKE_LOCK_TIMEOUT_S" in message and "\n" not in message
    finally:
        reader.send_signal(signal.SIGKILL)  # a crash: the kernel frees the lock, the note stays behind
        reader.wait()
    assert holders(lake.dir / ".lock") == []  # the dead reader's note is ignored (and removed)
    assert Lake(settings).append({"runs": [{"run_id": "y"}]}) == {"runs": 1}


def test_busy_lake_names_a_writer(lake, settings, monkeypatch):
    monkeypatch.setattr(settings, "lake_lock_timeout_s", 0.3)
    writer = file_lock(lake.dir / ".lock", exclusive=True, timeout_s=1)
    with writer, pytest.raises(LakeBusyError, match=rf"held by a writer, `.*` PID {os.getpid()}"):
        run_readonly(Lake(settings, create=False), "SELECT 1")


def test_busy_lake_held_without_a_note(lake, settings, monkeypatch):
    """A backup under `flock -s` leaves no note: the message says so instead of naming nobody."""
    monkeypatch.setattr(settings, "lake_lock_timeout_s", 0.3)
    holder = subprocess.Popen(["flock", "-x", str(lake.dir / ".lock"), "sleep", "30"])
    try:
        time.sleep(0.3)
        with pytest.raises(LakeBusyError, match="left no note"):
            run_readonly(Lake(settings, create=False), "SELECT 1")
    finally:
        holder.kill()
        holder.wait()


# -- finding 1: --out never touches the lake, and never half-writes --------------------------------------
def _out_refusal(*args: str) -> str:
    return clirun.retro("sql", "--format", "csv", *args, "SELECT 1 AS x").one_line_error


@pytest.mark.parametrize("where", ["catalog", "data_file", "home_file", "relative", "symlink"])
def test_out_inside_retro_home_is_refused_and_the_lake_stays(battered_lake, retro_home, tmp_path, monkeypatch, where):
    before = _fingerprint(battered_lake)
    targets = {"catalog": battered_lake.catalog, "data_file": str(_data_files(battered_lake)[0]),
               "home_file": str(retro_home / "new.csv"), "relative": "lake/new.csv"}
    if where == "relative":
        monkeypatch.chdir(retro_home)
    if where == "symlink":
        link = tmp_path / "innocent.csv"
        link.symlink_to(battered_lake.catalog)
        targets["symlink"] = str(link)
    line = _out_refusal("--force", "--out", targets[where])
    assert "is inside" in line and "write the result elsewhere" in line
    assert _fingerprint(battered_lake) == before
    assert not (retro_home / "new.csv").exists() and not (retro_home / "lake" / "new.csv").exists()


def test_out_refuses_an_existing_file_unless_forced(lake, tmp_path):
    out = tmp_path / "result.csv"
    out.write_text("keep me\n")
    assert "exists: pass --force to replace it" in _out_refusal("--out", str(out))
    assert out.read_text() == "keep me\n"
    done = clirun.retro("sql", "--format", "csv", "--force", "--out", str(out), "SELECT 1 AS x")
    assert done.code == 0 and out.read_text().splitlines() == ["x", "1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "result.csv"]  # no temporary file left


def test_out_that_fails_leaves_the_old_file_and_no_temporary(lake, tmp_path, monkeypatch):
    import polars as pl

    out = tmp_path / "result.csv"
    out.write_text("old\n")

    def full_disk(self, path, *args, **kwargs):
        Path(path).write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_csv", full_disk)
    line = clirun.retro("sql", "--format", "csv", "--force", "--out", str(out), "SELECT 1 AS x").one_line_error
    assert f"cannot write {out}: No space left on device" in line
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "result.csv"]


@pytest.mark.parametrize("args,expected", [
    (["--out", "/nodir/x.csv", "SELECT 1"], "folder /nodir does not exist; create it first"),
    (["-f", "missing.sql"], "cannot read --file missing.sql: No such file or directory"),
    (["-f", "latin1.sql"], "--file latin1.sql is not UTF-8 text"),
    (["--format", "parquet", "SELECT 1"], "--format parquet needs --out FILE"),
])
def test_sql_input_mistakes_are_one_line(lake, args, expected):
    Path("latin1.sql").write_bytes("SELECT 'caf\xe9'".encode("latin-1"))  # retro_home chdir'ed to tmp_path
    assert expected in clirun.retro("sql", *args).one_line_error


def test_a_postgres_catalog_is_confined_the_same_way(retro_home, postgres, monkeypatch, tmp_path):
    """The connection keeps its PostgreSQL catalog (attached before access is closed) and reads only the lake."""
    import uuid

    from retro.config import load_settings

    monkeypatch.setenv("RETRO_LAKE_CATALOG", postgres.create_database(f"lake_{uuid.uuid4().hex[:8]}"))
    monkeypatch.setenv("RETRO_LAKE_DATA_PATH", str(tmp_path / "shared-data") + "/")
    lake = Lake(load_settings(preset="tiny"))
    lake.init()
    lake.append({"runs": [{"run_id": "a"}]})
    assert run_readonly(lake, "SELECT run_id FROM lake.runs")["run_id"].to_list() == ["a"]
    for attack in ("SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM ducklake_merge_adjacent_files('lake')",
                   "SELECT * FROM postgres_execute('__ducklake_metadata_lake', 'DROP TABLE ducklake_snapshot')"):
        with pytest.raises(LakeError):
            run_readonly(lake, attack)
    assert run_readonly(lake, "SELECT count(*) AS n FROM lake.runs")["n"].to_list() == [1]


def test_a_fifo_never_holds_the_lake(lake, settings, tmp_path):
    """Finding 3: a read that blocks in the kernel. Outside --read-dir it is refused; inside, interrupt()
    cannot wake it, so the command ends its process after the timeout and a grace period."""
    fifo = tmp_path / "fifo" / "pipe.csv"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    query = f"SELECT * FROM read_csv('{fifo}')"
    with pytest.raises(LakeError, match="reads only the lake's own files"):
        run_readonly(lake, query, timeout_s=1)
    start = time.monotonic()
    proc = _retro_subprocess("sql", "--timeout", "0.5", "--read-dir", str(fifo.parent), query, timeout=60)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1 and "after --timeout 0.5" in errors[0], proc.stderr
    assert time.monotonic() - start < 30
    assert lake.append({"runs": [{"run_id": "after"}]}) == {"runs": 1}  # the lock went with the process
