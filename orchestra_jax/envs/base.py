"""The `Environment` protocol: what an episode loop needs from a task's world.

An environment is host code (no jax). The episode loop owns the policy side -- rendering,
generation, parsing -- and hands each turn's parsed tool calls to `step`, which runs them
through the shared `ToolExecutor` (limits, timeouts, retries) and updates its own state. Two
rendering modes exist because the method uses both: in `qa` mode the prompt is rebuilt every
turn from the accumulated state (the policy never sees its own earlier turns); in `dialogue`
mode the conversation accumulates and each turn extends the previous prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from orchestra_jax.tokenization.tool_calls import ToolCall
from orchestra_jax.tools.results import ToolErrorKind, ToolResult

RenderMode = Literal["qa", "dialogue"]


@dataclass(frozen=True)
class CallRecord:
    """One executed tool call as a trajectory keeps it: enough to price, time and count it."""

    turn: int
    tool: str
    arguments: Mapping[str, Any]
    alias: str | None  # the expert alias the call named (the `model` argument), if any
    model: str | None  # the model behind the alias
    cost_usd: float
    latency_s: float
    tokens_in: int
    tokens_out: int
    error_kind: ToolErrorKind | None
    error_message: str | None = None
    attempts: int = 1

    @classmethod
    def from_result(
        cls, turn: int, call: ToolCall, result: ToolResult, alias: str | None = None
    ) -> CallRecord:
        return cls(
            turn=turn,
            tool=call.name,
            arguments=dict(call.arguments),
            alias=alias,
            model=result.model,
            cost_usd=result.cost_usd,
            latency_s=result.latency_s,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            error_kind=result.error_kind,
            error_message=result.error_message,
            attempts=result.attempts,
        )


@dataclass
class StepOutput:
    """What one `step` did: its call records, and the observation text shown to the policy."""

    records: list[CallRecord] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)


@runtime_checkable
class Environment(Protocol):
    """A task's world. `reset` once, then `messages` -> (policy turn) -> `step` until `done`."""

    mode: RenderMode

    def reset(self, task: Any) -> None:
        """Start a fresh episode of `task` (the environment keeps everything it needs)."""
        ...

    def tools(self) -> list[dict[str, Any]]:
        """OpenAI-format tool schemas: shown in the prompt and used to validate calls."""
        ...

    def messages(self) -> list[dict[str, Any]]:
        """The chat to render for the policy's next turn (qa: rebuilt from state)."""
        ...

    async def step(
        self, assistant_text: str, calls: Sequence[ToolCall], executor: Any, turn: int
    ) -> StepOutput:
        """Run this turn's calls (at most one per tool name) through `executor`; update state."""
        ...

    @property
    def done(self) -> bool:
        """True once the episode has ended (a final answer, or the environment says so)."""
        ...

    def outcome(self) -> float:
        """The verified outcome in [0, 1] (0 when the episode ended without an answer)."""
        ...
