"""The lake (DuckLake over DuckDB + Parquet): the only package that writes SQL against it."""

from retro.store.lake import KEYS, Lake, load_extension
from retro.store.readonly import check_readonly, run_readonly

__all__ = ["KEYS", "Lake", "check_readonly", "load_extension", "run_readonly"]
