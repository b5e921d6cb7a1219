"""From generated token ids to OpenAI's `chat.completion` and `chat.completion.chunk` bodies.

The model writes one flat text; an OpenAI client expects it taken apart: text after a requested
`stop` string removed, `<think>` reasoning split out, `<tool_call>` blocks lifted into
`tool_calls` with string-encoded arguments, and a `finish_reason` that says which of these
ended the turn. Doing this once, here, keeps the streaming and non-streaming answers identical.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from orchestra_jax.rollout.requests import GenerationResult
from orchestra_jax.tokenization.reasoning import THINK_CLOSE, THINK_OPEN, split_reasoning
from orchestra_jax.tokenization.tool_calls import parse_tool_calls


@dataclass(frozen=True)
class AssistantReply:
    """One finished assistant turn, already in OpenAI's vocabulary."""

    content: str | None
    reasoning: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str  # "stop" | "length" | "tool_calls"
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[dict[str, Any]] | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        return message

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i != -1]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _without_spans(text: str, spans: Sequence[tuple[int, int]]) -> str:
    pieces, pos = [], 0
    for start, end in sorted(spans):
        pieces.append(text[pos:start])
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def _logprob_entries(tokenizer: Any, result: GenerationResult) -> list[dict[str, Any]]:
    entries = []
    for token_id, logprob in zip(result.token_ids, result.logprobs, strict=True):
        token = tokenizer.decode([token_id])
        entries.append({"token": token, "logprob": float(logprob),
                        "bytes": list(token.encode("utf-8")), "top_logprobs": []})
    return entries


def build_reply(
    tokenizer: Any,
    result: GenerationResult,
    *,
    prompt_tokens: int,
    stop: Sequence[str] = (),
    tools: Sequence[dict[str, Any]] | None = None,
    want_logprobs: bool = False,
) -> AssistantReply:
    """Take the generated text apart; `tools` None means tool calls are not looked for.

    Usage counts every generated token, the end-of-turn token and a matched stop sequence
    included: that is what the accelerator spent, and what a cost model should charge.
    """
    ids = list(result.token_ids)
    stop_ids = set(getattr(tokenizer, "stop_token_ids", ()) or ())
    if ids and ids[-1] in stop_ids:
        ids = ids[:-1]
    text, cut = _cut_at_stop(tokenizer.decode(ids), stop)
    finish = "stop" if cut else result.finish_reason
    calls: list[dict[str, Any]] = []
    if tools:
        found, _errors = parse_tool_calls(text, tools)
        if found:
            text = _without_spans(text, [c.span for c in found])
            finish = "tool_calls"
            calls = [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": c.name,
                                   "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                     for c in found]
    reasoning = None
    if THINK_OPEN in text or THINK_CLOSE in text:
        reasoning, text = split_reasoning(text)
    if calls:
        text = text.strip()
    return AssistantReply(
        content=text if text or not calls else None,
        reasoning=reasoning,
        tool_calls=calls,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(result.token_ids),
        logprobs=_logprob_entries(tokenizer, result) if want_logprobs else None,
    )


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(reply: AssistantReply, *, model: str, completion_id: str,
                    created: int | None = None) -> dict[str, Any]:
    """The non-streaming `chat.completion` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": reply.message(),
            "logprobs": None if reply.logprobs is None else {"content": reply.logprobs},
            "finish_reason": reply.finish_reason,
        }],
        "usage": reply.usage(),
    }


def text_pieces(tokenizer: Any, text: str) -> list[str]:
    """`text` cut at token boundaries (never inside a UTF-8 character); joined, it is `text`.

    The sampler returns a whole reply at once, so streamed deltas are re-cut from the final
    content; cutting where the tokenizer does makes them look like a token stream.
    """
    if not text:
        return []
    ids = tokenizer.encode(text)
    pieces, pos, start = [], 0, 0
    for end in range(1, len(ids) + 1):
        piece = tokenizer.decode(ids[start:end])
        if piece and not piece.endswith("\ufffd") and text.startswith(piece, pos):
            pieces.append(piece)
            pos += len(piece)
            start = end
        # else: half a character so far, or a piece that only reads right in context
    if pos != len(text):  # the round trip differed somewhere: send the remainder whole
        pieces.append(text[pos:])
    return pieces


def completion_chunks(tokenizer: Any, reply: AssistantReply, *, model: str,
                      completion_id: str, include_usage: bool,
                      created: int | None = None) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed answer, in order.

    Role first, then reasoning and content deltas, then the tool calls (each complete, with its
    index), then an empty delta carrying `finish_reason` (and the log-probs), then -- when the
    client asked for it -- a chunk with no choices and the usage.
    """
    created = int(time.time()) if created is None else created
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: str | None = None,
              logprobs: Any = None) -> dict[str, Any]:
        body = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": logprobs,
                                    "finish_reason": finish}])
        if include_usage:
            body["usage"] = None
        return body

    yield chunk({"role": "assistant", "content": ""})
    for piece in text_pieces(tokenizer, reply.reasoning or ""):
        yield chunk({"reasoning_content": piece})
    for piece in text_pieces(tokenizer, reply.content or ""):
        yield chunk({"content": piece})
    if reply.tool_calls:
        yield chunk({"tool_calls": [dict(call, index=i)
                                    for i, call in enumerate(reply.tool_calls)]})
    logprobs = None if reply.logprobs is None else {"content": reply.logprobs}
    yield chunk({}, reply.finish_reason, logprobs)
    if include_usage:
        yield dict(base, choices=[], usage=reply.usage())
