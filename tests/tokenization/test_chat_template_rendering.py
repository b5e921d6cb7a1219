"""Chat rendering: byte-identical to `transformers.apply_chat_template`, and our ChatML+tools
template pinned to the exact text the policies are trained on."""

from __future__ import annotations

import datetime
import json

import jinja2
import pytest

from orchestra_jax.tokenization import CHATML_TOOLS_TEMPLATE, render_chat_template
from orchestra_jax.tokenization.chat_template import select_template
from tests.tokenization.parser_corpus import TOOLS

WEATHER_CALL = {"type": "function", "function": {
    "name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}
SEARCH_CALL = {"type": "function", "function": {
    "name": "search", "arguments": '{"query": "föhn wind", "tags": ["alps"]}'}}

CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Hi there!"}],
    "system_user": [{"role": "system", "content": "Answer in one word."},
                    {"role": "user", "content": "Capital of France?"}],
    "multi_turn_unicode": [
        {"role": "user", "content": "¿Qué tal? 😀"},
        {"role": "assistant", "content": "Bien, ¿y tú?\n\n  indented"},
        {"role": "user", "content": "日本語で答えて"},
    ],
    "tool_round_trip": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Zürich, and news about föhn?"},
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL, SEARCH_CALL]},
        {"role": "tool", "name": "get_weather", "content": '{"temp_c": 3}'},
        {"role": "tool", "name": "search", "content": {"hits": ["Föhn expected"]}},
        {"role": "assistant", "content": "3 °C, and föhn is expected."},
        {"role": "user", "content": "Thanks"},
    ],
    "reasoning_and_content_parts": [
        {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
        {"role": "assistant", "reasoning": "Add two and two.", "content": "4",
         "tool_calls": [{"function": {"name": "now"}}]},
        {"role": "tool", "content": "12:00"},
    ],
}


@pytest.fixture(scope="module")
def chatml_reference(transformers):
    """A transformers tokenizer to render arbitrary templates (its vocabulary is irrelevant)."""
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0, "<s>": 1, "<|im_end|>": 2, "<pad>": 3}
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>", pad_token="<pad>")


# ---- identical to transformers ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["user_only", "system_user", "multi_turn_unicode"])
@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("with_tools", [False, True])
def test_smollm2_template_renders_like_transformers(smollm2, smollm2_reference, name,
                                                    add_generation_prompt, with_tools):
    messages, tools = CONVERSATIONS[name], TOOLS if with_tools else None
    expected = smollm2_reference.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert smollm2.apply_chat_template(messages, tools, add_generation_prompt) == expected


def test_smollm2_rendered_prompt_tokenizes_like_transformers(smollm2, smollm2_reference):
    messages = CONVERSATIONS["multi_turn_unicode"]
    expected = smollm2_reference.apply_chat_template(messages, add_generation_prompt=True,
                                                     tokenize=True, return_dict=False)
    assert smollm2.encode(smollm2.apply_chat_template(messages, add_generation_prompt=True)) \
        == list(expected)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("with_tools", [False, True])
def test_chatml_tools_template_renders_like_transformers(chatml_reference, name,
                                                         add_generation_prompt, with_tools):
    messages, tools = CONVERSATIONS[name], TOOLS if with_tools else None
    expected = chatml_reference.apply_chat_template(
        messages, tools=tools, add_generation_prompt=add_generation_prompt,
        chat_template=CHATML_TOOLS_TEMPLATE, tokenize=False)
    ours = render_chat_template(CHATML_TOOLS_TEMPLATE, messages, tools=tools,
                                add_generation_prompt=add_generation_prompt)
    assert ours == expected


# Exercises what transformers adds to Jinja: its tojson, loop controls, namespace, dict(),
# the generation tag, special tokens and extra variables as globals, None keys dropped,
# reasoning aliases, and whitespace control.
FEATURE_TEMPLATE = """
{%- set ns = namespace(count=0) -%}
{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ unk_token }}|{{ enable_thinking }}
{% for m in messages %}
    {% if m.role == 'stop' %}{% break %}{% endif %}
    {% if m.role == 'skip' %}{% continue %}{% endif %}
    {% set ns.count = ns.count + 1 %}
    {%- generation -%}[{{ m.role }}]{{ m.content | default('<no content>') }}{%- endgeneration %}
    {{ m | tojson }} {{ m | tojson(indent=2, sort_keys=true) }}
    {{ m | tojson(separators=(',', ':'), ensure_ascii=true) }}
    {{ ('content' in m) }} {{ m.thinking }} {{ m.reasoning_content }}
{% endfor %}
count={{ ns.count }} {{ dict(a=1, b=[2]) | tojson }} {{ tools | tojson }} {{ documents }}
{{ strftime_now('%Y') }}{% if add_generation_prompt %}<gen>{% endif %}
"""

FEATURE_MESSAGES = [
    {"role": "user", "content": "<b>é & ü</b>", "name": None},
    {"role": "skip", "content": "never shown"},
    {"role": "assistant", "content": None, "reasoning_content": "why\nnot"},
    {"role": "assistant", "thinking": "deep", "content": "ok"},
    {"role": "stop", "content": "after stop"},
    {"role": "user", "content": "never reached"},
]


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_transformers_jinja_extensions_render_identically(chatml_reference,
                                                          add_generation_prompt):
    expected = chatml_reference.apply_chat_template(
        FEATURE_MESSAGES, tools=TOOLS[:1], add_generation_prompt=add_generation_prompt,
        chat_template=FEATURE_TEMPLATE, tokenize=False, enable_thinking=False)
    ours = render_chat_template(
        FEATURE_TEMPLATE, FEATURE_MESSAGES, tools=TOOLS[:1],
        add_generation_prompt=add_generation_prompt,
        special_tokens=chatml_reference.special_tokens_map, enable_thinking=False)
    assert ours == expected


