"""Check tool-call arguments against the JSON-schema subset that tool definitions use.

Tool schemas (OpenAI / Hermes format) use `type`, `properties`, `required`, `items`, `enum`,
`const` and `additionalProperties`; this module checks exactly those, so an RL reward can tell a
call that would run from one that would crash the tool, without a jsonschema dependency.
Keywords it does not know (`anyOf`, `pattern`, `minimum`, ...) are accepted, never guessed at.

Unknown argument names are reported when the object's schema lists `properties` and does not
allow more (`additionalProperties` absent or false); a model inventing parameters is the
mistake we want to count, even though plain JSON Schema would allow them by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ProblemKind = Literal["missing_argument", "unexpected_argument", "wrong_type", "invalid_value"]


@dataclass(frozen=True)
class ArgumentProblem:
    """One way the arguments break the schema; `path` is like `arguments.items[2].name`."""

    kind: ProblemKind
    path: str
    message: str


def json_type_name(value: Any) -> str:
    """The JSON name of a Python value's type, for messages (`bool` is `boolean`, not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has_type(value: Any, name: Any) -> bool:
    kind = json_type_name(value)
    if name == "number":
        return kind in ("integer", "number")
    if name == "integer":
        return kind == "integer" or (kind == "number" and math.isfinite(value)
                                     and float(value).is_integer())
    if name in ("string", "boolean", "null", "array", "object"):
        return kind == name
    return True  # a type name we do not know: do not judge


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: `true` is not `1`, and `1` equals `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _check(value: Any, schema: Any, path: str, problems: list[ArgumentProblem]) -> None:
    if not isinstance(schema, Mapping):
        return
    expected = schema.get("type")
    names = [expected] if isinstance(expected, str) else expected
    if isinstance(names, list) and names and not any(_has_type(value, n) for n in names):
        want = " or ".join(str(n) for n in names)
        problems.append(ArgumentProblem(
            "wrong_type", path, f"{path} should be {want}, got {json_type_name(value)}"))
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(_same_json(value, option) for option in enum):
        problems.append(ArgumentProblem(
            "invalid_value", path, f"{path} must be one of {enum!r}, got {value!r}"))
    if "const" in schema and not _same_json(value, schema["const"]):
        problems.append(ArgumentProblem(
            "invalid_value", path, f"{path} must be {schema['const']!r}, got {value!r}"))
    if isinstance(value, dict):
        _check_object(value, schema, path, problems)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{i}]", problems)


def _check_object(
    value: dict, schema: Mapping, path: str, problems: list[ArgumentProblem]
) -> None:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else None
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        if isinstance(name, str) and name not in value:
            problems.append(ArgumentProblem(
                "missing_argument", f"{path}.{name}", f"required {path}.{name} is missing"))
    extra = schema.get("additionalProperties", properties is None)
    for name, item in value.items():
        if properties is not None and name in properties:
            _check(item, properties[name], f"{path}.{name}", problems)
        elif isinstance(extra, Mapping):
            _check(item, extra, f"{path}.{name}", problems)
        elif extra is False:
            allowed = sorted(properties) if properties is not None else []
            problems.append(ArgumentProblem(
                "unexpected_argument", f"{path}.{name}",
                f"{path}.{name} is not a parameter (expected among {allowed})"))


def check_arguments(arguments: dict[str, Any], parameters: Any) -> list[ArgumentProblem]:
    """Problems of `arguments` against a tool's `parameters` schema (empty list: they fit).

    A missing or empty `parameters` schema means the tool takes no declared arguments, so any
    argument is unexpected.
    """
    if not isinstance(parameters, Mapping) or not parameters:
        parameters = {"type": "object", "properties": {}}
    problems: list[ArgumentProblem] = []
    _check(arguments, parameters, "arguments", problems)
    return problems
