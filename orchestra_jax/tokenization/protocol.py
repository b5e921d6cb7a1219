"""The `Tokenizer` protocol: the only tokenizer surface the rest of orchestra_jax relies on.

Policies come from two worlds -- pretrained checkpoints with a HF `tokenizers` vocabulary and
tiny from-scratch models with a SentencePiece one. Rollouts, reward code and the trainer talk to
both through this protocol, so swapping the policy never touches them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> ids, chat rendering and persistence for one vocabulary."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of `text`; special-token strings in it (`<|im_start|>`) become their single ids.

        `add_special_tokens` adds what the model adds around a plain sequence (a BOS, say);
        chat-rendered prompts already contain their markers, hence the default of False.
        """
        ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; special tokens are written out unless `skip_special_tokens`."""
        ...

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
    ) -> str:
        """The prompt for `messages` (and OpenAI-format `tools`), as transformers renders it."""
        ...

    @property
    def vocab_size(self) -> int:
        """One more than the largest id: the embedding table needs at least this many rows."""
        ...

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def eos_token_id(self) -> int | None:
        """The end-of-turn token for chat models (`<|im_end|>`), else the end-of-text token."""
        ...

    @property
    def pad_token_id(self) -> int | None: ...

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Every id that ends a generation (the EOS first)."""
        ...

    def token_to_id(self, token: str) -> int | None:
        """Id of the vocabulary entry spelled exactly `token`, or None."""
        ...

    def id_to_token(self, i: int) -> str:
        """The vocabulary entry (as the vocabulary spells it, e.g. `Ġthe`) of id `i`."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the files `load_tokenizer(directory)` reads back into an equal tokenizer."""
        ...
