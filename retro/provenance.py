"""Where a result came from: the code version recorded with every run and model."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from retro import __version__


@functools.cache
def code_version() -> str:
    """The git commit of the checkout (with '+dirty' when it has changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"retroformer-{__version__}"
