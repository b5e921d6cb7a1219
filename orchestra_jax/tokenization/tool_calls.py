"""Read Hermes/Qwen-style tool calls out of a model's message, and say precisely what went wrong.

Format: `<tool_call>{"name": "...", "arguments": {...}}</tool_call>`, any number per message.
During RL the policy writes this text, so the parser must never raise on it, and every defect
must come back as a structured `ToolCallError` whose `kind` can be counted, logged and turned
into a reward. Decisions:

- Calls inside reasoning (`<think>...</think>`, or before a leading `</think>`) are ignored, not
  errors: models rehearse calls while thinking. An unclosed `<think>` is an `unclosed_think`
  error, and nothing after it is parsed.
- Only well-formed calls that pass validation are returned; a call with errors is not run.
- `arguments` given as a JSON string (double-encoded, as OpenAI's API does) is decoded;
  `parameters` is accepted in place of `arguments`; absent or null arguments mean `{}`.
- Any `<|...|>` token (`<|im_start|>`, `<|eot_id|>`, ...) in the text is a
  `stray_special_token` error -- except one end-of-turn token ending the text, which is how a
  generation that stopped normally looks before the stop token is stripped.
- One defect, one error: a call can produce several (say two wrong-typed arguments).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestra_jax.tokenization.argument_schema import check_arguments, json_type_name

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

#: End-of-turn markers allowed once at the very end of a message.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end|>")

# Chat-control tokens: `<|name|>`, including DeepSeek's full-width bars `<｜name｜>`.
_SPECIAL_TOKEN = re.compile(r"<[|｜][^\s<>|｜]{1,80}[|｜]>")
_TAGS = re.compile(r"<think>|</think>|<tool_call>|</tool_call>")


class ToolCallErrorKind(StrEnum):
    """What went wrong; a `str`, so `Counter(e.kind for e in errors)` keys read naturally."""

    MALFORMED_JSON = "malformed_json"  # the call body (or a string `arguments`) is not JSON
    NOT_AN_OBJECT = "not_an_object"  # JSON, but the call or its arguments is not an object
    MISSING_CLOSE_TAG = "missing_close_tag"  # <tool_call> never closed (truncated output)
    STRAY_CLOSE_TAG = "stray_close_tag"  # </tool_call> without an opening tag
    MISSING_NAME = "missing_name"  # no "name", or one that is not a non-empty string
    UNKNOWN_TOOL = "unknown_tool"  # a name the given tools do not define
    MISSING_ARGUMENT = "missing_argument"  # a required argument is absent
    UNEXPECTED_ARGUMENT = "unexpected_argument"  # an argument the schema does not declare
    WRONG_TYPE = "wrong_type"  # an argument of the wrong JSON type
    INVALID_VALUE = "invalid_value"  # outside the schema's enum / const
    STRAY_SPECIAL_TOKEN = "stray_special_token"  # a <|...|> chat-control token in the text
    UNCLOSED_THINK = "unclosed_think"  # <think> never closed; the rest was not parsed


@dataclass(frozen=True)
class ToolCallError:
    """One defect. `snippet == text[span[0]:span[1]]` of the text that was parsed."""

    kind: ToolCallErrorKind
    message: str
    snippet: str
    span: tuple[int, int]
    tool: str | None = None  # the call's tool name, when it had a usable one
    path: str | None = None  # the offending argument, e.g. "arguments.location.city"


@dataclass(frozen=True)
class ToolCall:
    """A well-formed, validated call; `span` covers its tags in the parsed text."""

    name: str
    arguments: dict[str, Any]
    span: tuple[int, int]
    text: str = field(repr=False, default="")

    def as_openai(self) -> dict[str, Any]:
        """The call as an assistant message's `tool_calls` entry, ready for the chat template."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def index_tools(tools: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """`{name: parameters schema}` from OpenAI-format tools (bare function dicts also accepted)."""
    index: dict[str, Any] = {}
    for tool in tools:
        spec = tool.get("function", tool) if isinstance(tool, Mapping) else None
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tool needs a name (OpenAI format expected), got {tool!r}")
        index[name] = spec.get("parameters")
    return index


def error_counts(errors: Iterable[ToolCallError]) -> dict[str, int]:
    """How many errors of each kind, with every kind present (zeros included) for logging."""
    counts = dict.fromkeys((kind.value for kind in ToolCallErrorKind), 0)
    for error in errors:
        counts[str(error.kind)] += 1
    return counts


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> tuple[Any, str | None]:
    """(value, None) or (None, why-not); strict JSON (no NaN), and never raises."""
    try:
        return json.loads(text, parse_constant=_reject_constant), None
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as err:  # JSONDecodeError included
        return None, str(err)


