"""The paper's three qa tools (`search`, `enhance_reasoning`, `answer`), each naming an expert.

In the method the policy never searches, codes or answers itself: it picks *which expert* does,
and pays for that expert's tokens. So every tool here is "ask the chosen expert for one thing,
then act on its reply":

- `search(model)`: the expert writes a short query for what is still missing; a retriever (local
  BM25 or web search: anything with `async search(query, k)`) answers it; new documents join
  the episode's state.
- `enhance_reasoning(model)`: the expert writes a self-contained Python program; it runs in the
  sandbox; its output (or error) joins the state.
- `answer(model)`: the expert answers; the final answer is extracted from its reply and ends the
  episode.

A tool reads the `QAState` but does not change it: the environment applies results in the
order the calls were written, so concurrent calls of one turn give the same state every time.
Failures of the expert endpoint (and of the retriever or sandbox) are `ToolError`s that
propagate to the executor, which classifies, retries and records them; they carry the money
already spent on the expert. A reply that arrives but is useless (no query, no code block, no
answer) is the expert's failure, not a transport error: the call succeeds, costs what it cost,
and its observation says what went wrong, so the policy learns that expert is a poor choice.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestra_jax.tools.answers import extract_final_answer
from orchestra_jax.tools.chat import ChatCompletion
from orchestra_jax.tools.experts import Expert, ExpertPool
from orchestra_jax.tools.pricing import SANDBOX_USD_PER_SECOND
from orchestra_jax.tools.results import ToolError, ToolErrorKind, ToolResult
from orchestra_jax.tools.sandbox import SandboxResult
from orchestra_jax.tools.sandbox import run_code as sandbox_run_code
from orchestra_jax.tools.search_types import SearchHit
from orchestra_jax.tools.simulated_expert import SimulatedExpert

SEARCH = "search"
ENHANCE_REASONING = "enhance_reasoning"
ANSWER = "answer"
TOOL_NAMES = (SEARCH, ENHANCE_REASONING, ANSWER)

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_QUERY_TAG = re.compile(r"<query>(.*?)</query>", re.DOTALL | re.IGNORECASE)
_QUERY_PREFIX = re.compile(r"^\s*(?:search\s+)?query\s*[:：]\s*", re.IGNORECASE)
_CODE_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_MAX_QUERY_CHARS = 300
_OMITTED = "[... {n} earlier item(s) left out to fit the context ...]"


class Retriever(Protocol):
    """What `search` needs from a retriever (`LocalSearch`, `WebSearch`).

    A retriever that charges per query also has `cost_usd(hits) -> float` (as `WebSearch`
    does); one without it is free. A task with a retrieval allow-list needs a retriever whose
    `search` takes `doc_ids=` (as `LocalSearch` does).
    """

    async def search(self, query: str, k: int = ...) -> list[SearchHit]: ...


class RunCode(Protocol):
    """The sandbox entry point (`orchestra_jax.tools.sandbox.run_code`)."""

    def __call__(self, code: str, timeout_s: float = ...) -> Awaitable[SandboxResult]: ...


# ------------------------------------------------------------------------------------------------
# The episode's accumulated state.


@dataclass(frozen=True)
class CodeRun:
    """One program an expert wrote, and what running it printed."""

    turn: int
    alias: str
    code: str
    output: str
    exit_kind: str | None  # the sandbox's error kind, None when it ran cleanly


@dataclass(frozen=True)
class StateEntry:
    """One item of the material shown to the policy and the experts, oldest first."""

    turn: int
    kind: str  # "documents" | "code" | "note"
    text: str


@dataclass
class QAState:
    """Everything a qa episode has gathered: documents, code runs, notes, the final answer.

    `hints` is task metadata only simulated experts read (family, gold answer, query terms,
    reference code); it never reaches the policy's prompt.
    """

    question: str
    hints: Mapping[str, Any] = field(default_factory=dict)
    documents: list[SearchHit] = field(default_factory=list)
    code_runs: list[CodeRun] = field(default_factory=list)
    entries: list[StateEntry] = field(default_factory=list)
    final_answer: str | None = None
    answered: bool = False

    def seen_doc_ids(self) -> set[str]:
        return {doc.doc_id for doc in self.documents}

    def add_note(self, turn: int, text: str) -> None:
        self.entries.append(StateEntry(turn, "note", text))

    def record(self, tool: str, result: ToolResult, turn: int, alias: str | None = None) -> str:
        """Fold one executed call's result into the state; returns the text the policy sees.

        A failure becomes a short note in our own words (`failure_note`), because the raw error
        can name the endpoint and the model behind the alias, which the policy must not see.
        """
        if not result.ok:
            note = failure_note(tool, alias, result, turn)
            self.add_note(turn, note)
            return note
        info = result.info
        if tool == SEARCH:
            seen = self.seen_doc_ids()
            self.documents.extend(h for h in info.get("documents", ()) if h.doc_id not in seen)
            kind = "documents" if info.get("documents") else "note"
            self.entries.append(StateEntry(turn, kind, result.observation))
        elif tool == ENHANCE_REASONING and "code" in info:
            self.code_runs.append(
                CodeRun(
                    turn,
                    str(info.get("alias", "")),
                    info["code"],
                    str(info.get("output", "")),
                    info.get("exit_kind"),
                )
            )
            self.entries.append(StateEntry(turn, "code", result.observation))
        elif tool == ANSWER and info.get("answer") is not None:
            self.final_answer = str(info["answer"])
            self.answered = True
        else:
            self.add_note(turn, result.observation)
        return result.observation


_FAILURE_PHRASES = {
    ToolErrorKind.TIMEOUT: "the call timed out",
    ToolErrorKind.DEADLINE: "the episode's time ran out",
    ToolErrorKind.CONNECTION: "the expert could not be reached",
    ToolErrorKind.RATE_LIMITED: "the expert is rate-limited",
    ToolErrorKind.SERVER_ERROR: "the expert's server failed",
    ToolErrorKind.CLIENT_ERROR: "the expert's server refused the request",
    ToolErrorKind.BAD_RESPONSE: "the reply was malformed",
    ToolErrorKind.TOOL_EXCEPTION: "the tool broke",
}


def failure_note(tool: str, alias: str | None, result: ToolResult, turn: int) -> str:
    """`Turn 3: answer by expert-2 failed (the expert could not be reached).`"""
    kind = result.error_kind
    phrase = _FAILURE_PHRASES.get(kind) if kind is not None else None
    if phrase is None:
        phrase = str(kind or "unknown error").replace("_", " ")
    who = f" by {alias}" if alias else ""
    tries = f" after {result.attempts} attempts" if result.attempts > 1 else ""
    return f"Turn {turn}: {tool}{who} failed ({phrase}{tries})."


def fit_from_front(
    blocks: Sequence[str], budget: int, measure: Callable[[str], int] = len
) -> list[str]:
    """The newest blocks that fit in `budget` (as counted by `measure`), oldest first.

    Older material goes first because the newest results are what the next decision depends on.
    A marker says how many blocks were dropped; when even the newest block alone is too long,
    its beginning is cut off.
    """
    kept: list[str] = []
    used = 0
    for block in reversed(blocks):
        size = measure(block) + 1
        if used + size > budget:
            break
        kept.append(block)
        used += size
    dropped = len(blocks) - len(kept)
    if dropped == 0:
        return list(reversed(kept))
    marker = _OMITTED.format(n=dropped)
    while kept and used + measure(marker) + 1 > budget:
        used -= measure(kept.pop()) + 1  # make room for the marker: drop the oldest kept
        dropped += 1
        marker = _OMITTED.format(n=dropped)
    if not kept:
        room = budget - measure(marker) - 2
        newest = _cut_front(blocks[-1], room, measure) if room > 0 else ""
        if newest:
            return [_OMITTED.format(n=len(blocks) - 1), newest]
        return [marker] if measure(marker) <= budget else []
    return [marker, *reversed(kept)]


def _cut_front(text: str, budget: int, measure: Callable[[str], int]) -> str:
    """`...` + the longest tail of `text` that `measure` counts as at most `budget` in all."""
    if measure(text) <= budget:
        return text
    low, high = 1, len(text)  # binary search on the start index: measure is monotone in length
    while low < high:
        mid = (low + high) // 2
        if measure("..." + text[mid:]) <= budget:
            high = mid
        else:
            low = mid + 1
    tail = text[low:]
    return "..." + tail if tail and measure("..." + tail) <= budget else ""


def render_material(state: QAState, budget: int, measure: Callable[[str], int] = len) -> str:
    """The state's material, oldest first, truncated from the front to `budget`."""
    return "\n\n".join(fit_from_front([e.text for e in state.entries], budget, measure))


