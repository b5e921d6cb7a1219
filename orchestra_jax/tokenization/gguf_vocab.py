"""Rebuild a HF `tokenizers` tokenizer from the vocabulary a GGUF file carries in its metadata.

A GGUF has no tokenizer.json: llama.cpp stores the tokens, merges, token types and special ids
under `tokenizer.ggml.*`. For byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`:
SmolLM, Llama 3, Qwen ...) that is enough to rebuild the tokenizer. The pre-tokenizer (how text
is cut before BPE) is only named, by `tokenizer.ggml.pre`, so it comes from a table here.

Which split rules? transformers' GGUF loader is the reference the project checks against, and
for `smollm`/`starcoder`-style vocabularies it uses GPT-2's rule, while llama.cpp (and the
original SmolLM2 tokenizer.json) first isolate every digit. The two disagree only where
whitespace meets a digit (`"x  1"`). `pre_tokenizer="llama.cpp"` (default) matches the
tokenizer the model was trained with; `"transformers"` reproduces transformers' GGUF loader
token for token (the parity tests use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as RustTokenizer

PreTokenizerFlavour = Literal["transformers", "llama.cpp"]

# llama.cpp token types
_CONTROL = 3
_USER_DEFINED = 4

# Split rules, by `tokenizer.ggml.pre`. Absent names use GPT-2's rule (ByteLevel's built-in).
_LLAMA3_RULE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RULE = _LLAMA3_RULE.replace(r"\p{N}{1,3}", r"\p{N}")
_SPLIT_RULES = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"),
                    _LLAMA3_RULE),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_RULE),
}
# Vocabularies whose llama.cpp pre-tokenizer isolates each digit before GPT-2's rule.
_DIGIT_SPLITTING = frozenset(
    ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva")
)


class UnsupportedGGUFTokenizer(ValueError):
    """The GGUF describes a tokenizer this module cannot rebuild."""


@dataclass(frozen=True)
class GGUFVocab:
    """The tokenizer metadata of one GGUF file."""

    path: Path
    model: str
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    extra_stop_ids: tuple[int, ...]  # end-of-turn / end-of-message ids besides the EOS
    add_bos: bool
    add_eos: bool
    chat_template: str | None

    def token(self, i: int | None) -> str | None:
        return self.tokens[i] if i is not None and 0 <= i < len(self.tokens) else None


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_gguf_vocab(path: str | Path, reader: Any = None) -> GGUFVocab:
    """Read the `tokenizer.*` metadata of `path` (parsing takes a few seconds for 50k tokens).

    Pass an open `gguf.GGUFReader` of the same file as `reader` to avoid parsing it twice.
    """
    import gguf  # imported here: only GGUF users pay for it

    path = Path(path)
    if reader is None:
        reader = gguf.GGUFReader(str(path))
    model = _field(reader, "tokenizer.ggml.model")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if model is None or tokens is None:
        raise UnsupportedGGUFTokenizer(
            f"{path}: no tokenizer in this GGUF (field 'tokenizer.ggml.model' or "
            "'tokenizer.ggml.tokens' is missing)"
        )
    ids = {k: _field(reader, f"tokenizer.ggml.{k}_token_id")
           for k in ("bos", "eos", "unknown", "padding", "eot", "eom")}
    return GGUFVocab(
        path=path,
        model=str(model),
        pre=_field(reader, "tokenizer.ggml.pre"),
        tokens=list(tokens),
        token_types=list(_field(reader, "tokenizer.ggml.token_type", [])),
        merges=list(_field(reader, "tokenizer.ggml.merges", [])),
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        unk_id=ids["unknown"],
        pad_id=ids["padding"],
        extra_stop_ids=tuple(i for i in (ids["eot"], ids["eom"]) if i is not None),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        add_eos=bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
        chat_template=_field(reader, "tokenizer.chat_template"),
    )


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (space is `Ġ`, newline `Ċ`)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _pre_tokenizer(pre: str | None, flavour: PreTokenizerFlavour) -> Any:
    rule = _SPLIT_RULES.get(pre or "")
    if rule is not None:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(rule), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if flavour == "llama.cpp" and pre in _DIGIT_SPLITTING:
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    return byte_level


def _post_processor(vocab: GGUFVocab) -> Any:
    """Adds BOS/EOS around a sequence when the GGUF says so (only for add_special_tokens)."""
    bos = vocab.token(vocab.bos_id) if vocab.add_bos else None
    eos = vocab.token(vocab.eos_id) if vocab.add_eos else None
    head, tail = ([bos] if bos else []), ([eos] if eos else [])
    specials = [(t, i) for t, i in ((bos, vocab.bos_id), (eos, vocab.eos_id)) if t]
    return processors.TemplateProcessing(
        single=[*head, "$A", *tail],
        pair=[*head, "$A", *tail, *head, "$B:1", *tail],
        special_tokens=specials,
    )


def build_byte_level_bpe(
    vocab: GGUFVocab, flavour: PreTokenizerFlavour = "transformers"
) -> RustTokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` equal to the one the GGUF describes.

    Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain
    added tokens, so both are matched whole in text instead of being cut into bytes.
    """
    if vocab.model != "gpt2":
        raise UnsupportedGGUFTokenizer(
            f"{vocab.path}: field 'tokenizer.ggml.model' is {vocab.model!r}; only byte-level "
            "BPE ('gpt2') vocabularies can be rebuilt"
        )
    spell = _byte_alphabet()
    alphabet = set(spell.values())
    types = vocab.token_types or [1] * len(vocab.tokens)
    table: dict[str, int] = {}
    for i, (token, kind) in enumerate(zip(vocab.tokens, types, strict=False)):
        if kind not in (_CONTROL, _USER_DEFINED) and not set(token) <= alphabet:
            token = "".join(spell[b] for b in token.encode("utf-8"))  # stored unspelled
        table[token] = i
    merges = [tuple(m.split(" ", 1)) for m in vocab.merges]
    tokenizer = RustTokenizer(models.BPE(vocab=table, merges=merges, fuse_unk=False,
                                         byte_fallback=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(vocab.pre, flavour)
    tokenizer.decoder = decoders.ByteLevel()
    added = [
        AddedToken(token, special=kind == _CONTROL, normalized=False)
        for token, kind in zip(vocab.tokens, types, strict=False)
        if kind in (_CONTROL, _USER_DEFINED)
    ]
    tokenizer.add_special_tokens([t for t in added if t.special])
    tokenizer.add_tokens([t for t in added if not t.special])
    tokenizer.post_processor = _post_processor(vocab)
    return tokenizer
