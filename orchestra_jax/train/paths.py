"""Run directories that may live in cloud storage: `gs://bucket/run` stays a URL end to end.

Why: on a TPU pod every host writes into one run directory, which must be shared storage
(`gs://…`). `pathlib.Path("gs://b/run").absolute()` silently turns the URL into a local folder
named `gs:`; `etils.epath.Path` keeps the URL and hands it to the same storage layer orbax and
TensorBoard use (fsspec's gcsfs, or TensorFlow's gfile where installed), while a local path
stays an ordinary local path.

Files that a library can only write locally (a SentencePiece vocabulary, a world's cache, the
warm start's Hugging Face directory) are built in `local_mirror(workdir)`: the workdir itself
when it is local, else a folder under `$ORCHESTRA_LOCAL_CACHE` (default
`~/.cache/orchestra_jax/runs`) named after the URL, and uploaded with `upload_tree`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from etils import epath

#: URL schemes whose paths are handed on as URLs (everything else is a local path).
URL_SCHEMES = ("gs://", "s3://", "az://", "hf://")


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for a cloud-storage URL such as `gs://bucket/run`."""
    return str(path).startswith(URL_SCHEMES)


def run_path(path: str | os.PathLike[str]) -> epath.Path:
    """A run directory as an `epath.Path`: a URL kept as it is, a local path made absolute
    (`~` expanded)."""
    if is_url(path):
        return epath.Path(str(path))
    return epath.Path(Path(path).expanduser().absolute())


def local_mirror(workdir: str | os.PathLike[str]) -> Path:
    """Where files that must be written locally are built for `workdir` (module docstring)."""
    if not is_url(workdir):
        return Path(str(workdir))
    root = Path(os.environ.get("ORCHESTRA_LOCAL_CACHE",
                               Path.home() / ".cache" / "orchestra_jax" / "runs"))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(workdir)).strip("_")
    return root / name


def upload_tree(local: Path, target: epath.Path) -> None:
    """Copy the files under `local` to `target` (a no-op when they are the same place).
    Existing files are overwritten; the copy is not atomic, so callers upload finished
    directories only."""
    if not is_url(target) and Path(str(target)).resolve() == local.resolve():
        return
    for source in sorted(p for p in local.rglob("*") if p.is_file()):
        destination = target / source.relative_to(local).as_posix()
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(source.read_bytes())


__all__ = ["URL_SCHEMES", "is_url", "local_mirror", "run_path", "upload_tree"]
