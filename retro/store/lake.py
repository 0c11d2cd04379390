"""The lake: a DuckLake catalog (DuckDB file, or PostgreSQL) plus Parquet files under $RETRO_HOME/lake.

Every write is one transaction, hence one snapshot; keys are checked inside it, so writing the same
rows twice adds nothing. Connections are short-lived and guarded by a file lock (writers exclusive,
readers shared), because a DuckDB catalog file admits one writing process at a time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from retro.config import Settings, redact_password
from retro.duckdb_ext import load_extension
from retro.errors import ConfigError, LakeBusyError, LakeError
from retro.store.lock import file_lock

log = logging.getLogger(__name__)

SCHEMA_SQL = Path(__file__).with_name("schema.sql")

# Data paths DuckDB reaches through httpfs (credentials: DuckDB secrets, e.g. CREATE PERSISTENT SECRET).
OBJECT_STORES = ("s3://", "s3a://", "gs://", "gcs://", "r2://", "http://", "https://")

# The key of every table: a write skips rows whose key is already stored.
KEYS: dict[str, tuple[str, ...]] = {
    "tasks": ("env", "split", "task_id"),
    "runs": ("run_id",),
    "run_ends": ("run_id",),
    "trials": ("run_id", "task_id", "trial", "sample"),
    "steps": ("run_id", "task_id", "trial", "sample", "step"),
    "reflections": ("run_id", "task_id", "trial", "sample"),
    "ratings": ("run_id", "task_id", "trial", "sample", "label_version"),
    "dataset_versions": ("dataset", "version"),
    "model_versions": ("model_id",),
    "model_evaluations": ("model_id", "run_id"),
    "promotions": ("model_id", "promoted_at"),
    "model_servings": ("model_id", "recorded_at"),
}
# Key columns a writer may leave out: rows written without them take this value (as the lake's DEFAULT does).
KEY_DEFAULTS: dict[str, Any] = {"sample": 0}


# -- locking ---------------------------------------------------------------------------------------------
# Every writer of a PostgreSQL catalog takes this lock first. DuckLake merges two concurrent appends to
# one table, so two writers could both find a key missing and both insert it; taking turns keeps the
# keys checked. A session lock, held by its own connection: closing that connection releases it.
_PG_WRITER_LOCK = "SELECT pg_try_advisory_lock(hashtext('retro.lake.writer'))"


@contextlib.contextmanager
def _pg_lock(dsn: str, timeout_s: float) -> Iterator[None]:
    con = duckdb.connect()
    try:
        load_extension(con, "postgres")
        try:
            con.execute(f"ATTACH {_quote(dsn)} AS catalog_lock (TYPE postgres, READ_ONLY)")
            deadline = time.monotonic() + timeout_s
            while not con.execute("SELECT * FROM postgres_query('catalog_lock', ?)", [_PG_WRITER_LOCK]).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise LakeBusyError(
                        f"lake is busy: another process has been writing the catalog for over {timeout_s:.0f}s; "
                        "wait for it to finish or raise RETRO_LAKE_LOCK_TIMEOUT_S"
                    )
                time.sleep(0.05)
        except duckdb.Error as err:
            raise LakeError(
                f"cannot reach the PostgreSQL catalog {redact_password(dsn)} ({redact_password(str(err).splitlines()[0])}): "
                "check that the server is up and RETRO_LAKE_CATALOG names an existing database"
            ) from None
        yield
    finally:
        con.close()


def _quote(text: str) -> str:
    """A SQL string literal (ATTACH takes no bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


# -- error texts -----------------------------------------------------------------------------------------
# ENOSPC, EDQUOT and EFBIG (a file-size limit) all mean "no room to write"; DuckDB words them like this.
_NO_SPACE = ("no space left", "disk full", "disk quota exceeded", "file too large")


def _no_space(text: str) -> bool:
    """Whether a DuckDB error is a full disk (read all of it: a failed commit gives the cause on a later line)."""
    return any(phrase in text.lower() for phrase in _NO_SPACE)


def _corrupt_catalog(text: str) -> bool:
    """Whether a DuckDB error is a damaged catalog block (a checksum mismatch): every rerun meets it again."""
    return "corrupt database file" in text.lower()


def _unreadable_data(text: str) -> bool:
    """Whether a DuckDB error is about a lake data file (a corrupt or missing Parquet file)."""
    return "parquet" in text.lower() or "magic" in text.lower()


def _cause(err: duckdb.Error) -> str:
    """The most specific line of a DuckDB error: the last one (a failed commit says why only there)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return redact_password(lines[-1]) if lines else type(err).__name__


def _df(rows: pl.DataFrame | Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    return rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(list(rows), infer_schema_length=None)


class Lake:
    """Handle on one lake. Cheap to create; every method opens and closes its own connection."""

    def __init__(self, settings: Settings, create: bool = True):
        """`create=False`: never create tables (the lake must exist), so a reader never writes."""
        self.settings = settings
        self.dir = settings.lake_dir
        self.catalog = settings.lake_catalog or str(self.dir / "catalog.ducklake")
        self.shared_catalog = self.catalog.startswith(("postgres:", "postgresql:"))
        if self.shared_catalog and not settings.lake_data_path:
            raise ConfigError(
                "RETRO_LAKE_CATALOG is a PostgreSQL catalog, so the data files must be shared too: set "
                "RETRO_LAKE_DATA_PATH to a folder every machine sees, or an object store (s3://bucket/lake/)"
            )
        self.data_path = settings.lake_data_path or str(self.dir / "data") + "/"
        self._initialised = not create

    def exists(self) -> bool:
        """Whether the catalog is there (a PostgreSQL catalog is assumed to be: attaching tells)."""
        return self.shared_catalog or Path(self.catalog).exists()

    def require(self) -> Lake:
        """This lake, or a one-line error when there is none yet (readers must not create one)."""
        if not self.exists():
            raise LakeError(f"no lake at {self.catalog} (RETRO_HOME={self.settings.home}): run `retro rollout` "
                            "first, or point RETRO_HOME at the folder that holds your lake")
        return self

    # -- connections -------------------------------------------------------------------------------------
    @property
    def catalog_dsn(self) -> str:
        """The libpq connection string of a PostgreSQL catalog: a URI, or `dbname=... host=...`."""
        if self.catalog.startswith(("postgres://", "postgresql://")):
            return self.catalog
        return self.catalog.split(":", 1)[1]

    @property
    def catalog_label(self) -> str:
        """The catalog for messages, without a password."""
        return redact_password(self.catalog)

    def _attach_target(self) -> str:
        if self.shared_catalog:
            return "ducklake:postgres:" + self.catalog_dsn
        return "ducklake:" + self.catalog

    def _extensions(self) -> list[str]:
        """ducklake, plus postgres for a PostgreSQL catalog, plus httpfs for an object-store data path."""
        names = ["ducklake"]
        if self.shared_catalog:
            names.append("postgres")
        if self.data_path.startswith(OBJECT_STORES):
            names.append("httpfs")
        return names

    @contextlib.contextmanager
    def connect(self, write: bool = False, snapshot: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with the lake attached as `lake` (read-only unless `write`)."""
        if not self._initialised:
            self.init()
        with self._lock(write):
            con = self._open(write=write, snapshot=snapshot)
            try:
                yield con
            finally:
                con.close()

    def _lock(self, write: bool) -> contextlib.AbstractContextManager[None]:
        if self.shared_catalog:  # readers see a consistent snapshot; writers take turns (see _pg_lock)
            return _pg_lock(self.catalog_dsn, self.settings.lake_lock_timeout_s) if write else contextlib.nullcontext()
        return file_lock(self.dir / ".lock", exclusive=write, timeout_s=self.settings.lake_lock_timeout_s)

    def _open(self, write: bool, snapshot: int | None = None) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        try:
            for name in self._extensions():
                load_extension(con, name)
            options = [f"DATA_PATH {_quote(self.data_path)}", "DATA_INLINING_ROW_LIMIT 0"]
            if not self.shared_catalog and self.settings.lake_data_path is None:
                # The data folder sits next to the catalog, which stores the absolute data path it was created
                # with: without this, a lake restored or moved to another RETRO_HOME would not open.
                options.append("OVERRIDE_DATA_PATH true")
            if not write:
                options.append("READ_ONLY")
            if snapshot is not None:
                options.append(f"SNAPSHOT_VERSION {int(snapshot)}")
            con.execute(f"ATTACH {_quote(self._attach_target())} AS lake ({', '.join(options)})")
        except LakeError:
            con.close()
            raise
        except duckdb.Error as err:
            con.close()
            raise self._open_error(err, snapshot) from None
        return con

    def _open_error(self, err: duckdb.Error, snapshot: int | None) -> LakeError:
        text = redact_password(str(err).splitlines()[0])
        if snapshot is not None and "snapshot" in text.lower():
            return LakeError(f"lake snapshot {snapshot} does not exist: list them with `retro lake snapshots`")
        if _no_space(str(err)):  # not corruption: "restore a backup" would be the wrong advice
            return self._no_space_error(err)
        if "does not match existing data path" in text:
            return LakeError(f"RETRO_LAKE_DATA_PATH={self.data_path} is not where this catalog keeps its data ({text}): "
                             "set RETRO_LAKE_DATA_PATH to the catalog's data path")
        if self.shared_catalog:
            return LakeError(f"cannot open the lake catalog {self.catalog_label} ({text}): check that PostgreSQL "
                             "is up and RETRO_LAKE_CATALOG names an existing database (password: PGPASSWORD or ~/.pgpass)")
        return LakeError(
            f"cannot open the lake catalog {self.catalog_label} ({text}): it is corrupt or not a DuckLake catalog; "
            "restore it from a backup (README, Operations) or move it away to start a new lake"
        )

    def init(self) -> None:
        """Create the lake and its tables if missing (idempotent; no snapshot when nothing changes)."""
        if not self.shared_catalog:
            self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock(write=True):
            fresh = not self.shared_catalog and not Path(self.catalog).exists()
            try:
                con = self._open(write=True)
            except LakeError:
                if fresh:  # e.g. a full disk: a half-written new catalog would read as corrupt ever after
                    for leftover in (Path(self.catalog), Path(self.catalog + ".wal")):
                        leftover.unlink(missing_ok=True)
                raise
            try:
                con.execute("USE lake")
                con.execute("BEGIN")
                con.execute(SCHEMA_SQL.read_text())
                from retro.store import views  # local import: views.py names SQL files, not this module

                views.create_views(con)
                con.execute("COMMIT")
            except duckdb.Error as err:
                if _no_space(str(err)):
                    raise self._no_space_error(err) from None
                if _corrupt_catalog(str(err)):
                    raise self._corrupt_catalog_error(err) from None
                raise LakeError(f"cannot create the lake tables in {self.catalog_label}: {_cause(err)}") from None
            finally:
                con.close()
        self._initialised = True

    # -- writes ----------------------------------------------------------------------------------------------
    def append(self, tables: Mapping[str, pl.DataFrame | Sequence[Mapping[str, Any]]]) -> dict[str, int]:
        """Append rows to several tables in one transaction (one snapshot), skipping stored keys.

        Returns the number of rows actually written per table, so a rerun can report "0 new".
        """
        frames = {name: _df(rows) for name, rows in tables.items()}
        for name in frames:
            if name not in KEYS:
                raise LakeError(f"unknown lake table '{name}': the tables are {', '.join(KEYS)}")
        frames = {name: df for name, df in frames.items() if df.height}
        if not frames:
            return {name: 0 for name in tables}
        written = {name: 0 for name in tables}
        with self.connect(write=True) as con:
            try:
                con.execute("BEGIN")
                for name, df in frames.items():
                    written[name] = self._insert_new(con, name, df)
                con.execute("COMMIT")
            except duckdb.Error as err:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise self._write_error(err) from None
        return written

    @staticmethod
    def _insert_new(con: duckdb.DuckDBPyConnection, name: str, df: pl.DataFrame) -> int:
        keys = KEYS[name]
        df = df.with_columns(pl.lit(KEY_DEFAULTS[k], pl.Int32).alias(k) for k in keys
                             if k in KEY_DEFAULTS and k not in df.columns)
        df = df.unique(subset=list(keys), keep="first", maintain_order=True)
        con.register("incoming", df.to_arrow())
        match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM n.{k}" for k in keys)
        columns = ", ".join(df.columns)
        count = con.execute(
            f"INSERT INTO lake.{name} ({columns}) SELECT {columns} FROM incoming n "
            f"WHERE NOT EXISTS (SELECT 1 FROM lake.{name} t WHERE {match})"
        ).fetchone()[0]
        con.unregister("incoming")
        return int(count)

    def _write_error(self, err: duckdb.Error) -> LakeError:
        if _no_space(str(err)):
            return self._no_space_error(err)
        text = str(err)
        if _corrupt_catalog(text):
            return self._corrupt_catalog_error(err)
        if _unreadable_data(text) and "could not write" not in text.lower():
            return self._read_error(err)  # a write reads the table to skip stored keys: a rerun would not help
        return LakeError(f"lake write failed and was rolled back ({_cause(err)}); rerun the command to resume")

    def _corrupt_catalog_error(self, err: duckdb.Error) -> LakeError:
        return LakeError(f"the lake catalog {self.catalog_label} is corrupt ({_cause(err)}): restore it from a backup "
                         "(README, Operations); a rerun would meet the same damage")

    def _no_space_error(self, err: duckdb.Error) -> LakeError:
        return LakeError(f"no space left to write the lake at {self.dir} ({_cause(err)}): free disk space "
                         "(or raise the quota) and rerun; nothing was committed")

    # -- reads -------------------------------------------------------------------------------------------------
    def read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None,
             snapshot: int | None = None) -> pl.DataFrame:
        """Run trusted SQL (code and shipped .sql files) and return a polars frame."""
        with self.connect(write=False, snapshot=snapshot) as con:
            try:
                return con.execute(sql, params).pl()
            except duckdb.Error as err:
                raise self._read_error(err) from None

    def _read_error(self, err: duckdb.Error) -> LakeError:
        text = str(err).splitlines()[0]
        if _corrupt_catalog(str(err)):
            return self._corrupt_catalog_error(err)
        if _unreadable_data(text):
            return self.unreadable_data_error(text)
        return LakeError(f"query failed: {text}")

    @staticmethod
    def unreadable_data_error(detail: str) -> LakeError:
        """A corrupt or missing data file: a rerun or a rollback would read it again, only a backup helps."""
        return LakeError(
            f"a lake data file is unreadable ({detail}): restore the lake from a backup (README, Operations); "
            "`retro sql --snapshot N` still reads the snapshots from before that file"
        )

    def current_snapshot(self) -> int:
        return int(self.read("SELECT max(snapshot_id) FROM lake.snapshots()").item())

    def snapshots(self) -> pl.DataFrame:
        return self.read(
            "SELECT snapshot_id, snapshot_time, schema_version, to_json(changes) AS changes "
            "FROM lake.snapshots() ORDER BY snapshot_id"
        )