# ------------------------------------------------------------------------------------------------
# Prompts for the experts (our own words).

_SEARCH_PROMPT = (
    "You write search queries for a research assistant. Read the problem and the notes gathered "
    "so far, decide which single fact is still missing, and write one short keyword query "
    "(at most about fifteen words) that would find it in an encyclopedia. Reply with the query "
    "alone, inside <query></query>."
)
_CODE_PROMPT = (
    "You are a careful programmer helping to solve a problem. Write one complete, "
    "self-contained Python 3 program that computes, checks or organises something that moves "
    "the solution forward, using the notes gathered so far. The program must not read input or "
    "use the network, and must print every result worth keeping. Reply with the program in a "
    "single ```python code block."
)
_ANSWER_PROMPT = (
    "You answer questions. Use the problem and the notes gathered so far. Reason briefly if you "
    "need to, then give the final answer alone -- a name, a number, a date or a short phrase -- "
    "inside <answer></answer>. A mathematical result may be given in \\boxed{} instead."
)


def _expert_messages(system: str, state: QAState, budget: int) -> list[dict[str, str]]:
    material = render_material(state, budget) or "(nothing yet)"
    user = f"Problem:\n{state.question}\n\nGathered so far:\n{material}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _visible(text: str) -> str:
    visible = _THINK_BLOCK.sub("\n", text or "")
    if "</think>" in visible:
        visible = visible.rsplit("</think>", 1)[1]
    if "<think>" in visible:
        visible = visible.split("<think>", 1)[0]
    return visible


