"""DuckDB extensions loaded offline, for every DuckDB connection of retro (the lake's, the environments'
full-text indexes): the pip-shipped file matching duckdb first, INSTALL (network) last."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

import duckdb

from retro.errors import LakeError

log = logging.getLogger(__name__)

# DuckDB finds an extension's entry point by its file name; duckdb-extension-postgres ships the
# `postgres_scanner` extension as postgres.duckdb_extension, so it is loaded through a link named right.
_FILE_NAMES = {"postgres": "postgres_scanner"}
_LINK_DIR: list[Path] = []  # this process's private folder of such links (removed at exit)


def _pip_extension_file(name: str) -> Path | None:
    """The extension file shipped by the pip package duckdb-extension-<name>, for this duckdb version."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        return None
    if name not in _FILE_NAMES:
        return path
    if not _LINK_DIR:
        _LINK_DIR.append(Path(tempfile.mkdtemp(prefix="retro-duckdb-ext-")))
        atexit.register(shutil.rmtree, _LINK_DIR[0], True)
    link = _LINK_DIR[0] / f"{_FILE_NAMES[name]}.duckdb_extension"
    with contextlib.suppress(FileExistsError):  # another thread made it first
        link.symlink_to(path)
    return link


_HOW_LOADED: dict[str, str] = {}  # extension -> the LOAD target that worked in this process


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD an extension offline: already installed, else the pip-shipped file, else INSTALL (network).

    What worked is remembered per process: a failing `LOAD name` costs about half a second.
    """
    if name in _HOW_LOADED:
        con.load_extension(_HOW_LOADED[name])
        return
    candidates = [name]
    shipped = _pip_extension_file(name)
    if shipped is not None:
        candidates.insert(0, str(shipped))  # the pinned, matching build first: fast and offline
    for target in candidates:
        try:
            con.load_extension(target)
            _HOW_LOADED[name] = target
            return
        except duckdb.Error as err:
            log.debug("LOAD %s failed: %s", target, err)
    try:
        con.install_extension(name)
        con.load_extension(name)
        _HOW_LOADED[name] = name
    except duckdb.Error:
        raise LakeError(
            f"duckdb extension '{name}' not found: pip install duckdb-extension-{name}=={duckdb.__version__} "
            "(or allow network for INSTALL)"
        ) from None
