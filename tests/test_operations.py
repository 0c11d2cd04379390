"""README, Operations: the back-up and restore commands as written there, and `retro lake rollback`.

The shell commands are read out of the README and run in bash, so the section cannot drift from what works.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import clirun
import polars as pl
import pytest
import toyenv

from retro.agent.request import rollout_request
from retro.config import load_settings
from retro.envs import ENVS
from retro.orchestrate.rollout import rollout
from retro.store import KEYS, Lake
from retro.store.rollback import rollback

ROOT = Path(__file__).resolve().parent.parent


def operations_commands() -> list[str]:
    """The bash lines in README's Operations section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Operations\n", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
            for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def rows(lake: Lake, snapshot: int | None = None) -> dict[str, pl.DataFrame]:
    """Every table's rows, sorted (one connection: each costs an extension load)."""
    out = {}
    with lake.connect(snapshot=snapshot) as con:
        for name in KEYS:
            df = con.execute(f"SELECT * FROM lake.{name}").pl()
            out[name] = df.sort(df.columns)
    return out


def assert_same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    for name in KEYS:
        assert a[name].equals(b[name]), f"{name} differs:\n{a[name]}\n{b[name]}"


def toy_run(settings, lake: Lake, tasks: int, tag: str = "") -> None:
    rollout(settings, lake, rollout_request(settings, lake, env="toy", split="eval", mode="reflexion",
                                            tasks=tasks, trials=2, tag=tag), models=toyenv.models())


@pytest.fixture(autouse=True)
def toy(monkeypatch):
    monkeypatch.setitem(ENVS, "toy", "toyenv:ToyEnv")


@pytest.mark.skipif(shutil.which("flock") is None or shutil.which("tar") is None, reason="needs flock and tar")
def test_readme_back_up_and_restore_commands(retro_home, tmp_path, monkeypatch):
    back_up_lake, back_up_adapters, restore_lake, restore_adapters = operations_commands()[:4]
    assert back_up_lake.startswith("flock -s .retro/lake/.lock tar czf") and restore_lake.startswith("mv .retro/lake ")
    home = tmp_path / ".retro"  # the README's paths are relative to the folder that holds .retro
    monkeypatch.setenv("RETRO_HOME", str(home))
    settings = load_settings(preset="tiny")
    lake = Lake(settings)
    toy_run(settings, lake, tasks=2)
    adapter = settings.models_dir / "adapters" / "ppo-1"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    backed_up = rows(lake)

    for command in (back_up_lake, back_up_adapters):
        subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=60)
    [lake_archive] = tmp_path.glob("lake-*.tgz")
    [adapters_archive] = tmp_path.glob("adapters-*.tgz")
    toy_run(settings, lake, tasks=3, tag="after the backup")  # a later write, then the catalog breaks
    (home / "lake" / "catalog.ducklake").write_bytes(b"broken" * 1000)
    (home / "lake" / "catalog.ducklake.wal").unlink(missing_ok=True)
    shutil.rmtree(adapter)
    assert "corrupt" in clirun.retro("sql", "SELECT 1").one_line_error

    for command, archive in ((restore_lake, lake_archive), (restore_adapters, adapters_archive)):
        command = re.sub(r"\w+-[\d-]+\.tgz", archive.name, command)
        subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=60)
    assert_same(rows(Lake(settings)), backed_up)
    assert (home / "lake.broken").is_dir()  # moved away, not deleted
    assert (adapter / "adapter_config.json").is_file()

    # the same backup unpacked under another RETRO_HOME opens and reads the same rows
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["tar", "xzf", str(lake_archive), "-C", str(elsewhere)], check=True, timeout=60)
    assert_same(rows(Lake(load_settings(home=elsewhere, preset="tiny"))), backed_up)


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock")
def test_the_backup_lock_is_the_lake_lock(lake):
    """`flock -s` on lake/.lock waits while a retro writer holds it (so the copy never sees half a write)."""
    with lake.connect(write=True):
        waited = subprocess.run(["flock", "-s", "-w", "0.3", str(lake.dir / ".lock"), "true"], timeout=30,
                                check=False)
    assert waited.returncode == 1  # timed out: the writer held it
    assert subprocess.run(["flock", "-s", "-w", "5", str(lake.dir / ".lock"), "true"], timeout=30,
                          check=False).returncode == 0


def test_rollback_makes_a_snapshot_current_and_can_be_undone(settings, lake):
    toy_run(settings, lake, tasks=2)
    good = lake.current_snapshot()
    good_rows = rows(lake)
    toy_run(settings, lake, tasks=3, tag="a bad night")
    bad = lake.current_snapshot()
    bad_rows = rows(lake)
    assert bad_rows["trials"].height > good_rows["trials"].height

    changed = rollback(lake, good)
    assert changed["trials"] == (bad_rows["trials"].height - good_rows["trials"].height, 0)
    assert lake.current_snapshot() == bad + 1  # one new snapshot, whatever the number of tables
    assert_same(rows(lake), good_rows)
    assert_same(rows(lake, snapshot=bad), bad_rows)  # history stays readable

    assert rollback(lake, good) == {name: (0, 0) for name in KEYS}  # already there: nothing written
    assert lake.current_snapshot() == bad + 1

    line = clirun.retro("lake", "rollback", str(bad)).out  # undo, through the command
    assert f"lake rolled back to snapshot {bad}" in line
    assert_same(rows(lake), bad_rows)


def test_rollback_before_the_tables_existed_empties_them(settings, lake):
    toy_run(settings, lake, tasks=1)
    rollback(lake, 0)
    assert all(lake.read(f"SELECT count(*) FROM lake.{name}").item() == 0 for name in KEYS)


@pytest.mark.slow  # starts a PostgreSQL server
def test_rollback_on_a_postgres_catalog(postgres, retro_home, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRO_LAKE_CATALOG", postgres.create_database(f"lake_{uuid.uuid4().hex[:8]}"))
    monkeypatch.setenv("RETRO_LAKE_DATA_PATH", str(tmp_path / "shared-data") + "/")
    settings = load_settings(preset="tiny")
    lake = Lake(settings)
    toy_run(settings, lake, tasks=1)
    good, good_rows = lake.current_snapshot(), rows(lake)
    toy_run(settings, lake, tasks=2, tag="later")
    rollback(lake, good)
    assert_same(rows(lake), good_rows)
