"""The chat-completion vocabulary every LLM client shares: the result type, the client protocol,
and the argument checks run before a request costs anything.

A leaf module on purpose: `experts` (which builds clients), `openai_client` and
`simulated_expert` (which are clients) all need these names, and keeping them here lets each of
those import this one and nothing of each other, so there is no import circle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from orchestra_jax.tools.results import ToolError, ToolErrorKind


@dataclass(frozen=True)
class ChatCompletion:
    """One finished chat completion and its measured usage.

    `tokens_in`/`tokens_out` are the server's usage counts (prompt / completion tokens);
    `latency_s` is the wall-clock of the request, or the simulated latency of a simulated
    expert; `model` is the model the client was configured for (the name prices are looked up
    by). `tool_calls` holds the reply's OpenAI-format tool calls, if it made any.
    """

    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    model: str
    finish_reason: str | None = None
    tool_calls: tuple = ()


@runtime_checkable
class ChatClient(Protocol):
    """Anything that turns chat messages into a `ChatCompletion`.

    Failures are raised as `ToolError` with a classified kind (connection, rate limit, ...) so
    the executor can retry or record them. `hints` is task metadata that only a simulated
    expert reads (task family, gold answer, role: "answer" | "query" | "code"); real endpoints
    ignore it, and it never goes on the wire.
    """

    async def complete(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        hints: Mapping[str, Any] | None = None,
    ) -> ChatCompletion: ...


def check_messages(messages: Any) -> list[dict]:
    """Validate chat messages before they cost anything; INVALID_ARGUMENTS names the defect.

    Each message is an object with a string `role`; `content` is a string, a list of content
    parts, or None (an assistant turn that only made tool calls).
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ToolError(
            ToolErrorKind.INVALID_ARGUMENTS,
            f"messages must be a non-empty list of message objects, got {type(messages).__name__}",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"message {index} must be an object, got {type(message).__name__}",
            )
        if not isinstance(message.get("role"), str):
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS, f"message {index} has no string 'role'"
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"message {index} content must be a string, a list of parts or null, "
                f"got {type(content).__name__}",
            )
    return [dict(m) for m in messages]


def check_generation_args(max_tokens: Any, temperature: Any) -> None:
    """Reject sampling arguments no server would accept, before sending them."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ToolError(
            ToolErrorKind.INVALID_ARGUMENTS, f"max_tokens must be an int >= 1, got {max_tokens!r}"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ToolError(
            ToolErrorKind.INVALID_ARGUMENTS, f"temperature must be a number, got {temperature!r}"
        )
    if not 0 <= temperature <= 2:
        raise ToolError(
            ToolErrorKind.INVALID_ARGUMENTS, f"temperature must lie in [0, 2], got {temperature!r}"
        )
