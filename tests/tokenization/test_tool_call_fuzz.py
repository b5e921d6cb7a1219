"""The tool-call parser never raises, whatever the policy writes (seeded random fuzzing)."""

from __future__ import annotations

import json
import random

from orchestra_jax.tokenization import ToolCallErrorKind, parse_tool_calls, split_reasoning
from tests.tokenization.parser_corpus import TOOLS, call

# Pieces that make the parser's life hard: tags, JSON punctuation, special tokens, odd text.
FRAGMENTS = [
    "<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_", "call>", "</", "<",
    "{", "}", "[", "]", ",", ":", '"', "\\", "\\u", "\\ud800", '"name"', '"arguments"',
    '"parameters"', '"get_weather"', '"search"', '"city"', '"Paris"', '"query"', "null",
    "true", "false", "NaN", "-Infinity", "1e999", "-0", "3.5", "12", " ", "\n", "\t",
    "<|im_end|>", "<|im_start|>", "<|", "|>", "<｜end▁of▁sentence｜>", "é", "😀", "\x00",
    "\ud800", "\u2028", '{"name": "now"}', '{"name": "get_weather", "arguments": {"city": 1}}',
    '"{\\"city\\": \\"x\\"}"',
]

VALID_OUTPUTS = [
    call("get_weather", {"city": "Paris", "unit": "celsius"}),
    "<think>plan</think>\nOK " + call("search", {"query": "q", "filters": {"site": "a"},
                                               "tags": ["x", "y"]}) + call("now"),
    "Sure!\n" + call("get_weather", json.dumps({"city": "Rome"})) + "<|im_end|>",
    "</think>" + call("log", {"msg": "nested {\"json\": [1, 2]}"}),
]


def check_invariants(text: str) -> None:
    calls, errors = parse_tool_calls(text, TOOLS)
    for e in errors:
        assert isinstance(e.kind, ToolCallErrorKind)
        assert 0 <= e.span[0] <= e.span[1] <= len(text)
        assert text[e.span[0]:e.span[1]] == e.snippet
        assert e.message
    previous_end = 0
    for c in calls:
        assert previous_end <= c.span[0] < c.span[1] <= len(text)
        assert c.text == text[c.span[0]:c.span[1]]
        assert isinstance(c.arguments, dict) and isinstance(c.name, str)
        previous_end = c.span[1]
    parse_tool_calls(text)  # without tools too
    split_reasoning(text)


def test_random_fragment_soup_never_raises():
    rng = random.Random(1234)
    for _ in range(3000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 40)))
        check_invariants(text)


def test_random_unicode_strings_never_raise():
    rng = random.Random(99)
    for _ in range(1000):
        text = "".join(chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0, 0x10FFFF)]))
                       for _ in range(rng.randint(0, 60)))
        check_invariants(text)


def test_random_bytes_never_raise():
    rng = random.Random(7)
    for _ in range(1000):
        data = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 80)))
        parse_tool_calls(data, TOOLS)
        parse_tool_calls(b"<tool_call>" + data + b"</tool_call>", TOOLS)


def test_every_truncation_of_valid_outputs_never_raises():
    for text in VALID_OUTPUTS:
        for end in range(len(text) + 1):
            check_invariants(text[:end])


def test_truncations_inside_a_call_report_it_missing_its_close_tag():
    text = call("get_weather", {"city": "Paris"})
    for end in range(len("<tool_call>"), len(text) - len("</tool_call>") + 1):
        calls, errors = parse_tool_calls(text[:end], TOOLS)
        assert calls == []
        assert [e.kind for e in errors] == [ToolCallErrorKind.MISSING_CLOSE_TAG]


def test_single_character_mutations_of_valid_outputs_never_raise():
    rng = random.Random(5)
    for text in VALID_OUTPUTS:
        for _ in range(300):
            i = rng.randrange(len(text))
            mutated = text[:i] + rng.choice(FRAGMENTS) + text[i + rng.randint(0, 3):]
            check_invariants(mutated)


def test_pathologically_deep_json_is_malformed_not_a_crash():
    for body in ("[" * 100_000, "[" * 50_000 + "]" * 50_000, '{"a":' * 50_000):
        calls, errors = parse_tool_calls(f"<tool_call>{body}</tool_call>", TOOLS)
        assert calls == []
        assert [e.kind for e in errors] in ([ToolCallErrorKind.MALFORMED_JSON],
                                            [ToolCallErrorKind.NOT_AN_OBJECT])


def test_deep_but_valid_arguments_validate_without_recursion_trouble():
    deep = {"msg": "x", "extra": json.loads("[" * 500 + "]" * 500)}
    calls, errors = parse_tool_calls(call("log", deep), TOOLS)
    assert errors == [] and calls[0].arguments == deep
