"""Crash and resume: a rollout SIGKILLed in a subprocess, then resumed, ends with exactly the rows of an
uninterrupted run (same keys and values, no duplicates, no gaps), and every kill leaves only whole commits.

The rollout is tests/crashkit.py (toy env, scripted models that take a little time per call).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import crashkit
import polars as pl
import pytest
from lakerows import TABLES, lake_rows

from retro.config import load_settings
from retro.store import KEYS, Lake

CRASHKIT = Path(crashkit.__file__)
# What may differ between two runs of the same spec: timings, timestamps, and the config (other home).
VOLATILE = {"seconds", "created_at", "started_at", "finished_at", "config", "config_hash"}


def lake_at(home: Path) -> Lake:
    return Lake(load_settings(home=home, preset="tiny"))


def curve_only(name: str, df: pl.DataFrame) -> pl.DataFrame:
    """run_ends' "written" counts are the last invocation's; the success curve is the run's."""
    if name == "run_ends":
        return df.with_columns(pl.col("summary").str.json_path_match("$.success_by_trial"))
    return df


def rows(lake: Lake) -> dict[str, pl.DataFrame]:
    return lake_rows(lake, VOLATILE, curve_only)


def assert_whole_commits(lake: Lake) -> None:
    """What a crash may leave: fewer trials, never half of one, and never a key twice."""
    for name in TABLES:
        keys = ", ".join(KEYS[name])
        dupes = lake.read(f"SELECT {keys}, count(*) AS n FROM lake.{name} GROUP BY ALL HAVING n > 1")
        assert dupes.is_empty(), f"duplicate keys in {name}:\n{dupes}"
    broken = lake.read("""
        SELECT t.task_id, t.trial, t.sample, t.n_steps, count(s.step) AS stored
        FROM lake.trials t LEFT JOIN lake.steps s USING (run_id, task_id, trial, sample)
        GROUP BY ALL HAVING t.n_steps <> count(s.step)""")
    assert broken.is_empty(), f"trials without all their steps:\n{broken}"
    orphans = lake.read("""
        SELECT s.task_id, s.trial FROM lake.steps s ANTI JOIN lake.trials t USING (run_id, task_id, trial, sample)
        UNION ALL
        SELECT f.task_id, f.trial FROM lake.reflections f
        ANTI JOIN (SELECT * FROM lake.trials WHERE sample = 0) t USING (run_id, task_id, trial)""")
    assert orphans.is_empty(), f"steps or reflections of a trial that is not stored:\n{orphans}"


def uninterrupted(home: Path, branches: int = 1) -> dict[str, pl.DataFrame]:
    """The rows of an uninterrupted run (in this process: the same code, the same run id)."""
    crashkit.run(home, branches=branches)
    lake = lake_at(home)
    assert_whole_commits(lake)
    return rows(lake)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, pl.DataFrame]:
    return uninterrupted(tmp_path_factory.mktemp("uninterrupted"))


def start(home: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRO_")}
    return subprocess.Popen([sys.executable, str(CRASHKIT), str(home), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env | {"OMP_NUM_THREADS": "1"})


def resume_to_the_end(home: Path, *args: str) -> None:
    proc = start(home, *args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert out.rstrip().endswith("done")


def assert_same_rows(home: Path, reference: dict[str, pl.DataFrame]) -> None:
    lake = lake_at(home)
    assert_whole_commits(lake)
    got = rows(lake)
    for name in TABLES:
        assert reference[name].height > 0, name
        assert got[name].equals(reference[name]), f"{name} differs:\n{got[name]}\nexpected:\n{reference[name]}"


@pytest.mark.slow
def test_sigkill_three_times_at_random_points_then_resume(tmp_path, reference):
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    home = tmp_path / "crashed"
    kills = []
    for _ in range(3):
        proc = start(home, "--delay", "0.05")
        wait_for = rng.randint(0, 4)  # commits to see go by (0: kill during start-up or the first trials)
        for _ in range(wait_for):
            if not proc.stdout.readline():
                break
        time.sleep(rng.uniform(0.0, 0.4))  # anywhere: between commits, inside one, while generating
        kills.append({"after_progress_lines": wait_for, "still_running": proc.poll() is None})
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        if (home / "lake" / "catalog.ducklake").exists():
            assert_whole_commits(lake_at(home))
    assert any(k["still_running"] for k in kills), f"no kill landed mid-run (seed {seed}): {kills}"
    resume_to_the_end(home)
    assert_same_rows(home, reference)


@pytest.mark.slow
@pytest.mark.parametrize("commit", [1, 3])
def test_sigkill_inside_a_commit_then_resume(tmp_path, reference, commit):
    home = tmp_path / "crashed"
    proc = start(home, "--die-in-commit", str(commit))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    lines = out.split()
    assert "done" not in lines
    lake = lake_at(home)
    assert_whole_commits(lake)
    committed = lake.read("SELECT count(*) FROM lake.trials").item()
    assert committed == int(lines[-1])  # the last progress line: exactly the commits before the killed one
    resume_to_the_end(home)
    assert_same_rows(home, reference)


@pytest.mark.parametrize("commit", [2, 4])
def test_sigkill_between_branches_then_resume(tmp_path, commit):
    """With 3 reflections per failure a commit holds main-line and branch trials; killed inside one, the
    rerun runs the branches whose reflections were committed and ends with the rows of a clean run."""
    reference = uninterrupted(tmp_path / "clean", branches=3)
    assert reference["trials"].filter(pl.col("sample") > 0).height > 0
    home = tmp_path / "crashed"
    proc = start(home, "--die-in-commit", str(commit), "--branches", "3")
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert_whole_commits(lake_at(home))
    resume_to_the_end(home, "--branches", "3")
    assert_same_rows(home, reference)
