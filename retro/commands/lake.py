"""`retro sql` and `retro lake ...`: read the lake from the shell."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import polars as pl
import typer

from retro.commands.common import console, err_console, error_line, print_frame, settings
from retro.config import Settings
from retro.errors import ConfigError
from retro.store import Lake, run_readonly
from retro.store.lake import OBJECT_STORES

GRACE_S = 5.0  # how long a query may take to stop after its --timeout before the process ends

app = typer.Typer(help="Inspect and maintain the lake: snapshots, rollback.", no_args_is_help=True)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def sql(
    query: Annotated[str | None, typer.Argument(help="One read-only SQL statement (a SELECT).")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="Read the query from a .sql file.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", help="Write the result to this file (not under RETRO_HOME).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the --out file if it exists.")] = False,
    snapshot: Annotated[int | None, typer.Option("--snapshot", help="Read the lake as of this snapshot.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.001, help="Stop the query after this many seconds.")] = 60.0,
    explain: Annotated[bool, typer.Option("--explain", help="Show the query plan instead of running it.")] = False,
    read_dir: Annotated[list[Path] | None, typer.Option(
        "--read-dir", help="Let the query read files under this folder too (repeatable); else only the lake's.")] = None,
) -> None:
    """Run a read-only query against the lake (tables live in catalog `lake`); it reads the lake's files only.

    Example: retro sql "SELECT mode, avg(success::INT) FROM lake.trial_outcomes GROUP BY mode"
    """
    if (query is None) == (file is None):
        raise ConfigError("give either a QUERY argument or --file FILE, not both or neither")
    if fmt is Format.parquet and out is None:
        raise ConfigError("--format parquet needs --out FILE")
    s = settings()
    lake = Lake(s, create=False).require()
    target = _check_out(out, force, s, lake) if out is not None else None
    text = _read_query(file) if file is not None else query
    with _deadline(timeout):
        df = run_readonly(lake, text, snapshot=snapshot, timeout_s=timeout, explain=explain, read_dirs=read_dir or ())
    if target is not None:
        _write_atomically(df, target, fmt)
        console.print(f"wrote {df.height} rows to {out}")
    elif fmt is Format.csv:
        print(df.write_csv(), end="")
    elif fmt is Format.json:
        print_frame(df, as_json=True)
    else:
        print_frame(df)


@contextlib.contextmanager
def _deadline(timeout_s: float) -> Iterator[None]:
    """End the process GRACE_S after the timeout: interrupting a query cannot wake a read blocked in the
    kernel (a FIFO in a --read-dir folder), and the process's end frees the lake's lock."""
    def expire() -> None:
        err_console.print(error_line(f"query still running {GRACE_S:g} s after --timeout {timeout_s:g} (blocked "
                                     "reading a file?): stopped"), soft_wrap=True)
        os._exit(1)

    timer = threading.Timer(timeout_s + GRACE_S, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _read_query(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--file {file} is not UTF-8 text: save the query as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"cannot read --file {file}: {err.strerror or err}") from None


def _protected(s: Settings, lake: Lake) -> list[Path]:
    """Folders whose files `--out` must never replace: RETRO_HOME, and the lake's catalog and data folders."""
    folders = [s.home]
    if not lake.shared_catalog:
        folders.append(Path(lake.catalog).parent)
    if not lake.data_path.startswith(OBJECT_STORES):
        folders.append(Path(lake.data_path))
    return [folder.expanduser().resolve() for folder in folders]


def _check_out(out: Path, force: bool, s: Settings, lake: Lake) -> Path:
    """The resolved `--out` path (symlinks followed), refused inside RETRO_HOME or the lake, or if it exists."""
    target = out.expanduser().resolve()
    for folder in _protected(s, lake):
        if target.is_relative_to(folder):
            raise ConfigError(f"--out {out} is inside {folder}, which holds the lake and models: write the result "
                              "elsewhere")
    if not target.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {target.parent} does not exist; create it first")
    if target.is_dir():
        raise ConfigError(f"--out {out} is a folder: name a file")
    if target.exists() and not force:
        raise ConfigError(f"--out {out} exists: pass --force to replace it")
    return target


def _write_atomically(df: pl.DataFrame, target: Path, fmt: Format) -> None:
    """Write to a temporary file next to `target`, then rename: a failed write leaves `target` as it was."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        if fmt is Format.csv or fmt is Format.table:
            df.write_csv(tmp)
        elif fmt is Format.json:
            df.write_json(tmp)
        else:
            df.write_parquet(tmp)
        os.replace(tmp, target)
    except OSError as err:
        raise ConfigError(f"cannot write {target}: {err.strerror or err}; free space or choose another --out") from None
    finally:
        tmp.unlink(missing_ok=True)


@app.command()
def snapshots(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the lake's snapshots (every write is one); read one with `retro sql --snapshot N`.

    Example: retro lake snapshots
    """
    print_frame(Lake(settings()).require().snapshots(), title="lake snapshots", as_json=as_json)


@app.command()
def rollback(snapshot: Annotated[int, typer.Argument(help="The snapshot whose rows become current again.")]) -> None:
    """Make an earlier snapshot's rows current again, as one new snapshot (every snapshot stays readable).

    Example: retro lake rollback 41   (undo it with a rollback to the snapshot it created minus one)
    """
    from retro.store.rollback import rollback as roll_back

    lake = Lake(settings()).require()
    changed = roll_back(lake, snapshot)
    removed, restored = sum(r for r, _ in changed.values()), sum(r for _, r in changed.values())
    console.print(f"lake rolled back to snapshot {snapshot}: {removed} rows removed, {restored} restored, "
                  f"now snapshot {lake.current_snapshot()}")


@app.command()
def init() -> None:
    """Create the lake and its tables under $RETRO_HOME (idempotent).

    Example: retro lake init
    """
    lake = Lake(settings())
    lake.init()
    console.print(f"lake ready: catalog {lake.catalog}, data {lake.data_path}")
