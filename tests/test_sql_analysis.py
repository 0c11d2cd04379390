"""`retro sql` for analysts (issue 29, point 2): DuckDB's read-only statements answer (PIVOT, DESCRIBE,
SUMMARIZE, FROM-first), the lake's own Parquet files are readable, and wide results fit the terminal.
Through the real CLI on a real lake; what stays refused is in test_sql_safety.py."""

from __future__ import annotations

import clirun
import pytest
from test_sql_safety import _data_files, _fingerprint

from retro.store import Lake


@pytest.fixture
def trials(lake: Lake) -> Lake:
    rows = [("hotpotqa", True), ("hotpotqa", False), ("hotpotqa", False), ("alfworld", True)]
    lake.append({"trials": [{"run_id": "r", "task_id": f"t{i}", "trial": 0, "env": env, "success": ok}
                            for i, (env, ok) in enumerate(rows)]})
    return lake


def _csv(*args: str) -> list[str]:
    result = clirun.retro("sql", "--format", "csv", *args)
    assert result.code == 0, result.err
    return result.out.splitlines()


def test_pivot_describe_summarize_and_from_first_answer(trials):
    pivot = _csv("PIVOT lake.trials ON success USING count(*) GROUP BY env ORDER BY env")
    assert pivot == ["env,false,true", "alfworld,0,1", "hotpotqa,2,1"]
    assert _csv("PIVOT (SELECT env FROM lake.trials) ON env IN ('hotpotqa') USING count(*)") == ["hotpotqa", "3"]
    assert _csv("FROM lake.trials SELECT count(*) AS n WHERE success") == ["n", "2"]
    assert "env,VARCHAR,YES,,NULL," in _csv("DESCRIBE lake.trials")
    summary = _csv("SUMMARIZE SELECT env FROM lake.trials")
    assert summary[0].startswith("column_name,column_type,min,max,approx_unique") and summary[1].startswith("env,")
    assert _csv("UNPIVOT (SELECT 1 AS a, 2 AS b) ON a, b INTO NAME k VALUE v") == ["k,v", "a,1", "b,2"]
    assert _csv("SELECT hotpotqa FROM (PIVOT lake.trials ON env USING count(*) GROUP BY trial)") == ["hotpotqa", "3"]
    plan = clirun.retro("sql", "--explain", "PIVOT lake.trials ON success USING count(*)").one_line_error
    assert "name the values, PIVOT ... ON col IN (v1, v2)" in plan


def test_the_lakes_own_parquet_files_are_readable(trials):
    files = [str(f) for f in _data_files(trials)]
    assert _csv(f"SELECT count(*) AS n FROM read_parquet({files!r})") == ["n", "4"]
    assert _csv(f"SELECT count(*) AS n FROM parquet_metadata('{files[0]}')")[1] != "0"
    listed = _csv("SELECT count(*) AS n FROM ducklake_list_files('lake', 'trials')")
    assert listed == ["n", str(len(files))]


def test_a_glob_over_the_lake_says_how_and_other_files_say_what_is_readable(trials, tmp_path):
    before = _fingerprint(trials)
    glob = f"SELECT count(*) AS n FROM read_parquet('{trials.data_path}**/*.parquet')"
    line = clirun.retro("sql", glob).one_line_error
    assert "the lake's own files are readable" in line and f"--read-dir {trials.data_path}" in line
    assert _csv("--read-dir", trials.data_path, glob) == ["n", "4"]
    other = clirun.retro("sql", "SELECT * FROM read_csv('/etc/passwd')").one_line_error
    assert "not /etc/passwd" in other and "the lake's own files are readable" in other and "--read-dir DIR" in other
    # an open folder is for reading: the functions that write a file where told stay closed with --read-dir
    for call in (f"enable_profiling(save_location='{trials.data_path}PWNED.txt')",
                 f"enable_logging(storage='file', storage_path='{trials.data_path}PWNED')"):
        line = clirun.retro("sql", "--read-dir", trials.data_path, f"SELECT * FROM {call}").one_line_error
        assert "could write into a --read-dir folder" in line
    assert _fingerprint(trials) == before


def test_a_wide_result_fits_80_columns_and_names_what_it_left_out(lake, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lake.append({"runs": [{"run_id": "run-1", "mode": "reflexion", "env": "hotpotqa", "config": "{" + "x" * 300}]})
    result = clirun.retro("sql", "SELECT * FROM lake.runs")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if line.startswith("┃"))
    shown = [cell.strip() for cell in header.strip("┃").split("┃")]
    note = next(line for line in " ".join(lines).split("│") if "left out" in line)
    columns = lake.read("SELECT * FROM lake.runs").columns
    left_out = [c for c in columns if c not in shown]
    assert shown[0] == "run_id" and "…" in shown and left_out  # whole names, none folded into slivers
    assert f"{len(left_out)} of {len(columns)} columns left out" in note
    assert all(name in note for name in left_out)
    assert "run-1" in result.out


def test_a_narrow_result_shows_long_text_whole(lake, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = "a reflection " * 20
    lake.append({"reflections": [{"run_id": "r", "task_id": "t", "trial": 0, "text": text}]})
    result = clirun.retro("sql", "SELECT task_id, text FROM lake.reflections")
    assert result.code == 0 and "left out" not in result.out, result.out
    assert max(len(line) for line in result.out.splitlines()) <= 80
    cells = "".join(line.split("│")[2] for line in result.out.splitlines() if line.startswith("│"))
    assert cells.split() == text.split()
