"""Helpers shared by CLI commands: settings loading and table rendering."""

from __future__ import annotations

import json
import sys
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from retro.config import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


def settings(**overrides: Any) -> Settings:
    """Settings for a command; explicit CLI options win over env vars and retro.toml."""
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def print_frame(df: pl.DataFrame, title: str | None = None, as_json: bool = False, max_rows: int = 200) -> None:
    """Render a frame as a rich table, or as JSON lines on stdout for machines."""
    if as_json:
        sys.stdout.write(json.dumps(df.to_dicts(), default=str) + "\n")
        return
    table = Table(title=title, show_lines=False)
    for name in df.columns:
        table.add_column(name, overflow="fold")
    for row in df.head(max_rows).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    if df.height > max_rows:
        console.print(f"[dim]... {df.height - max_rows} more rows (use --format csv --out FILE)[/dim]")
