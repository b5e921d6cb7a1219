"""What both tokenizer backends share: chat rendering and the special-token surface.

A backend sets `self._special` (role -> token text), `self._stop_ids` and `self.chat_template`
and implements `token_to_id`; everything here is derived from those.
"""

from __future__ import annotations

from typing import Any

from orchestra_jax.tokenization.chat_template import render_chat_template, select_template


class ChatTokenizerBase:
    """Chat rendering and special-token ids, shared by the HF and SentencePiece backends."""

    _special: dict[str, str | None]
    _stop_ids: tuple[int, ...]
    chat_template: Any

    def token_to_id(self, token: str) -> int | None:  # pragma: no cover - backends override
        raise NotImplementedError

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        *,
        chat_template: str | None = None,
        **variables: Any,
    ) -> str:
        """Render like transformers; `chat_template` overrides (a source or a template name)."""
        template = select_template(self.chat_template, chat_template, tools)
        return render_chat_template(template, messages, tools=tools,
                                    add_generation_prompt=add_generation_prompt,
                                    special_tokens=self._special, **variables)

    @property
    def bos_token_id(self) -> int | None:
        return self._id_of("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._id_of("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._id_of("pad_token")

    @property
    def unk_token_id(self) -> int | None:
        return self._id_of("unk_token")

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        return self._stop_ids

    @property
    def special_tokens(self) -> dict[str, str | None]:
        """`{"bos_token": ..., "eos_token": ..., "unk_token": ..., "pad_token": ...}`."""
        return dict(self._special)

    def _id_of(self, name: str) -> int | None:
        token = self._special[name]
        return None if token is None else self.token_to_id(token)
