"""Holder notes in lake/.lock.holders (issue 29, point 8): a `retro sql` killed by a signal leaves its note
behind; the next process that takes the lock removes it, and a note is never read as naming a later
process that was given the same PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import clirun

from retro.store.lock import HOLDERS, file_lock, holders


def _notes(lake) -> list[dict]:
    return [json.loads(p.read_text()) for p in (lake.dir / HOLDERS).glob("*.json")]


def test_a_killed_readers_note_is_removed_by_the_next_command(lake):
    reader = subprocess.Popen([sys.executable, "-c", "from retro.cli import main; main()", "sql", "--timeout",
                               "120", "SELECT count(*) FROM range(1000000000000000)"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not any(n["pid"] == reader.pid for n in _notes(lake)):
            assert time.monotonic() < deadline and reader.poll() is None, "the reader left no note"
            time.sleep(0.05)
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    assert [n["pid"] for n in _notes(lake)] == [reader.pid]  # what the kill leaves behind
    assert clirun.retro("sql", "SELECT 1").code == 0
    assert _notes(lake) == []


def test_a_note_of_an_earlier_process_with_the_same_pid_names_nobody(lake):
    """PIDs are reused: a note whose process started at another time is stale, though the PID is alive."""
    lock = lake.dir / ".lock"
    with file_lock(lock, exclusive=False, timeout_s=5):
        (live,) = holders(lock)
        assert live["pid"] == os.getpid() and live["started"]
        stale = {**live, "role": "writer", "started": str(int(live["started"]) - 1)}
        (lake.dir / HOLDERS / f"{os.getpid()}-stale.json").write_text(json.dumps(stale))
        assert holders(lock) == [live]
    assert not (lake.dir / HOLDERS / f"{os.getpid()}-stale.json").exists()
