"""A `gs://bucket/run` workdir stays a URL: the run's files reach the bucket's filesystem and
no local folder named `gs:` appears.

The bucket is fsspec's in-memory filesystem registered under the `gs` protocol, the layer both
`etils.epath` (without TensorFlow) and TensorBoard's writer use for `gs://` paths; so these
tests exercise the real path handling of the run directory, the TensorBoard writer, the
config and summary files and orbax's manager, with a filesystem other than the local one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from orchestra_jax.train.checkpoint import CheckpointError, CheckpointManager
from orchestra_jax.train.config import dump_config
from orchestra_jax.train.loop import prepare_workdir
from orchestra_jax.train.metrics import MetricsWriter
from orchestra_jax.train.paths import is_url, local_mirror, run_path, upload_tree


class _BucketInMemory(MemoryFileSystem):
    """fsspec's memory filesystem answering for gs:// (what gcsfs does against real GCS)."""

    protocol = ("gs", "gcs")
    root_marker = ""

    def __init__(self, *args, finalize_on_close: bool | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryFileSystem]:
    """gs:// served from memory; the test runs in an empty local folder it can inspect."""
    previous = {p: fsspec.registry.get(p) for p in ("gs", "gcs")}
    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, _BucketInMemory, clobber=True)
    from etils.epath import backend

    backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRA_LOCAL_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("gs")
    yield fs
    fs.rm("gs://bucket", recursive=True) if fs.exists("gs://bucket") else None
    for protocol, cls in previous.items():
        if cls is not None:
            fsspec.register_implementation(protocol, cls, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()


def _no_local_url_folder(root: Path) -> None:
    names = [name for _, dirs, files in os.walk(root) for name in dirs + files]
    assert not [n for n in names if n.startswith(("gs:", "gs%3A"))], names


def test_a_gs_workdir_stays_a_url(bucket: MemoryFileSystem, tmp_path: Path) -> None:
    workdir = prepare_workdir("gs://bucket/run")
    assert str(workdir) == "gs://bucket/run" and is_url(workdir)
    assert str(workdir / "checkpoints") == "gs://bucket/run/checkpoints"
    dump_config(__import__("ml_collections").ConfigDict({"a": 1}), workdir)
    assert bucket.cat("gs://bucket/run/config.json").strip() == b'{\n  "a": 1\n}'
    _no_local_url_folder(tmp_path)


def test_tensorboard_events_go_to_the_bucket(bucket: MemoryFileSystem, tmp_path: Path) -> None:
    writer = MetricsWriter(run_path("gs://bucket/run") / "tensorboard")
    writer.scalars(1, {"train/reward": 0.5})
    writer.close()
    events = bucket.glob("gs://bucket/run/tensorboard/*tfevents*")
    assert len(events) == 1 and bucket.size(events[0]) > 0
    _no_local_url_folder(tmp_path)


def test_orbax_is_handed_the_url(bucket: MemoryFileSystem, tmp_path: Path) -> None:
    """orbax opens gs:// through Google's storage client (its bucket-layout probe): without
    the [gcs] extra that is a clear error naming the directory, and nothing local is made."""
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("google-cloud-storage is installed: orbax would reach for the real bucket")
    with pytest.raises(CheckpointError, match=r"gs://bucket/run/checkpoints.*\[gcs\]"):
        CheckpointManager(run_path("gs://bucket/run") / "checkpoints")
    _no_local_url_folder(tmp_path)


def test_local_files_of_a_url_run_are_built_in_a_mirror_and_uploaded(
        bucket: MemoryFileSystem, tmp_path: Path) -> None:
    mirror = local_mirror("gs://bucket/run")
    assert mirror.is_relative_to(tmp_path / "cache")
    (mirror / "tokenizer").mkdir(parents=True)
    (mirror / "tokenizer" / "vocab.model").write_bytes(b"pieces")
    upload_tree(mirror, run_path("gs://bucket/run"))
    assert bucket.cat("gs://bucket/run/tokenizer/vocab.model") == b"pieces"
    _no_local_url_folder(tmp_path)


def test_a_local_workdir_stays_a_local_path(tmp_path: Path) -> None:
    workdir = prepare_workdir(tmp_path / "run")
    assert not is_url(workdir) and Path(str(workdir)).is_dir()
    assert local_mirror(workdir) == Path(str(workdir))