class _Parser:
    def __init__(self, text: str, tools: dict[str, Any] | None) -> None:
        self.text = text
        self.tools = tools
        self.calls: list[ToolCall] = []
        self.errors: list[ToolCallError] = []

    def error(self, kind: ToolCallErrorKind, message: str, start: int, end: int,
              **extra: Any) -> None:
        self.errors.append(ToolCallError(kind, message, self.text[start:end], (start, end),
                                         **extra))

    def run(self) -> None:
        self.scan_special_tokens()
        self.scan_tags()
        self.errors.sort(key=lambda e: e.span)

    def scan_special_tokens(self) -> None:
        matches = list(_SPECIAL_TOKEN.finditer(self.text))
        if (matches and matches[-1].group() in END_OF_TURN_TOKENS
                and not self.text[matches[-1].end():].strip()):
            matches.pop()
        for m in matches:
            self.error(ToolCallErrorKind.STRAY_SPECIAL_TOKEN,
                       f"stray chat-control token {m.group()!r}", m.start(), m.end())

    def scan_tags(self) -> None:
        text = self.text
        pos = 0
        think_at = text.find("<think>")
        close_at = text.find("</think>")
        if close_at != -1 and (think_at == -1 or close_at < think_at):
            pos = close_at + len("</think>")  # reasoning that began before the output did
        open_at: int | None = None  # where the pending <tool_call> starts
        thinking_since: int | None = None
        for m in _TAGS.finditer(text, pos):
            tag = m.group()
            if thinking_since is not None:
                if tag == "</think>":
                    thinking_since = None
                continue
            if open_at is not None:  # inside a call body, think tags are plain text
                if tag == CALL_CLOSE:
                    self.call(open_at, m.end())
                    open_at = None
                elif tag == CALL_OPEN:
                    self.error(ToolCallErrorKind.MISSING_CLOSE_TAG,
                               "<tool_call> is not closed before the next <tool_call>",
                               open_at, m.start())
                    open_at = m.start()
            elif tag == CALL_OPEN:
                open_at = m.start()
            elif tag == CALL_CLOSE:
                self.error(ToolCallErrorKind.STRAY_CLOSE_TAG,
                           "</tool_call> without a matching <tool_call>", m.start(), m.end())
            elif tag == "<think>":
                thinking_since = m.start()
        if open_at is not None:
            self.error(ToolCallErrorKind.MISSING_CLOSE_TAG,
                       "<tool_call> is never closed (output truncated?)", open_at, len(text))
        if thinking_since is not None:
            self.error(ToolCallErrorKind.UNCLOSED_THINK,
                       "<think> is never closed; nothing after it was parsed",
                       thinking_since, len(text))

    def call(self, start: int, end: int) -> None:
        body = self.text[start + len(CALL_OPEN): end - len(CALL_CLOSE)].strip()
        if not body:
            self.error(ToolCallErrorKind.MALFORMED_JSON, "empty tool call", start, end)
            return
        payload, why = _loads(body)
        if why is not None:
            self.error(ToolCallErrorKind.MALFORMED_JSON, f"tool call is not JSON: {why}",
                       start, end)
            return
        if not isinstance(payload, dict):
            self.error(ToolCallErrorKind.NOT_AN_OBJECT,
                       f"tool call must be a JSON object, got {json_type_name(payload)}",
                       start, end)
            return
        name = payload.get("name")
        if not isinstance(name, str) or not name.strip():
            got = "no name" if "name" not in payload else f"name {name!r}"
            self.error(ToolCallErrorKind.MISSING_NAME,
                       f"tool call needs a non-empty string name, got {got}", start, end)
            return
        arguments = self.arguments(payload, name, start, end)
        if arguments is None:
            return
        if self.tools is not None:
            if name not in self.tools:
                known = ", ".join(sorted(self.tools)) or "none"
                self.error(ToolCallErrorKind.UNKNOWN_TOOL,
                           f"unknown tool {name!r} (known: {known})", start, end, tool=name)
                return
            problems = check_arguments(arguments, self.tools[name])
            for p in problems:
                self.error(ToolCallErrorKind(p.kind), p.message, start, end, tool=name,
                           path=p.path)
            if problems:
                return
        self.calls.append(ToolCall(name, arguments, (start, end), self.text[start:end]))

    def arguments(self, payload: dict, name: str, start: int, end: int) -> dict | None:
        key = "arguments" if "arguments" in payload else "parameters"
        arguments = payload.get(key)
        if arguments is None:
            return {}
        if isinstance(arguments, str):
            decoded, why = _loads(arguments)
            if why is not None:
                self.error(ToolCallErrorKind.MALFORMED_JSON,
                           f"{key} is a string that is not JSON: {why}", start, end,
                           tool=name, path=key)
                return None
            arguments = decoded
        if not isinstance(arguments, dict):
            self.error(ToolCallErrorKind.NOT_AN_OBJECT,
                       f"{key} must be a JSON object, got {json_type_name(arguments)}",
                       start, end, tool=name, path=key)
            return None
        return arguments


def parse_tool_calls(
    text: str | bytes,
    tools: Iterable[Mapping[str, Any]] | None = None,
) -> tuple[list[ToolCall], list[ToolCallError]]:
    """The valid tool calls in a model message, and every defect found (sorted by position).

    `tools` (OpenAI format) turns on name and argument checking. Never raises on any text;
    bytes are decoded as UTF-8 with replacement characters.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"parse_tool_calls expects the model's text, got {type(text).__name__}")
    parser = _Parser(text, index_tools(tools) if tools is not None else None)
    parser.run()
    return parser.calls, parser.errors
