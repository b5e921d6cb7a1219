"""qa tasks and the task files they come from: plain FRAMES / HLE rows and the released records.

Users bring two kinds of JSONL files, and one file may mix them (each row is read on its own):

- **Plain rows** (the FRAMES and HLE exports): `{"id", "question", "answer"}`, optional
  `family`, `hints`, `aliases`, `doc_ids`; HLE's `category` becomes the family when no
  `family` is given (the evaluation reports accuracy per family). Every other field (HLE's
  `answer_type`, ...) is kept in `QATask.extra`.
- **Released training records** (ToolOrchestra's, detected by `problem` or `index`): `index`
  (the id), `category` (`qa`; `func_call` rows belong to the tau2 environment and are skipped
  with a reason), `problem`, `answer`, `tools` (OpenAI function schemas: each schema's name is
  a tool the task offers, the `enum` of its `model` parameter the aliases that tool accepts),
  `model_mapping` (alias the policy sees -> expert name in the experts file), `tool_pricing`,
  `pref_vec` and the preference instruction (`pref_instruction`, `preference_instruction` or
  `instruction`).

**Prices in `tool_pricing`.** The release writes a model's price as
`{"input_tokens_per_million": 1.25e-06, "output_tokens_per_million": 1e-05}`: the keys say per
million tokens, but the values are dollars per *token* (1.25e-06 $/token is GPT-5's 1.25 $ per
million; read literally it would make GPT-5 cost a millionth of a cent per million tokens, and
the release's own cost accounting multiplies the values by token counts directly). The loader
reads them as the release means them and multiplies by 1e6 into `Price.input_usd_per_mtok`.
`code_interpreter_per_second` (dollars per sandbox second) and `tavily.search` (dollars per
query) are plain dollars and are kept as they are.

A bad row (not JSON, a missing field, a non-numeric price, ...) is a `TaskFileError` naming
`file:line`; with `on_bad_row="skip"` it becomes a line of `TaskFile.skipped` instead, so one
bad row never stops a job that can train on the others. Given the expert pool (`experts=`),
the loader also checks each record's mapping and prices against it, so a mapping naming an
expert the experts file lacks is reported here, at start-up, not at the episode that meets it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestra_jax.tools.pricing import Price
from orchestra_jax.tools.qa_tools import ANSWER, TOOL_NAMES

if TYPE_CHECKING:
    from orchestra_jax.tools.experts import ExpertPool

#: `pref_vec` keys that are not aliases: the outcome, cost and latency weights.
PREFERENCE_KEYS = ("accuracy", "cost", "latency")
#: Where a released record may keep its preference instruction, in the order they are read.
INSTRUCTION_KEYS = ("pref_instruction", "preference_instruction", "instruction")
#: The release's price values are dollars per token; `Price` holds dollars per million.
_PER_TOKEN_TO_PER_MTOK = 1e6


class TaskFileError(ValueError):
    """A task file that cannot be read; the message names the file and, for a row, the line."""


@dataclass(frozen=True)
class QATask:
    """One question and everything task-specific about how it is played.

    `hints` go to simulated experts only (never to the policy). The rest configures the episode
    (see the module docstring for where each comes from in a task file):

    - `aliases`: restricts the pool's aliases (None: every expert of the pool).
    - `model_mapping`: alias the policy sees -> expert name in the experts file; the task then
      sees exactly these aliases (`ExpertPool.for_task`).
    - `prices`: per-task price by expert model name (or expert name), over the pool's own.
    - `tool_aliases`: tool -> the aliases it accepts; its keys are the tools the task offers
      (None: all three tools, each with every alias). An empty tuple means every alias.
    - `preference`: the release's `pref_vec` (alias | accuracy | cost | latency -> weight);
      `instruction`: its text, shown to the policy after the question.
    - `doc_ids`: the retrieval allow-list (None: the whole corpus).
    - `sandbox_usd_per_second` / `search_usd_per_query`: per-task basic-tool prices (None: the
      defaults of `QATools`).
    - `extra`: every other field of the row, kept for reports and callers.
    """

    id: str
    question: str
    answer: str
    family: str = "qa"
    hints: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] | None = None
    model_mapping: Mapping[str, str] | None = None
    prices: Mapping[str, Price] = field(default_factory=dict)
    tool_aliases: Mapping[str, tuple[str, ...]] | None = None
    preference: Mapping[str, float] | None = None
    instruction: str | None = None
    doc_ids: tuple[str, ...] | None = None
    sandbox_usd_per_second: float | None = None
    search_usd_per_query: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def visible_aliases(self) -> tuple[str, ...] | None:
        """The aliases the policy sees: the mapping's keys, else `aliases`, else None (the
        pool's)."""
        if self.model_mapping is not None:
            return tuple(self.model_mapping)
        return None if self.aliases is None else tuple(self.aliases)


