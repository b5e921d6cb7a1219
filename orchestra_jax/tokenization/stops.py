"""Stop strings as token-id sequences the sampler can match on the device.

A sampler stops a row when its newest tokens equal a stop sequence. BPE can merge a stop
string's first characters with what precedes it (`" </tool_call>"` starts with the single
token `Ġ</`), so one string may have several encodings. We encode the string after a few
different left contexts and keep each distinct tail that decodes to the string itself, or to
whitespace followed by it; if some context merges the string with a non-space character, it has
no reliable device-side form and the caller cuts the text on the host instead.
"""

from __future__ import annotations

from orchestra_jax.tokenization.protocol import Tokenizer
from orchestra_jax.tokenization.tool_calls import CALL_CLOSE

#: Left contexts a stop string is encoded after.
_PROBES = ("", "a", "A.", " ", "\n", "0", "word", "}", '"', "\n\n")


def _tail(tokenizer: Tokenizer, ids: list[int], stop: str) -> tuple[int, ...] | None:
    """The shortest tail of `ids` that decodes to `stop`, possibly after whitespace."""
    for start in range(len(ids) - 1, -1, -1):
        text = tokenizer.decode(ids[start:])
        if text.endswith(stop) and not text[: len(text) - len(stop)].strip():
            return tuple(ids[start:])
        if len(text) > len(stop) + 4:
            return None
    return None


def stop_id_sequences(tokenizer: Tokenizer, stop: str) -> tuple[tuple[int, ...], ...] | None:
    """Every id sequence `stop` ends up as in generated text, or None when that is unreliable."""
    if not stop:
        return None
    variants: list[tuple[int, ...]] = []
    for probe in _PROBES:
        tail = _tail(tokenizer, list(tokenizer.encode(probe + stop)), stop)
        if tail is None:
            return None
        if tail not in variants:
            variants.append(tail)
    return tuple(variants)


def tool_call_end_stops(tokenizer: Tokenizer) -> tuple[tuple[int, ...], ...]:
    """The id sequences of `</tool_call>`, for ending a turn right after its first tool call."""
    sequences = stop_id_sequences(tokenizer, CALL_CLOSE)
    if sequences is None:
        raise ValueError(f"this tokenizer has no stable encoding of {CALL_CLOSE!r}")
    return sequences
