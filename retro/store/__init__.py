"""The lake (DuckLake over DuckDB + Parquet): the only package that writes SQL against it."""

from retro.store.lake import KEYS, Lake
from retro.store.readonly import check_readonly, run_readonly

__all__ = ["KEYS", "Lake", "check_readonly", "run_readonly"]
