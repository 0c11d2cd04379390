"""What every benchmark needs: a fresh RETRO_HOME that reuses the converted embedded model."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the toy environment and scripted models live with the tests


def machine() -> str:
    versions = ", ".join(f"{n} {md.version(n)}" for n in ("torch", "transformers", "duckdb", "prefect"))
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {versions}"


def embedded_models_dir() -> Path:
    """The folder holding the converted embedded model (converted once, then shared by every bench home)."""
    from retro.config import load_settings
    from retro.llm import ensure_embedded

    return ensure_embedded(load_settings()).parent.resolve()  # absolute: it becomes a symlink target


def bench_home(name: str) -> Path:
    """A bench's own home under bench/out/ (git-ignored), kept so that a stopped run resumes from its lake."""
    return ROOT / "bench" / "out" / name


def resumable_settings(home: Path, **overrides):
    """Settings on a bench home that may hold a lake already (fresh the first time, then reopened)."""
    from retro.config import load_settings

    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        return fresh_settings(home, share_models=True, **overrides)
    os.environ["RETRO_HOME"] = str(home)
    return load_settings(home=home, **overrides)


def fresh_settings(tmp: Path, share_models: bool = False, **overrides):
    """Settings on an empty home under tmp; share_models links in the converted embedded model."""
    from retro.config import load_settings

    if share_models:
        models = embedded_models_dir()
        tmp.joinpath("models").symlink_to(models)
    os.environ["RETRO_HOME"] = str(tmp)
    return load_settings(home=tmp, **overrides)
