"""Render Jinja chat templates the way `transformers.apply_chat_template` renders them.

A checkpoint's chat template was written, and its model trained, against transformers'
renderer: a sandbox with `trim_blocks` and `lstrip_blocks`, loop controls, a `tojson` that keeps
non-ASCII text and takes `indent`, the `raise_exception` and `strftime_now` globals, and messages
cleaned up first (None-valued keys dropped, reasoning copied under all its names). A prompt that
differs from that by one newline is a prompt the model never saw, so this module rebuilds the same
environment instead of using Jinja's defaults. Both tokenizer backends render through it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Keys under which callers pass an assistant's reasoning; templates read the first or `thinking`.
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


class _GenerationBlock(jinja2.ext.Extension):
    """Accept `{% generation %}...{% endgeneration %}` (assistant-mask markers) and render the body.

    transformers records where these blocks fall to build assistant masks; we only need templates
    that use them to compile and render identically.
    """

    tags = {"generation"}  # noqa: RUF012 (Jinja reads this class attribute)

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own filter sorts keys and HTML-escapes `<>&'`; chat templates expect neither.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _DictFactory:
    """`dict(...)` and `dict.fromkeys(...)` for templates, without handing them the type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's `namespace()`, refusing underscore names that lead to Python internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Namespace's own signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._refuse_private(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._refuse_private(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _refuse_private(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"chat templates may not set underscore attributes ({name!r})")


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _DictFactory()
    env.globals["namespace"] = _Namespace
    return env


@functools.lru_cache(maxsize=64)
def compile_chat_template(source: str) -> jinja2.Template:
    """Compile (once per distinct source) a chat template in the transformers-like sandbox."""
    return _environment().from_string(source)


def _plain(value: Any) -> Any:
    """Rebuild `value` from JSON-like types, so the sandbox never sees methods of rich objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models (OpenAI SDK messages)
        return _plain(value.model_dump())
    if type(value).__module__ == "numpy" and callable(getattr(value, "item", None)):
        return _plain(value.item())
    return f"<{type(value).__name__}>"


def normalize_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Messages as transformers hands them to a template.

    Keys whose value is None are dropped (APIs send `content=None` beside `tool_calls`, and many
    templates would print "None"), and an assistant's reasoning given under any of
    `REASONING_KEYS` is made visible as both `reasoning_content` and `thinking`.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    out = []
    for message in messages:
        message = _plain(message)
        if not isinstance(message, dict):
            raise TypeError(f"each chat message must be a dict, got {message!r}")
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in REASONING_KEYS if k in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def _plain_tools(tools: Sequence[Any] | None) -> list[Any] | None:
    if tools is None:
        return None
    plain = [_plain(tool) for tool in tools]
    for tool in plain:
        if not isinstance(tool, dict):
            raise TypeError(f"tools must be JSON-schema dicts (OpenAI format), got {tool!r}")
    return plain


def render_chat_template(
    template: str,
    messages: Sequence[Any],
    *,
    tools: Sequence[Any] | None = None,
    documents: Sequence[Any] | None = None,
    add_generation_prompt: bool = False,
    special_tokens: Mapping[str, str | None] | None = None,
    **variables: Any,
) -> str:
    """Render `template` for one conversation exactly as `transformers.apply_chat_template` would.

    `special_tokens` ({"bos_token": ..., "eos_token": ...}) become template variables the way a
    tokenizer's special-tokens map does; `variables` (e.g. `enable_thinking=False`) override them.
    Template errors (including `raise_exception(...)` calls) surface as `jinja2.TemplateError`.
    """
    if not messages:
        raise ValueError("cannot render an empty conversation")
    context = {k: v for k, v in (special_tokens or {}).items() if v is not None}
    context.update(_plain(dict(variables)))
    return compile_chat_template(template).render(
        messages=normalize_messages(messages),
        tools=_plain_tools(tools),
        documents=_plain(list(documents)) if documents is not None else None,
        add_generation_prompt=add_generation_prompt,
        **context,
    )


def select_template(
    templates: str | Mapping[str, str] | None,
    override: str | None = None,
    tools: Sequence[Any] | None = None,
) -> str:
    """Pick the template source to render, with transformers' rules for named templates.

    `override` may be a template source or the name of one of `templates`; a checkpoint with
    several named templates uses `tool_use` when tools are given, else `default`.
    """
    if isinstance(templates, Mapping):
        if override is not None:
            return templates.get(override, override)
        if tools is not None and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ValueError(
            f"this tokenizer has several chat templates {sorted(templates)} and none is named "
            "'default'; pass chat_template=<name or source>"
        )
    if override is not None:
        return override
    if templates is None:
        raise ValueError(
            "this tokenizer has no chat template; pass chat_template=... (for instance "
            "orchestra_jax.tokenization.CHATML_TOOLS_TEMPLATE) or set tokenizer.chat_template"
        )
    return templates
