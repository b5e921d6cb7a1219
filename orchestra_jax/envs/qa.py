"""The qa environment (HLE / FRAMES style): a question, expert-backed tools, a gold answer.

Rendering follows the method's qa mode: the prompt is rebuilt every turn from the accumulated
state (problem, documents, programs and outputs, notes about failed calls) and the policy never
sees its own earlier turns. The material is cut from the front to a budget, so what was found
most recently -- what the next decision depends on -- always survives.

A turn runs at most one call per tool name (the first), all of them concurrently through the
shared executor; calls naming an unknown alias, or a tool or alias the task does not offer, are
refused without asking any expert. A failed call (endpoint down, timeout) becomes a note the
policy sees, and the episode goes on. An `answer` call whose reply holds an answer ends the
episode; the grader (the paper's rule: exact match, then an LLM judge) is awaited right there,
inside `step`, so that its network call runs with the episode's other tool work and `outcome()`
only reads the verdict. Without a grader, `outcome()` is normalised exact match with numbers
within a tolerance.

Everything task-specific comes from the `QATask` (`orchestra_jax.envs.qa_tasks`): at `reset` a
task with a `model_mapping`, prices, basic-tool prices or a retrieval allow-list gets its own
view of the shared tools (`QATools.for_task`, `ExpertPool.for_task`), so aliases, the prices
the roster shows and the prices charged are the task's own; its `tool_aliases` decide which
tools are offered and which aliases each accepts; its preference `instruction` follows the
question.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from orchestra_jax.envs.base import CallRecord, StepOutput
from orchestra_jax.envs.qa_tasks import QATask, TaskFile, TaskFileError, load_qa_tasks
from orchestra_jax.tokenization.tool_calls import ToolCall
from orchestra_jax.tools.answers import answers_match
from orchestra_jax.tools.qa_tools import (
    ANSWER,
    ENHANCE_REASONING,
    SEARCH,
    TOOL_NAMES,
    QAState,
    QATools,
    fit_from_front,
)
from orchestra_jax.tools.results import ToolErrorKind, ToolResult

if TYPE_CHECKING:  # rewards' package imports jax; the env only holds what the grader returns
    from orchestra_jax.rewards.verifiers import Verdict

#: `grader(task, predicted_answer) -> Verdict` (`orchestra_jax.rewards.verifiers`).
Grader = Callable[[QATask, str], Awaitable["Verdict"]]

_TOOL_LINES = {
    SEARCH: "- search: the expert writes a search query for what is still missing; the "
    "documents found are added to your notes.",
    ENHANCE_REASONING: "- enhance_reasoning: the expert writes a Python program for the "
    "problem; it runs in a sandbox and its output is added to your notes.",
    ANSWER: "- answer: the expert gives the final answer; this ends the task.",
}

_SYSTEM_PROMPT = """\
You coordinate a team of expert models to answer a question. You do not search, compute or \
answer yourself: each turn you pick a tool and the expert who carries it out, and every expert \
call costs money and time, so choose the cheapest expert likely to do the job well.

Tools (each takes one argument, `model`: the alias of an expert):
{tools}

Experts and their prices:
{roster}

