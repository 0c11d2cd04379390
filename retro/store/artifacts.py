"""Where the home's artifacts lie, and how the lake records their paths: relative to $RETRO_HOME.

An adapter folder (`model_versions.adapter_path`) or a data set file (`dataset_versions.path`) under the
home is recorded relative to it and resolved against the home of whoever reads it, so a home restored from
a backup or copied elsewhere uses its own files, never the original's. A path outside the home is recorded
and used as given.

Lakes written before this recorded absolute paths in the home they were written in, always at the place
the layout below gives the row (`models/adapters/<model_id>`, `datasets/<name>/<version>.parquet`). A
recorded absolute path that ends with its row's place is read as that place in the current home; the rows
stay as written (the lake is append-only) and are resolved when read.
"""

from __future__ import annotations

from pathlib import Path, PurePath


def adapter_place(model_id: str) -> PurePath:
    """Where a trained adapter's folder lies in the home."""
    return PurePath("models", "adapters", model_id)


def dataset_place(name: str, version: str) -> PurePath:
    """Where a data set version's Parquet file lies in the home."""
    return PurePath("datasets", name, f"{version}.parquet")


def stored_path(home: Path, path: str | PurePath) -> str:
    """What the lake records for `path`: relative to `home` (POSIX separators) when it lies under it."""
    absolute, root = Path(path).resolve(), home.resolve()
    return absolute.relative_to(root).as_posix() if absolute.is_relative_to(root) else str(path)


def home_path(home: Path, stored: str, place: PurePath) -> Path:
    """The file or folder a recorded path names in `home`: a relative one lies under it; an absolute one
    that ends with the row's `place` was recorded in an older lake's home, so it is that place in this one;
    any other absolute path is used as recorded."""
    path = PurePath(stored)
    if not path.is_absolute():
        return home.resolve() / path
    if path.parts[-len(place.parts):] == place.parts:
        return home.resolve() / place
    return Path(path)
