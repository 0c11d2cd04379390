"""The lake: schema, idempotent writes, snapshots and time travel, read-only SQL, broken homes."""

from __future__ import annotations

import polars as pl
import pytest

from retro.errors import LakeError
from retro.store import KEYS, Lake, check_readonly, run_readonly

TABLES = set(KEYS)


def trial_row(task_id: str, trial: int, ret: float = 0.0) -> dict:
    return {"run_id": "r1", "task_id": task_id, "trial": trial, "env": "hotpotqa", "episode_return": ret,
            "success": ret == 1.0, "n_steps": 3}


def test_schema_has_every_table_of_the_design(lake):
    names = set(lake.read("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'lake' "
                          "AND table_type = 'BASE TABLE'")["table_name"])
    assert TABLES <= names
    cols = lake.read("SELECT column_name FROM information_schema.columns WHERE table_catalog='lake' "
                     "AND table_name='trials'")["column_name"].to_list()
    for key in KEYS["trials"]:
        assert key in cols


def test_reinserting_same_keys_writes_nothing(lake):
    rows = [trial_row("a", 0), trial_row("a", 1, 1.0)]
    assert lake.append({"trials": rows}) == {"trials": 2}
    assert lake.append({"trials": rows}) == {"trials": 0}
    # a batch mixing stored and new keys writes only the new ones, and duplicates inside a batch once
    assert lake.append({"trials": rows + [trial_row("b", 0), trial_row("b", 0)]}) == {"trials": 1}
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 3


def test_one_write_is_one_snapshot_across_tables(lake):
    before = lake.current_snapshot()
    lake.append({"trials": [trial_row("a", 0)],
                 "steps": [{"run_id": "r1", "task_id": "a", "trial": 0, "step": 1, "action": "Finish[x]"}]})
    assert lake.current_snapshot() == before + 1
    lake.append({"trials": [trial_row("a", 0)]})  # nothing new: no snapshot either
    assert lake.current_snapshot() == before + 1


def test_time_travel_reads_an_earlier_snapshot(lake):
    lake.append({"trials": [trial_row("a", 0)]})
    first = lake.current_snapshot()
    lake.append({"trials": [trial_row("b", 0)]})
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 2
    assert lake.read("SELECT count(*) FROM lake.trials", snapshot=first).item() == 1
    assert run_readonly(lake, "SELECT task_id FROM lake.trials", snapshot=first)["task_id"].to_list() == ["a"]


def test_data_lands_in_parquet_files_not_inlined(lake, settings):
    lake.append({"trials": [trial_row("a", 0)]})
    files = list((settings.lake_dir / "data").rglob("*.parquet"))
    assert files, "rows must be in Parquet files that plain readers see"
    assert pl.concat([pl.read_parquet(f) for f in files]).filter(pl.col("task_id") == "a").height == 1


@pytest.mark.parametrize("query", [
    "DROP TABLE lake.trials",
    "INSERT INTO lake.trials (run_id) VALUES ('x')",
    "SELECT 1; DROP TABLE lake.trials",
    "COPY lake.trials TO 'out.csv'",
    "ATTACH 'other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD fts",
    "DELETE FROM lake.trials",
    "CREATE TABLE lake.x (a INT)",
])
def test_readonly_sql_refuses_writes(lake, query):
    with pytest.raises(LakeError, match="read-only|exactly one statement"):
        run_readonly(lake, query)
    assert lake.read("SELECT count(*) FROM lake.trials").item() == 0


def test_readonly_attachment_stops_what_the_parser_allows(lake):
    # a SELECT that calls a writing table function still meets the READ_ONLY attachment
    with pytest.raises(LakeError):
        run_readonly(lake, "SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())")


def test_check_readonly_returns_the_statement():
    assert "SELECT 1" in check_readonly("SELECT 1")


def test_corrupt_catalog_is_one_line_error(settings):
    settings.lake_dir.mkdir(parents=True)
    (settings.lake_dir / "catalog.ducklake").write_bytes(b"this is not a duckdb file" * 100)
    with pytest.raises(LakeError, match="corrupt or not a DuckLake catalog") as info:
        Lake(settings).init()
    assert "\n" not in str(info.value)


def test_unknown_table_is_refused(lake):
    with pytest.raises(LakeError, match="unknown lake table"):
        lake.append({"trails": [{"run_id": "x"}]})


def test_missing_snapshot_is_a_clear_error(lake):
    with pytest.raises(LakeError, match="snapshot 999 does not exist"):
        lake.read("SELECT 1", snapshot=999)
