"""A `ChatClient` for any server that speaks the OpenAI chat-completions protocol.

vLLM, SGLang, NIM, the llama.cpp server, OpenAI itself and this project's `orchestra serve` all
accept `POST {base_url}/chat/completions` and report token `usage`, which is what the reward
prices. The client is deliberately small: one aiohttp session per client (connection reuse
matters when hundreds of episodes call the same endpoint), one request per call, and no retries
of its own -- it classifies every failure as a `ToolError` and leaves retrying to the executor,
which knows the episode's deadline.

The API key, when there is one, is read from an environment variable when the client is built
(a missing key fails at start-up), sent only as a Bearer header, and redacted from every error
message; `repr` shows the variable's name, never its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import aiohttp

from orchestra_jax.tools.chat import ChatCompletion, check_generation_args, check_messages
from orchestra_jax.tools.http_errors import (
    SessionHolder,
    check_base_url,
    post_json,
    read_api_key,
    redact,
)
from orchestra_jax.tools.results import ToolError, ToolErrorKind


def _token_count(usage: Mapping[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


class OpenAIChatClient:
    """Chat completions from one model at one OpenAI-compatible endpoint.

    `base_url` includes the API prefix (`http://127.0.0.1:8000/v1`). `session` lends a shared
    aiohttp session (the caller closes it); otherwise the client creates its own inside the
    running event loop on first use and `aclose()` closes it. `max_tokens_field` names the
    length limit in the request (`"max_completion_tokens"` for OpenAI's reasoning models);
    `extra_body` adds server-specific fields (`{"chat_template_kwargs": {...}}` for vLLM, say),
    and a None value there removes a standard field (`{"temperature": None}` for models that
    accept only their default temperature).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        session: aiohttp.ClientSession | None = None,
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        extra_body: Mapping[str, Any] | None = None,
    ):
        self.base_url = check_base_url(base_url)
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(
                f"max_tokens_field must be max_tokens or max_completion_tokens, "
                f"got {max_tokens_field!r}"
            )
        self.model = model
        self.timeout_s = float(timeout_s)
        self.api_key_env = api_key_env
        self._api_key = read_api_key(api_key_env) if api_key_env else None
        self._max_tokens_field = max_tokens_field
        self._extra_body = dict(extra_body or {})
        self._sessions = SessionHolder(session)
        self._url = f"{self.base_url}/chat/completions"
        self._what = f"chat endpoint {self.base_url} (model {model})"

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    async def complete(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        hints: Mapping[str, Any] | None = None,
    ) -> ChatCompletion:
        """One chat completion; `hints` is ignored (it is for simulated experts only).

        Raises ToolError: CONNECTION (refused, reset), TIMEOUT (past `timeout_s`),
        RATE_LIMITED (429, with `retry_after_s`), SERVER_ERROR (5xx), CLIENT_ERROR (other 4xx),
        BAD_RESPONSE (not JSON, no choices, no usage), INVALID_ARGUMENTS (bad messages).
        """
        del hints  # never sent: it may hold the gold answer
        messages = check_messages(messages)
        check_generation_args(max_tokens, temperature)
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            self._max_tokens_field: max_tokens,
            "temperature": temperature,
            "stream": False,
        }
        for key, value in self._extra_body.items():
            if value is None:
                payload.pop(key, None)
            else:
                payload[key] = value
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        data, latency_s = await post_json(
            self._sessions.get(),
            self._url,
            payload,
            what=self._what,
            timeout_s=self.timeout_s,
            headers=headers,
            secrets=self._secrets(),
        )
        return self._parse(data, latency_s)

    def _bad(self, problem: str) -> ToolError:
        return ToolError(
            ToolErrorKind.BAD_RESPONSE, redact(f"{self._what}: {problem}", self._secrets())
        )

    def _parse(self, data: Any, latency_s: float) -> ChatCompletion:
        if not isinstance(data, Mapping):
            raise self._bad(f"reply is JSON but not an object: {type(data).__name__}")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            error = data.get("error")
            extra = f" (error: {str(error)[:300]})" if error else ""
            raise self._bad(f"reply has no choices{extra}")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if not isinstance(message, Mapping):
            raise self._bad("the first choice has no message object")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise self._bad(f"message content is {type(content).__name__}, not a string")
        tool_calls = message.get("tool_calls") or ()
        if not isinstance(tool_calls, list | tuple):
            raise self._bad("message tool_calls is not a list")
        usage = data.get("usage")
        if not isinstance(usage, Mapping):
            raise self._bad("reply has no usage (prompt_tokens, completion_tokens) to price")
        tokens_in = _token_count(usage, "prompt_tokens")
        tokens_out = _token_count(usage, "completion_tokens")
        if tokens_in is None or tokens_out is None:
            raise self._bad(f"usage lacks non-negative integer token counts: {dict(usage)}")
        finish_reason = choice.get("finish_reason")
        return ChatCompletion(
            text=content or "",
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_s=latency_s,
            model=self.model,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
            tool_calls=tuple(tool_calls),
        )

    async def aclose(self) -> None:
        """Close the client's own session (a lent session is left to its owner)."""
        await self._sessions.aclose()

    def __repr__(self) -> str:
        key = f", api_key_env={self.api_key_env!r}" if self.api_key_env else ""
        return f"OpenAIChatClient(base_url={self.base_url!r}, model={self.model!r}{key})"
