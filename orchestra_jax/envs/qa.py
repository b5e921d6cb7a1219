"""The qa environment (HLE / FRAMES style): a question, three expert-backed tools, a gold answer.

Rendering follows the method's qa mode: the prompt is rebuilt every turn from the accumulated
state (problem, documents, programs and outputs, notes about failed calls) and the policy never
sees its own earlier turns. The material is cut from the front to a budget, so what was found
most recently -- what the next decision depends on -- always survives.

A turn runs at most one call per tool name (the first), all of them concurrently through the
shared executor; calls naming an unknown alias are refused without asking any expert. A failed
call (endpoint down, timeout) becomes a note the policy sees, and the episode goes on. An
`answer` call whose reply holds an answer ends the episode; `outcome()` verifies that answer
against the gold (normalised exact match, numbers within a tolerance).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestra_jax.envs.base import CallRecord, StepOutput
from orchestra_jax.tokenization.tool_calls import ToolCall
from orchestra_jax.tools.answers import answers_match
from orchestra_jax.tools.jsonl import iter_jsonl_objects
from orchestra_jax.tools.qa_tools import TOOL_NAMES, QAState, QATools, fit_from_front
from orchestra_jax.tools.results import ToolErrorKind, ToolResult


class TaskFileError(ValueError):
    """A task file that cannot be read; the message names the file and, for a row, the line."""


@dataclass(frozen=True)
class QATask:
    """One question. `hints` go to simulated experts only (never to the policy); `aliases`
    restricts the experts this task may call (None: every expert of the pool)."""

    id: str
    question: str
    answer: str
    family: str = "qa"
    hints: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] | None = None


def load_qa_tasks(
    path: str | os.PathLike[str],
    *,
    family: str = "qa",
    id_field: str = "id",
    question_field: str = "question",
    answer_field: str = "answer",
) -> list[QATask]:
    """Read `{"id", "question", "answer"}` rows (FRAMES / HLE exports); blank lines skipped.

    Optional per-row keys: `family` (string), `hints` (object), `aliases` (list of strings).
    The answer may be a string or a number. A bad row raises `TaskFileError` naming file:line.
    """
    path = Path(path)
    tasks: list[QATask] = []
    seen: dict[str, int] = {}
    for where, line_no, row in iter_jsonl_objects(path, TaskFileError, "task file"):
        task = _task_from_row(row, where, family, id_field, question_field, answer_field)
        if task.id in seen:
            raise TaskFileError(
                f"{where}: duplicate id {task.id!r} (first on line {seen[task.id]})"
            )
        seen[task.id] = line_no
        tasks.append(task)
    if not tasks:
        raise TaskFileError(f"{path}: the file has no tasks")
    return tasks


def _task_from_row(
    row: dict[str, Any],
    where: str,
    family: str,
    id_field: str,
    question_field: str,
    answer_field: str,
) -> QATask:
    def text(name: str) -> str:
        value = row.get(name)
        if value is None:
            raise TaskFileError(f"{where}: missing field {name!r} (keys: {sorted(row)})")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TaskFileError(
                f"{where}: field {name!r} must be a string, got {type(value).__name__}"
            )
        if not str(value).strip():
            raise TaskFileError(f"{where}: field {name!r} is empty")
        return str(value)

    hints = row.get("hints", {})
    if not isinstance(hints, dict):
        raise TaskFileError(f"{where}: 'hints' must be an object")
    aliases = row.get("aliases")
    if aliases is not None and (
        not isinstance(aliases, list) or not aliases or not all(isinstance(a, str) for a in aliases)
    ):
        raise TaskFileError(f"{where}: 'aliases' must be a non-empty list of strings")
    row_family = row.get("family", family)
    if not isinstance(row_family, str) or not row_family:
        raise TaskFileError(f"{where}: 'family' must be a non-empty string")
    return QATask(
        id=text(id_field),
        question=text(question_field),
        answer=text(answer_field),
        family=row_family,
        hints=hints,
        aliases=tuple(aliases) if aliases is not None else None,
    )


_SYSTEM_PROMPT = """\
You coordinate a team of expert models to answer a question. You do not search, compute or \
answer yourself: each turn you pick a tool and the expert who carries it out, and every expert \
call costs money and time, so choose the cheapest expert likely to do the job well.

Tools (each takes one argument, `model`: the alias of an expert):
- search: the expert writes a search query for what is still missing; the documents found are \
added to your notes.
- enhance_reasoning: the expert writes a Python program for the problem; it runs in a sandbox \
and its output is added to your notes.
- answer: the expert gives the final answer; this ends the task.

Experts and their prices:
{roster}

