"""Chat templates we own: ChatML turns with Hermes/Qwen-style tool calls.

The from-scratch policies need a template that teaches one unambiguous tool protocol, and it has
to be the same protocol the parser (`tool_calls.py`) reads back: tools listed as JSON inside
`<tools></tools>` in the system turn, calls written as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, results returned in a user turn as
`<tool_response>...</tool_response>` blocks. Pretrained ChatML models (SmolLM2, Qwen) can reuse
it, since its turn markers are theirs.
"""

from __future__ import annotations

#: Strings a ChatML + tools vocabulary should keep atomic (the SentencePiece trainer reserves them).
CHAT_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tools>",
    "</tools>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# The turns of both templates below; each fills in its own tools section.
_CHATML_SOURCE = r"""
{#- ChatML with Hermes-style tool calls, as written by orchestra_jax. -#}
{%- macro text_of(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is mapping -%}
        {{- content | tojson -}}
    {%- elif content is iterable -%}
        {%- for part in content -%}
            {%- if part is mapping and part.type == 'text' -%}
                {{- part.text -}}
            {%- endif -%}
        {%- endfor -%}
    {%- elif content is defined and content is not none -%}
        {{- content | tojson -}}
    {%- endif -%}
{%- endmacro -%}
{%- set has_system = messages[0].role == 'system' -%}
{%- if tools or has_system -%}
    {{- '<|im_start|>system\n' -}}
    {%- if has_system -%}
        {{- text_of(messages[0].content) -}}
        {%- if tools -%}
            {{- '\n\n' -}}
        {%- endif -%}
    {%- endif -%}
@@TOOLS_SECTION@@    {{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if loop.first and has_system -%}
        {#- rendered above, together with the tools -#}
    {%- elif message.role == 'assistant' -%}
        {{- '<|im_start|>assistant\n' -}}
        {%- if message.reasoning_content is string -%}
            {{- '<think>\n' + message.reasoning_content.strip() + '\n</think>\n\n' -}}
        {%- endif -%}
        {%- set body = text_of(message.content) -%}
        {{- body -}}
        {%- for call in message.tool_calls or [] -%}
            {%- set fn = call.function if call.function is defined else call -%}
            {%- if body or not loop.first -%}
                {{- '\n' -}}
            {%- endif -%}
            {{- '<tool_call>\n{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
            {%- if fn.arguments is string -%}
                {{- fn.arguments -}}
            {%- elif fn.arguments is defined -%}
                {{- fn.arguments | tojson -}}
            {%- else -%}
                {{- '{}' -}}
            {%- endif -%}
            {{- '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- elif message.role == 'tool' -%}
        {%- if loop.first or loop.previtem.role != 'tool' -%}
            {{- '<|im_start|>user' -}}
        {%- endif -%}
        {{- '\n<tool_response>\n' + text_of(message.content) + '\n</tool_response>' -}}
        {%- if loop.last or loop.nextitem.role != 'tool' -%}
            {{- '<|im_end|>\n' -}}
        {%- endif -%}
    {%- else -%}
        {{- '<|im_start|>' + message.role + '\n' + text_of(message.content) + '<|im_end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
""".strip()

_HERMES_TOOLS_SECTION = r"""
    {%- if tools -%}
        {{- '# Tools\n\nYou may call one or more of the functions below to help with the request. '
            'Each one is described by a JSON schema inside <tools></tools>:\n<tools>' -}}
        {%- for tool in tools -%}
            {{- '\n' + (tool | tojson) -}}
        {%- endfor -%}
        {{- '\n</tools>\n\nTo call a function, answer with one <tool_call></tool_call> block per '
            'call, each holding a JSON object with the function name and its arguments:\n'
            '<tool_call>\n{"name": <function-name>, "arguments": <arguments-as-a-json-object>}\n'
            '</tool_call>' -}}
    {%- endif -%}
"""

_COMPACT_TOOLS_SECTION = r"""
    {%- if tools -%}
        {{- 'Tools:' -}}
        {%- for tool in tools -%}
            {%- set fn = tool.function if tool.function is defined else tool -%}
            {{- ' ' + fn.name -}}
        {%- endfor -%}
    {%- endif -%}
"""

#: ChatML with tools. Variables: messages, tools (OpenAI format), add_generation_prompt.
#: Assistant messages may carry `tool_calls` (OpenAI format; `arguments` as an object or a JSON
#: string) and `reasoning_content` (rendered as a <think> block); `tool` messages in a row share
#: one user turn.
CHATML_TOOLS_TEMPLATE = _CHATML_SOURCE.replace("@@TOOLS_SECTION@@",
                                               _HERMES_TOOLS_SECTION.lstrip("\n"))

#: The same turns and call format with the tools named on one line (`Tools: search answer`)
#: instead of JSON schemas and a paragraph on how to call them. For from-scratch policies
#: whose vocabulary makes every complete call one piece (toolworld's tiny orchestrator): they
#: learn the format from data, not from the instructions, and every prompt token is paid for
#: in each sampler prefill and each update step (about 90 fewer tokens of ~235 per turn).
CHATML_COMPACT_TOOLS_TEMPLATE = _CHATML_SOURCE.replace("@@TOOLS_SECTION@@",
                                                       _COMPACT_TOOLS_SECTION.lstrip("\n"))


#: Chat templates by name, for a config to pick one (`world.prompt_template` for toolworld's
#: trained vocabulary, `model.chat_template` for a checkpoint whose own template renders no
#: tools -- SmolLM2's ChatML template drops the `tools` argument, so its policy would never
#: see what it may call).
NAMED_CHAT_TEMPLATES: dict[str, str] = {
    "compact": CHATML_COMPACT_TOOLS_TEMPLATE,
    "chatml_tools": CHATML_TOOLS_TEMPLATE,
}


def named_chat_template(name: str) -> str:
    """The Jinja source of the template called `name`; ValueError naming it otherwise."""
    if name not in NAMED_CHAT_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; known: {sorted(NAMED_CHAT_TEMPLATES)}")
    return NAMED_CHAT_TEMPLATES[name]
