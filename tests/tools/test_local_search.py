"""LocalSearch: correct BM25 hits, an on-disk index cache that is reused, micro-batched async
retrieval that never blocks the event loop, and clear errors for bad corpus rows."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestra_jax.tools.local_search import CorpusError, LocalSearch, load_corpus
from orchestra_jax.tools.search_types import SearchHit

FACTS = [
    {"id": "paris", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "berlin", "title": "Berlin", "text": "Berlin is the capital of Germany, on the Spree."},
    {"id": "nile", "title": "Nile", "text": "The Nile is a major river flowing north in Africa."},
    {
        "id": "everest",
        "title": "Mount Everest",
        "text": "Everest is the highest mountain above sea level, in the Himalaya.",
    },
]


def write_corpus(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    lines = [json.dumps(row) for row in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def numbered_rows(n: int) -> list[dict]:
    """Each row carries a unique made-up word, so query i must retrieve row i."""
    return [
        {"id": f"doc{i}", "title": f"Entry {i}", "text": f"The keyword zq{i}x names entry {i}."}
        for i in range(n)
    ]


@pytest.fixture
def facts_corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "facts.jsonl", FACTS)


def test_top_hit_is_the_matching_document_with_scores_best_first(facts_corpus, tmp_path):
    search = LocalSearch(facts_corpus, cache_dir=tmp_path / "cache")
    [hits] = search.search_many(["capital of Germany"], k=3)
    assert isinstance(hits[0], SearchHit)
    assert hits[0].doc_id == "berlin" and hits[0].title == "Berlin"
    assert hits[0].text == FACTS[1]["text"]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(h.score > 0 for h in hits)
    # The title is indexed too: "Mount" appears only in Everest's title.
    [hits] = search.search_many(["mount"], k=2)
    assert [h.doc_id for h in hits] == ["everest"]


def test_query_with_no_known_term_returns_no_hits(facts_corpus, tmp_path):
    search = LocalSearch(facts_corpus, cache_dir=tmp_path / "cache")
    assert search.search_many(["xylophone quasar", "", "the of and"], k=3) == [[], [], []]


def test_k_larger_than_the_corpus_is_clamped(facts_corpus, tmp_path):
    search = LocalSearch(facts_corpus, cache_dir=tmp_path / "cache")
    [hits] = search.search_many(["capital city river mountain"], k=50)
    assert 1 <= len(hits) <= len(FACTS)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        search.search_many(["capital"], k=0)


def test_second_construction_reuses_the_cached_index(facts_corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = LocalSearch(facts_corpus, cache_dir=cache)
    assert not first.cache_hit
    index_files = {p: p.stat().st_mtime_ns for p in first.index_dir.iterdir()}
    assert index_files, "the index was not written to the cache"

    import bm25s

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index was rebuilt although the cache holds it")

    monkeypatch.setattr(bm25s.BM25, "index", no_rebuild)
    second = LocalSearch(facts_corpus, cache_dir=cache)
    assert second.cache_hit and second.index_dir == first.index_dir
    assert {p: p.stat().st_mtime_ns for p in second.index_dir.iterdir()} == index_files
    assert second.search_many(["largest city of France"], k=1)[0][0].doc_id == "paris"


def test_changed_corpus_or_settings_get_a_fresh_index(facts_corpus, tmp_path):
    from orchestra_jax.tools.local_search import BM25Settings

    cache = tmp_path / "cache"
    first = LocalSearch(facts_corpus, cache_dir=cache)
    write_corpus(
        facts_corpus,
        [*FACTS, {"id": "rome", "title": "Rome", "text": "Rome is the capital of Italy."}],
    )
    edited = LocalSearch(facts_corpus, cache_dir=cache)
    assert not edited.cache_hit and edited.cache_key != first.cache_key
    assert edited.search_many(["capital of Italy"], k=1)[0][0].doc_id == "rome"
    other = LocalSearch(facts_corpus, cache_dir=cache, settings=BM25Settings(k1=1.2))
    assert not other.cache_hit and other.cache_key != edited.cache_key


def test_a_half_written_cache_is_rebuilt(facts_corpus, tmp_path):
    cache = tmp_path / "cache"
    first = LocalSearch(facts_corpus, cache_dir=cache)
    for path in first.index_dir.glob("*.npy"):
        path.write_bytes(b"garbage")
    again = LocalSearch(facts_corpus, cache_dir=cache)
    assert not again.cache_hit
    assert again.search_many(["capital of Germany"], k=1)[0][0].doc_id == "berlin"


def test_200_concurrent_searches_are_answered_by_few_batched_retrieve_calls(tmp_path):
    n = 200
    corpus = write_corpus(tmp_path / "numbered.jsonl", numbered_rows(n))
    search = LocalSearch(corpus, cache_dir=tmp_path / "cache", max_batch=64, max_wait_s=0.005)

    async def run() -> list[list[SearchHit]]:
        return await asyncio.gather(*(search.search(f"zq{i}x", k=1 + i % 3) for i in range(n)))

    results = asyncio.run(run())
    # Every caller got its own answer, with its own k...
    assert [hits[0].doc_id for hits in results] == [f"doc{i}" for i in range(n)]
    assert all(len(hits) <= 1 + i % 3 for i, hits in enumerate(results))
    # ...from a handful of retrieve calls instead of 200.
    assert search.retrieve_calls <= math.ceil(n / 64) + 1, search.retrieve_calls


def test_searches_wait_at_most_a_few_ms_for_company(tmp_path):
    corpus = write_corpus(tmp_path / "numbered.jsonl", numbered_rows(20))
    search = LocalSearch(corpus, cache_dir=tmp_path / "cache", max_batch=64, max_wait_s=0.01)

    async def lone_query() -> tuple[list[SearchHit], float]:
        started = time.perf_counter()
        hits = await search.search("zq3x", k=1)
        return hits, time.perf_counter() - started

    hits, waited = asyncio.run(lone_query())
    assert hits[0].doc_id == "doc3" and search.retrieve_calls == 1
    assert waited < 1.0  # one batch window plus one retrieve, not a hang until max_batch


def test_retrieval_runs_off_the_event_loop_thread(tmp_path):
    corpus = write_corpus(tmp_path / "numbered.jsonl", numbered_rows(20))

    class RecordingSearch(LocalSearch):
        def _retrieve(self, queries, k):
            self.threads.append(threading.get_ident())
            return super()._retrieve(queries, k)

    search = RecordingSearch(corpus, cache_dir=tmp_path / "cache")
    search.threads = []

    async def run() -> int:
        await asyncio.gather(*(search.search(f"zq{i}x") for i in range(10)))
        return threading.get_ident()

    loop_thread = asyncio.run(run())
    assert search.threads and loop_thread not in search.threads


def test_search_works_across_separate_event_loops_and_survives_a_cancelled_caller(tmp_path):
    corpus = write_corpus(tmp_path / "numbered.jsonl", numbered_rows(30))
    search = LocalSearch(corpus, cache_dir=tmp_path / "cache", max_wait_s=0.02)

    async def with_cancellation() -> list[list[SearchHit]]:
        doomed = asyncio.create_task(search.search("zq1x"))
        kept = [asyncio.create_task(search.search(f"zq{i}x")) for i in (2, 3)]
        await asyncio.sleep(0)
        doomed.cancel()
        return await asyncio.gather(*kept)

    for _ in range(2):  # a fresh loop each time, like two asyncio.run calls in a program
        hits = asyncio.run(with_cancellation())
        assert [h[0].doc_id for h in hits] == ["doc2", "doc3"]


def test_bad_query_type_is_a_clear_error(facts_corpus, tmp_path):
    search = LocalSearch(facts_corpus, cache_dir=tmp_path / "cache")
    with pytest.raises(TypeError, match="must be a string"):
        asyncio.run(search.search(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": "x", "title": "X"', "not valid JSON"),
        ('["x", "y"]', "must be a JSON object"),
        ('{"id": "x", "title": "X"}', "missing field 'text'"),
        ('{"id": "x", "text": {"nested": 1}}', "field 'text' must be a string"),
        ('{"id": "paris", "text": "again"}', "duplicate id 'paris'"),
    ],
)
def test_malformed_row_error_names_file_and_line(tmp_path, bad_line, message):
    path = write_corpus(tmp_path / "bad.jsonl", FACTS[:2], extra_lines=("", bad_line))
    with pytest.raises(CorpusError, match=message) as caught:
        LocalSearch(path, cache_dir=tmp_path / "cache")
    assert f"{path}:4" in str(caught.value)  # two rows, a blank line, then the bad one


def test_missing_or_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(CorpusError, match="no documents"):
        load_corpus(tmp_path / "empty.jsonl")


def test_field_names_are_configurable(tmp_path):
    rows = [
        {"pid": 7, "heading": "Gold", "body": "Gold is a dense yellow metal."},
        {"pid": 8, "heading": "Tin", "body": "Tin is a soft silvery metal."},
    ]
    path = write_corpus(tmp_path / "custom.jsonl", rows)
    search = LocalSearch(
        path, cache_dir=tmp_path / "cache", id_field="pid", title_field="heading", text_field="body"
    )
    hit = search.search_many(["yellow"], k=1)[0][0]
    assert (hit.doc_id, hit.title) == ("7", "Gold")


def test_using_local_search_does_not_import_jax(facts_corpus, tmp_path):
    code = (
        "import sys\n"
        "from orchestra_jax.tools.local_search import LocalSearch\n"
        f"s = LocalSearch({str(facts_corpus)!r}, cache_dir={str(tmp_path / 'c')!r})\n"
        "assert s.search_many(['Nile river'], k=1)[0][0].doc_id == 'nile'\n"
        "print('jax' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_building_an_index_logs_no_debug_lines_but_bm25s_warnings_still_show(facts_corpus,
                                                                             tmp_path):
    # bm25s sets its own logger to DEBUG on import; with a root handler at WARNING (what absl
    # installs when orbax logs at import) every build printed "DEBUG:bm25s:Building index ...".
    code = (
        "import logging\n"
        "logging.basicConfig()\n"
        "from orchestra_jax.tools.local_search import LocalSearch\n"
        f"s = LocalSearch({str(facts_corpus)!r}, cache_dir={str(tmp_path / 'c')!r})\n"
        "assert not s.cache_hit\n"
        "logging.getLogger('bm25s').warning('kept')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "DEBUG" not in out.stderr
    assert out.stderr.strip().splitlines() == ["WARNING:bm25s:kept"]


# ---- allow-lists ---------------------------------------------------------------------------


def test_an_allow_list_returns_only_allowed_documents_and_still_k_of_them(tmp_path):
    rows = [{"id": f"d{i}", "title": "", "text": f"river delta number {i} " + "river " * i}
            for i in range(8)]  # fmt: skip
    search = LocalSearch(write_corpus(tmp_path / "c.jsonl", rows), cache_dir=tmp_path / "cache")
    everything = search.search_many(["river"], k=3)[0]
    assert [h.doc_id for h in everything] == ["d7", "d6", "d5"]  # the unrestricted top 3
    allowed = {"d0", "d1", "d2", "d3"}
    hits = asyncio.run(search.search("river", 3, doc_ids=allowed))
    # Filtering the top 3 afterwards would find nothing; the mask scores only allowed docs.
    assert [h.doc_id for h in hits] == ["d3", "d2", "d1"]
    assert {h.doc_id for h in asyncio.run(search.search("river", 10, doc_ids=allowed))} == allowed
    assert asyncio.run(search.search("river", 3, doc_ids=["d5", "missing"]))[0].doc_id == "d5"
    assert asyncio.run(search.search("river", 3, doc_ids=[])) == []
    assert asyncio.run(search.search("river", 3, doc_ids=["nowhere"])) == []
    assert search.search_many(["river"], k=2, doc_ids=("d1", "d4"))[0][0].doc_id == "d4"


def test_concurrent_queries_with_different_allow_lists_each_get_their_own(tmp_path):
    search = LocalSearch(write_corpus(tmp_path / "n.jsonl", numbered_rows(12)),
                         cache_dir=tmp_path / "cache", max_wait_s=0.02)  # fmt: skip

    async def run() -> list[list[SearchHit]]:
        return await asyncio.gather(
            search.search("zq1x zq2x entry", 5, doc_ids={"doc1"}),
            search.search("zq1x zq2x entry", 5, doc_ids={"doc2", "doc9"}),
            search.search("zq1x zq2x", 5),
            search.search("zq3x", 5, doc_ids={"doc1"}),
        )

    calls_before = search.retrieve_calls
    restricted_1, restricted_2, free, nothing = asyncio.run(run())
    assert [h.doc_id for h in restricted_1] == ["doc1"]
    assert restricted_2[0].doc_id == "doc2"
    assert {h.doc_id for h in restricted_2} <= {"doc2", "doc9"}
    assert {h.doc_id for h in free} == {"doc1", "doc2"}
    assert nothing == []  # doc1 does not mention zq3x
    assert search.retrieve_calls - calls_before == 3  # one batch, one call per allow-list


def test_an_allow_list_must_be_a_collection_of_ids(facts_corpus, tmp_path):
    search = LocalSearch(facts_corpus, cache_dir=tmp_path / "cache")
    with pytest.raises(TypeError, match="doc_ids"):
        search.search_many(["paris"], doc_ids="paris")
    with pytest.raises(TypeError, match="doc_ids"):
        asyncio.run(search.search("paris", doc_ids=[1, 2]))