Call at most one tool of each kind per turn."""


class QAEnvironment:
    """A qa episode over `QATools`: `reset(task)`, then `messages` / `step` until `done`.

    `context_budget` bounds the notes in the user message as counted by `measure` (characters
    by default; pass a tokenizer's counting function for a token budget). `episode_timeout_s`
    sets an absolute deadline at `reset` after which no tool call starts.
    """

    mode: Literal["qa"] = "qa"

    def __init__(
        self,
        tools: QATools,
        *,
        context_budget: int = 60_000,
        measure: Callable[[str], int] = len,
        episode_timeout_s: float | None = None,
        rel_tol: float = 1e-6,
    ) -> None:
        if context_budget < 1:
            raise ValueError(f"context_budget must be >= 1, got {context_budget}")
        self.qa_tools = tools
        self.context_budget = context_budget
        self.measure = measure
        self.episode_timeout_s = episode_timeout_s
        self.rel_tol = rel_tol
        self.task: QATask | None = None
        self.state: QAState | None = None
        self.deadline: float | None = None
        self.turns = 0
        self._aliases: tuple[str, ...] = ()

    # -- protocol ------------------------------------------------------------------------------

    def reset(self, task: QATask) -> None:
        """Start a fresh episode of `task`; an alias the pool lacks is a ValueError naming it."""
        if not isinstance(task, QATask):
            raise TypeError(f"QAEnvironment expects a QATask, got {type(task).__name__}")
        pool = self.qa_tools.experts
        aliases = tuple(task.aliases) if task.aliases is not None else tuple(pool.aliases())
        missing = [a for a in aliases if a not in pool]
        if missing:
            raise ValueError(
                f"task {task.id!r} names expert aliases the pool lacks: {missing}; "
                f"pool: {', '.join(pool.aliases())}"
            )
        if not aliases:
            raise ValueError(f"task {task.id!r} has no expert aliases to call")
        self.task = task
        self._aliases = aliases
        hints = {"family": task.family, "gold": task.answer, **task.hints}
        self.state = QAState(question=task.question, hints=hints)
        self.turns = 0
        self.deadline = (
            time.monotonic() + self.episode_timeout_s
            if self.episode_timeout_s is not None
            else None
        )

    @property
    def aliases(self) -> tuple[str, ...]:
        return self._aliases

    def tools(self) -> list[dict[str, Any]]:
        self._require_task()
        return self.qa_tools.schemas(self._aliases)

    def messages(self) -> list[dict[str, Any]]:
        """System (role, tools, priced aliases) + user (problem, then the newest notes)."""
        state = self._require_task()
        roster = "\n".join(f"- {self.qa_tools.alias_line(a)}" for a in self._aliases)
        system = _SYSTEM_PROMPT.format(roster=roster)
        head = f"Problem:\n{state.question}\n\n"
        tail = "\n\nChoose the next tool call."
        if not state.entries:
            return [
                {"role": "system", "content": system},
                {"role": "user", "content": f"{head}Notes so far: none.{tail}"},
            ]
        intro = "Notes so far, oldest first:\n"
        room = self.context_budget - self.measure(head + intro + tail)
        notes = "\n\n".join(
            fit_from_front([e.text for e in state.entries], max(room, 0), self.measure)
        )
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{head}{intro}{notes}{tail}"},
        ]

    async def step(
        self, assistant_text: str, calls: Sequence[ToolCall], executor: Any, turn: int
    ) -> StepOutput:
        """Run the first call of each tool name concurrently; fold the results into the state."""
        state = self._require_task()
        out = StepOutput()
        if state.answered:
            out.observations.append("The task is already answered; nothing was run.")
            return out
        self.turns += 1
        chosen: list[ToolCall] = []
        for call in calls:
            if any(c.name == call.name for c in chosen):
                out.observations.append(
                    f"Only the first {call.name} call of a turn runs; a later one was skipped."
                )
                continue
            chosen.append(call)
        if not chosen:
            note = (
                f"Turn {turn}: no tool was called; call search, enhance_reasoning or "
                "answer with one of the listed experts."
            )
            state.add_note(turn, note)
            out.observations.append(note)
            return out

        async def run(call: ToolCall) -> tuple[ToolCall, str | None, ToolResult, bool]:
            alias = call.arguments.get("model")
            refusal = self._refuse(call, alias)
            if refusal is not None:
                return call, alias if isinstance(alias, str) else None, refusal, True
            tool = self.qa_tools.tool(call.name)
            result = await executor.run(
                call.name, lambda: tool(alias, state), deadline=self.deadline
            )
            return call, alias, result, False

        for call, alias, result, refused in await asyncio.gather(*(run(c) for c in chosen)):
            out.records.append(CallRecord.from_result(turn, call, result, alias=alias))
            if refused:  # our own message, naming only the tool and the aliases
                note = f"Turn {turn}: {result.observation}"
                state.add_note(turn, note)
            else:
                note = state.record(call.name, result, turn, alias)
            out.observations.append(note)
        return out

    @property
    def done(self) -> bool:
        return self.state is not None and self.state.answered

    def outcome(self) -> float:
        """1.0 when the extracted final answer matches the gold answer, else 0.0."""
        if self.task is None or self.state is None or not self.state.answered:
            return 0.0
        matched = answers_match(self.state.final_answer, self.task.answer, rel_tol=self.rel_tol)
        return 1.0 if matched else 0.0

    # -- helpers -------------------------------------------------------------------------------

    @property
    def final_answer(self) -> str | None:
        return None if self.state is None else self.state.final_answer

    def _require_task(self) -> QAState:
        if self.state is None:
            raise RuntimeError("QAEnvironment.reset(task) must be called first")
        return self.state

    def _refuse(self, call: ToolCall, alias: Any) -> ToolResult | None:
        """A failed result for a call that must not reach an expert, else None."""
        if call.name not in TOOL_NAMES:
            message = f"unknown tool {call.name!r}; tools: {', '.join(TOOL_NAMES)}"
            return ToolResult(
                observation=f"{call.name} failed: {message}",
                error_kind=ToolErrorKind.UNKNOWN_TOOL,
                error_message=message,
            )
        if not isinstance(alias, str) or alias not in self._aliases:
            got = "no 'model' argument" if alias is None else f"model {alias!r}"
            message = f"{got} is not one of this task's experts ({', '.join(self._aliases)})"
            return ToolResult(
                observation=f"{call.name} failed: {message}",
                error_kind=ToolErrorKind.INVALID_ARGUMENTS,
                error_message=message,
            )
        return None