@dataclass
class TaskFile:
    """What `load_task_file` read: the tasks, and one `"file:line: why"` per row left out."""

    path: Path
    tasks: list[QATask] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Skip(Exception):
    """A row that is valid but belongs elsewhere (a `func_call` record): left out, never fatal."""


# ------------------------------------------------------------------------------------------------
# Reading the file.


def _rows(path: Path) -> Iterator[tuple[str, int, dict[str, Any] | TaskFileError]]:
    """`(where, line_no, row or the row's error)` per non-blank line; unlike
    `tools.jsonl.iter_jsonl_objects` a bad line does not end the file, so it can be skipped."""
    if not path.is_file():
        raise TaskFileError(f"task file not found: {path}")
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            where = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield where, line_no, TaskFileError(f"{where}: not UTF-8 ({err.reason})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield where, line_no, TaskFileError(f"{where}: not valid JSON ({err.msg})")
                continue
            if not isinstance(row, dict):
                yield where, line_no, TaskFileError(f"{where}: a row must be a JSON object")
                continue
            yield where, line_no, row


def load_task_file(
    path: str | os.PathLike[str],
    *,
    on_bad_row: Literal["fail", "skip"] = "fail",
    family: str = "qa",
    experts: ExpertPool | None = None,
) -> TaskFile:
    """Read a task file of plain rows and/or released records (see the module docstring).

    `on_bad_row="fail"` raises `TaskFileError` naming file:line at the first bad row;
    `"skip"` lists it in `TaskFile.skipped` and goes on. `func_call` records are always
    skipped with a reason. `experts` (the run's pool, keyed by expert name) also checks each
    task's `model_mapping` names and prices against it. A file with no usable task, or a
    missing file, is a `TaskFileError` either way.
    """
    if on_bad_row not in ("fail", "skip"):
        raise ValueError(f"on_bad_row must be 'fail' or 'skip', got {on_bad_row!r}")
    path = Path(path)
    out = TaskFile(path=path)
    seen: dict[str, int] = {}
    for where, line_no, row in _rows(path):
        try:
            if isinstance(row, TaskFileError):
                raise row
            task = task_from_row(row, where, family=family)
            if task.id in seen:
                raise TaskFileError(
                    f"{where}: duplicate id {task.id!r} (first on line {seen[task.id]})"
                )
            if experts is not None:
                check_against_pool(task, experts, where)
        except _Skip as skip:
            out.skipped.append(f"{where}: {skip}")
            continue
        except TaskFileError as err:
            if on_bad_row == "fail":
                raise
            out.skipped.append(str(err))
            continue
        seen[task.id] = line_no
        out.tasks.append(task)
    if not out.tasks:
        why = ""
        if out.skipped:
            why = f" ({len(out.skipped)} row(s) skipped; first: {out.skipped[0]})"
        raise TaskFileError(f"{path}: the file has no usable tasks{why}")
    return out


def load_qa_tasks(
    path: str | os.PathLike[str],
    *,
    family: str = "qa",
    id_field: str = "id",
    question_field: str = "question",
    answer_field: str = "answer",
) -> list[QATask]:
    """Plain `{"id", "question", "answer"}` rows only (field names configurable); any bad row
    raises `TaskFileError` naming file:line. `load_task_file` reads both formats."""
    path = Path(path)
    tasks: list[QATask] = []
    seen: dict[str, int] = {}
    for where, line_no, row in _rows(path):
        if isinstance(row, TaskFileError):
            raise row
        task = _plain_task(row, where, family, (id_field, question_field, answer_field))
        if task.id in seen:
            raise TaskFileError(
                f"{where}: duplicate id {task.id!r} (first on line {seen[task.id]})"
            )
        seen[task.id] = line_no
        tasks.append(task)
    if not tasks:
        raise TaskFileError(f"{path}: the file has no tasks")
    return tasks


def task_from_row(row: Mapping[str, Any], where: str, *, family: str = "qa") -> QATask:
    """One row as a task: a released record when it has `problem` or `index`, else plain."""
    if "problem" in row or "index" in row:
        return _released_task(row, where, family)
    return _plain_task(row, where, family, ("id", "question", "answer"))


# ------------------------------------------------------------------------------------------------
# Fields.


def _text(row: Mapping[str, Any], name: str, where: str, *, allow_empty: bool = False) -> str:
    value = row.get(name)
    if value is None:
        raise TaskFileError(f"{where}: missing field {name!r} (keys: {sorted(row)})")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TaskFileError(
            f"{where}: field {name!r} must be a string, got {type(value).__name__}"
        )
    if not allow_empty and not str(value).strip():
        raise TaskFileError(f"{where}: field {name!r} is empty")
    return str(value)


def _string_list(row: Mapping[str, Any], name: str, where: str) -> tuple[str, ...] | None:
    value = row.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(
        isinstance(v, str) and v for v in value
    ):
        raise TaskFileError(f"{where}: {name!r} must be a non-empty list of strings")
    return tuple(value)


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskFileError(f"{where}: {what} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise TaskFileError(f"{where}: {what} must be finite and >= 0, got {value!r}")
    return float(value)


def _family(row: Mapping[str, Any], where: str, default: str, *, plain: bool) -> str:
    value = row.get("family")
    if value is None and plain and isinstance(row.get("category"), str) and row["category"]:
        value = row["category"]  # HLE: Math, Physics, ...
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise TaskFileError(f"{where}: 'family' must be a non-empty string")
    return value


def _hints(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    hints = row.get("hints", {})
    if not isinstance(hints, dict):
        raise TaskFileError(f"{where}: 'hints' must be an object")
    return hints


_PLAIN_KEYS = frozenset({"family", "hints", "aliases", "doc_ids"})


def _plain_task(
    row: Mapping[str, Any], where: str, family: str, names: tuple[str, str, str]
) -> QATask:
    id_field, question_field, answer_field = names
    used = {*names, *_PLAIN_KEYS}
    return QATask(
        id=_text(row, id_field, where),
        question=_text(row, question_field, where),
        answer=_text(row, answer_field, where),
        family=_family(row, where, family, plain=True),
        hints=_hints(row, where),
        aliases=_string_list(row, "aliases", where),
        doc_ids=_string_list(row, "doc_ids", where),
        extra={k: v for k, v in row.items() if k not in used},
    )


_RELEASED_KEYS = frozenset(
    {"index", "id", "category", "problem", "answer", "tools", "model_mapping", "tool_pricing",
     "pref_vec", "family", "hints", "aliases", "doc_ids", *INSTRUCTION_KEYS}
)


def _released_task(row: Mapping[str, Any], where: str, family: str) -> QATask:
    category = row.get("category", "qa")
    if category == "func_call":
        raise _Skip("a func_call record (it belongs to the tau2 environment)")
    if not isinstance(category, str):
        raise TaskFileError(f"{where}: 'category' must be a string, got {category!r}")
    task_id = _text(row, "index" if "index" in row else "id", where)
    mapping = _model_mapping(row.get("model_mapping"), where)
    tool_aliases = _tool_aliases(row.get("tools"), mapping, where)
    sandbox, search, prices = _tool_pricing(row.get("tool_pricing"), where)
    return QATask(
        id=task_id,
        question=_text(row, "question" if "problem" not in row and "question" in row
                       else "problem", where),
        answer=_text(row, "answer", where),
        family=_family(row, where, family, plain=False),
        hints=_hints(row, where),
        aliases=_string_list(row, "aliases", where),
        model_mapping=mapping,
        prices=prices,
        tool_aliases=tool_aliases,
        preference=_preference(row.get("pref_vec"), mapping, tool_aliases, where),
        instruction=_instruction(row, where),
        doc_ids=_string_list(row, "doc_ids", where),
        sandbox_usd_per_second=sandbox,
        search_usd_per_query=search,
        extra={k: v for k, v in row.items() if k not in _RELEASED_KEYS or k == "category"},
    )


def _model_mapping(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise TaskFileError(f"{where}: 'model_mapping' must be a non-empty object")
    for alias, name in value.items():
        if not alias.strip() or not isinstance(name, str) or not name.strip():
            raise TaskFileError(
                f"{where}: model_mapping alias {alias!r} must map to an expert name, got {name!r}"
            )
    return dict(value)


def _tool_aliases(
    value: Any, mapping: Mapping[str, str] | None, where: str
) -> dict[str, tuple[str, ...]] | None:
    """tool name -> the enum of its `model` parameter (() when it has none: every alias)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise TaskFileError(f"{where}: 'tools' must be a non-empty list of tool schemas")
    out: dict[str, tuple[str, ...]] = {}
    for i, schema in enumerate(value):
        spec = schema.get("function", schema) if isinstance(schema, dict) else None
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or name not in TOOL_NAMES:
            raise TaskFileError(
                f"{where}: tools[{i}] must be a function schema named one of {TOOL_NAMES}, "
                f"got {name if name is not None else schema!r}"
            )
        params = spec.get("parameters") or {}
        model = (params.get("properties") or {}).get("model") if isinstance(params, dict) else None
        enum = model.get("enum") if isinstance(model, dict) else None
        if enum is not None and (
            not isinstance(enum, list) or not all(isinstance(a, str) and a for a in enum)
        ):
            raise TaskFileError(f"{where}: tool {name!r}: the 'model' enum must list aliases")
        aliases = tuple(enum or ())
        if mapping is not None:
            unknown = [a for a in aliases if a not in mapping]
            if unknown:
                raise TaskFileError(
                    f"{where}: tool {name!r} offers aliases {unknown} that model_mapping lacks "
                    f"(mapped: {', '.join(mapping)})"
                )
        out[name] = aliases
    if ANSWER not in out:
        raise TaskFileError(f"{where}: 'tools' must offer 'answer' (got {', '.join(out)})")
    return out


def _tool_pricing(
    value: Any, where: str
) -> tuple[float | None, float | None, dict[str, Price]]:
    """(sandbox $/s, search $/query, model -> Price) from the release's `tool_pricing`."""
    if value is None:
        return None, None, {}
    if not isinstance(value, dict):
        raise TaskFileError(f"{where}: 'tool_pricing' must be an object")
    sandbox = search = None
    prices: dict[str, Price] = {}
    for key, entry in value.items():
        at = f"tool_pricing[{key!r}]"
        if key == "code_interpreter_per_second":
            sandbox = _number(entry, where, at)
        elif key == "tavily":
            if not isinstance(entry, dict):
                raise TaskFileError(f"{where}: {at} must be an object with 'search'")
            if "search" in entry:
                search = _number(entry["search"], where, f"{at}['search']")
        else:
            if not isinstance(entry, dict):
                raise TaskFileError(f"{where}: {at} must be an object, got {entry!r}")
            per_token = [
                _number(entry.get(k), where, f"{at}[{k!r}]")
                for k in ("input_tokens_per_million", "output_tokens_per_million")
            ]
            prices[key] = Price(*(v * _PER_TOKEN_TO_PER_MTOK for v in per_token))
    return sandbox, search, prices


def _preference(
    value: Any,
    mapping: Mapping[str, str] | None,
    tool_aliases: Mapping[str, tuple[str, ...]] | None,
    where: str,
) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TaskFileError(f"{where}: 'pref_vec' must be an object (alias or accuracy / cost / "
                            "latency -> weight)")
    known: set[str] | None = None
    if mapping is not None:
        known = {*mapping, *PREFERENCE_KEYS}
        for aliases in (tool_aliases or {}).values():
            known.update(aliases)
    out = {}
    for key, weight in value.items():
        if known is not None and key not in known:
            raise TaskFileError(
                f"{where}: pref_vec key {key!r} is neither an alias of model_mapping nor one of "
                f"{', '.join(PREFERENCE_KEYS)}"
            )
        out[key] = _number(weight, where, f"pref_vec[{key!r}]")
    return out


def _instruction(row: Mapping[str, Any], where: str) -> str | None:
    for key in INSTRUCTION_KEYS:
        value = row.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TaskFileError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
        return value.strip() or None
    return None


def check_against_pool(task: QATask, experts: ExpertPool, where: str) -> None:
    """TaskFileError naming `where`, the alias and the known names when `task`'s mapping names
    an expert `experts` lacks (or its aliases are not experts of the pool)."""
    try:
        view = experts.for_task(task.model_mapping, task.prices)
    except KeyError as err:
        raise TaskFileError(f"{where}: task {task.id!r}: {err.args[0]}") from None
    if task.model_mapping is None and task.aliases is not None:
        missing = [a for a in task.aliases if a not in view]
        if missing:
            raise TaskFileError(
                f"{where}: task {task.id!r}: aliases {missing} are not experts of the pool "
                f"({', '.join(experts.aliases())})"
            )


__all__ = [
    "INSTRUCTION_KEYS",
    "PREFERENCE_KEYS",
    "QATask",
    "TaskFile",
    "TaskFileError",
    "check_against_pool",
    "load_qa_tasks",
    "load_task_file",
    "task_from_row",
]
