"""`retro sql` and `retro lake ...`: read the lake from the shell."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from retro.commands.common import console, print_frame, settings
from retro.errors import ConfigError
from retro.store import Lake, run_readonly

app = typer.Typer(help="Inspect and maintain the lake: snapshots, rollback.", no_args_is_help=True)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def sql(
    query: Annotated[str | None, typer.Argument(help="One read-only SQL statement.")] = None,
    file: Annotated[Path | None, typer.Option("-f", "--file", help="Read the query from a .sql file.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", help="Write the result to this file.")] = None,
    snapshot: Annotated[int | None, typer.Option("--snapshot", help="Read the lake as of this snapshot.")] = None,
) -> None:
    """Run a read-only query against the lake (tables live in catalog `lake`).

    Example: retro sql "SELECT mode, avg(success::INT) FROM lake.trial_outcomes GROUP BY mode"
    """
    if (query is None) == (file is None):
        raise ConfigError("give either a QUERY argument or --file FILE, not both or neither")
    text = file.read_text() if file is not None else query
    df = run_readonly(Lake(settings()).require(), text, snapshot=snapshot)
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
