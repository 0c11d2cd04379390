"""The local "Wikipedia" of the HotPotQA environment: every context paragraph of the shipped questions.

ReAct's HotPotQA agent searches live Wikipedia; offline, the distractor-setting paragraphs (2 gold + 8
distractors per question, about 2,000 titles) are the whole encyclopaedia. They live in a DuckDB file with
a BM25 full-text index (the `fts` extension), built once under the cache folder and keyed on a hash of the
data files, so a changed data file gets a fresh database and an unchanged one is never rebuilt. The file
is written under a temporary name and renamed into place, so a reader never sees half a database and two
processes building at once do no harm. Readers open it read-only, so any number of processes can share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from retro.duckdb_ext import load_extension
from retro.errors import DataError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "wiki-v1"  # bump when the table layout or index changes: it is part of the file's key
STALE_TMP_S = 3600  # a temporary build file this old belongs to a crashed build

CREATE_PAGES = "CREATE TABLE pages AS SELECT title, body, sentences FROM incoming"
CREATE_INDEX = "PRAGMA create_fts_index('pages', 'title', 'title', 'body')"
PAGE_BY_TITLE = "SELECT title, sentences FROM pages WHERE lower(title) = lower($title) LIMIT 1"
# Title hits weigh double: a query naming an entity should suggest that entity before pages mentioning it.
SIMILAR_TITLES = """
SELECT title FROM (
    SELECT title,
           fts_main_pages.match_bm25(title, $query, fields := 'title') AS in_title,
           fts_main_pages.match_bm25(title, $query, fields := 'body') AS in_body
    FROM pages)
WHERE in_title IS NOT NULL OR in_body IS NOT NULL
ORDER BY 2 * coalesce(in_title, 0) + coalesce(in_body, 0) DESC, title
LIMIT $k
"""
COUNT_PAGES = "SELECT count(*) FROM pages"


@dataclass(frozen=True)
class Page:
    title: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def corpus_key(sources: Sequence[Path]) -> str:
    """Hash of the data files' bytes (and the schema version): the database's identity."""
    digest = hashlib.sha256(SCHEMA_VERSION.encode())
    for path in sources:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def read_paragraphs(sources: Sequence[Path]) -> dict[str, list[str]]:
    """title -> sentences, first occurrence wins (a title recurs across questions with the same text)."""
    pages: dict[str, list[str]] = {}
    for path in sources:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                context = json.loads(line)["context"]
            except KeyError:
                raise DataError(f"{path}:{n} has no field 'context': restore the shipped file") from None
            except (json.JSONDecodeError, TypeError):
                raise DataError(f"{path}:{n} is not a HotPotQA record: restore the shipped file") from None
            for title, sentences in context:
                pages.setdefault(title, [s.strip() for s in sentences if s.strip()])
    return pages


def build_corpus(sources: Sequence[Path], target: Path) -> None:
    """Write the pages table and its BM25 index to `target` (atomically: temp file, then rename)."""
    pages = read_paragraphs(sources)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.tmp-{os.getpid()}.duckdb")
    tmp.unlink(missing_ok=True)
    incoming = pa.table({
        "title": list(pages),
        "body": [" ".join(s) for s in pages.values()],
        "sentences": list(pages.values()),
    })
    try:
        con = duckdb.connect(str(tmp))
        try:
            load_extension(con, "fts")
            con.register("incoming", incoming)
            con.execute(CREATE_PAGES)
            con.execute(CREATE_INDEX)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
    except (duckdb.Error, OSError) as err:  # a half-written database is never left behind to be read
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        text = str(err).lower()
        if any(phrase in text for phrase in ("no space left", "disk full", "file too large", "quota")):
            raise DataError(f"no space left to build the HotPotQA corpus in {target.parent} ({len(pages)} pages, "
                            "about 30 MB): free disk space or point RETRO_HOME at a larger disk") from None
        raise


def _remove_stale(folder: Path, keep: Path) -> None:
    """Drop databases of older data versions and leftovers of crashed builds."""
    for path in folder.glob("wiki-*.duckdb"):
        is_tmp = ".tmp-" in path.name
        if path == keep or (is_tmp and time.time() - path.stat().st_mtime < STALE_TMP_S):
            continue
        try:
            path.unlink()
        except OSError:  # another process may be removing it too
            pass


class Wiki:
    """Read-only access to the corpus built from `sources`; one lazily opened connection per object."""

    def __init__(self, sources: Sequence[Path], cache_dir: Path):
        self.sources = [Path(p) for p in sources]
        self.folder = Path(cache_dir)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        """The database file for the current data files (built on first use)."""
        if self._path is None:
            missing = [str(p) for p in self.sources if not p.exists()]
            if missing:
                raise DataError(f"HotPotQA data missing: {', '.join(missing)}; restore datasets/hotpotqa/")
            self._path = self.folder / f"wiki-{corpus_key(self.sources)}.duckdb"
        return self._path

    def ensure_built(self) -> Path:
        """Build the database if no file exists for these data files; return its path."""
        path = self.path
        if not path.exists():
            started = time.perf_counter()
            build_corpus(self.sources, path)
            log.info("built the HotPotQA corpus %s in %.1fs", path, time.perf_counter() - started)
            _remove_stale(self.folder, keep=path)
        return path

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = duckdb.connect(str(self.ensure_built()), read_only=True)
            load_extension(con, "fts")
            self._con = con
        return self._con

    def page(self, title: str) -> Page | None:
        """The page whose title equals `title` ignoring case, else None."""
        row = self.con.execute(PAGE_BY_TITLE, {"title": " ".join(title.split())}).fetchone()
        return None if row is None else Page(row[0], tuple(row[1]))

    def similar(self, query: str, k: int = 5) -> list[str]:
        """Up to k titles ranked by BM25 over titles (weighted double) and paragraph text."""
        return [row[0] for row in self.con.execute(SIMILAR_TITLES, {"query": query, "k": k}).fetchall()]

    def __len__(self) -> int:
        return int(self.con.execute(COUNT_PAGES).fetchone()[0])

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
