"""What every tool call returns, and the ways a tool call can fail.

A run of thousands of episodes meets every failure an endpoint or a sandbox can produce. None of
them may kill the run: a tool reports trouble by raising `ToolError` (or anything else), and the
executor turns it into a `ToolResult` whose `error_kind` is counted in metrics and whose
`observation` tells the policy what happened. The kinds are a `StrEnum` so they log and count
as plain strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ToolErrorKind(StrEnum):
    """Why a tool call did not produce a normal result."""

    TIMEOUT = "timeout"  # the call ran past its own timeout
    DEADLINE = "deadline"  # the episode's deadline passed before or while it ran
    CONNECTION = "connection"  # endpoint unreachable, connection refused or reset
    RATE_LIMITED = "rate_limited"  # HTTP 429
    SERVER_ERROR = "server_error"  # HTTP 5xx
    CLIENT_ERROR = "client_error"  # HTTP 4xx other than 429: our request is wrong, not retried
    BAD_RESPONSE = "bad_response"  # a reply that is not what the protocol promises (garbage)
    INVALID_ARGUMENTS = "invalid_arguments"  # the arguments do not fit the tool
    UNKNOWN_TOOL = "unknown_tool"  # no tool of that name in this episode
    TOOL_EXCEPTION = "tool_exception"  # the tool raised something it did not classify
    # The code sandbox.
    NONZERO_EXIT = "nonzero_exit"  # the program exited with an error (a traceback, say)
    CPU_TIME_LIMIT = "cpu_time_limit"  # killed for CPU seconds
    WALL_TIME_LIMIT = "wall_time_limit"  # killed for wall-clock seconds (the whole group)
    MEMORY_LIMIT = "memory_limit"  # an allocation over the address-space limit
    OUTPUT_LIMIT = "output_limit"  # stdout/stderr or a written file over the size limit
    PROCESS_LIMIT = "process_limit"  # too many processes (a fork bomb)
    KILLED = "killed"  # ended by a signal not explained by the above


#: Kinds worth another attempt: the same request may well succeed a moment later.
RETRYABLE_KINDS = frozenset(
    {ToolErrorKind.CONNECTION, ToolErrorKind.RATE_LIMITED, ToolErrorKind.SERVER_ERROR}
)


class ToolError(Exception):
    """A classified tool failure. Tools raise it; the executor catches it."""

    def __init__(
        self,
        kind: ToolErrorKind,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        cost_usd: float = 0.0,
    ):
        super().__init__(f"{kind}: {message}")
        self.kind = ToolErrorKind(kind)
        self.message = message
        self.retryable = self.kind in RETRYABLE_KINDS if retryable is None else retryable
        self.retry_after_s = retry_after_s  # an HTTP Retry-After, when the server sent one
        self.cost_usd = cost_usd  # money already spent before the failure (billed tokens)


@dataclass(frozen=True)
class ToolResult:
    """One executed tool call, successful or not.

    `cost_usd` is what the call cost (expert tokens at the catalog price, sandbox seconds,
    search fees); `latency_s` its wall-clock (or the simulated latency of a simulated expert);
    `tokens_in`/`tokens_out` the expert's real usage counts. `info` holds tool-specific extras
    the environment reads (retrieved documents, the code that ran, the extracted final answer).
    """

    observation: str
    cost_usd: float = 0.0
    latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    error_kind: ToolErrorKind | None = None
    error_message: str | None = None
    model: str | None = None  # the model behind an expert alias, when there is one
    attempts: int = 1
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_kind is None