Call at most one tool of each kind per turn."""


class QAEnvironment:
    """A qa episode over `QATools`: `reset(task)`, then `messages` / `step` until `done`.

    `context_budget` bounds the notes in the user message as counted by `measure` (characters
    by default; pass a tokenizer's counting function for a token budget). `episode_timeout_s`
    sets an absolute deadline at `reset` after which no tool call starts. `grader` decides the
    outcome of an answer (None: normalised exact match); see the module docstring.
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
        grader: Grader | None = None,
    ) -> None:
        if context_budget < 1:
            raise ValueError(f"context_budget must be >= 1, got {context_budget}")
        self.qa_tools = tools
        self.context_budget = context_budget
        self.measure = measure
        self.episode_timeout_s = episode_timeout_s
        self.rel_tol = rel_tol
        self.grader = grader
        self.task: QATask | None = None
        self.state: QAState | None = None
        self.deadline: float | None = None
        self.turns = 0
        self._aliases: tuple[str, ...] = ()
        self._tool_aliases: dict[str, tuple[str, ...]] | None = None
        self._shared_tools = tools  # what a task's own view is derived from
        self._task_tools: QATools | None = None  # the view this env made at the last reset
        self._verdict: Verdict | None = None
        self.grader_error: str | None = None

    # -- protocol ------------------------------------------------------------------------------

    def reset(self, task: QATask) -> None:
        """Start a fresh episode of `task` with its own aliases, prices, tools and allow-list.

        ValueError naming the task for an alias the pool lacks (or a mapping naming an expert it
        lacks), a tool the environment does not have, or a tool alias the task does not see.
        """
        if not isinstance(task, QATask):
            raise TypeError(f"QAEnvironment expects a QATask, got {type(task).__name__}")
        self.qa_tools = self._tools_for(task)
        pool = self.qa_tools.experts
        visible = task.visible_aliases
        aliases = tuple(visible) if visible is not None else tuple(pool.aliases())
        missing = [a for a in aliases if a not in pool]
        if missing:
            raise ValueError(
                f"task {task.id!r} names expert aliases the pool lacks: {missing}; "
                f"pool: {', '.join(pool.aliases())}"
            )
        if not aliases:
            raise ValueError(f"task {task.id!r} has no expert aliases to call")
        self._tool_aliases = _offered_tools(task, aliases)
        self.task = task
        self._aliases = aliases
        hints = {"family": task.family, "gold": task.answer, **task.hints}
        self.state = QAState(question=task.question, hints=hints)
        self.turns = 0
        self._verdict = None
        self.grader_error = None
        self.deadline = (
            time.monotonic() + self.episode_timeout_s
            if self.episode_timeout_s is not None
            else None
        )

    def _tools_for(self, task: QATask) -> QATools:
        """The tools `task` runs with: a view of the shared ones when it has settings of its
        own, else the tools as they are (which a subclass may have set before `reset`)."""
        if self.qa_tools is self._task_tools:  # the last task's view: back to the shared tools
            self.qa_tools = self._shared_tools
        self._task_tools = None
        # A subclass's task may reuse the name `prices` for a schedule of its own (toolworld's
        # tuple of pairs, applied by its env before this reset): only a mapping is read here.
        prices = task.prices if isinstance(task.prices, Mapping) else {}
        own = (
            task.model_mapping is not None
            or prices
            or task.sandbox_usd_per_second is not None
            or task.search_usd_per_query is not None
            or task.doc_ids is not None
        )
        if not own:
            return self.qa_tools
        tools = self.qa_tools
        try:
            experts = (
                tools.experts.for_task(task.model_mapping, prices)
                if task.model_mapping is not None or prices
                else None
            )
            view = tools.for_task(
                experts=experts,
                sandbox_usd_per_second=task.sandbox_usd_per_second,
                search_usd_per_query=task.search_usd_per_query,
                doc_ids=task.doc_ids,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"task {task.id!r}: {err.args[0] if err.args else err}") from None
        self._task_tools = view
        return view

    @property
    def aliases(self) -> tuple[str, ...]:
        """The aliases the task shows the policy (the mapping's keys, its `aliases`, or the
        pool's)."""
        return self._aliases

    @property
    def offered_tools(self) -> tuple[str, ...]:
        """The tools this task offers, in the usual order."""
        if self._tool_aliases is None:
            return TOOL_NAMES
        return tuple(t for t in TOOL_NAMES if t in self._tool_aliases)

    def tool_accepts(self, tool: str) -> tuple[str, ...]:
        """The aliases `tool` accepts in this task (empty when it is not offered)."""
        if self._tool_aliases is None:
            return self._aliases if tool in TOOL_NAMES else ()
        return self._tool_aliases.get(tool, ())

    def tools(self) -> list[dict[str, Any]]:
        self._require_task()
        return self.qa_tools.schemas(self._aliases, self._tool_aliases)

    def roster(self) -> str:
        """One priced line per alias a tool accepts; with a tool subset whose tools accept
        different aliases, each line also says which tools take it."""
        lines = []
        tools = self.offered_tools
        uniform = all(self.tool_accepts(t) == self._aliases for t in tools)
        for alias in self._aliases:
            takes = [t for t in tools if alias in self.tool_accepts(t)]
            if not takes:
                continue  # mapped, but no offered tool accepts it
            line = f"- {self.qa_tools.alias_line(alias)}"
            lines.append(line if uniform else f"{line} (for {', '.join(takes)})")
        return "\n".join(lines)

    def messages(self) -> list[dict[str, Any]]:
        """System (role, tools, priced aliases) + user (problem, the task's preference
        instruction, then the newest notes)."""
        state = self._require_task()
        tool_lines = "\n".join(_TOOL_LINES[t] for t in self.offered_tools)
        system = _SYSTEM_PROMPT.format(tools=tool_lines, roster=self.roster())
        head = f"Problem:\n{state.question}\n\n"
        instruction = self.task.instruction if self.task is not None else None
        if isinstance(instruction, str) and instruction.strip():
            if not state.question.rstrip().endswith(instruction.strip()):  # not there already
                head += f"{instruction.strip()}\n\n"
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
            *rest, last = self.offered_tools
            names = f"{', '.join(rest)} or {last}" if rest else last
            note = f"Turn {turn}: no tool was called; call {names} with one of the listed experts."
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
            record = CallRecord.from_result(turn, call, result, alias=alias)
            if record.model is None and alias in self.qa_tools.experts:
                # A failed call returns no model; the record still names the one it tried.
                record = dataclasses.replace(record, model=self.qa_tools.experts[alias].model)
            out.records.append(record)
            if refused:  # our own message, naming only the tool and the aliases
                note = f"Turn {turn}: {result.observation}"
                state.add_note(turn, note)
            else:
                note = state.record(call.name, result, turn, alias)
            out.observations.append(note)
        if state.answered and self.grader is not None:
            await self._grade(state)
        return out

    async def _grade(self, state: QAState) -> None:
        """Await the grader on the answer just given. A grader that raises (it should not: a
        judge's failures are verdicts) is recorded as a judge error, never a lost step."""
        assert self.grader is not None and self.task is not None
        try:
            self._verdict = await self.grader(self.task, state.final_answer or "")
        except Exception as err:  # any grader bug is this episode's judge error
            self._verdict = None
            self.grader_error = f"{ToolErrorKind.TOOL_EXCEPTION}: {type(err).__name__}: {err}"

    @property
    def done(self) -> bool:
        return self.state is not None and self.state.answered

    def outcome(self) -> float:
        """1.0 when the final answer is right, else 0.0: the grader's verdict when there is a
        grader (0.0 when it failed), else normalised exact match against the gold."""
        if self.task is None or self.state is None or not self.state.answered:
            return 0.0
        if self.grader is not None:
            return float(self._verdict.outcome) if self._verdict is not None else 0.0
        matched = answers_match(self.state.final_answer, self.task.answer, rel_tol=self.rel_tol)
        return 1.0 if matched else 0.0

    @property
    def verdict(self) -> Verdict | None:
        """The grader's verdict on this episode's answer (None: no grader, no answer yet, or
        the grader raised)."""
        return self._verdict

    def episode_info(self) -> dict[str, Any]:
        """How the outcome was decided, for the trajectory: `verdict_method` ("none" without
        an answer; the verdict's method; "error" when the grader raised), `judge_error` (an
        error kind or None) and `judge_cost_usd`. Empty without a grader: the outcome is then
        the environment's own check (subclasses such as the toolworld verify per family)."""
        if self.grader is None:
            return {}
        info: dict[str, Any] = {"verdict_method": "none", "judge_error": None,
                                "judge_cost_usd": 0.0}  # fmt: skip
        if self.state is None or not self.state.answered:
            return info
        if self._verdict is not None:
            info["verdict_method"] = str(self._verdict.method)
            kind = self._verdict.error_kind
            info["judge_error"] = None if kind is None else str(kind)
            info["judge_cost_usd"] = float(self._verdict.cost_usd)
        else:
            info["verdict_method"] = "error"
            info["judge_error"] = str(ToolErrorKind.TOOL_EXCEPTION)
        return info

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
        if call.name not in self.offered_tools:
            offered = ", ".join(self.offered_tools)
            message = f"tool {call.name!r} is not offered in this task; tools: {offered}"
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
        accepted = self.tool_accepts(call.name)
        if alias not in accepted:
            message = f"model {alias!r} is not an expert of {call.name} ({', '.join(accepted)})"
            return ToolResult(
                observation=f"{call.name} failed: {message}",
                error_kind=ToolErrorKind.INVALID_ARGUMENTS,
                error_message=message,
            )
        return None


def _offered_tools(
    task: QATask, aliases: tuple[str, ...]
) -> dict[str, tuple[str, ...]] | None:
    """tool -> the aliases it accepts (an empty entry: all of `aliases`); None: every tool,
    every alias. ValueError naming the task for a tool or alias it cannot offer."""
    if task.tool_aliases is None:
        return None
    offered: dict[str, tuple[str, ...]] = {}
    for tool, accepted in task.tool_aliases.items():
        if tool not in TOOL_NAMES:
            raise ValueError(
                f"task {task.id!r} offers tool {tool!r}; the qa tools are {', '.join(TOOL_NAMES)}"
            )
        unknown = [a for a in accepted if a not in aliases]
        if unknown:
            raise ValueError(
                f"task {task.id!r}: tool {tool!r} accepts aliases {unknown} the task does not "
                f"show ({', '.join(aliases)})"
            )
        offered[tool] = tuple(accepted) or aliases
    if not offered:
        raise ValueError(f"task {task.id!r} offers no tools")
    return offered


__all__ = [
    "Grader",
    "QAEnvironment",
    "QATask",
    "TaskFile",
    "TaskFileError",
    "load_qa_tasks",
]
