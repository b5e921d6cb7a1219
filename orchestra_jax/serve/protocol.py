"""Parse and check an OpenAI chat-completions request body before any token is generated.

Every client mistake must come back as a 400 that names the offending field (`param`), the way
OpenAI's own API answers, so that an agent framework pointed at `orchestra serve` gets an
actionable error instead of a 500 or a hung connection. This module is pure host code: it turns
the JSON body into a typed `ChatRequest` or raises `RequestError`, and knows nothing of models.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from orchestra_jax.tokenization.argument_schema import json_type_name

#: Roles a conversation may contain; `developer` is OpenAI's newer name for `system`.
ROLES = ("system", "developer", "user", "assistant", "tool")

#: Largest `stop` list accepted (OpenAI allows 4; a few more cost nothing here).
MAX_STOP_SEQUENCES = 16

#: Fields that change the meaning of a request and that this server cannot honour when set.
_UNSUPPORTED_NONZERO = ("presence_penalty", "frequency_penalty")


class RequestError(Exception):
    """A client error, rendered as OpenAI's `{"error": {...}}` body with an HTTP status."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int = 400, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.error_type = error_type

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients parse into their `APIStatusError`."""
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completions request.

    `messages` are plain dicts ready for a chat template: content flattened to a string (or
    absent on an assistant turn that only calls tools) and tool-call arguments kept as the JSON
    strings the client sent. `max_tokens` None means "as many as the context allows".
    """

    messages: list[dict[str, Any]]
    model: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str = "auto"
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def uses_tools(self) -> bool:
        """Whether the prompt must present tools or earlier tool traffic to the model."""
        return bool(self.tools) or any(
            m["role"] == "tool" or m.get("tool_calls") for m in self.messages
        )


def _type_name(value: Any) -> str:
    """JSON type names as OpenAI's errors use them (an integer is a "number")."""
    name = json_type_name(value)
    return "number" if name == "integer" else name


def _wrong_type(param: str, expected: str, value: Any) -> RequestError:
    return RequestError(f"'{param}' must be {expected}, got {_type_name(value)}", param=param)