def extract_query(text: str) -> str | None:
    """The search query in an expert's reply: the last `<query>` tag, else its last line."""
    visible = _visible(text)
    tagged = _QUERY_TAG.findall(visible)
    if tagged:
        candidate = tagged[-1]
    else:
        lines = [line for line in visible.splitlines() if line.strip()]
        candidate = lines[-1] if lines else ""
    candidate = _QUERY_PREFIX.sub("", candidate)
    candidate = " ".join(candidate.split()).strip("`*\"' ")
    return candidate[:_MAX_QUERY_CHARS].strip() or None


def extract_code(text: str) -> str | None:
    """The program in an expert's reply: its last fenced Python (or unlabelled) code block."""
    blocks = [b for b in _CODE_BLOCK.findall(_visible(text)) if b.strip()]
    return blocks[-1].strip() + "\n" if blocks else None


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = max(limit // 2 - 20, 1)
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def typical_latency_s(expert: Expert) -> float | None:
    """A simulated expert's median latency from its profile; None for real endpoints."""
    client = expert.client
    if isinstance(client, SimulatedExpert):
        p = client.profile
        return p.latency_first_token_s + p.latency_per_token_s * p.tokens_out_median
    return None


# ------------------------------------------------------------------------------------------------
# The tools.


class QATools:
    """The three qa tools over one expert pool, retriever and sandbox.

    `latencies` (alias -> seconds) overrides what the tool descriptions say about latency;
    without it a simulated expert's profile gives it and a real endpoint's goes unmentioned.

    Per-task settings (the released records' prices and allow-lists): `sandbox_usd_per_second`
    prices sandbox time; `search_usd_per_query`, when given, is what one search costs, in place
    of the retriever's own fee; `doc_ids` restricts retrieval to those documents. `for_task`
    derives the tools of one task from the shared ones.
    """

    def __init__(
        self,
        experts: ExpertPool,
        retriever: Retriever,
        *,
        run_code: RunCode | None = None,
        search_k: int = 5,
        code_timeout_s: float = 10.0,
        expert_max_tokens: int = 8192,
        expert_context_chars: int = 16_000,
        max_doc_chars: int = 1_500,
        max_output_chars: int = 4_000,
        latencies: Mapping[str, float] | None = None,
        sandbox_usd_per_second: float = SANDBOX_USD_PER_SECOND,
        search_usd_per_query: float | None = None,
        doc_ids: Collection[str] | None = None,
    ) -> None:
        if search_k < 1:
            raise ValueError(f"search_k must be >= 1, got {search_k}")
        if not code_timeout_s > 0:
            raise ValueError(f"code_timeout_s must be > 0, got {code_timeout_s}")
        self.experts = experts
        self.retriever = retriever
        self.run_code = run_code if run_code is not None else sandbox_run_code
        self.search_k = search_k
        self.code_timeout_s = float(code_timeout_s)
        self.expert_max_tokens = expert_max_tokens
        self.expert_context_chars = expert_context_chars
        self.max_doc_chars = max_doc_chars
        self.max_output_chars = max_output_chars
        self.latencies = dict(latencies or {})
        self.sandbox_usd_per_second = _fee(sandbox_usd_per_second, "sandbox_usd_per_second")
        self.search_usd_per_query = (
            None
            if search_usd_per_query is None
            else _fee(search_usd_per_query, "search_usd_per_query")
        )
        self.doc_ids: frozenset[str] | None = None
        if doc_ids is not None:
            self.doc_ids = _allow_list(doc_ids, retriever)

    def for_task(
        self,
        *,
        experts: ExpertPool | None = None,
        sandbox_usd_per_second: float | None = None,
        search_usd_per_query: float | None = None,
        doc_ids: Collection[str] | None = None,
    ) -> QATools:
        """These tools (same retriever, sandbox and limits; a subclass stays itself) with one
        task's pool, basic-tool prices and retrieval allow-list; None keeps this one's.

        ValueError for a bad price, or for an allow-list given a retriever that cannot honour
        one (a `search` without a `doc_ids` parameter).
        """
        derived = copy.copy(self)
        derived.latencies = dict(self.latencies)
        if experts is not None:
            derived.experts = experts
        if sandbox_usd_per_second is not None:
            derived.sandbox_usd_per_second = _fee(sandbox_usd_per_second, "sandbox_usd_per_second")
        if search_usd_per_query is not None:
            derived.search_usd_per_query = _fee(search_usd_per_query, "search_usd_per_query")
        if doc_ids is not None:
            derived.doc_ids = _allow_list(doc_ids, self.retriever)
        return derived

    # -- description for the policy --------------------------------------------------------------

    def alias_line(self, alias: str) -> str:
        """`expert-1: $1.25 in / $10.00 out per million tokens, about 40 s per call`."""
        expert = self.experts[alias]
        line = (
            f"{alias}: ${expert.price.input_usd_per_mtok:g} in / "
            f"${expert.price.output_usd_per_mtok:g} out per million tokens"
        )
        latency = self.latencies.get(alias, typical_latency_s(expert))
        if latency is not None and math.isfinite(latency):
            line += (
                f", about {latency:.0f} s per call"
                if latency >= 1
                else f", about {latency:.1f} s per call"
            )
        return line

    def schemas(
        self,
        aliases: Sequence[str],
        tool_aliases: Mapping[str, Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """OpenAI-format schemas of the tools, `model` restricted to `aliases`.

        `tool_aliases` (tool -> the aliases it accepts; an empty sequence: every alias) offers
        only its tools, each with its own enum and roster (None: all three, every alias).
        """
        fee = "" if self.search_usd_per_query is None else (
            f" (${self.search_usd_per_query:g} per search)"
        )
        purposes = {
            SEARCH: "The chosen expert writes a short search query for the information still "
            f"missing; the top {self.search_k} documents found are added to the notes{fee}.",
            ENHANCE_REASONING: "The chosen expert writes a Python program for the problem; it "
            "runs in a sandbox and its output is added to the notes "
            f"(sandbox ${self.sandbox_usd_per_second:g} per second).",
            ANSWER: "The chosen expert gives the final answer. This ends the episode.",
        }
        offered = tool_aliases if tool_aliases is not None else dict.fromkeys(TOOL_NAMES, ())
        schemas = []
        for name in TOOL_NAMES:
            if name not in offered:
                continue
            accepted = list(offered[name]) or list(aliases)
            roster = "; ".join(self.alias_line(a) for a in accepted)
            schemas.append({
                "type": "function",
                "function": {
                    "name": name,
                    "description": f"{purposes[name]} Experts and prices: {roster}.",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "model": {
                                "type": "string",
                                "enum": accepted,
                                "description": "The alias of the expert to use.",
                            }
                        },
                        "required": ["model"],
                    },
                },
            })  # fmt: skip
        return schemas

    def tool(self, name: str) -> Callable[[str, QAState], Awaitable[ToolResult]]:
        """The tool function `(alias, state) -> ToolResult` called `name`."""
        tools = {
            SEARCH: self.search,
            ENHANCE_REASONING: self.enhance_reasoning,
            ANSWER: self.answer,
        }
        if name not in tools:
            raise KeyError(f"no qa tool {name!r}; tools: {', '.join(TOOL_NAMES)}")
        return tools[name]

    # -- shared --------------------------------------------------------------------------------

    def _expert(self, alias: str) -> Expert:
        if alias not in self.experts:
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"unknown expert alias {alias!r}; known: {', '.join(self.experts.aliases())}",
            )
        return self.experts[alias]

    async def _ask(
        self, alias: str, state: QAState, system: str, role: str
    ) -> tuple[Expert, ChatCompletion, float]:
        expert = self._expert(alias)
        messages = _expert_messages(system, state, self.expert_context_chars)
        hints = {**state.hints, "role": role}
        completion, cost = await expert.complete(
            messages, max_tokens=self.expert_max_tokens, temperature=0.0, hints=hints
        )
        return expert, completion, cost

    def _result(
        self,
        expert: Expert,
        completion: ChatCompletion,
        cost: float,
        observation: str,
        *,
        extra_cost: float = 0.0,
        extra_latency: float = 0.0,
        **info: Any,
    ) -> ToolResult:
        return ToolResult(
            observation=observation,
            cost_usd=cost + extra_cost,
            latency_s=completion.latency_s + extra_latency,
            tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out,
            model=expert.model,
            info={
                "alias": expert.alias,
                "reply": completion.text,
                "finish_reason": completion.finish_reason,
                **info,
            },
        )

    # -- search --------------------------------------------------------------------------------

    async def search(self, alias: str, state: QAState) -> ToolResult:
        """The expert writes a query; the retriever's new documents join the notes."""
        expert, completion, cost = await self._ask(alias, state, _SEARCH_PROMPT, "query")
        query = extract_query(completion.text)
        if query is None:
            return self._result(
                expert,
                completion,
                cost,
                f"search by {alias}: the expert wrote no usable query.",
                query=None,
                documents=[],
            )
        started = time.monotonic()
        allow = {} if self.doc_ids is None else {"doc_ids": self.doc_ids}
        try:
            hits = list(await self.retriever.search(query, self.search_k, **allow))
        except ToolError as err:
            raise _with_cost(err, cost) from err
        except Exception as err:
            raise ToolError(
                ToolErrorKind.TOOL_EXCEPTION,
                f"retriever raised {type(err).__name__}: {err}"[:300],
                cost_usd=cost,
            ) from err
        search_s = time.monotonic() - started
        fee_of = getattr(self.retriever, "cost_usd", None)
        # Asked even when the task sets the fee: a retriever may keep per-search state.
        fee = float(fee_of(hits)) if callable(fee_of) else 0.0
        if self.search_usd_per_query is not None:  # the task's price replaces the retriever's
            fee = self.search_usd_per_query
        observation = self._describe_hits(alias, query, hits, state.seen_doc_ids())
        return self._result(
            expert,
            completion,
            cost,
            observation,
            extra_cost=fee,
            extra_latency=search_s,
            query=query,
            documents=hits,
            search_fee_usd=fee,
        )

    def _describe_hits(
        self, alias: str, query: str, hits: Sequence[SearchHit], seen: set[str]
    ) -> str:
        head = f'search by {alias} for "{query}"'
        if not hits:
            return f"{head}: no documents found."
        new = [h for h in hits if h.doc_id not in seen]
        lines = [
            f"{head}: {len(hits)} document(s)"
            + (f", {len(hits) - len(new)} already in the notes" if len(new) < len(hits) else "")
            + ("." if not new else ":")
        ]
        for hit in new:
            title = f" {hit.title}" if hit.title else ""
            lines.append(f"[{hit.doc_id}]{title}\n{_clip(hit.text, self.max_doc_chars)}")
        return "\n".join(lines)

    # -- enhance_reasoning -----------------------------------------------------------------------

    async def enhance_reasoning(self, alias: str, state: QAState) -> ToolResult:
        """The expert writes a program; the sandbox runs it; the output joins the notes."""
        expert, completion, cost = await self._ask(alias, state, _CODE_PROMPT, "code")
        code = extract_code(completion.text)
        if code is None:
            return self._result(
                expert,
                completion,
                cost,
                f"enhance_reasoning by {alias}: the expert's reply held no Python code block.",
            )
        try:
            run = await self.run_code(code, timeout_s=self.code_timeout_s)
        except ToolError as err:
            raise _with_cost(err, cost) from err
        except Exception as err:
            raise ToolError(
                ToolErrorKind.TOOL_EXCEPTION,
                f"sandbox raised {type(err).__name__}: {err}"[:300],
                cost_usd=cost,
            ) from err
        wall_s = max(float(run.wall_s), 0.0)
        exit_kind = run.error_kind
        if exit_kind is None:
            output = run.stdout.rstrip() if run.stdout.strip() else "(the program printed nothing)"
        else:
            tail = run.stderr.strip().splitlines()[-5:]
            output = run.stdout.rstrip() + "\n" if run.stdout.strip() else ""
            output += f"[program failed: {exit_kind}]" + "".join(f"\n{line}" for line in tail)
        output = _clip(output, self.max_output_chars)
        observation = (
            f"enhance_reasoning by {alias} ran this program:\n```python\n{code}```\n"
            f"Output:\n{output}"
        )
        sandbox_cost = wall_s * self.sandbox_usd_per_second
        return self._result(
            expert,
            completion,
            cost,
            observation,
            extra_cost=sandbox_cost,
            extra_latency=wall_s,
            code=code,
            output=output,
            exit_kind=None if exit_kind is None else str(exit_kind),
            sandbox_s=wall_s,
            sandbox_usd=sandbox_cost,
            enforced=run.enforced,
        )

    # -- answer --------------------------------------------------------------------------------

    async def answer(self, alias: str, state: QAState) -> ToolResult:
        """The expert answers; the extracted final answer ends the episode."""
        expert, completion, cost = await self._ask(alias, state, _ANSWER_PROMPT, "answer")
        answer = extract_final_answer(completion.text)
        if answer is None:
            observation = f"answer by {alias}: the expert's reply held no answer."
        else:
            observation = f"answer by {alias}: {answer}"
        return self._result(expert, completion, cost, observation, answer=answer)


def _fee(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def _allow_list(doc_ids: Collection[str], retriever: Any) -> frozenset[str]:
    """The allow-list as a set; ValueError when `retriever.search` cannot take one."""
    if isinstance(doc_ids, str) or not all(isinstance(d, str) for d in doc_ids):
        raise ValueError(f"doc_ids must be a collection of document ids, got {doc_ids!r}")
    try:
        params = inspect.signature(retriever.search).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: let the call decide
        return frozenset(doc_ids)
    if not any(p.name == "doc_ids" or p.kind is p.VAR_KEYWORD for p in params):
        raise ValueError(
            f"a retrieval allow-list needs a retriever whose search takes doc_ids=; "
            f"{type(retriever).__name__} does not"
        )
    return frozenset(doc_ids)


def _with_cost(err: ToolError, cost: float) -> ToolError:
    """The same failure, carrying the expert tokens already paid for before it happened."""
    return ToolError(
        err.kind,
        err.message,
        retryable=err.retryable,
        retry_after_s=err.retry_after_s,
        cost_usd=err.cost_usd + cost,
    )
