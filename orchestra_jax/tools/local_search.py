"""Local BM25 retrieval over a JSONL corpus, shared by every episode of a run.

Why it looks like this:

- The index is built once per (corpus content, settings) and cached on disk, because building it
  over a Wikipedia-sized corpus takes minutes and every training process, evaluation and test
  would otherwise repeat that work. The cache key hashes the corpus bytes, so editing the corpus
  can never serve a stale index.
- Hundreds of concurrent episodes search at once. The paper's retrieval server broke under that
  load until requests were micro-batched, so `search` does the same: callers await a future, and
  a small per-event-loop batcher gathers queries for a few milliseconds (or until `max_batch`)
  and scores them with one `bm25s` `retrieve` call in a worker thread. The event loop stays free
  for generation and other tools while numpy scores.
- `bm25s` imports jax at import time when it can find it (only to pick a top-k backend). The
  tools room is host code that must not pull jax in, so the import below hides jax from it when
  jax is not loaded yet, and retrieval always asks for the numpy backend.
- A task may restrict retrieval to an allow-list of document ids (the released qa records each
  search their own slice of Wikipedia). Filtering a top-k afterwards would return fewer than k
  hits, or none, while allowed documents match; instead the allow-list becomes a BM25 weight
  mask, so scoring itself sees only the allowed documents and k is honoured among them.
  Queries of one batch with different allow-lists are scored in one retrieve call per list.
- `bm25s` also sets its own logger to DEBUG when imported; the import below undoes that, so
  building an index prints nothing unless the application's logging asks for DEBUG.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra_jax.tools.jsonl import iter_jsonl_objects
from orchestra_jax.tools.search_types import SearchHit

_CACHE_FORMAT = 1  # bump when the on-disk layout or tokenisation changes
_HASH_CHUNK = 1 << 20
_IMPORT_LOCK = threading.Lock()
_BM25S_LOGGER_RESET = False  # whether bm25s' self-set DEBUG level was undone
_MASKS_KEPT = 256  # allow-list masks remembered per index (a group's rollouts share one)


def _import_bm25s() -> Any:
    """Import `bm25s` without letting it import jax (see the module docstring), and without
    the DEBUG level it forces on its own logger."""
    global _BM25S_LOGGER_RESET
    if "bm25s" in sys.modules and _BM25S_LOGGER_RESET:
        return sys.modules["bm25s"]
    with _IMPORT_LOCK:
        hide_jax = "jax" not in sys.modules and "bm25s" not in sys.modules
        if hide_jax:
            sys.modules["jax"] = None  # type: ignore[assignment]  # makes `import jax` fail
        try:
            import bm25s
        finally:
            if hide_jax and sys.modules.get("jax", 0) is None:
                del sys.modules["jax"]
        if not _BM25S_LOGGER_RESET:
            # `bm25s` sets its logger to DEBUG at import, which outranks the root logger's
            # level: every index build printed "DEBUG:bm25s:Building index from IDs objects"
            # whatever the application configured. NOTSET hands the level back to the root
            # logger (WARNING by default), so its warnings and errors still show.
            logger = logging.getLogger("bm25s")
            if logger.level == logging.DEBUG:
                logger.setLevel(logging.NOTSET)
            _BM25S_LOGGER_RESET = True
    return bm25s


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/orchestra_jax/bm25` (usually `~/.cache/orchestra_jax/bm25`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "orchestra_jax" / "bm25"


class CorpusError(ValueError):
    """A corpus that cannot be indexed; the message names the file and, for a row, the line."""


@dataclass(frozen=True)
class Document:
    """One corpus entry."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class BM25Settings:
    """Everything besides the corpus that changes the index (and so the cache key)."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stopwords: str | None = "en"  # "en" or None
    lower: bool = True
    token_pattern: str = r"(?u)\b\w\w+\b"
    include_title: bool = True  # index "title + text" rather than the text alone


def _field(row: dict[str, Any], name: str, where: str, *, required: bool) -> str:
    value = row.get(name)
    if value is None:
        if required:
            raise CorpusError(f"{where}: missing field {name!r} (keys: {sorted(row)})")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CorpusError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return str(value)


def load_corpus(
    path: str | os.PathLike[str],
    *,
    id_field: str = "id",
    title_field: str = "title",
    text_field: str = "text",
) -> list[Document]:
    """Read a JSONL corpus, one object per line; blank lines are skipped.

    `id` and `text` are required (`id` may be a string or an integer), `title` is optional.
    Any bad row raises `CorpusError` naming the file and the 1-based line number.
    """
    path = Path(path)
    documents: list[Document] = []
    seen: dict[str, int] = {}
    for where, line_no, row in iter_jsonl_objects(path, CorpusError, "corpus file"):
        doc = Document(
            doc_id=_field(row, id_field, where, required=True),
            title=_field(row, title_field, where, required=False),
            text=_field(row, text_field, where, required=True),
        )
        if doc.doc_id in seen:
            raise CorpusError(
                f"{where}: duplicate id {doc.doc_id!r} (first on line {seen[doc.doc_id]})"
            )
        seen[doc.doc_id] = line_no
        documents.append(doc)
    if not documents:
        raise CorpusError(f"{path}: the corpus has no documents")
    return documents


def _corpus_key(path: Path, settings: BM25Settings, fields: tuple[str, str, str]) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    bm25s = _import_bm25s()
    header = json.dumps(
        {
            "format": _CACHE_FORMAT,
            "bm25s": getattr(bm25s, "__version__", "?"),
            "settings": settings.__dict__,
            "fields": fields,
        },
        sort_keys=True,
    )
    digest.update(header.encode())
    return digest.hexdigest()[:32]


@dataclass
class _Request:
    query: str
    k: int
    future: asyncio.Future[list[SearchHit]]
    allow: frozenset[str] | None = None


class _LoopBatcher:
    """Gathers one event loop's pending queries and runs them as batches, one at a time."""

    def __init__(self, owner: LocalSearch) -> None:
        self.owner = owner
        self.pending: list[_Request] = []
        self.oldest_at = 0.0  # loop time at which the oldest pending request arrived
        self.full = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None

    def submit(self, request: _Request) -> None:
        loop = asyncio.get_running_loop()
        if not self.pending:
            self.oldest_at = loop.time()
        self.pending.append(request)
        if len(self.pending) >= self.owner.max_batch:
            self.full.set()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._drain(), name="bm25-batcher")

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Request] = []
        try:
            while self.pending:
                wait_s = self.oldest_at + self.owner.max_wait_s - loop.time()
                if len(self.pending) < self.owner.max_batch and wait_s > 0:
                    try:
                        await asyncio.wait_for(self.full.wait(), wait_s)
                    except TimeoutError:
                        pass
                size = self.owner.max_batch
                batch, self.pending = self.pending[:size], self.pending[size:]
                if self.pending:  # left over from a full batch: they go right after this one
                    self.oldest_at = float("-inf")
                if len(self.pending) < size:
                    self.full.clear()
                batch = [r for r in batch if not r.future.done()]  # callers that gave up
                if not batch:
                    continue
                groups: dict[frozenset[str] | None, list[_Request]] = {}
                for request in batch:  # one retrieve call per allow-list (one mask each)
                    groups.setdefault(request.allow, []).append(request)
                for allow, group in groups.items():
                    await self._serve(group, allow)
                batch = []
        finally:
            # Cancelled (the loop is shutting down): nobody will serve the rest.
            for request in [*batch, *self.pending]:
                if not request.future.done():
                    request.future.cancel()
            if self.worker is asyncio.current_task():
                self.worker = None

    async def _serve(self, group: list[_Request], allow: frozenset[str] | None) -> None:
        queries = [r.query for r in group]
        k = max(r.k for r in group)
        args = (queries, k) if allow is None else (queries, k, allow)
        try:
            results = await asyncio.to_thread(self.owner._retrieve, *args)
        except Exception as err:
            for request in group:
                if not request.future.done():
                    request.future.set_exception(err)
        else:
            for request, hits in zip(group, results, strict=True):
                if not request.future.done():
                    request.future.set_result(hits[: request.k])


