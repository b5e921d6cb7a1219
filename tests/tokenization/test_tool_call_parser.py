"""The tool-call parser on a corpus of valid and malformed model outputs."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from orchestra_jax.tokenization import (
    CHATML_TOOLS_TEMPLATE,
    ToolCallErrorKind,
    error_counts,
    parse_tool_calls,
    render_chat_template,
)
from tests.tokenization.parser_corpus import TOOLS, call

K = ToolCallErrorKind

def kinds(errors) -> list[ToolCallErrorKind]:
    return [e.kind for e in errors]


# ---- valid outputs ---------------------------------------------------------------------------

def test_single_call_is_parsed_with_its_span():
    text = "Let me check.\n" + call("get_weather", {"city": "Paris"})
    calls, errors = parse_tool_calls(text, TOOLS)
    assert errors == []
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    start, end = calls[0].span
    assert text[start:end] == calls[0].text
    assert text[start:].startswith("<tool_call>") and text[:end].endswith("</tool_call>")


def test_several_calls_in_one_message_keep_their_order():
    text = (call("get_weather", {"city": "Oslo"}) + "\nand\n"
            + call("search", {"query": "fjords"}) + call("now"))
    calls, errors = parse_tool_calls(text, TOOLS)
    assert errors == []
    assert [c.name for c in calls] == ["get_weather", "search", "now"]
    assert calls[2].arguments == {}


def test_nested_object_and_array_arguments_are_validated_and_kept():
    args = {"query": "jax", "filters": {"site": "github.com", "year": None},
            "tags": ["ml", "tpu"]}
    calls, errors = parse_tool_calls(call("search", args), TOOLS)
    assert errors == []
    assert calls[0].arguments == args


def test_double_encoded_arguments_string_is_decoded():
    text = call("get_weather", json.dumps({"city": "Lyon", "days": 2}))
    calls, errors = parse_tool_calls(text, TOOLS)
    assert errors == []
    assert calls[0].arguments == {"city": "Lyon", "days": 2}


def test_parameters_key_is_accepted_instead_of_arguments():
    text = '<tool_call>{"name": "get_weather", "parameters": {"city": "Rome"}}</tool_call>'
    calls, errors = parse_tool_calls(text, TOOLS)
    assert errors == [] and calls[0].arguments == {"city": "Rome"}


def test_null_arguments_mean_no_arguments():
    calls, errors = parse_tool_calls('<tool_call>{"name": "now", "arguments": null}</tool_call>',
                                     TOOLS)
    assert errors == [] and calls[0].arguments == {}


def test_without_tools_any_name_and_arguments_are_accepted():
    calls, errors = parse_tool_calls(call("anything", {"x": [1, {"y": None}]}))
    assert errors == []
    assert calls[0].name == "anything" and calls[0].arguments == {"x": [1, {"y": None}]}


def test_integral_float_counts_as_integer_and_integer_as_number():
    calls, errors = parse_tool_calls(call("rate", {"score": 4, "count": 3.0, "ok": False}), TOOLS)
    assert errors == [] and calls[0].arguments["count"] == 3.0


def test_additional_properties_true_allows_extra_arguments():
    calls, errors = parse_tool_calls(call("log", {"msg": "hi", "level": 3}), TOOLS)
    assert errors == [] and calls[0].arguments == {"msg": "hi", "level": 3}


def test_unicode_and_escapes_survive_in_arguments():
    args = {"query": "naïve café 😀 \"quoted\" \\ back\nslash"}
    calls, errors = parse_tool_calls(call("search", args), TOOLS)
    assert errors == [] and calls[0].arguments == args


def test_calls_inside_think_are_ignored_not_errors():
    text = ("<think>Maybe <tool_call>{\"name\": \"nope\"}</tool_call> or a broken "
            "<tool_call>{oops</think>\n" + call("now"))
    calls, errors = parse_tool_calls(text, TOOLS)
    assert errors == []
    assert [c.name for c in calls] == ["now"]


def test_reasoning_closed_by_a_leading_end_think_is_ignored():
    # Qwen3 style: the prompt ends in "<think>\n", so the output starts inside the reasoning.
    text = "plan: <tool_call>{broken</tool_call>\n</think>\n\n" + call("now")
    calls, errors = parse_tool_calls(text, TOOLS)
    assert errors == [] and [c.name for c in calls] == ["now"]


def test_one_trailing_end_of_turn_token_is_allowed():
    calls, errors = parse_tool_calls(call("now") + "<|im_end|>\n", TOOLS)
    assert errors == [] and len(calls) == 1


def test_think_tags_inside_a_call_body_are_plain_text():
    calls, errors = parse_tool_calls(call("log", {"msg": "<think> is a tag"}), TOOLS)
    assert errors == [] and calls[0].arguments["msg"] == "<think> is a tag"


def test_calls_rendered_by_our_template_parse_back_identically():
    tool_calls = [
        {"type": "function", "function": {"name": "get_weather",
                                          "arguments": {"city": "Zürich", "unit": "celsius"}}},
        {"type": "function", "function": {"name": "search",
                                          "arguments": json.dumps({"query": "snow"})}},
    ]
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": tool_calls}]
    rendered = render_chat_template(CHATML_TOOLS_TEMPLATE, messages, tools=TOOLS)
    reply = rendered.split("<|im_start|>assistant\n", 1)[1]
    calls, errors = parse_tool_calls(reply, TOOLS)
    assert errors == []
    assert [c.as_openai() for c in calls] == [
        tool_calls[0],
        {"type": "function", "function": {"name": "search", "arguments": {"query": "snow"}}},
    ]


# ---- malformed outputs -----------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}',  # missing a brace
    '{"name": "get_weather", "arguments": {"city": "Paris"}} trailing words',
    "{'name': 'get_weather', 'arguments': {}}",  # Python, not JSON
    '{"name": "rate", "arguments": {"score": NaN}}',  # not JSON either
    "",
    "   \n ",
])
def test_malformed_json_is_reported_and_nothing_is_called(body):
    calls, errors = parse_tool_calls(f"<tool_call>{body}</tool_call>", TOOLS)
    assert calls == []
    assert kinds(errors) == [K.MALFORMED_JSON]


def test_arguments_string_that_is_not_json_is_malformed():
    calls, errors = parse_tool_calls(call("get_weather", "city=Paris"), TOOLS)
    assert calls == [] and kinds(errors) == [K.MALFORMED_JSON]
    assert errors[0].path == "arguments" and errors[0].tool == "get_weather"


@pytest.mark.parametrize("body", [
    '["get_weather", {"city": "Paris"}]',
    '"get_weather"',
    '{"name": "get_weather", "arguments": ["Paris"]}',
    '{"name": "get_weather", "arguments": "\\"Paris\\""}',  # a JSON string holding a string
])
def test_call_or_arguments_that_are_not_objects_are_reported(body):
    calls, errors = parse_tool_calls(f"<tool_call>{body}</tool_call>", TOOLS)
    assert calls == [] and kinds(errors) == [K.NOT_AN_OBJECT]


def test_truncated_output_reports_a_missing_close_tag_and_keeps_earlier_calls():
    text = call("now") + '\n<tool_call>\n{"name": "get_weather", "argum'
    calls, errors = parse_tool_calls(text, TOOLS)
    assert [c.name for c in calls] == ["now"]
    assert kinds(errors) == [K.MISSING_CLOSE_TAG]
    assert errors[0].span[1] == len(text) and errors[0].snippet.startswith("<tool_call>")


def test_a_complete_body_without_close_tag_is_still_not_called():
    calls, errors = parse_tool_calls('<tool_call>{"name": "now", "arguments": {}}', TOOLS)
    assert calls == [] and kinds(errors) == [K.MISSING_CLOSE_TAG]


def test_open_tag_before_the_previous_call_closed():
    text = '<tool_call>{"name": "now"}\n' + call("get_weather", {"city": "Bern"})
    calls, errors = parse_tool_calls(text, TOOLS)
    assert [c.name for c in calls] == ["get_weather"]
    assert kinds(errors) == [K.MISSING_CLOSE_TAG]
    assert errors[0].snippet == '<tool_call>{"name": "now"}\n'


def test_close_tag_without_open_tag_is_stray():
    text = 'I will call it: {"name": "now"}</tool_call>'
    calls, errors = parse_tool_calls(text, TOOLS)
    assert calls == [] and kinds(errors) == [K.STRAY_CLOSE_TAG]
    assert errors[0].snippet == "</tool_call>"


def test_unknown_tool_name_is_reported_with_the_name():
    calls, errors = parse_tool_calls(call("get_wether", {"city": "Paris"}), TOOLS)
    assert calls == [] and kinds(errors) == [K.UNKNOWN_TOOL]
    assert errors[0].tool == "get_wether" and "get_weather" in errors[0].message


@pytest.mark.parametrize("payload, detail", [
    ({"arguments": {"city": "Paris"}}, "no name"),
    ({"name": 7, "arguments": {}}, "7"),
    ({"name": "", "arguments": {}}, "''"),
    ({"name": None}, "None"),
    ({"name": ["get_weather"]}, "get_weather"),
])
def test_missing_or_non_string_name_is_reported(payload, detail):
    text = f"<tool_call>{json.dumps(payload)}</tool_call>"
    calls, errors = parse_tool_calls(text, TOOLS)
    assert calls == [] and kinds(errors) == [K.MISSING_NAME]
    assert detail in errors[0].message


def test_missing_required_argument_names_its_path():
    calls, errors = parse_tool_calls(call("get_weather", {"unit": "celsius"}), TOOLS)
    assert calls == [] and kinds(errors) == [K.MISSING_ARGUMENT]
    assert errors[0].path == "arguments.city"


def test_missing_required_nested_argument_names_its_path():
    calls, errors = parse_tool_calls(call("search", {"query": "q", "filters": {"year": 2024}}),
                                     TOOLS)
    assert calls == [] and kinds(errors) == [K.MISSING_ARGUMENT]
    assert errors[0].path == "arguments.filters.site"


def test_missing_arguments_entirely_reports_each_required_one():
    calls, errors = parse_tool_calls('<tool_call>{"name": "get_weather"}</tool_call>', TOOLS)
    assert calls == [] and kinds(errors) == [K.MISSING_ARGUMENT]


def test_unexpected_arguments_are_reported_top_level_and_nested():
    text = call("search", {"query": "q", "limit": 5, "filters": {"site": "x", "lang": "en"}})
    calls, errors = parse_tool_calls(text, TOOLS)
    assert calls == []
    assert kinds(errors) == [K.UNEXPECTED_ARGUMENT, K.UNEXPECTED_ARGUMENT]
    assert sorted(e.path for e in errors) == ["arguments.filters.lang", "arguments.limit"]


def test_tool_without_parameters_rejects_any_argument():
    calls, errors = parse_tool_calls(call("now", {"tz": "UTC"}), TOOLS)
    assert calls == [] and kinds(errors) == [K.UNEXPECTED_ARGUMENT]


@pytest.mark.parametrize("tool, arguments, path", [
    ("get_weather", {"city": 75001}, "arguments.city"),
    ("get_weather", {"city": "Paris", "days": "3"}, "arguments.days"),
    ("get_weather", {"city": "Paris", "days": 2.5}, "arguments.days"),
    ("get_weather", {"city": None}, "arguments.city"),
    ("rate", {"ok": "true"}, "arguments.ok"),
    ("rate", {"score": True}, "arguments.score"),  # a boolean is not a number
    ("rate", {"count": False}, "arguments.count"),
    ("search", {"query": "q", "tags": ["a", 2]}, "arguments.tags[1]"),
    ("search", {"query": "q", "tags": "a,b"}, "arguments.tags"),
    ("search", {"query": "q", "filters": "github.com"}, "arguments.filters"),
    ("search", {"query": "q", "filters": {"site": "x", "year": "2024"}}, "arguments.filters.year"),
])
def test_wrong_argument_types_are_reported_with_their_path(tool, arguments, path):
    calls, errors = parse_tool_calls(call(tool, arguments), TOOLS)
    assert calls == [] and kinds(errors) == [K.WRONG_TYPE]
    assert errors[0].path == path and errors[0].tool == tool


def test_value_outside_enum_is_invalid():
    calls, errors = parse_tool_calls(call("get_weather", {"city": "Oslo", "unit": "kelvin"}),
                                     TOOLS)
    assert calls == [] and kinds(errors) == [K.INVALID_VALUE]
    assert errors[0].path == "arguments.unit"


def test_each_defect_of_one_call_is_its_own_error():
    text = call("get_weather", {"city": 1, "unit": "kelvin", "extra": True, "days": "2"})
    calls, errors = parse_tool_calls(text, TOOLS)
    assert calls == []
    assert Counter(kinds(errors)) == {K.WRONG_TYPE: 2, K.INVALID_VALUE: 1,
                                      K.UNEXPECTED_ARGUMENT: 1}
    assert {e.span for e in errors} == {(0, len(text))}


@pytest.mark.parametrize("text, token", [
    ("<tool_call><|im_start|>" + '{"name": "now"}</tool_call>', "<|im_start|>"),
    (call("now") + "<|eot_id|>" + call("now"), "<|eot_id|>"),
    ("Sure<|endoftext|> thing", "<|endoftext|>"),
    (call("now") + "<|im_start|>", "<|im_start|>"),  # only end-of-turn tokens may end a message
    ('<tool_call>{"name": "log", "arguments": {"msg": "<|python_tag|>"}}</tool_call>',
     "<|python_tag|>"),
    ("answer<｜end▁of▁sentence｜>more", "<｜end▁of▁sentence｜>"),
])
def test_stray_special_tokens_are_reported_where_they_are(text, token):
    _, errors = parse_tool_calls(text, TOOLS)
    stray = [e for e in errors if e.kind == K.STRAY_SPECIAL_TOKEN]
    assert [e.snippet for e in stray] == [token]
    assert text[stray[0].span[0]:stray[0].span[1]] == token


def test_special_token_inside_a_call_body_also_breaks_its_json():
    calls, errors = parse_tool_calls('<tool_call>{"name": "now"}<|im_end|></tool_call>', TOOLS)
    assert calls == []
    assert sorted(kinds(errors)) == sorted([K.STRAY_SPECIAL_TOKEN, K.MALFORMED_JSON])


def test_special_token_inside_a_string_argument_is_reported_but_the_call_stands():
    text = call("log", {"msg": "<|im_start|>"})
    calls, errors = parse_tool_calls(text, TOOLS)
    assert [c.name for c in calls] == ["log"]
    assert kinds(errors) == [K.STRAY_SPECIAL_TOKEN]


def test_two_end_of_turn_tokens_at_the_end_leave_the_first_one_stray():
    _, errors = parse_tool_calls(call("now") + "<|im_end|><|im_end|>", TOOLS)
    assert kinds(errors) == [K.STRAY_SPECIAL_TOKEN]


def test_unclosed_think_is_reported_and_its_calls_ignored():
    text = "<think>first I call " + call("now") + " and then"
    calls, errors = parse_tool_calls(text, TOOLS)
    assert calls == [] and kinds(errors) == [K.UNCLOSED_THINK]
    assert errors[0].span == (0, len(text))


# ---- reporting -------------------------------------------------------------------------------

def test_errors_come_sorted_by_position_with_exact_snippets():
    text = ("</tool_call> x " + call("nope") + " <|eot_id|> "
            + '<tool_call>{"name": 1}</tool_call><tool_call>{')
    calls, errors = parse_tool_calls(text, TOOLS)
    assert calls == []
    assert kinds(errors) == [K.STRAY_CLOSE_TAG, K.UNKNOWN_TOOL, K.STRAY_SPECIAL_TOKEN,
                             K.MISSING_NAME, K.MISSING_CLOSE_TAG]
    assert [e.span for e in errors] == sorted(e.span for e in errors)
    for e in errors:
        assert text[e.span[0]:e.span[1]] == e.snippet


def test_error_counts_list_every_kind_including_zeros():
    _, errors = parse_tool_calls("</tool_call></tool_call><tool_call>[]</tool_call>", TOOLS)
    counts = error_counts(errors)
    assert set(counts) == {k.value for k in ToolCallErrorKind}
    assert counts["stray_close_tag"] == 2 and counts["not_an_object"] == 1
    assert sum(counts.values()) == 3


def test_error_kinds_are_plain_strings():
    _, errors = parse_tool_calls("</tool_call>")
    assert errors[0].kind == "stray_close_tag"
    assert json.dumps({"kind": errors[0].kind}) == '{"kind": "stray_close_tag"}'


def test_bytes_are_decoded_with_replacement():
    calls, errors = parse_tool_calls(b"\xff" + call("now").encode(), TOOLS)
    assert [c.name for c in calls] == ["now"] and errors == []


def test_a_tool_list_without_names_is_a_caller_error():
    with pytest.raises(ValueError, match="tool needs a name"):
        parse_tool_calls("", [{"type": "function", "function": {"parameters": {}}}])
