"""The toolworld environment: the qa environment with short prompts and state-aware experts.

It is a thin layer over `QAEnvironment` (same protocol, same qa mode, same tools and executor
path) that changes four things:

1. **Short prompts.** The tiny policy's context is a few hundred tokens, so the system prompt is
   one line plus the alias roster (typical cost and seconds per call, once), the tool schemas
   are compact (`tool_schemas`), and notes are rendered compactly (what a search newly found, a
   program's output rather than its text). The task's preference instruction follows the
   question; the experts never see it.
2. **Hints from the state.** Before every turn the experts' hints are recomputed from the notes
   (`situations.expert_hints`): whether the supporting documents were found, whether a program
   printed the right number. The policy never sees hints.
3. **Per-task tool subsets and price schedules** (the paper's augmentations): a tool the task
   does not offer is refused like an unknown one; a task with its own prices gets a pool whose
   experts charge them (and a roster that shows them).
4. **Deterministic charges for tool time.** The sandbox and BM25 really run, but what they are
   charged (seconds of latency, sandbox dollars) is a fixed nominal amount, not the measured
   wall-clock: the reward min-max normalises cost and latency within a group, and milliseconds
   of timing noise between two otherwise identical rollouts would become a full unit of reward
   there. Measured times are kept in each call's `info` and in `CodeRunner.wall_s`. (This
   overrides `QATools._result`, the one place both charges pass through; a `charge` hook on
   `QATools` would be the cleaner seam.)

Given `max_turns`, the user message of the last turn ends with `LAST_TURN_NOTE`: the
episode ends after that turn whatever is called, and a policy that cannot count its turns
would otherwise lose an episode it could still answer (see `ToolWorldEnv`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestra_jax.envs.base import StepOutput
from orchestra_jax.envs.qa import QAEnvironment, QATask
from orchestra_jax.envs.toolworld.situations import expert_hints
from orchestra_jax.envs.toolworld.tasks import WorldTask, verify
from orchestra_jax.tokenization.tool_calls import ToolCall
from orchestra_jax.tools.experts import ExpertPool
from orchestra_jax.tools.pricing import SANDBOX_USD_PER_SECOND, Price
from orchestra_jax.tools.qa_tools import (
    ANSWER,
    ENHANCE_REASONING,
    SEARCH,
    TOOL_NAMES,
    QATools,
    fit_from_front,
)
from orchestra_jax.tools.results import ToolErrorKind, ToolResult
from orchestra_jax.tools.sandbox import SandboxResult
from orchestra_jax.tools.sandbox import run_code as sandbox_run_code
from orchestra_jax.tools.search_types import SearchHit

SYSTEM_PROMPT = "Call a tool with an expert as model. Cost (1e-5 USD), seconds per call:\n{roster}"
TOOL_DESCRIPTIONS = {
    SEARCH: "The expert writes a search query; documents found join the notes.",
    ENHANCE_REASONING: "The expert writes a Python program; its output joins the notes.",
    ANSWER: "The expert gives the final answer; this ends the task.",
}
#: Closes the user message of an episode's last allowed turn (`ToolWorldEnv(max_turns=...)`).
LAST_TURN_NOTE = "Last turn: answer now."
#: Prompt tokens and completion tokens of a typical expert call (what the roster's cost means).
TYPICAL_TOKENS_IN = 200
COST_UNIT_USD = 1e-5


def call_text(tool: str, alias: str) -> str:
    """One tool call as the policy writes it (compact JSON, as the SFT data and parser use)."""
    body = json.dumps({"name": tool, "arguments": {"model": alias}}, separators=(",", ":"))
    return f"<tool_call>{body}</tool_call>"


def tool_schemas(
    aliases: Sequence[str], tools: Sequence[str] = TOOL_NAMES, *, style: str = "compact"
) -> list[dict]:
    """The tool schemas the policy sees and its calls are parsed against.

    "openai": the OpenAI format (`{"type": "function", "function": {...}}`), each with a
    description and `model` as an enum of `aliases`. "compact": bare function entries (which
    the parser accepts) declaring only the `model` argument; the tool names speak for
    themselves, and an alias the task lacks is refused by the environment instead of the
    parser. Compact schemas keep the first prompt within the tiny policy's 256-token budget
    (the OpenAI form costs about 200 tokens more).
    """
    if style == "compact":
        return [
            {"name": name, "parameters": {"properties": {"model": {}}}}
            for name in TOOL_NAMES
            if name in tools
        ]
    if style != "openai":
        raise ValueError(f"schema style must be 'compact' or 'openai', got {style!r}")
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": TOOL_DESCRIPTIONS[name],
                "parameters": {
                    "type": "object",
                    "properties": {"model": {"type": "string", "enum": list(aliases)}},
                    "required": ["model"],
                },
            },
        }
        for name in TOOL_NAMES
        if name in tools
    ]


def typical_cost_units(price: Price, tokens_out: float) -> int:
    """The cost of a typical call at `price`, in `COST_UNIT_USD` (at least 1)."""
    usd = price.cost_usd(TYPICAL_TOKENS_IN, round(tokens_out))
    return max(1, round(usd / COST_UNIT_USD))


def roster_line(alias: str, price: Price, tokens_out: float, latency_s: float) -> str:
    """`mini 95 18`: the alias, its typical cost per call, its typical seconds per call."""
    return f"{alias} {typical_cost_units(price, tokens_out)} {latency_s:.0f}"


class CodeRunner:
    """The sandbox as `QATools` calls it, remembering what each distinct program printed.

    Programs here are deterministic (no input, no clock), so a program that already ran gives
    the same output again; with `cache=True` it runs once per world for real and later calls
    reuse its result, which keeps GRPO groups (many rollouts writing the same program) fast.
    `wall_s` lists the measured wall-clock of every real run.
    """

    def __init__(self, *, cache: bool = True, run_code: Callable[..., Any] = sandbox_run_code):
        self.cache = cache
        self._run_code = run_code
        self._results: dict[str, SandboxResult] = {}
        self.wall_s: list[float] = []

    async def __call__(self, code: str, timeout_s: float = 10.0) -> SandboxResult:
        if self.cache and code in self._results:
            return self._results[code]
        result = await self._run_code(code, timeout_s=timeout_s)
        self.wall_s.append(float(result.wall_s))
        if self.cache and result.error_kind in (None, ToolErrorKind.NONZERO_EXIT):
            self._results[code] = result  # limits and host failures are worth another try
        return result


class WorldQATools(QATools):
    """`QATools` that charge fixed nominal seconds for a search and a sandbox run.

    `search_charge_s` / `sandbox_charge_s` None keeps the measured wall-clock (not
    deterministic). The measured value stays in the call's `info` (`search_s`, `sandbox_s`).
    """

    def __init__(
        self,
        *args: Any,
        search_charge_s: float | None = 0.005,
        sandbox_charge_s: float | None = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.search_charge_s = search_charge_s
        self.sandbox_charge_s = sandbox_charge_s

    def _result(self, *args: Any, extra_cost: float = 0.0, extra_latency: float = 0.0,
                **info: Any) -> ToolResult:  # fmt: skip
        if "sandbox_s" in info and self.sandbox_charge_s is not None:
            extra_latency = self.sandbox_charge_s
            extra_cost = self.sandbox_charge_s * SANDBOX_USD_PER_SECOND
            info["sandbox_usd"] = extra_cost
        elif "search_fee_usd" in info and self.search_charge_s is not None:
            info["search_s"] = extra_latency
            extra_latency = self.search_charge_s
        return super()._result(*args, extra_cost=extra_cost, extra_latency=extra_latency, **info)

    def repriced(self, prices: Mapping[str, Price]) -> WorldQATools:
        """The same tools over a pool whose aliases charge `prices` (others keep theirs)."""
        pool = ExpertPool(
            [
                dataclasses.replace(self.experts[a], price=prices.get(a, self.experts[a].price))
                for a in self.experts.aliases()
            ]
        )
        return WorldQATools(
            pool,
            self.retriever,
            run_code=self.run_code,
            search_k=self.search_k,
            code_timeout_s=self.code_timeout_s,
            expert_max_tokens=self.expert_max_tokens,
            expert_context_chars=self.expert_context_chars,
            max_doc_chars=self.max_doc_chars,
            max_output_chars=self.max_output_chars,
            latencies=self.latencies,
            search_charge_s=self.search_charge_s,
            sandbox_charge_s=self.sandbox_charge_s,
        )


@dataclass(frozen=True)
class AliasCard:
    """What the roster says about an alias besides its price: typical output tokens, seconds."""

    tokens_out: float
    latency_s: float


class ToolWorldEnv(QAEnvironment):
    """A toolworld episode (qa mode). Build it with `ToolWorld.make_env()`.

    `cards` (alias -> `AliasCard`) feed the roster. `context_budget` bounds the notes in the
    user message as counted by `measure` (characters by default). `schema_style` picks the
    tool schemas' form (`tool_schemas`).

    `max_turns` (the episode loop's limit; None: no note) makes the last turn's user message
    end with `LAST_TURN_NOTE`. Why: an episode that runs out of turns without an answer scores
    0, so without the note "the episode contains an answer" correlates with reward in every
    family, and GRPO pushes `answer` on every turn -- first turns included, since nothing in
    the prompt tells a first turn from a last one. The note is routing-free (it names no
    expert, and says nothing about which tool suits the task): it only says when the budget
    is spent.
    """

    def __init__(
        self,
        tools: WorldQATools,
        cards: Mapping[str, AliasCard],
        *,
        context_budget: int = 1200,
        measure: Callable[[str], int] = len,
        schema_style: str = "compact",
        max_turns: int | None = None,
    ) -> None:
        super().__init__(tools, context_budget=context_budget, measure=measure, rel_tol=0.0)
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be None or >= 1, got {max_turns}")
        self.max_turns = max_turns
        tool_schemas((), style=schema_style)  # fail early on a bad style
        self.base_tools = tools
        self.cards = dict(cards)
        self.schema_style = schema_style
        self._found: dict[int, tuple[str, list[SearchHit]]] = {}  # turn -> (alias, new docs)

    # -- protocol ------------------------------------------------------------------------------

    def reset(self, task: QATask) -> None:
        """Start `task` (a `WorldTask`): its prices, tool subset and first hints."""
        if not isinstance(task, WorldTask):
            raise TypeError(f"ToolWorldEnv expects a WorldTask, got {type(task).__name__}")
        unknown = [t for t in task.tools if t not in TOOL_NAMES]
        if unknown or ANSWER not in task.tools:
            raise ValueError(
                f"task {task.id!r}: tools must be a subset of {TOOL_NAMES} containing "
                f"'answer', got {task.tools}"
            )
        schedule = task.price_schedule
        self.qa_tools = self.base_tools.repriced(schedule) if schedule else self.base_tools
        super().reset(task)
        self._found = {}
        state = self._require_task()
        state.hints = expert_hints(task, state)

    @property
    def world_task(self) -> WorldTask:
        if not isinstance(self.task, WorldTask):
            raise RuntimeError("ToolWorldEnv.reset(task) must be called first")
        return self.task

    def tools(self) -> list[dict[str, Any]]:
        return tool_schemas(self.aliases, self.world_task.tools, style=self.schema_style)

    def roster(self) -> str:
        """One line per alias of the task: name, typical cost per call, typical seconds."""
        pool = self.qa_tools.experts
        lines = []
        for alias in self.aliases:
            card = self.cards.get(alias, AliasCard(0.0, 0.0))
            lines.append(roster_line(alias, pool[alias].price, card.tokens_out, card.latency_s))
        return "\n".join(lines)

    def messages(self) -> list[dict[str, Any]]:
        """System (tools and roster) + user (question, instruction, compact notes)."""
        self._require_task()
        task = self.world_task
        system = SYSTEM_PROMPT.format(roster=self.roster())
        head = task.question + (f" {task.instruction}" if task.instruction else "")
        tail = f"\n{LAST_TURN_NOTE}" if self.last_turn else ""
        notes = self.note_lines()
        if not notes:
            return [{"role": "system", "content": system},
                    {"role": "user", "content": head + tail}]
        room = self.context_budget - self.measure(f"{head}\nNotes:\n{tail}")
        body = "\n".join(fit_from_front(notes, max(room, 0), self.measure))
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"{head}\nNotes:\n{body}{tail}"},
        ]

    @property
    def last_turn(self) -> bool:
        """Whether the next turn is the episode's last allowed one (False without max_turns)."""
        return self.max_turns is not None and self.turns == self.max_turns - 1

    def note_lines(self) -> list[str]:
        """The notes, oldest first: what each search newly found, each program's output, and
        the environment's notes about failed or refused calls."""
        state = self._require_task()
        runs = iter(state.code_runs)
        lines = []
        for entry in state.entries:
            if entry.kind == "code":
                run = next(runs)
                output = " ".join(run.output.split())
                lines.append(f"{ENHANCE_REASONING} by {run.alias} printed: {output}")
            elif entry.kind == "documents" and entry.turn in self._found:
                alias, docs = self._found[entry.turn]
                found = " ".join(d.text for d in docs) if docs else "nothing new."
                lines.append(f"{SEARCH} by {alias} found: {found}")
            else:
                lines.append(entry.text)
        return lines

    async def step(
        self, assistant_text: str, calls: Sequence[ToolCall], executor: Any, turn: int
    ) -> StepOutput:
        """Recompute the experts' hints from the notes, then run the turn as the qa env does."""
        state = self._require_task()
        state.hints = expert_hints(self.world_task, state)
        known = len(state.documents)
        output = await super().step(assistant_text, calls, executor, turn)
        for record in output.records:
            if record.tool == SEARCH and record.error_kind is None and record.alias:
                self._found[turn] = (record.alias, list(state.documents[known:]))
        return output

    def outcome(self) -> float:
        """1.0 when the final answer passes the task family's verifier."""
        if self.task is None or self.state is None or not self.state.answered:
            return 0.0
        return 1.0 if verify(self.task, self.state.final_answer) else 0.0

    # -- helpers -------------------------------------------------------------------------------

    def _refuse(self, call: ToolCall, alias: Any) -> ToolResult | None:
        refusal = super()._refuse(call, alias)
        if refusal is not None:
            return refusal
        offered = self.world_task.tools
        if call.name not in offered:
            message = f"tool {call.name!r} is not offered in this task; tools: {', '.join(offered)}"
            return ToolResult(
                observation=f"{call.name} failed: {message}",
                error_kind=ToolErrorKind.UNKNOWN_TOOL,
                error_message=message,
            )
        return None


__all__ = [
    "LAST_TURN_NOTE",
    "SYSTEM_PROMPT",
    "TOOL_DESCRIPTIONS",
    "AliasCard",
    "CodeRunner",
    "ToolWorldEnv",
    "WorldQATools",
    "call_text",
    "roster_line",
    "tool_schemas",
    "typical_cost_units",
]
