"""`retro sql` and `retro lake` through the real command (CliRunner), errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from retro.cli import app

runner = CliRunner()


@pytest.fixture
def retro_home(retro_home):
    """A home with an empty lake: the commands here read it, and readers never create one."""
    from retro.config import load_settings
    from retro.store import Lake

    Lake(load_settings()).init()
    return retro_home


def test_sql_counts_zero_on_a_new_lake(retro_home):
    result = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM lake.trials", "--format", "json"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"n": 0}]


def test_sql_from_file_and_csv_out(retro_home, tmp_path):
    q = tmp_path / "q.sql"
    q.write_text("SELECT 42 AS answer")
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["sql", "-f", str(q), "--format", "csv", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0
    assert out.read_text().splitlines() == ["answer", "42"]


def test_lake_snapshots_lists_creation(retro_home):
    result = runner.invoke(app, ["lake", "snapshots", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    assert len(json.loads(result.output)) >= 1


def _cli(*args, env):
    return subprocess.run([sys.executable, "-c", "from retro.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, check=False)


def test_write_through_sql_is_one_red_line(retro_home):
    import os

    proc = _cli("sql", "DROP TABLE lake.trials", env=dict(os.environ))
    assert proc.returncode == 1
    assert "read-only" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_broken_home_is_one_line(retro_home, tmp_path):
    import os

    bad = tmp_path / "notadir"
    bad.write_text("x")
    proc = _cli("sql", "SELECT 1", env={**os.environ, "RETRO_HOME": str(bad)})
    assert proc.returncode == 1
    assert "RETRO_HOME" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_catalog_is_one_line(retro_home):
    (retro_home / "lake" / "catalog.ducklake").write_bytes(b"garbage" * 500)
    proc = _cli("sql", "SELECT 1", env=dict(os.environ))
    assert proc.returncode == 1
    assert "corrupt" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["sql", "SELECT 1"], ["lake", "snapshots"], ["report", "--out", "r"],
                                  ["models", "list"]])
def test_readers_do_not_create_a_lake(tmp_path, args):
    home = tmp_path / "home"
    out = _cli(*args, env={**os.environ, "RETRO_HOME": str(home)})
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "no lake at" in out.stderr and "RETRO_HOME" in out.stderr
    assert not (home / "lake").exists()


def test_empty_retro_home_is_an_error(tmp_path):
    out = _cli("sql", "SELECT 1", env={**os.environ, "RETRO_HOME": ""})
    assert out.returncode == 1 and "RETRO_HOME is set but empty" in out.stderr
