"""`retro report --out DIR`: an HTML page with PNG figures drawn from the lake's views."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from retro.commands.common import console, settings
from retro.store import Lake


def report(
    out: Annotated[Path, typer.Option("--out", help="Directory for index.html, the PNGs and curves.json.")] = Path(
        "report"),
) -> None:
    """Write the report: success-rate-per-trial curves, rating histograms, training curves, lineage.

    Example: retro report --out report && open report/index.html
    """
    from retro.eval.report import write_report  # matplotlib loads only for this command

    index = write_report(Lake(settings()).require(), out)
    console.print(f"wrote {index}")


def register(app: typer.Typer) -> None:
    app.command()(report)
