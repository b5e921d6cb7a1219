"""`load_tokenizer`: pick the backend from what is on disk, so callers never have to."""

from __future__ import annotations

from pathlib import Path

from orchestra_jax.tokenization.hf_tokenizer import HFTokenizer
from orchestra_jax.tokenization.protocol import Tokenizer
from orchestra_jax.tokenization.sentencepiece_tokenizer import (
    SP_CONFIG_FILE,
    SentencePieceTokenizer,
)


def _is_sentencepiece_file(path: Path) -> bool:
    # mistral-common names its models `tokenizer.model.v3`, hence the look at every suffix.
    return ".model" in path.suffixes


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load the tokenizer stored at `path`.

    - a directory with tokenizer.json: HF `tokenizers` backend (a HF checkpoint, or our save);
    - a directory with sp_tokenizer_config.json or a single `*.model`: SentencePiece backend;
    - a `.gguf` file: HF backend built from the GGUF metadata;
    - a `.model` file (also `*.model.v3`): SentencePiece backend;
    - a tokenizer.json file: the HF backend of its directory.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return HFTokenizer.from_directory(path)
        if (path / SP_CONFIG_FILE).is_file() or len(list(path.glob("*.model"))) == 1:
            return SentencePieceTokenizer.from_directory(path)
        raise FileNotFoundError(
            f"{path}: no tokenizer found (looked for tokenizer.json, {SP_CONFIG_FILE}, or a "
            "single *.model file)"
        )
    if path.is_file():
        if path.suffix == ".gguf":
            return HFTokenizer.from_gguf(path)
        if path.name == "tokenizer.json":
            return HFTokenizer.from_directory(path.parent)
        if _is_sentencepiece_file(path):
            return SentencePieceTokenizer.from_file(path)
        raise ValueError(
            f"{path}: not a tokenizer file (expected a .gguf, a SentencePiece .model or a "
            "tokenizer.json)"
        )
    raise FileNotFoundError(f"{path}: no such file or directory")
