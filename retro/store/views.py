"""Analysts' views (retro/store/views/*.sql), created in the lake so plain SQL clients see them too.

Each view carries the hash of its file as its comment, so a lake made by older code gets the new
definition the next time it is opened for writing, and an unchanged view costs no snapshot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

VIEWS_DIR = Path(__file__).with_name("views")


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create or replace every view whose file changed, in file-name order (later views may use earlier ones)."""
    stored = dict(con.execute(
        "SELECT view_name, comment FROM duckdb_views() WHERE database_name = current_database()").fetchall())
    for path in sorted(VIEWS_DIR.glob("*.sql")):
        name, text = path.stem.split("_", 1)[1], path.read_text()
        mark = "retro:" + hashlib.sha256(text.encode()).hexdigest()[:16]
        if stored.get(name) == mark:
            continue
        con.execute(text)
        con.execute(f"COMMENT ON VIEW {name} IS '{mark}'")
