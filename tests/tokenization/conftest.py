"""Fixtures for the tokenization tests: the real tokenizers (skipped when their packages are
missing), the transformers references, and tiny GGUF files written on the spot."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestra_jax import assets
from orchestra_jax.tokenization import HFTokenizer
from orchestra_jax.tokenization.gguf_vocab import GGUFVocab, read_gguf_vocab


@pytest.fixture(scope="session")
def transformers():
    return pytest.importorskip("transformers", reason="transformers is the reference renderer")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    try:
        return assets.smollm2_gguf_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def smollm2_vocab(smollm2_gguf) -> GGUFVocab:
    """The GGUF's tokenizer metadata, read once (parsing 49k tokens takes seconds)."""
    return read_gguf_vocab(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2(smollm2_vocab) -> HFTokenizer:
    """Split rules as transformers' GGUF loader has them: the parity tests compare with it."""
    return HFTokenizer.from_gguf_vocab(smollm2_vocab, pre_tokenizer="transformers")


@pytest.fixture(scope="session")
def smollm2_reference(smollm2_gguf, transformers):
    """transformers' own tokenizer for the same GGUF (its GGUF loader, offline)."""
    return transformers.AutoTokenizer.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def mistral_models() -> dict[str, Path]:
    """The SentencePiece models shipped in mistral-common's package data, by file name."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mistral-common is not installed (`pip install --no-deps mistral-common`)")
    data = Path(spec.submodule_search_locations[0]) / "data"
    models = {p.name: p for p in sorted(data.glob("*.model*"))}
    if not models:
        pytest.skip(f"no SentencePiece models in {data}")
    return models


# ---- tiny GGUF files --------------------------------------------------------------------------

def _byte_alphabet() -> list[str]:
    """GPT-2's 256 printable byte stand-ins, in byte order (space -> 'Ġ')."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_USER_DEFINED = ["<think>"]
TINY_MERGES = ["Ġ t", "h e", "Ġt he", "e r"]
TINY_TOKENS = [*TINY_SPECIALS, *TINY_USER_DEFINED, *_byte_alphabet(), "Ġt", "he", "Ġthe", "er"]


def write_tiny_gguf(path: Path, *, model: str = "gpt2", pre: str | None = "gpt-2",
                    add_bos: bool = False, with_tokenizer: bool = True,
                    eot_id: int | None = None, chat_template: str | None = None) -> Path:
    """A GGUF holding only tokenizer metadata: 3 control tokens, `<think>`, bytes, 4 merges."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="llama")
    if with_tokenizer:
        writer.add_tokenizer_model(model)
        if pre is not None:
            writer.add_tokenizer_pre(pre)
        writer.add_token_list(TINY_TOKENS)
        types = [3] * len(TINY_SPECIALS) + [4] * len(TINY_USER_DEFINED)
        writer.add_token_types(types + [1] * (len(TINY_TOKENS) - len(types)))
        writer.add_token_merges(TINY_MERGES)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
        writer.add_pad_token_id(2)
        writer.add_add_bos_token(add_bos)
        if eot_id is not None:
            writer.add_eot_token_id(eot_id)
        if chat_template is not None:
            writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path) -> Callable[..., Path]:
    """`tiny_gguf(**options)` writes a tokenizer-only GGUF and returns its path."""
    counter = iter(range(1_000))
    return lambda **options: write_tiny_gguf(tmp_path / f"tiny{next(counter)}.gguf", **options)
