"""Helpers shared by CLI commands: settings loading and table rendering."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import polars as pl
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from retro.config import Settings, load_settings

# Everything printed is text: model output and lake data hold `[/INST]`, `[path]` and `:name:`, which rich
# would otherwise read as markup or emoji codes. Styles are given as rich.text.Text spans instead, and
# control characters (ESC, CR, ...) are shown as escapes (as_text), never sent to the terminal.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False, highlight=False)

WRAP_AT = 40  # a column wider than this wraps its text; narrower ones are never squeezed
ELIDED = "…"  # the column that stands for the columns left out (DuckDB's shell shows the same)
BORDER = 3  # a column's cost beyond its text in a rich table: two padding spaces and one rule
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every control character but tab and newline


def as_text(value: Any, style: str = "") -> Text:
    """`value` as terminal text: None is empty, control characters are shown as \\xNN escapes."""
    text = "" if value is None else str(value)
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text), style=style)


def error_line(message: str) -> Text:
    """The one red-labelled line every known error prints; `message` stays text."""
    return Text.assemble(("error:", "bold red"), " ", as_text(message))


def metrics_summary(metrics: str | dict | None) -> str | None:
    """A model's metrics for a terminal row: the JSON without its per-step curves ("history": the report
    plots them, and SQL reads them as `metrics->'history'`), which would fill the screen."""
    if metrics is None:
        return None
    values = json.loads(metrics) if isinstance(metrics, str) else metrics
    return json.dumps({k: v for k, v in values.items() if k != "history"}, sort_keys=True, default=str)


def settings(**overrides: Any) -> Settings:
    """Settings for a command; explicit CLI options win over env vars and retro.toml."""
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _wanted_widths(df: pl.DataFrame) -> list[int]:
    """Each column's width: its name or longest line, at most WRAP_AT (longer text wraps within it)."""
    widths = []
    for name in df.columns:
        lines = [line for value in df[name].to_list() for line in as_text(value).plain.splitlines()]
        widths.append(min(WRAP_AT, max([cell_len(name), 1, *(cell_len(line) for line in lines)])))
    return widths


def visible_columns(widths: list[int], room: int) -> list[int]:
    """The columns that fit in `room` terminal columns: all of them, or else (as DuckDB's shell does) the
    first and the last ones, taken in turn, around one ELIDED column. At least the first column."""
    if sum(w + BORDER for w in widths) + 1 <= room:
        return list(range(len(widths)))
    budget = room - 1 - (len(ELIDED) + BORDER)
    left: list[int] = []
    right: list[int] = []
    low, high = 0, len(widths) - 1
    while low <= high:
        take = low if len(left) <= len(right) else high
        if widths[take] + BORDER > budget:
            break
        budget -= widths[take] + BORDER
        if take == low:
            left.append(low)
            low += 1
        else:
            right.append(high)
            high -= 1
    return (left or [0]) + right[::-1]


def print_frame(df: pl.DataFrame, title: str | None = None, as_json: bool = False, max_rows: int = 200) -> None:
    """Render a frame as a rich table that fits the terminal (columns that do not fit are left out, and
    named below it), or as JSON lines on stdout for machines. Every cell is printed as text."""
    if as_json:
        sys.stdout.write(json.dumps(df.to_dicts(), default=str) + "\n")
        return
    shown = df.head(max_rows)
    widths = _wanted_widths(shown)
    keep = visible_columns(widths, console.width)
    table = Table(title=Text(title) if title else None, show_lines=False)
    for position, index in enumerate(keep):
        if position and index != keep[position - 1] + 1:
            table.add_column(ELIDED, width=len(ELIDED))
        table.add_column(Text(df.columns[index]), overflow="fold", min_width=widths[index])
    gap = next((p for p in range(1, len(keep)) if keep[p] != keep[p - 1] + 1), None)
    for row in shown.iter_rows():
        cells = [as_text(row[index]) for index in keep]
        if gap is not None:
            cells.insert(gap, Text(ELIDED))
        table.add_row(*cells)
    console.print(table)
    if df.height > max_rows:
        console.print(Text(f"... {df.height - max_rows} more rows (use --format csv --out FILE)", style="dim"))
    hidden = [name for index, name in enumerate(df.columns) if index not in keep]
    if hidden:
        console.print(Text(f"{len(hidden)} of {df.width} columns left out to fit {console.width} terminal columns: "
                           f"{', '.join(hidden)} (name the columns you need, or use --format csv or json)",
                           style="dim"))
