"""Tools and a call writer shared by the parser tests (OpenAI-format schemas)."""

from __future__ import annotations

import json

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
        }, "required": ["city"]},
    }},
    {"type": "function", "function": {
        "name": "search",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"},
            "filters": {"type": "object", "properties": {
                "site": {"type": "string"},
                "year": {"type": ["integer", "null"]},
            }, "required": ["site"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        }, "required": ["query"]},
    }},
    {"type": "function", "function": {
        "name": "now", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {
        "name": "rate", "parameters": {"type": "object", "properties": {
            "score": {"type": "number"}, "ok": {"type": "boolean"}, "count": {"type": "integer"},
        }}}},
    # A bare function dict (no OpenAI wrapper) that accepts extra arguments.
    {"name": "log", "parameters": {"type": "object", "properties": {"msg": {"type": "string"}},
                                   "additionalProperties": True}},
]


def call(name, arguments=None, **extra) -> str:
    """A `<tool_call>` block as a policy would write it."""
    payload = {"name": name, **({"arguments": arguments} if arguments is not None else {}),
               **extra}
    return f"<tool_call>\n{json.dumps(payload, ensure_ascii=False)}\n</tool_call>"
