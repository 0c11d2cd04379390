"""Shared fixtures: a real DuckLake under tmp_path (nothing mocks DuckDB), and version headers."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_report_header(config):
    import importlib.metadata as md

    names = ["duckdb", "polars", "torch", "transformers", "peft", "trl", "prefect"]
    versions = []
    for name in names:
        try:
            versions.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            versions.append(f"{name} missing")
    return "retroformer: " + ", ".join(versions)


@pytest.fixture
def retro_home(tmp_path, monkeypatch):
    """An empty RETRO_HOME for one test; RETRO_* variables from the caller's shell are cleared."""
    for key in list(os.environ):
        if key.startswith("RETRO_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("RETRO_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no stray retro.toml from the repo
    return home


@pytest.fixture
def settings(retro_home):
    from retro.config import load_settings

    return load_settings(home=retro_home, preset="tiny")


@pytest.fixture
def lake(settings):
    """A real, empty DuckLake (DuckDB catalog file + Parquet data path) under tmp_path."""
    from retro.store import Lake

    lake = Lake(settings)
    lake.init()
    return lake


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 for the session (tests/pg.py); skips when none can start."""
    import importlib.util

    import pg

    if importlib.util.find_spec("duckdb_extension_postgres") is None:
        pytest.skip("duckdb-extension-postgres is not installed: pip install -e '.[scale]'")
    try:
        server = pg.start_server()
    except pg.Unavailable as why:
        pytest.skip(str(why))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for the session's flow tests, started on first use."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
