"""Train a SentencePiece vocabulary for the tiny from-scratch policies.

The vocabulary must suit tool-calling chat: the ChatML and tool tags stay single tokens (so the
policy emits `<tool_call>` in one step and the parser can trust it), JSON and code keep their
exact whitespace (no normalisation, no dummy prefix space), any unseen character still encodes
(byte fallback), and the same corpus always gives the same model (one trainer thread, no input
sampling), so experiments are reproducible.

Known limit of SentencePiece: it writes spaces as U+2581 (`▁`), so that character in the input
comes back from `decode` as a plain space.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import sentencepiece as spm

from orchestra_jax.tokenization.sentencepiece_tokenizer import SentencePieceTokenizer
from orchestra_jax.tokenization.templates import CHAT_SPECIAL_TOKENS, CHATML_TOOLS_TEMPLATE

#: (piece, id) of the reserved pieces that come before the chat tokens.
RESERVED_PIECES = (("<unk>", 0), ("<s>", 1), ("</s>", 2), ("<pad>", 3))


def _chunks(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Texts cut at line ends into pieces of at most `max_bytes` (the trainer drops longer ones)."""
    for text in texts:
        if not text:
            continue
        if len(text.encode("utf-8")) <= max_bytes:
            yield text
            continue
        chunk, size = [], 0
        for line in text.splitlines(keepends=True):
            n = len(line.encode("utf-8"))
            if chunk and size + n > max_bytes:
                yield "".join(chunk)
                chunk, size = [], 0
            if n > max_bytes:  # one enormous line: cut it (a character split at a cut is lost)
                encoded = line.encode("utf-8")
                for i in range(0, len(encoded), max_bytes):
                    yield encoded[i:i + max_bytes].decode("utf-8", errors="ignore")
                continue
            chunk.append(line)
            size += n
        if chunk:
            yield "".join(chunk)


def train_sentencepiece(
    texts: Iterable[str],
    out_dir: str | Path,
    vocab_size: int = 2048,
    *,
    model_type: Literal["bpe", "unigram"] = "bpe",
    character_coverage: float = 0.9995,
    extra_special_tokens: Sequence[str] = (),
    chat_template: str | None = CHATML_TOOLS_TEMPLATE,
    max_sentence_bytes: int = 1 << 16,
) -> SentencePieceTokenizer:
    """Train on `texts`, save the tokenizer to `out_dir`, and return it loaded from there.

    Ids 0-3 are `<unk>`, `<s>`, `</s>`, `<pad>`; the chat and tool tags (`CHAT_SPECIAL_TOKENS`)
    and then `extra_special_tokens` follow as atomic pieces. `eos_token` is `<|im_end|>` (the
    end of an assistant turn), `</s>` also stops generation, and no BOS is added. `vocab_size`
    is an upper bound: a small corpus may give fewer pieces.
    """
    specials = list(dict.fromkeys([*CHAT_SPECIAL_TOKENS, *extra_special_tokens]))
    clash = {p for p, _ in RESERVED_PIECES} & set(specials)
    if clash:
        raise ValueError(f"{sorted(clash)} are reserved and cannot be extra special tokens")
    model = io.BytesIO()
    (unk, unk_id), (bos, bos_id), (eos, eos_id), (pad, pad_id) = RESERVED_PIECES
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_chunks(texts, max_sentence_bytes),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            user_defined_symbols=specials,
            unk_id=unk_id, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
            unk_piece=unk, bos_piece=bos, eos_piece=eos, pad_piece=pad,
            byte_fallback=True,
            character_coverage=character_coverage,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            hard_vocab_limit=False,
            max_sentence_length=max_sentence_bytes,
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as err:
        raise ValueError(f"SentencePiece training failed (vocab_size={vocab_size}): {err}") from err
    tokenizer = SentencePieceTokenizer(
        model.getvalue(),
        chat_template=chat_template,
        eos_token="<|im_end|>",
        special_tokens=("<|im_start|>", "<|im_end|>"),
        extra_stop_tokens=(eos,),
        add_bos_token=False,
    )
    tokenizer.save(out_dir)
    return SentencePieceTokenizer.from_directory(out_dir)