# ---- our template, pinned --------------------------------------------------------------------

EXPECTED_TOOL_ROUND_TRIP = (
    "<|im_start|>system\nYou are a weather bot.\n\n# Tools\n\nYou may call one or more of the "
    "functions below to help with the request. Each one is described by a JSON schema inside "
    "<tools></tools>:\n<tools>\n"
    + "\n".join(json.dumps(t, ensure_ascii=False) for t in TOOLS)
    + "\n</tools>\n\nTo call a function, answer with one <tool_call></tool_call> block per "
    "call, each holding a JSON object with the function name and its arguments:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <arguments-as-a-json-object>}\n</tool_call>'
    "<|im_end|>\n"
    "<|im_start|>user\nWeather in Zürich, and news about föhn?<|im_end|>\n"
    "<|im_start|>assistant\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}\n'
    "</tool_call>\n<tool_call>\n"
    '{"name": "search", "arguments": {"query": "föhn wind", "tags": ["alps"]}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n<tool_response>\n{\"temp_c\": 3}\n</tool_response>\n"
    '<tool_response>\n{"hits": ["Föhn expected"]}\n</tool_response><|im_end|>\n'
    "<|im_start|>assistant\n3 °C, and föhn is expected.<|im_end|>\n"
    "<|im_start|>user\nThanks<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_chatml_tools_template_writes_the_hermes_protocol_exactly():
    rendered = render_chat_template(CHATML_TOOLS_TEMPLATE, CONVERSATIONS["tool_round_trip"],
                                    tools=TOOLS, add_generation_prompt=True)
    assert rendered == EXPECTED_TOOL_ROUND_TRIP


def test_chatml_tools_template_renders_reasoning_as_a_think_block():
    rendered = render_chat_template(CHATML_TOOLS_TEMPLATE,
                                    CONVERSATIONS["reasoning_and_content_parts"])
    assert rendered == (
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nAdd two and two.\n</think>\n\n4\n"
        '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n12:00\n</tool_response><|im_end|>\n")


def test_chatml_tools_template_without_tools_or_system_has_no_system_turn():
    rendered = render_chat_template(CHATML_TOOLS_TEMPLATE, CONVERSATIONS["user_only"])
    assert rendered == "<|im_start|>user\nHi there!<|im_end|>\n"


# ---- the sandbox, without transformers --------------------------------------------------------

def render(source: str, messages=None, **kwargs) -> str:
    return render_chat_template(source, messages or [{"role": "user", "content": "x"}], **kwargs)


def test_tojson_keeps_non_ascii_key_order_and_html_characters():
    out = render("{{ v | tojson }}", v={"z": "é<b>&'", "a": 1})
    assert out == '{"z": "é<b>&\'", "a": 1}'


def test_tojson_accepts_indent_and_separators():
    assert render("{{ v | tojson(indent=1) }}", v=[1]) == "[\n 1\n]"
    assert render("{{ v | tojson(separators=(',', ':')) }}", v={"a": [1, 2]}) == '{"a":[1,2]}'


def test_trim_and_lstrip_blocks_remove_block_whitespace():
    assert render("  {% if true %}\nX\n  {% endif %}\nY") == "X\nY"


def test_raise_exception_surfaces_as_a_template_error():
    with pytest.raises(jinja2.TemplateError, match="roles must alternate"):
        render("{{ raise_exception('roles must alternate') }}")


def test_templates_cannot_mutate_the_messages():
    with pytest.raises(jinja2.exceptions.SecurityError):
        render("{{ messages.append(1) }}")


def test_namespace_refuses_underscore_attributes():
    with pytest.raises(jinja2.exceptions.SecurityError):
        render("{% set ns = namespace(_private=1) %}")


def test_none_valued_message_keys_are_dropped_before_rendering():
    messages = [{"role": "assistant", "content": None, "tool_calls": None}]
    assert render("{{ messages[0] | tojson }}", messages) == '{"role": "assistant"}'


def test_reasoning_under_any_name_is_visible_as_reasoning_content_and_thinking():
    messages = [{"role": "assistant", "reasoning": "r", "content": "c"}]
    assert render("{{ messages[0].reasoning_content }}/{{ messages[0].thinking }}",
                  messages) == "r/r"


def test_generation_block_renders_its_body():
    assert render("a{% generation %}b{% endgeneration %}c") == "abc"


def test_strftime_now_formats_the_current_time():
    assert render("{{ strftime_now('%Y') }}") == str(datetime.datetime.now().year)


def test_special_tokens_are_variables_and_keyword_variables_override_them():
    out = render("{{ bos_token }}{{ eos_token }}",
                 special_tokens={"bos_token": "<s>", "eos_token": "</s>"}, eos_token="<e>")
    assert out == "<s><e>"


def test_empty_conversation_is_rejected():
    with pytest.raises(ValueError, match="empty conversation"):
        render_chat_template("x", [])


def test_non_dict_tools_are_rejected():
    with pytest.raises(TypeError, match="JSON-schema dicts"):
        render("x", tools=[print])


def test_named_templates_follow_transformers_selection_rules():
    named = {"default": "D", "tool_use": "T"}
    assert select_template(named) == "D"
    assert select_template(named, tools=[{}]) == "T"
    assert select_template(named, override="tool_use") == "T"
    assert select_template(named, override="{{ 1 }}") == "{{ 1 }}"
    with pytest.raises(ValueError, match="CHATML_TOOLS_TEMPLATE"):
        select_template(None)
