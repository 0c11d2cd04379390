"""Analysts' views (retro/store/views/*.sql), created in the lake so plain SQL clients see them too."""

from __future__ import annotations

from pathlib import Path

import duckdb

VIEWS_DIR = Path(__file__).with_name("views")


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create every view that is missing, in file-name order (later views may use earlier ones)."""
    for path in sorted(VIEWS_DIR.glob("*.sql")):
        con.execute(path.read_text())
