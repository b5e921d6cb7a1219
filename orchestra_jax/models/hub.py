"""Hugging Face hub ids (`"Qwen/Qwen3-8B"`) as local checkpoint directories.

Why its own module: a hub id is the one model source that may need the network, and the
project must still run where there is none (TPU pods behind firewalls, CI). So the rule is
strict and in one place:

1. the local hub cache first (`local_files_only=True`): a model downloaded once, by us or by
   `huggingface-cli download`, never touches the network again;
2. a download only when the hub is reachable and not switched off (`HF_HUB_OFFLINE=1`);
3. otherwise `HubUnavailableError`, a `FileNotFoundError` whose message says what to do:
   download the model elsewhere with `huggingface-cli download ID --local-dir DIR` and pass
   DIR.

`huggingface_hub` is an optional dependency, imported only when a hub id is resolved. The
cache is the hub's own (`HF_HUB_CACHE`, read when the id is resolved, so setting it after
import works); only the files a checkpoint needs are fetched (config, safetensors, tokenizer,
chat template), never `.bin`, `.gguf` or ONNX copies of the weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: `org/name`: what the hub calls a repository id (no leading dot or slash, one slash).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: The files a checkpoint directory needs; everything else in a hub repository is left there.
CHECKPOINT_FILES = ("*.json", "*.safetensors", "*.model", "*.jinja", "*.txt",
                    "additional_chat_templates/*")

_TRUE = ("1", "true", "yes", "on")


class HubUnavailableError(FileNotFoundError):
    """A hub id that is neither in the local cache nor downloadable here."""


def looks_like_hub_id(source: str) -> bool:
    """`org/name` with no `..` (a relative path like `runs/x` matches too: callers ask only
    after finding no such path on disk)."""
    return bool(_HUB_ID.match(source)) and ".." not in source


def _what_to_do(repo_id: str) -> str:
    return (f"download it where the hub is reachable with `huggingface-cli download {repo_id} "
            f"--local-dir DIR` (or `hf download {repo_id} --local-dir DIR`), copy DIR here and "
            "pass DIR instead of the hub id")


def _offline(constants: object) -> bool:
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in _TRUE or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def resolve_hub_id(repo_id: str) -> Path:
    """The local snapshot directory of hub repository `repo_id` (cache first, then a download
    when the hub is reachable); `HubUnavailableError` saying what to do otherwise."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise HubUnavailableError(
            f"{repo_id!r} looks like a Hugging Face hub id, but huggingface_hub is not "
            f"installed: `pip install huggingface_hub`, or {_what_to_do(repo_id)}") from None
    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        local = snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True,
                                  allow_patterns=list(CHECKPOINT_FILES))
    except (OSError, ValueError, HfHubHTTPError):
        local = None  # not cached (or only partly): the hub may still have it
    if local is not None and (Path(local) / "config.json").is_file():
        return Path(local)
    if _offline(constants):
        raise HubUnavailableError(
            f"{repo_id!r} is not a local path and not in the Hugging Face cache "
            f"({cache_dir or constants.HF_HUB_CACHE}), and the hub is switched off "
            f"(HF_HUB_OFFLINE): {_what_to_do(repo_id)}")
    try:
        fetched = snapshot_download(repo_id, cache_dir=cache_dir,
                                    allow_patterns=list(CHECKPOINT_FILES))
    except Exception as exc:  # network, auth, unknown repo: one clear message for all
        raise HubUnavailableError(
            f"{repo_id!r} is not a local path and could not be fetched from the Hugging Face "
            f"hub ({type(exc).__name__}: {str(exc)[:300]}): {_what_to_do(repo_id)}") from exc
    if not (Path(fetched) / "config.json").is_file():
        raise HubUnavailableError(
            f"hub repository {repo_id!r} has no config.json: not a transformers checkpoint "
            "(a .gguf file or a packaged model name are the other sources)")
    return Path(fetched)


__all__ = ["CHECKPOINT_FILES", "HubUnavailableError", "looks_like_hub_id", "resolve_hub_id"]
