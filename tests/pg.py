"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, postgres on 127.0.0.1 at a free port.

Uses the server binaries of Debian's postgresql package (`pg_ctl` on PATH, else the newest
/usr/lib/postgresql/*/bin). initdb refuses to run as root, so under root the server runs as the
`postgres` user (runuser). `start_server` raises Unavailable with the reason when it cannot start one;
the `postgres` fixture in conftest.py turns that into a skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "retro"  # the cluster's superuser; trust authentication on 127.0.0.1 only


class Unavailable(Exception):
    """No PostgreSQL server can be started here (the message says why and what to install)."""


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bin_dir: Path
    root: Path  # holds data/, the socket and the log
    port: int
    as_user: list[str]  # command prefix that runs a server binary as the cluster's owner

    def dsn(self, dbname: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URI."""
        subprocess.run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name],
                       check=True, capture_output=True, text=True)
        return self.dsn(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                        "stop"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="retro-pg-"))
    if os.geteuid() == 0:  # initdb will not run as root
        runuser = shutil.which("runuser")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            runuser = None
        if runuser is None:
            raise Unavailable("running as root without a `postgres` user and runuser: cannot start PostgreSQL")
        as_user = [runuser, "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = free_port()
    server = PgServer(bin_dir, root, port, as_user)
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    steps = [
        [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
        [str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-o", options, "-w", "-t", "60",
         "start"],
    ]
    for step in steps:
        done = subprocess.run([*as_user, *step], check=False, capture_output=True, text=True)
        if done.returncode:
            log = (root / "log").read_text()[-2000:] if (root / "log").exists() else ""
            server.stop()
            raise Unavailable(f"{Path(step[0]).name} failed: {done.stderr.strip()[-500:]} {log}")
    return server
