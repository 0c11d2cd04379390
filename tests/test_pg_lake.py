"""The lake on a shared catalog: DuckLake with its catalog in a real PostgreSQL server (tests/pg.py),
chosen by settings alone (RETRO_LAKE_CATALOG, RETRO_LAKE_DATA_PATH)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
import toyenv
import toyworker

from retro.config import load_settings, redact_password
from retro.envs import ENVS
from retro.errors import ConfigError, LakeError
from retro.store import Lake


@pytest.fixture
def pg_env(retro_home, postgres, monkeypatch, tmp_path):
    """RETRO_* variables pointing at a fresh database of the test server and a data folder."""
    uri = postgres.create_database(f"lake_{uuid.uuid4().hex[:8]}")
    env = {"RETRO_LAKE_CATALOG": uri, "RETRO_LAKE_DATA_PATH": str(tmp_path / "shared-data") + "/",
           "RETRO_PRESET": "tiny"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def pg_lake(pg_env):
    lake = Lake(load_settings())
    lake.init()
    return lake


@pytest.fixture
def toy(monkeypatch):
    import retro.agent.spec as spec_module

    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")
    monkeypatch.setattr(spec_module, "load_models", toyworker.load_models)


def task_row(k: int) -> dict:
    return {"env": "toy", "split": "train", "task_id": f"t{k:03d}", "question": f"q{k}", "answer": "a"}


def test_settings_alone_put_the_catalog_in_postgres(pg_env, pg_lake, postgres):
    assert pg_lake.shared_catalog and not (pg_lake.dir / "catalog.ducklake").exists()
    assert pg_lake.append({"tasks": [task_row(1), task_row(2)]}) == {"tasks": 2}
    assert pg_lake.append({"tasks": [task_row(2), task_row(3)]}) == {"tasks": 1}  # keys checked
    # the same catalog in libpq keyword form, as a second machine might name it
    dbname = pg_env["RETRO_LAKE_CATALOG"].rsplit("/", 1)[1]
    keywords = f"postgres:dbname={dbname} host=127.0.0.1 port={postgres.port} user=retro"
    other = Lake(load_settings(lake_catalog=keywords))
    assert other.read("SELECT count(*) FROM lake.tasks").item() == 3
    first_write = pg_lake.snapshots()["snapshot_id"].to_list()[-2]
    assert other.read("SELECT count(*) FROM lake.tasks", snapshot=first_write).item() == 2  # time travel


def test_a_postgres_catalog_needs_a_shared_data_path(retro_home):
    with pytest.raises(ConfigError, match="RETRO_LAKE_DATA_PATH"):
        Lake(load_settings(lake_catalog="postgres://retro@127.0.0.1:1/lake"))


def test_passwords_stay_out_of_the_lake_and_the_messages(retro_home, tmp_path):
    settings = load_settings(lake_catalog="postgresql://retro:s3cret@127.0.0.1:1/lake",
                             lake_data_path=str(tmp_path / "data"))
    assert "s3cret" not in settings.config_json()  # runs.config holds the config JSON
    with pytest.raises(LakeError) as err:
        Lake(settings).init()  # nothing listens on port 1
    assert "s3cret" not in str(err.value) and "***" in str(err.value)
    assert redact_password("postgres:dbname=x password=p host=h") == "postgres:dbname=x password=*** host=h"


def test_an_object_store_data_path_brings_httpfs(retro_home):
    import duckdb

    from retro.duckdb_ext import load_extension

    pytest.importorskip("duckdb_extension_httpfs", reason="the `scale` extra is not installed")
    lake = Lake(load_settings(lake_data_path="s3://bucket/lake/"))
    assert lake._extensions() == ["ducklake", "httpfs"]
    con = duckdb.connect()
    load_extension(con, "httpfs")  # offline, from the pinned pip package
    assert con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'").fetchone()[0]


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from retro.config import load_settings
    from retro.store import Lake
    lake, name, gate = Lake(load_settings()), sys.argv[1], Path(sys.argv[2])
    (gate / name).touch()
    while len(list(gate.iterdir())) < 2:  # start together
        time.sleep(0.01)
    for i in range(8):  # both write the same keys in the same order, plus one of their own each time
        keys = [f"t{k:03d}" for k in range(5 * i, 5 * i + 5)] + [f"{name}-{i}"]
        lake.append({"tasks": [{"env": "toy", "split": "train", "task_id": k} for k in keys]})
""")


def test_two_processes_writing_at_once_keep_every_key_once(pg_lake, tmp_path):
    """Without the writer lock both would find a key missing and insert it (DuckLake merges the appends)."""
    gate = tmp_path / "gate"
    gate.mkdir()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(gate)], stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    for proc in writers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    counts = pg_lake.read("SELECT count(*) AS n, count(DISTINCT task_id) AS keys FROM lake.tasks").row(0)
    assert counts == (40 + 2 * 8, 40 + 2 * 8)


def test_label_and_dataset_flows_on_the_postgres_lake(prefect_harness, pg_lake, toy):
    from flows.label import label_flow
    from flows.rollout import rollout_flow
    from flows.train import build_datasets_flow

    rolled = rollout_flow(env="toy", split="train", mode="reflexion", tasks=3, trials=2)
    assert rolled["written"]["trials"] == 6
    assert label_flow() == 3
    versions = build_datasets_flow()
    assert label_flow() == 0  # reruns are idempotent on this catalog too
    assert build_datasets_flow() == versions
    assert pg_lake.read("SELECT count(*) FROM lake.ratings").item() == 3
    stored = pg_lake.read("SELECT dataset, version, row_count FROM lake.dataset_versions ORDER BY dataset")
    assert dict(zip(stored["dataset"], stored["version"])) == versions
    assert stored.filter(stored["dataset"] == "sft")["row_count"].item() == 3


def test_shards_commit_into_the_postgres_lake(pg_lake, toy):
    from retro.agent.request import rollout_request
    from retro.orchestrate.shards import commit_shards, plan_shards, run_shard

    settings = pg_lake.settings
    plan = plan_shards(settings, pg_lake, rollout_request(
                                                          settings, pg_lake, env="toy", split="train", mode="reflexion", tasks=4, trials=2, workers=2))
    before = pg_lake.current_snapshot()
    results = [run_shard(plan, i, models=toyenv.models()) for i in range(2)]
    assert pg_lake.current_snapshot() == before  # workers read the shared catalog, never write it
    assert commit_shards(settings, pg_lake, plan, results).written["trials"] == 8
    assert pg_lake.read("SELECT count(*) FROM lake.trials").item() == 8
