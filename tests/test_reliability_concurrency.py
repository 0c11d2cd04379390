"""Concurrent access: writers in several processes take turns (a file lock with a timeout), a writer that
waits too long gets one "lake is busy" line, the catalog is never corrupted, and readers (`retro sql`)
keep working while a rollout writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import clirun
import crashkit
import pytest

from retro.config import load_settings
from retro.errors import LakeBusyError
from retro.store import KEYS, Lake

WRITER = textwrap.dedent("""
    import sys, time
    from retro.config import load_settings
    from retro.store import Lake
    home, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lake = Lake(load_settings(home=home))
    row = lambda task: {"run_id": "r", "task_id": task, "trial": 0, "env": "toy", "success": False}
    print("ready", flush=True)
    while not (lake.dir / "go").exists():
        time.sleep(0.01)
    for i in range(n):  # own keys, and keys every writer writes: each must be stored once
        lake.append({"trials": [row(f"{name}-{i}"), row(f"shared-{i}")],
                     "steps": [{"run_id": "r", "task_id": f"{name}-{i}", "trial": 0, "step": 1}]})
    print("done", flush=True)
""")

HOLDER = textwrap.dedent("""
    import sys, time
    from retro.config import load_settings
    from retro.store import Lake
    lake = Lake(load_settings(home=sys.argv[1]))
    with lake.connect(write=True):
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def python(code: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRO_")} | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_two_writers_at_once_take_turns_and_lose_nothing(lake, retro_home):
    n = 4
    writers = [python(WRITER, str(retro_home), name, str(n)) for name in ("a", "b")]
    for proc in writers:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    before = lake.current_snapshot()
    (lake.dir / "go").touch()  # both start writing at the same moment
    for proc in writers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "done", err[-2000:]
    trials = lake.read("SELECT task_id, count(*) AS n FROM lake.trials GROUP BY task_id")
    assert trials.height == 3 * n and trials["n"].max() == 1  # a-*, b-*, shared-*: each once
    assert lake.read("SELECT count(*) FROM lake.steps").item() == 2 * n
    assert lake.current_snapshot() == before + 2 * n  # every append was its own whole transaction
    for name, keys in KEYS.items():  # the catalog reads back whole: every table, every key unique
        cols = ", ".join(keys)
        assert lake.read(f"SELECT {cols} FROM lake.{name} GROUP BY ALL HAVING count(*) > 1").is_empty(), name


def test_a_writer_that_waits_too_long_gets_lake_is_busy_and_readers_wait_their_turn(lake, retro_home, monkeypatch):
    hold_s = 4.0
    holder = python(HOLDER, str(retro_home), str(hold_s))
    assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
    held_at = time.monotonic()
    try:
        monkeypatch.setenv("RETRO_LAKE_LOCK_TIMEOUT_S", "0.5")
        line = clirun.retro("label").one_line_error
        assert "lake is busy" in line and "RETRO_LAKE_LOCK_TIMEOUT_S" in line
        assert time.monotonic() - held_at < hold_s  # it gave up after its timeout, not after the holder
        with pytest.raises(LakeBusyError):
            Lake(load_settings(lake_lock_timeout_s=0.5)).append({"trials": [{"run_id": "r", "task_id": "x", "trial": 0}]})
        # with a timeout longer than the hold, a reader simply waits and reads
        monkeypatch.setenv("RETRO_LAKE_LOCK_TIMEOUT_S", "60")
        result = clirun.retro("sql", "SELECT count(*) AS n FROM lake.trials", "--format", "csv")
        assert result.code == 0 and result.out.split() == ["n", "0"], result.err
        assert time.monotonic() - held_at >= hold_s - 0.5
    finally:
        holder.communicate(timeout=60)
    assert holder.returncode == 0


@pytest.mark.slow
def test_retro_sql_works_while_a_rollout_writes(retro_home):
    proc = subprocess.Popen([sys.executable, str(Path(crashkit.__file__)), str(retro_home), "--delay", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("RETRO_")})
    assert proc.stdout.readline().startswith("progress"), proc.stderr.read()
    counts, while_running = [], 0
    while proc.poll() is None:
        result = clirun.retro("sql", "SELECT count(*) AS n FROM lake.trials", "--format", "csv")
        assert result.code == 0, result.err
        counts.append(int(result.out.split()[1]))
        while_running += proc.poll() is None
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.rstrip().endswith("done"), err[-2000:]
    assert while_running >= 3, counts  # reads interleaved with the rollout's commits
    assert counts == sorted(counts)  # each read saw a whole, growing lake
    final = int(clirun.retro("sql", "SELECT count(*) AS n FROM lake.trials", "--format", "csv").out.split()[1])
    assert final > 0 and counts[-1] <= final


def test_the_same_run_in_two_processes_at_once_is_refused(retro_home):
    """Two processes on one run would commit two different trajectories of a trial and the lake would
    keep parts of both (found with a sampling actor: trials whose stored steps came from the other
    process). The second process now stops at once; rerun later, it resumes the finished run."""
    first = subprocess.Popen([sys.executable, str(Path(crashkit.__file__)), str(retro_home), "--noisy",
                              "--delay", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={k: v for k, v in os.environ.items() if not k.startswith("RETRO_")})
    assert first.stdout.readline().startswith("progress"), first.stderr.read()
    second = subprocess.run([sys.executable, str(Path(crashkit.__file__)), str(retro_home), "--noisy"],
                            capture_output=True, text=True, timeout=120, check=False)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0 and out.rstrip().endswith("done"), err[-2000:]
    assert second.returncode == 1 and "is already running in another process" in second.stderr, second.stderr[-2000:]
    lake = Lake(load_settings(home=retro_home))
    mixed = lake.read("""
        SELECT t.task_id, t.trial FROM lake.trials t LEFT JOIN lake.steps s USING (run_id, task_id, trial)
        GROUP BY ALL HAVING any_value(t.n_steps) <> count(s.step)""")
    assert mixed.is_empty(), mixed
    again = subprocess.run([sys.executable, str(Path(crashkit.__file__)), str(retro_home)], capture_output=True,
                           text=True, timeout=120, check=False)
    assert again.returncode == 0 and again.stdout.rstrip().endswith("done"), again.stderr[-2000:]
