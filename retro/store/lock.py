"""The lake's file lock (writers exclusive, readers shared), and who holds it.

flock(2) only tells that the lock is taken. So each holder also leaves a one-line JSON note (role, command,
PID, since when) in `.lock.holders/` next to the lock while it holds it, and "lake is busy" can name them.
A note whose process is gone (killed, crashed) is ignored, and removed by the next process that takes the
lock: the kernel released its lock then. A note also records when its process started, so a later process
given the same PID is never named as the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from retro.errors import LakeBusyError

HOLDERS = ".lock.holders"
_NOTES = itertools.count()  # one note per holding, also for two holdings in one process


def _command() -> str:
    """The holder as a user would name it: `retro sql`, `retro rollout` (not the query or its options)."""
    words = [Path(sys.argv[0]).name, *sys.argv[1:2]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(words)[:60]


def _started(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, field 22 of /proc/PID/stat); None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # after the command name, which may hold spaces


def _leave_note(lock: Path, exclusive: bool) -> Path | None:
    """Write this holder's note; None where the folder is read-only (the lock still works)."""
    note = lock.parent / HOLDERS / f"{os.getpid()}-{next(_NOTES)}.json"
    record = {"role": "writer" if exclusive else "reader", "command": _command(), "pid": os.getpid(),
              "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "started": _started(os.getpid())}
    try:
        note.parent.mkdir(exist_ok=True)
        note.write_text(json.dumps(record) + "\n")
    except OSError:
        return None
    return note


def _alive(record: dict) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # another machine's process: cannot tell, so believe the note
    try:
        pid = int(record["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError):
        return True  # alive under another user, or a note this code cannot read: believe it
    started = _started(pid)
    return record.get("started") is None or started is None or started == record["started"]  # else a new process


def holders(lock: Path) -> list[dict]:
    """The notes of the processes holding `lock` now; notes of dead processes are removed."""
    found = []
    for note in sorted((lock.parent / HOLDERS).glob("*.json")):
        try:
            record = json.loads(note.read_text())
        except (OSError, ValueError):
            continue  # being written or removed right now
        if _alive(record):
            found.append(record)
        else:
            note.unlink(missing_ok=True)
    return found


def _busy_message(lock: Path, exclusive: bool, timeout_s: float) -> str:
    named = [f"a {h.get('role', 'holder')}, `{h.get('command', '?')}` PID {h.get('pid', '?')} since {h.get('since', '?')}"
             for h in holders(lock)]
    who = "; ".join(named) or "a process that left no note (not a retro command; e.g. a backup under flock)"
    want = "write to" if exclusive else "read"
    return (f"lake is busy: could not {want} {lock.parent} for {timeout_s:.0f}s, held by {who}; wait for it to "
            "finish (or stop it) or raise RETRO_LAKE_LOCK_TIMEOUT_S")


def _acquire(handle: IO[str], lock: Path, exclusive: bool, timeout_s: float) -> None:
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise LakeBusyError(_busy_message(lock, exclusive, timeout_s)) from None
            time.sleep(0.05)


@contextlib.contextmanager
def file_lock(lock: Path, exclusive: bool, timeout_s: float) -> Iterator[None]:
    """Hold `lock` (exclusive: a writer; shared: a reader), waiting up to `timeout_s` for it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as handle:
        _acquire(handle, lock, exclusive, timeout_s)
        holders(lock)  # removes the notes that killed processes left behind
        note = _leave_note(lock, exclusive)
        try:
            yield
        finally:
            if note is not None:
                note.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)
