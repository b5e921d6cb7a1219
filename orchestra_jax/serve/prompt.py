"""Turn a validated chat request into prompt token ids and sampling parameters.

The prompt must be the one the model was trained on, so it is rendered with the model's own
chat template. Many small chat models (SmolLM2 among them) ship a template that knows nothing of
tools: it cannot show a tool list, an assistant turn that only holds calls, or a tool's reply.
For those, when the vocabulary is ChatML, the prompt falls back to the project's ChatML + tools
template (`CHATML_TOOLS_TEMPLATE`), whose `<tool_call>` format is exactly what the reply parser
reads back. Everything here is host code and raises `RequestError` for what a client got wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from orchestra_jax.rollout.requests import SamplingParams
from orchestra_jax.serve.protocol import ChatRequest, RequestError
from orchestra_jax.tokenization.stops import stop_id_sequences
from orchestra_jax.tokenization.templates import CHATML_TOOLS_TEMPLATE, NAMED_CHAT_TEMPLATES

_SEED_SPACE = 2**32  # jax.random.key keeps 32 bits of a seed; fold, do not truncate


@dataclass(frozen=True)
class PreparedPrompt:
    """What the generator needs for one request, plus the text it was rendered from."""

    text: str
    prompt_ids: list[int]
    params: SamplingParams


def resolve_chat_template(value: str) -> str:
    """The Jinja source `value` names: a name in the project's one template registry
    (`tokenization.NAMED_CHAT_TEMPLATES`), else the path of a Jinja file.

    Anything else raises ValueError listing the known names: a mistyped name must not be
    rendered as a (constant) template source, which would silently drop every message. A
    registry name wins over a file of the same name in the working directory.
    """
    if value in NAMED_CHAT_TEMPLATES:
        return NAMED_CHAT_TEMPLATES[value]
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ValueError(f"{value!r} is neither a chat template name "
                     f"({', '.join(sorted(NAMED_CHAT_TEMPLATES))}) nor an existing Jinja file")


def _mentions_tools(template: Any) -> bool:
    if isinstance(template, Mapping):
        return "tool_use" in template or any(_mentions_tools(t) for t in template.values())
    return isinstance(template, str) and "tool" in template


class PromptBuilder:
    """Render, encode and bound one request for a given tokenizer and context length.

    `chat_template` overrides the tokenizer's template: a Jinja source (`resolve_chat_template`
    turns a registry name or a file into one).
    `stop_limits` is (most stop sequences, most tokens per sequence) the sampler accepts; longer
    stop strings are still honoured, on the host only.
    """

    def __init__(self, tokenizer: Any, *, context_length: int, default_max_tokens: int,
                 chat_template: str | None = None,
                 stop_limits: tuple[int, int] = (8, 16)) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        if default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.default_max_tokens = int(default_max_tokens)
        self.override = chat_template
        self.stop_limits = stop_limits
        native = getattr(tokenizer, "chat_template", None)
        self.native_handles_tools = _mentions_tools(native)
        self.chatml_vocab = all(tokenizer.token_to_id(t) is not None
                                for t in ("<|im_start|>", "<|im_end|>"))
        self._stop_ids: dict[str, tuple[int, ...] | None] = {}

    def template_for(self, request: ChatRequest) -> str | None:
        """The template to render `request` with; None means the tokenizer's own."""
        if self.override is not None:
            return self.override
        if request.uses_tools and not self.native_handles_tools:
            if self.chatml_vocab:
                return CHATML_TOOLS_TEMPLATE
            raise RequestError(
                "this model's chat template cannot show tools or tool messages; restart the "
                "server with --chat-template pointing at a template that can",
                param="tools" if request.tools else "messages")
        return None

    def render(self, request: ChatRequest) -> str:
        """The prompt text, exactly as the model's template writes it."""
        template = self.template_for(request)
        tools = request.tools if request.tool_choice != "none" else None
        kwargs = {} if template is None else {"chat_template": template}
        try:
            return self.tokenizer.apply_chat_template(request.messages, tools=tools,
                                                      add_generation_prompt=True, **kwargs)
        except (TemplateError, TypeError, ValueError, KeyError) as err:
            raise RequestError(f"the chat template could not render these messages: {err}",
                               param="messages", code="template_error") from None

    def stop_ids(self, stop: str) -> tuple[tuple[int, ...], ...] | None:
        """The id sequences of `stop` when the sampler can match it, else None.

        A stop string whose ids depend on the text before it (BPE merges across the boundary)
        cannot be matched on the device reliably; the host still cuts at it.
        """
        if stop not in self._stop_ids:
            self._stop_ids[stop] = stop_id_sequences(self.tokenizer, stop)
        return self._stop_ids[stop]

    def _stop_sequences(self, stops: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
        most, longest = self.stop_limits
        sequences: list[tuple[int, ...]] = []
        for stop in stops:
            for ids in self.stop_ids(stop) or ():
                if len(ids) <= longest and ids not in sequences:
                    sequences.append(ids)
        return tuple(sequences[:most])

    def prepare(self, request: ChatRequest) -> PreparedPrompt:
        """Render and encode `request`, check it fits the context, and pick sampling params."""
        text = self.render(request)
        prompt_ids = list(self.tokenizer.encode(text))
        if not prompt_ids:
            raise RequestError("the rendered prompt is empty", param="messages")
        n = len(prompt_ids)
        room = self.context_length - n
        if room < 1:
            raise RequestError(
                f"the prompt is {n} tokens long; this model's context is "
                f"{self.context_length} tokens, leaving no room for a reply",
                param="messages", code="context_length_exceeded")
        if request.max_tokens is not None and request.max_tokens > room:
            raise RequestError(
                f"the prompt ({n} tokens) plus max_tokens ({request.max_tokens}) exceeds this "
                f"model's context of {self.context_length} tokens; ask for at most {room}",
                param="max_tokens", code="context_length_exceeded")
        max_new = request.max_tokens or min(self.default_max_tokens, room)
        params = SamplingParams(
            max_new_tokens=max_new,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k if request.top_k < self.tokenizer.vocab_size else 0,
            stop_sequences=self._stop_sequences(request.stop),
            seed=None if request.seed is None else request.seed % _SEED_SPACE,
        )
        return PreparedPrompt(text=text, prompt_ids=prompt_ids, params=params)
