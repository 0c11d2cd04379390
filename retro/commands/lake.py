"""`retro sql` and `retro lake ...`: read the lake from the shell."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from retro.commands.common import console, print_frame, settings
from retro.errors import ConfigError
from retro.store import Lake, run_readonly

app = typer.Typer(help="Inspect the lake: snapshots.", no_args_is_help=True)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def sql(
    query: Annotated[Optional[str], typer.Argument(help="One read-only SQL statement.")] = None,
    file: Annotated[Optional[Path], typer.Option("-f", "--file", help="Read the query from a .sql file.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the result to this file.")] = None,
    snapshot: Annotated[Optional[int], typer.Option("--snapshot", help="Read the lake as of this snapshot.")] = None,
) -> None:
    """Run a read-only query against the lake (tables live in catalog `lake`).

    Example: retro sql "SELECT mode, avg(success::INT) FROM lake.trial_outcomes GROUP BY mode"
    """
    if (query is None) == (file is None):
        raise ConfigError("give either a QUERY argument or --file FILE, not both or neither")
    text = file.read_text() if file is not None else query
    df = run_readonly(Lake(settings()), text, snapshot=snapshot)
    if fmt is Format.parquet and out is None:
        raise ConfigError("--format parquet needs --out FILE")
    if out is not None:
        if fmt is Format.csv or fmt is Format.table:
            df.write_csv(out)
        elif fmt is Format.json:
            df.write_json(out)
        else:
            df.write_parquet(out)
        console.print(f"wrote {df.height} rows to {out}")
    elif fmt is Format.csv:
        print(df.write_csv(), end="")
    elif fmt is Format.json:
        print_frame(df, as_json=True)
    else:
        print_frame(df)


@app.command()
def snapshots(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the lake's snapshots (every write is one); read one with `retro sql --snapshot N`.

    Example: retro lake snapshots
    """
    print_frame(Lake(settings()).snapshots(), title="lake snapshots", as_json=as_json)


@app.command()
def init() -> None:
    """Create the lake and its tables under $RETRO_HOME (idempotent).

    Example: retro lake init
    """
    lake = Lake(settings())
    lake.init()
    console.print(f"lake ready: catalog {lake.catalog}, data {lake.data_path}")