class LocalSearch:
    """BM25 top-k search over a JSONL corpus, with an on-disk index cache and micro-batching.

    `await search(query, k)` may be called from any number of coroutines; `search_many` is the
    synchronous batch form. `retrieve_calls` counts `bm25s` retrieve calls (one per batch),
    `cache_hit` says whether the index came from the cache, `build_s` how long it took to get it.
    """

    def __init__(
        self,
        corpus_path: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        settings: BM25Settings | None = None,
        id_field: str = "id",
        title_field: str = "title",
        text_field: str = "text",
        max_batch: int = 64,
        max_wait_s: float = 0.005,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.corpus_path = Path(corpus_path)
        self.settings = settings or BM25Settings()
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.retrieve_calls = 0
        self._lock = threading.Lock()
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBatcher] = (
            weakref.WeakKeyDictionary()
        )
        started = time.perf_counter()
        self.documents = load_corpus(
            self.corpus_path, id_field=id_field, title_field=title_field, text_field=text_field
        )
        fields = (id_field, title_field, text_field)
        self.cache_key = _corpus_key(self.corpus_path, self.settings, fields)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.index_dir = root / self.cache_key
        self._retriever, self.cache_hit = self._load_or_build()
        self._positions: dict[str, int] | None = None  # doc id -> index row, built on demand
        self._masks: OrderedDict[frozenset[str], Any] = OrderedDict()
        self.build_s = time.perf_counter() - started

    def __len__(self) -> int:
        return len(self.documents)

    # -- the index -----------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str], *, return_ids: bool) -> Any:
        s = self.settings
        return _import_bm25s().tokenize(
            list(texts),
            lower=s.lower,
            token_pattern=s.token_pattern,
            stopwords=s.stopwords,
            return_ids=return_ids,
            show_progress=False,
        )

    def _load_or_build(self) -> tuple[Any, bool]:
        bm25s = _import_bm25s()
        marker = self.index_dir / "complete.json"
        if marker.is_file():
            try:
                retriever = bm25s.BM25.load(
                    str(self.index_dir), load_vocab=True, show_progress=False
                )
                if int(retriever.scores["num_docs"]) == len(self.documents):
                    return retriever, True
            except Exception:  # any unreadable cache (partial copy, old format) is rebuilt
                pass
        s = self.settings
        retriever = bm25s.BM25(k1=s.k1, b=s.b, method=s.method, backend="numpy")
        texts = [
            f"{d.title}\n{d.text}" if s.include_title and d.title else d.text
            for d in self.documents
        ]
        retriever.index(self._tokenize(texts, return_ids=True), show_progress=False)
        self._save(retriever)
        return retriever, False

    def _save(self, retriever: Any) -> None:
        """Write into a temporary sibling, then rename: readers never see half an index."""
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.cache_key}.", dir=self.index_dir.parent))
        try:
            retriever.save(str(tmp), show_progress=False)
            (tmp / "complete.json").write_text(
                json.dumps({"corpus": str(self.corpus_path), "num_docs": len(self.documents)})
            )
            if self.index_dir.exists():
                shutil.rmtree(self.index_dir, ignore_errors=True)
            try:
                os.replace(tmp, self.index_dir)
            except OSError:
                pass  # another process published the same index first; theirs is as good
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- retrieval -----------------------------------------------------------------------------

    def _mask(self, allow: frozenset[str]) -> Any:
        """The BM25 weight mask of an allow-list: 1 for allowed documents, 0 elsewhere (ids
        the corpus lacks are ignored: they can never come back). Call under `_lock`."""
        mask = self._masks.get(allow)
        if mask is not None:
            self._masks.move_to_end(allow)
            return mask
        import numpy as np  # bm25s' own dependency

        if self._positions is None:
            self._positions = {d.doc_id: i for i, d in enumerate(self.documents)}
        mask = np.zeros(len(self.documents), dtype=np.float32)
        rows = [self._positions[d] for d in allow if d in self._positions]
        mask[rows] = 1.0
        self._masks[allow] = mask
        if len(self._masks) > _MASKS_KEPT:
            self._masks.popitem(last=False)
        return mask

    def _retrieve(
        self, queries: Sequence[str], k: int, allow: frozenset[str] | None = None
    ) -> list[list[SearchHit]]:
        """Score a batch of queries with one `retrieve` call (runs in a worker thread); with
        `allow`, only those documents are scored."""
        for query in queries:
            if not isinstance(query, str):
                raise TypeError(f"a search query must be a string, got {type(query).__name__}")
        if not queries:
            return []
        k = max(1, min(int(k), len(self.documents)))
        tokens = self._tokenize(queries, return_ids=False)
        with self._lock:
            mask = None if allow is None else self._mask(allow)
            self.retrieve_calls += 1
            indices, scores = self._retriever.retrieve(
                tokens, k=k, backend_selection="numpy", show_progress=False, n_threads=0,
                weight_mask=mask,
            )  # fmt: skip
        out: list[list[SearchHit]] = []
        for row_idx, row_scores in zip(indices, scores, strict=True):
            hits = []
            for idx, score in zip(row_idx.tolist(), row_scores.tolist(), strict=True):
                if score <= 0.0:
                    continue  # no query term in the document (or not allowed): not a hit
                doc = self.documents[idx]
                hits.append(
                    SearchHit(doc_id=doc.doc_id, title=doc.title, text=doc.text, score=float(score))
                )
            out.append(hits)
        return out

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, doc_ids: Collection[str] | None = None
    ) -> list[list[SearchHit]]:
        """Top-`k` hits for each query, best first, with one retrieve call; `doc_ids` (an
        allow-list) restricts the hits to those documents."""
        _check_k(k)
        return self._retrieve(list(queries), k, _check_allow(doc_ids))

    async def search(
        self, query: str, k: int = 10, *, doc_ids: Collection[str] | None = None
    ) -> list[SearchHit]:
        """Top-`k` hits for `query`, best first; batched with concurrent callers. `doc_ids`
        (an allow-list; None: the whole corpus) returns only those documents, still up to `k`."""
        _check_k(k)
        if not isinstance(query, str):
            raise TypeError(f"a search query must be a string, got {type(query).__name__}")
        allow = _check_allow(doc_ids)
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = _LoopBatcher(self)
        future: asyncio.Future[list[SearchHit]] = loop.create_future()
        batcher.submit(_Request(query, k, future, allow))
        return await future

    def __repr__(self) -> str:
        return (
            f"LocalSearch({str(self.corpus_path)!r}, docs={len(self.documents)}, "
            f"cache_hit={self.cache_hit})"
        )


def _check_allow(doc_ids: Collection[str] | None) -> frozenset[str] | None:
    if doc_ids is None:
        return None
    if isinstance(doc_ids, str) or not all(isinstance(d, str) for d in doc_ids):
        raise TypeError(f"doc_ids must be a collection of document ids, got {doc_ids!r}")
    return doc_ids if isinstance(doc_ids, frozenset) else frozenset(doc_ids)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
