"""`HFTokenizer`: the `Tokenizer` protocol over a HF `tokenizers` (Rust) tokenizer.

Pretrained policies come as HF checkpoint directories (tokenizer.json + tokenizer_config.json)
or as GGUF files; both load here without transformers. `save()` writes the layout transformers 5
writes itself, so `transformers.AutoTokenizer.from_pretrained(directory)` reloads the same
tokenizer and chat template -- checkpoints we train stay usable by the rest of the ecosystem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as RustTokenizer

from orchestra_jax.tokenization.backend_base import ChatTokenizerBase
from orchestra_jax.tokenization.gguf_vocab import (
    GGUFVocab,
    PreTokenizerFlavour,
    build_byte_level_bpe,
    read_gguf_vocab,
)

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATES_DIR = "additional_chat_templates"


def _token_text(value: Any) -> str | None:
    """A special token from a config: a string, or an AddedToken dict `{"content": ...}`."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _read_chat_templates(directory: Path, config: Mapping[str, Any]) -> str | dict | None:
    """The chat template(s) of a HF directory; the .jinja files win over the config entry."""
    templates: dict[str, str] = {}
    inline = config.get("chat_template")
    if isinstance(inline, str):
        templates["default"] = inline
    elif isinstance(inline, list):  # [{"name": ..., "template": ...}, ...]
        templates.update({t["name"]: t["template"] for t in inline
                          if isinstance(t, Mapping) and "name" in t and "template" in t})
    if (directory / CHAT_TEMPLATE_FILE).is_file():
        templates["default"] = (directory / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    if (directory / CHAT_TEMPLATES_DIR).is_dir():
        for file in sorted((directory / CHAT_TEMPLATES_DIR).glob("*.jinja")):
            templates[file.stem] = file.read_text(encoding="utf-8")
    if not templates:
        return None
    return templates["default"] if list(templates) == ["default"] else templates


class HFTokenizer(ChatTokenizerBase):
    """A `tokenizers.Tokenizer` plus the special tokens and chat template a checkpoint declares."""

    def __init__(
        self,
        tokenizer: RustTokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        chat_template: str | Mapping[str, str] | None = None,
        extra_stop_token_ids: Sequence[int] = (),
    ) -> None:
        self._tokenizer = tokenizer
        self._special = {"bos_token": bos_token, "eos_token": eos_token,
                         "unk_token": unk_token, "pad_token": pad_token}
        for name, token in self._special.items():
            if token is not None and tokenizer.token_to_id(token) is None:
                raise ValueError(f"{name} {token!r} is not in the vocabulary")
        self.chat_template = dict(chat_template) if isinstance(chat_template, Mapping) \
            else chat_template
        stops = [self.eos_token_id, *extra_stop_token_ids]
        self._stop_ids = tuple(dict.fromkeys(i for i in stops if i is not None))
        self._vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_directory(cls, directory: str | Path) -> HFTokenizer:
        """Load a HF tokenizer directory (tokenizer.json, tokenizer_config.json, templates).

        Special tokens come from tokenizer_config.json (else special_tokens_map.json); extra
        stop ids from generation_config.json's `eos_token_id`, which may list several.
        """
        directory = Path(directory)
        if not (directory / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{directory}: no tokenizer.json")
        tokenizer = RustTokenizer.from_file(str(directory / "tokenizer.json"))
        config = _read_json(directory / "tokenizer_config.json")
        fallback = _read_json(directory / "special_tokens_map.json")
        special = {name: _token_text(config.get(name, fallback.get(name)))
                   for name in SPECIAL_TOKEN_NAMES}
        eos_ids = _read_json(directory / "generation_config.json").get("eos_token_id")
        if isinstance(eos_ids, int):
            eos_ids = [eos_ids]
        return cls(
            tokenizer,
            **special,
            chat_template=_read_chat_templates(directory, config),
            extra_stop_token_ids=[i for i in eos_ids or () if isinstance(i, int)],
        )

    @classmethod
    def from_gguf(
        cls, path: str | Path, *, pre_tokenizer: PreTokenizerFlavour = "llama.cpp"
    ) -> HFTokenizer:
        """Build the tokenizer of a GGUF file from its metadata (byte-level BPE only).

        `pre_tokenizer` picks whose text-splitting rules to follow where transformers and
        llama.cpp differ (see `gguf_vocab`); the default matches transformers' GGUF loader.
        """
        return cls.from_gguf_vocab(read_gguf_vocab(path), pre_tokenizer=pre_tokenizer)

    @classmethod
    def from_gguf_vocab(
        cls, vocab: GGUFVocab, *, pre_tokenizer: PreTokenizerFlavour = "llama.cpp"
    ) -> HFTokenizer:
        """`from_gguf` for metadata already read by `read_gguf_vocab` (the slow part)."""
        return cls(
            build_byte_level_bpe(vocab, pre_tokenizer),
            bos_token=vocab.token(vocab.bos_id),
            eos_token=vocab.token(vocab.eos_id),
            unk_token=vocab.token(vocab.unk_id),
            pad_token=vocab.token(vocab.pad_id),
            chat_template=vocab.chat_template,
            extra_stop_token_ids=vocab.extra_stop_ids,
        )

    # ---- the protocol -------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tokenizer.decode([int(i) for i in ids],
                                      skip_special_tokens=skip_special_tokens)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def backend(self) -> RustTokenizer:
        """The wrapped `tokenizers.Tokenizer` (offsets, batch encoding, ...)."""
        return self._tokenizer

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def id_to_token(self, i: int) -> str:
        token = self._tokenizer.id_to_token(i)
        if token is None:
            raise IndexError(f"id {i} is not in the vocabulary (size {self.vocab_size})")
        return token

    def save(self, directory: str | Path) -> None:
        """tokenizer.json, tokenizer_config.json and chat_template.jinja, as transformers 5 saves.

        The template is also kept inline in tokenizer_config.json for transformers 4 readers;
        extra stop ids belong to generation_config.json, which the model's saver owns.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tokenizer.save(str(directory / "tokenizer.json"))
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            **self._special,
        }
        if isinstance(self.chat_template, str):
            config["chat_template"] = self.chat_template
            (directory / CHAT_TEMPLATE_FILE).write_text(self.chat_template, encoding="utf-8")
        elif isinstance(self.chat_template, Mapping):
            config["chat_template"] = [{"name": k, "template": v}
                                       for k, v in self.chat_template.items()]
            for name, source in self.chat_template.items():
                target = directory / CHAT_TEMPLATE_FILE if name == "default" \
                    else directory / CHAT_TEMPLATES_DIR / f"{name}.jinja"
                target.parent.mkdir(exist_ok=True)
                target.write_text(source, encoding="utf-8")
        (directory / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def __repr__(self) -> str:
        return (f"HFTokenizer(vocab_size={self.vocab_size}, eos={self._special['eos_token']!r}, "
                f"chat_template={'yes' if self.chat_template else 'no'})")
