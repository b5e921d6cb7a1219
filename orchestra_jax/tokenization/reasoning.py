"""Separate a model's `<think>` reasoning from the answer it gives.

Rewards, tool execution and the next prompt want the answer only; logging and length penalties
want the reasoning. Two output shapes exist in the wild: `<think>...</think>answer` and, for
models whose prompt already ends in `<think>` (Qwen3), `...reasoning</think>answer`.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def reasoning_spans(text: str) -> tuple[list[tuple[int, int]], bool]:
    """Character spans of reasoning in `text` (tags included) and whether the last is unclosed.

    A `</think>` seen before any `<think>` closes reasoning that began with the text. A `<think>`
    that is never closed runs to the end of the text (the output was cut while thinking).
    """
    spans: list[tuple[int, int]] = []
    first_open = text.find(THINK_OPEN)
    first_close = text.find(THINK_CLOSE)
    pos = 0
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        pos = first_close + len(THINK_CLOSE)
        spans.append((0, pos))
    while True:
        start = text.find(THINK_OPEN, pos)
        if start == -1:
            return spans, False
        end = text.find(THINK_CLOSE, start + len(THINK_OPEN))
        if end == -1:
            spans.append((start, len(text)))
            return spans, True
        pos = end + len(THINK_CLOSE)
        spans.append((start, pos))


def split_reasoning(text: str) -> tuple[str | None, str]:
    """`(reasoning, content)` of a model message; reasoning is None when there is no think tag.

    Both parts are stripped of surrounding whitespace. Several think blocks are joined with a
    blank line; an unclosed `<think>` makes the rest of the text reasoning.
    """
    spans, _ = reasoning_spans(text)
    if not spans:
        return None, text.strip()
    thoughts, content, pos = [], [], 0
    for start, end in spans:
        content.append(text[pos:start])
        inner = text[start:end]
        if inner.startswith(THINK_OPEN):
            inner = inner[len(THINK_OPEN):]
        if inner.endswith(THINK_CLOSE):
            inner = inner[: -len(THINK_CLOSE)]
        thoughts.append(inner.strip())
        pos = end
    content.append(text[pos:])
    return "\n\n".join(t for t in thoughts if t), "".join(content).strip()