def _number(body: dict, name: str, default: float, low: float, high: float,
            *, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _wrong_type(name, "a finite number", value)
    if value < low or value > high or (low_open and value == low):
        lower = f"({low}" if low_open else f"[{low}"
        raise RequestError(f"'{name}' must lie in {lower}, {high}], got {value}", param=name)
    return float(value)


def _integer(body: dict, name: str, *, minimum: int | None = None,
             maximum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(name, "an integer", value)
    if minimum is not None and value < minimum:
        raise RequestError(f"'{name}' must be >= {minimum}, got {value}", param=name)
    if maximum is not None and value > maximum:
        raise RequestError(f"'{name}' must be <= {maximum}, got {value}", param=name)
    return value


def _boolean(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong_type(name, "a boolean", value)
    return value


def _content_text(content: Any, param: str) -> str:
    """A message's content as one string: OpenAI allows a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for i, part in enumerate(content):
            where = f"{param}[{i}]"
            if not isinstance(part, dict):
                raise _wrong_type(where, "a content part object", part)
            if part.get("type") != "text":
                raise RequestError(
                    f"'{where}' has type {part.get('type')!r}; this server reads only text parts",
                    param=where)
            if not isinstance(part.get("text"), str):
                raise _wrong_type(f"{where}.text", "a string", part.get("text"))
            pieces.append(part["text"])
        return "".join(pieces)
    raise _wrong_type(param, "a string or a list of text parts", content)


def _function_entry(entry: Any, where: str) -> dict[str, Any]:
    """The `function` object of a `{"type": "function", "function": {"name": ...}}` entry (a
    tool definition or an assistant's tool call), checked; errors name `where`."""
    if not isinstance(entry, dict):
        raise _wrong_type(where, "an object", entry)
    if entry.get("type", "function") != "function":
        raise RequestError(f"'{where}.type' must be 'function', got {entry.get('type')!r}",
                           param=f"{where}.type")
    fn = entry.get("function")
    if not isinstance(fn, dict):
        raise _wrong_type(f"{where}.function", "an object", fn)
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise _wrong_type(f"{where}.function.name", "a non-empty string", fn.get("name"))
    return fn


def _tool_calls(calls: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise _wrong_type(param, "an array", calls)
    out = []
    for i, call in enumerate(calls):
        where = f"{param}[{i}]"
        fn = _function_entry(call, where)
        name = fn["name"]
        arguments = fn.get("arguments", "{}")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if not isinstance(arguments, str):
            raise _wrong_type(f"{where}.function.arguments", "a JSON string", arguments)
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise _wrong_type(f"{where}.id", "a string", call_id)
        entry: dict[str, Any] = {"type": "function",
                                 "function": {"name": name, "arguments": arguments}}
        if call_id is not None:
            entry["id"] = call_id
        out.append(entry)
    return out


def parse_message(message: Any, index: int) -> dict[str, Any]:
    """One conversation turn, checked and reduced to what chat templates read."""
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _wrong_type(param, "an object", message)
    role = message.get("role")
    if not isinstance(role, str):
        raise _wrong_type(f"{param}.role", "a string", role)
    if role not in ROLES:
        raise RequestError(f"'{param}.role' is {role!r}; expected one of {list(ROLES)}",
                           param=f"{param}.role")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = message.get("content")
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = _tool_calls(message["tool_calls"], f"{param}.tool_calls")
        if content is not None:
            out["content"] = _content_text(content, f"{param}.content")
    elif content is None:
        raise RequestError(f"'{param}.content' is required for a {role} message",
                           param=f"{param}.content")
    else:
        out["content"] = _content_text(content, f"{param}.content")
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _wrong_type(f"{param}.tool_call_id", "a non-empty string", call_id)
        out["tool_call_id"] = call_id
    for key in ("name", "reasoning_content"):
        value = message.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise _wrong_type(f"{param}.{key}", "a string", value)
            out[key] = value
    return out


def _tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong_type("tools", "an array", value)
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        fn = _function_entry(tool, where)
        parameters = fn.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _wrong_type(f"{where}.function.parameters", "a JSON-schema object",
                              parameters)
        tools.append({"type": "function", "function": fn})
    return tools or None


def _tool_choice(value: Any) -> str:
    if value is None:
        return "auto"
    if value in ("auto", "none"):
        return value
    shown = value if isinstance(value, str) else json.dumps(value)[:80]
    raise RequestError(
        f"'tool_choice' {shown!r} is not supported; this server accepts 'auto' or 'none'",
        param="tool_choice")


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _wrong_type("stop", "a string or an array of strings", value)
    if len(value) > MAX_STOP_SEQUENCES:
        raise RequestError(f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences, "
                           f"got {len(value)}", param="stop")
    for i, s in enumerate(value):
        if not isinstance(s, str) or not s:
            raise _wrong_type(f"stop[{i}]", "a non-empty string", s)
    return tuple(dict.fromkeys(value))


def _stream_options(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise _wrong_type("stream_options", "an object", options)
    if not stream:
        raise RequestError("'stream_options' is only allowed when 'stream' is true",
                           param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise _wrong_type("stream_options.include_usage", "a boolean", include)
    return include


def _reject_unsupported(body: dict) -> None:
    for name in _UNSUPPORTED_NONZERO:
        value = body.get(name)
        if value not in (None, 0, 0.0):
            raise RequestError(f"'{name}' is not supported by this server (send 0 or omit it)",
                               param=name)
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict)
                                        or response_format.get("type") != "text"):
        raise RequestError("'response_format' other than {'type': 'text'} is not supported",
                           param="response_format")


def parse_chat_request(raw: bytes | str) -> ChatRequest:
    """The request in `raw` (a JSON body), or a `RequestError` naming what is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"the request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {_type_name(body)}")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    messages = body.get("messages")
    if messages is None:
        raise RequestError("'messages' is required", param="messages")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array", messages)
    if not messages:
        raise RequestError("'messages' must contain at least one message", param="messages")
    parsed = [parse_message(m, i) for i, m in enumerate(messages)]
    n = _integer(body, "n", minimum=1)
    if n not in (None, 1):
        raise RequestError(f"'n' must be 1 (this server returns one choice), got {n}", param="n")
    max_tokens = _integer(body, "max_completion_tokens", minimum=1)
    legacy = _integer(body, "max_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = legacy
    top_k = _integer(body, "top_k", minimum=-1, maximum=2**31 - 1)
    stream = _boolean(body, "stream")
    logprobs = _boolean(body, "logprobs")
    top_logprobs = _integer(body, "top_logprobs", minimum=0, maximum=20) or 0
    if top_logprobs and not logprobs:
        raise RequestError("'top_logprobs' requires 'logprobs': true", param="top_logprobs")
    if top_logprobs:
        raise RequestError("'top_logprobs' > 0 is not supported: the sampler reports the "
                           "log-probability of the sampled token only", param="top_logprobs")
    _reject_unsupported(body)
    return ChatRequest(
        messages=parsed,
        model=model,
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        top_k=max(top_k or 0, 0),
        stop=_stop(body.get("stop")),
        seed=_integer(body, "seed"),
        stream=stream,
        include_usage=_stream_options(body, stream),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )
