"""`SentencePieceTokenizer`: the `Tokenizer` protocol over a SentencePiece `.model`.

The tiny from-scratch policies use vocabularies trained here with SentencePiece, and Llama /
Mistral style checkpoints ship `.model` files. SentencePiece alone drops control pieces when
decoding and never produces them when encoding (`"</s>"` in text comes out as plain pieces),
while the rest of the project expects HF's behaviour -- a special token's text means that
token, in both directions. This wrapper adds that, plus a chat template and named special tokens
kept in a small JSON file next to the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from orchestra_jax.tokenization.backend_base import ChatTokenizerBase

SP_MODEL_FILE = "tokenizer.model"
SP_CONFIG_FILE = "sp_tokenizer_config.json"


class SentencePieceTokenizer(ChatTokenizerBase):
    """A SentencePiece model with HF-like special-token handling and a chat template.

    Special tokens default to the model's own unk/bos/eos/pad pieces. Chat models override
    `eos_token` with their end-of-turn piece (`<|im_end|>`); `special_tokens` names the
    user-defined pieces that `decode(..., skip_special_tokens=True)` drops along with control
    pieces. The text between control tokens is encoded one segment at a time, as HF's legacy
    SentencePiece tokenizers do, so a model with a dummy prefix adds one to each segment.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        chat_template: str | Mapping[str, str] | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        special_tokens: Sequence[str] = (),
        extra_stop_tokens: Sequence[str] = (),
        add_bos_token: bool | None = None,
        add_eos_token: bool = False,
    ) -> None:
        if isinstance(model, bytes):
            self._sp = spm.SentencePieceProcessor(model_proto=model)
        else:
            self._sp = spm.SentencePieceProcessor(model_file=str(model))
        sp = self._sp
        piece = self._piece_or_none
        self._special = {
            "bos_token": bos_token or piece(sp.bos_id()),
            "eos_token": eos_token or piece(sp.eos_id()),
            "unk_token": unk_token or piece(sp.unk_id()),
            "pad_token": pad_token or piece(sp.pad_id()),
        }
        for name, token in [*self._special.items(),
                            *(("special token", t) for t in (*special_tokens,
                                                             *extra_stop_tokens))]:
            if token is not None and self.token_to_id(token) is None:
                raise ValueError(f"{name} {token!r} is not a piece of this SentencePiece model")
        self.chat_template = dict(chat_template) if isinstance(chat_template, Mapping) \
            else chat_template
        self._marked_special = tuple(special_tokens)
        self._extra_stops = tuple(extra_stop_tokens)
        self._add_bos = (sp.bos_id() >= 0) if add_bos_token is None else add_bos_token
        self._add_eos = add_eos_token
        # Control and unknown pieces: SentencePiece neither parses nor prints them.
        self._controls = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())
                          if sp.is_control(i) or sp.is_unknown(i)}
        self._control_ids = frozenset(self._controls.values())
        by_length = sorted(self._controls, key=len, reverse=True)
        self._control_re = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        self._skippable = self._control_ids | {
            self.token_to_id(t) for t in special_tokens}
        stops = [self.eos_token_id, *(self.token_to_id(t) for t in extra_stop_tokens)]
        self._stop_ids = tuple(dict.fromkeys(i for i in stops if i is not None))

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> SentencePieceTokenizer:
        """A bare `.model` file (any name, e.g. mistral's `tokenizer.model.v3`)."""
        return cls(Path(path), **kwargs)

    @classmethod
    def from_directory(cls, directory: str | Path) -> SentencePieceTokenizer:
        """A directory written by `save()` (or one holding a single `.model` file)."""
        directory = Path(directory)
        config_path = directory / SP_CONFIG_FILE
        if not config_path.is_file():
            models = sorted(directory.glob("*.model"))
            if len(models) != 1:
                raise FileNotFoundError(
                    f"{directory}: expected {SP_CONFIG_FILE} or exactly one *.model file, "
                    f"found {[m.name for m in models]}")
            return cls(models[0])
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return cls(
            directory / config.get("model_file", SP_MODEL_FILE),
            chat_template=config.get("chat_template"),
            bos_token=config.get("bos_token"),
            eos_token=config.get("eos_token"),
            unk_token=config.get("unk_token"),
            pad_token=config.get("pad_token"),
            special_tokens=config.get("special_tokens", ()),
            extra_stop_tokens=config.get("extra_stop_tokens", ()),
            add_bos_token=config.get("add_bos_token"),
            add_eos_token=config.get("add_eos_token", False),
        )

    # ---- the protocol -------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        if add_special_tokens and self._add_bos and self.bos_token_id is not None:
            ids.append(self.bos_token_id)
        pos = 0
        for m in self._control_re.finditer(text) if self._control_re is not None else ():
            if m.start() > pos:
                ids += self._sp.encode(text[pos:m.start()])
            ids.append(self._controls[m.group()])
            pos = m.end()
        if pos < len(text):
            ids += self._sp.encode(text[pos:])
        if add_special_tokens and self._add_eos and self.eos_token_id is not None:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        parts: list[str] = []
        run: list[int] = []
        size = self.vocab_size
        for i in map(int, ids):
            if not 0 <= i < size:
                raise IndexError(f"id {i} is not in the vocabulary (size {size})")
            if skip_special_tokens and i in self._skippable:
                continue
            if i in self._control_ids:
                parts.append(self._sp.decode(run))
                parts.append(self._sp.id_to_piece(i))
                run = []
            else:
                run.append(i)
        parts.append(self._sp.decode(run))
        return "".join(parts)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        """The wrapped `sentencepiece.SentencePieceProcessor`."""
        return self._sp

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)  # unknown pieces map to unk_id, so check the spelling
        return i if 0 <= i < self._sp.get_piece_size() and self._sp.id_to_piece(i) == token \
            else None

    def id_to_token(self, i: int) -> str:
        if not 0 <= int(i) < self.vocab_size:
            raise IndexError(f"id {i} is not in the vocabulary (size {self.vocab_size})")
        return self._sp.id_to_piece(int(i))

    def save(self, directory: str | Path) -> None:
        """`tokenizer.model` plus `sp_tokenizer_config.json` (special tokens, chat template)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SP_MODEL_FILE).write_bytes(self._sp.serialized_model_proto())
        config = {
            "model_file": SP_MODEL_FILE,
            **self._special,
            "special_tokens": list(self._marked_special),
            "extra_stop_tokens": list(self._extra_stops),
            "add_bos_token": self._add_bos,
            "add_eos_token": self._add_eos,
            "chat_template": self.chat_template,
        }
        (directory / SP_CONFIG_FILE).write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def _piece_or_none(self, i: int) -> str | None:
        return self._sp.id_to_piece(i) if 0 <= i < self._sp.get_piece_size() else None

    def __repr__(self) -> str:
        return (f"SentencePieceTokenizer(vocab_size={self.vocab_size}, "
                f"eos={self._special['eos_token']!r}, "
                f"chat_template={'yes' if self.chat_template else 'no'})")
