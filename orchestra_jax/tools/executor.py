"""The asynchronous tool executor: concurrency limits, timeouts, retries, and nothing escapes.

Thousands of episodes run as coroutines on one event loop and all of them call tools through one
`ToolExecutor`. Three things make that safe:

* **Limits.** A global semaphore bounds how many tool attempts run at once, and per-tool
  semaphores bound the tools that cannot take many (a retrieval server, a rate-limited API). A
  slot is held only while an attempt runs: a call sleeping before a retry holds nothing, so one
  flaky endpoint cannot starve the others.
* **Time.** Each attempt has its own timeout, and the episode's absolute `deadline`
  (`time.monotonic()` seconds) bounds everything: no attempt starts after it, a running attempt is
  cut at it, and no backoff sleep reaches past it. Timeouts are not retried (the same slow request
  would most likely be slow again, and the episode's clock is running).
* **Classification.** Every call returns a `ToolResult`. A `ToolError` keeps its kind, a timeout
  becomes `TIMEOUT`, the deadline `DEADLINE`, any other exception `TOOL_EXCEPTION`, and a reply
  that is not a `ToolResult` `BAD_RESPONSE`. The observation is a short sentence the policy can
  read ("search failed: timed out after 5.0 s"). Only errors marked retryable (connection errors,
  HTTP 429, 5xx) are retried, with exponential backoff and seeded jitter so that retries of many
  episodes do not arrive in lock-step and tests stay deterministic.

Cancellation by the caller (an episode abandoned, a run shutting down) is not a tool failure:
`asyncio.CancelledError` raised because the awaiting task was cancelled always propagates.

An executor belongs to one event loop (its semaphores bind to the loop that first waits on them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from orchestra_jax.tools.results import ToolError, ToolErrorKind, ToolResult

#: Longest exception text that reaches a result; tracebacks of HTTP clients can be pages long.
_MAX_MESSAGE_CHARS = 500
#: Environment variables whose values are secrets and must never appear in a result.
_SECRET_NAME_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a retryable failure is tried again.

    The n-th retry waits `base_delay_s * 2**(n-1)` seconds, capped at `max_delay_s`; a fraction
    `jitter` of that wait is drawn uniformly at random, so the actual wait lies in
    `[delay * (1 - jitter), delay]` and never above the cap.
    """

    max_attempts: int = 3  # total attempts, the first one included
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError(
                f"RetryPolicy delays must be >= 0, got base_delay_s={self.base_delay_s}, "
                f"max_delay_s={self.max_delay_s}"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter}")

    def backoff_s(self, failed_attempts: int, uniform: float) -> float:
        """The wait after `failed_attempts` failures, given a uniform draw in [0, 1)."""
        delay = min(self.base_delay_s * 2.0 ** (failed_attempts - 1), self.max_delay_s)
        return delay * (1.0 - self.jitter) + delay * self.jitter * uniform


@dataclass
class _Failure:
    """One failed attempt, classified."""

    kind: ToolErrorKind
    reason: str  # short, for the policy: "timed out after 5.0 s"
    detail: str  # longer, for logs and metrics: exception type and message
    retryable: bool = False
    retry_after_s: float | None = None
    cost_usd: float = 0.0


class ToolExecutor:
    """Runs tool calls under global and per-tool concurrency limits with timeouts and retries."""

    def __init__(
        self,
        *,
        max_concurrency: int = 64,
        tool_concurrency: Mapping[str, int] | None = None,
        timeout_s: float = 60.0,
        tool_timeouts_s: Mapping[str, float] | None = None,
        retry: RetryPolicy = RetryPolicy(),  # frozen, hence safe as a default
        seed: int | None = None,
        closers: tuple[Callable[[], Awaitable[None]], ...] = (),
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        for name, limit in (tool_concurrency or {}).items():
            if limit < 1:
                raise ValueError(f"tool_concurrency[{name!r}] must be >= 1, got {limit}")
        for name, seconds in {"<default>": timeout_s, **(tool_timeouts_s or {})}.items():
            if not seconds > 0:
                raise ValueError(f"timeout for tool {name!r} must be > 0 s, got {seconds}")
        self._max_concurrency = max_concurrency
        self._global_slots = asyncio.Semaphore(max_concurrency)
        self._tool_limits = dict(tool_concurrency or {})
        self._tool_slots = {name: asyncio.Semaphore(n) for name, n in self._tool_limits.items()}
        self._timeout_s = float(timeout_s)
        self._tool_timeouts_s = {name: float(s) for name, s in (tool_timeouts_s or {}).items()}
        self._retry = retry
        self._rng = random.Random(seed)
        self._closers = tuple(closers)
        # Counters for stats(); plain ints because everything runs on one event loop thread.
        self._calls = 0
        self._attempts = 0
        self._retries = 0
        self._successes = 0
        self._errors: Counter[str] = Counter()  # final result kinds
        self._attempt_errors: Counter[str] = Counter()  # every failed attempt
        self._in_flight = 0
        self._peak_in_flight = 0
        self._tool_in_flight: Counter[str] = Counter()
        self._tool_peak_in_flight: Counter[str] = Counter()

    # ------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Release what the tools hold that is bound to the running event loop (the experts'
        HTTP sessions, through `closers`): the episode runners call it when their loop ends,
        so no session outlives its loop; a later run opens fresh ones."""
        for close in self._closers:
            await close()

    async def run(
        self,
        tool: str,
        call: Callable[[], Awaitable[ToolResult]],
        *,
        timeout_s: float | None = None,
        deadline: float | None = None,
    ) -> ToolResult:
        """Run `call()` (a factory, called anew for every attempt); return the classified result.

        `timeout_s` overrides the per-attempt timeout of this tool; `deadline` is an absolute
        `time.monotonic()` value after which nothing of this call may run.
        """
        self._calls += 1
        started = time.monotonic()
        problem = _check_call_arguments(timeout_s, deadline)
        if problem is not None:
            failure = _Failure(ToolErrorKind.INVALID_ARGUMENTS, problem, problem)
            return self._failed(tool, failure, 0, started, 0.0)
        attempt_timeout = self._attempt_timeout(tool, timeout_s)
        billed = 0.0
        attempt = 0
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                failure = _Failure(
                    ToolErrorKind.DEADLINE,
                    "the episode's time ran out before it could start"
                    if attempt == 0
                    else "the episode's time ran out before another attempt",
                    "deadline passed before the attempt started",
                )
                return self._failed(tool, failure, attempt, started, billed)
            attempt += 1
            outcome, attempt_latency = await self._attempt(tool, call, attempt_timeout, deadline)
            if isinstance(outcome, ToolResult):
                return self._succeeded(outcome, attempt, attempt_latency, billed)
            billed += outcome.cost_usd
            self._attempt_errors[outcome.kind] += 1
            if not outcome.retryable or attempt >= self._retry.max_attempts:
                if outcome.retryable and attempt > 1:
                    outcome.reason += f" (after {attempt} attempts)"
                return self._failed(tool, outcome, attempt, started, billed)
            wait = self._wait_before_retry(attempt, outcome.retry_after_s)
            if deadline is not None and time.monotonic() + wait >= deadline:
                outcome.reason += "; no time left in the episode to retry"
                return self._failed(tool, outcome, attempt, started, billed)
            self._retries += 1
            await asyncio.sleep(wait)  # no slot is held while waiting

    def stats(self) -> dict[str, Any]:
        """Counters since construction, for metrics and for tests of the limits."""
        return {
            "calls": self._calls,
            "attempts": self._attempts,
            "retries": self._retries,
            "successes": self._successes,
            "errors": dict(self._errors),
            "attempt_errors": dict(self._attempt_errors),
            "in_flight": self._in_flight,
            "peak_in_flight": self._peak_in_flight,
            "in_flight_by_tool": {k: v for k, v in self._tool_in_flight.items() if v},
            "peak_in_flight_by_tool": dict(self._tool_peak_in_flight),
            "max_concurrency": self._max_concurrency,
            "tool_concurrency": dict(self._tool_limits),
        }

    # ------------------------------------------------------------------------------------------
    def _attempt_timeout(self, tool: str, override: float | None) -> float:
        if override is not None:
            return float(override)
        return self._tool_timeouts_s.get(tool, self._timeout_s)

    def _wait_before_retry(self, failed_attempts: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s >= 0:
            # The server said when to come back; believe it, within our own patience.
            return min(float(retry_after_s), self._retry.max_delay_s)
        return self._retry.backoff_s(failed_attempts, self._rng.random())

    @asynccontextmanager
    async def _slot(self, tool: str) -> AsyncIterator[None]:
        """Hold this tool's slot, then a global one, for the duration of one attempt.

        The per-tool slot is taken first so that calls queueing for a busy tool do not sit on
        global slots other tools could use.
        """
        tool_slots = self._tool_slots.get(tool)
        if tool_slots is not None:
            await tool_slots.acquire()
        try:
            async with self._global_slots:
                self._in_flight += 1
                self._tool_in_flight[tool] += 1
                self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
                self._tool_peak_in_flight[tool] = max(
                    self._tool_peak_in_flight[tool], self._tool_in_flight[tool]
                )
                try:
                    yield
                finally:
                    self._in_flight -= 1
                    self._tool_in_flight[tool] -= 1
        finally:
            if tool_slots is not None:
                tool_slots.release()

    async def _attempt(
        self,
        tool: str,
        call: Callable[[], Awaitable[ToolResult]],
        attempt_timeout: float,
        deadline: float | None,
    ) -> tuple[ToolResult | _Failure, float]:
        """One attempt: wait for a slot (bounded by the deadline), then run under a timeout."""
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(_remaining(deadline)) as queue_cm, self._slot(tool):
                # Leave the queueing timeout behind: the attempt gets its own budget below.
                queue_cm.reschedule(None)
                self._attempts += 1
                return await self._timed_call(tool, call, attempt_timeout, deadline)
        except TimeoutError:
            # Only the queueing timeout can land here: _timed_call catches its own.
            return (
                _Failure(
                    ToolErrorKind.DEADLINE,
                    "the episode's time ran out while waiting for a free slot",
                    "deadline passed while queued for a concurrency slot",
                ),
                0.0,
            )
        except asyncio.CancelledError:
            if task is not None and task.cancelling():
                raise  # the caller cancelled us: not ours to swallow
            return _Failure(
                ToolErrorKind.TOOL_EXCEPTION,
                "the tool was cancelled internally",
                "CancelledError raised by the tool",
            ), 0.0

    async def _timed_call(
        self,
        tool: str,
        call: Callable[[], Awaitable[ToolResult]],
        attempt_timeout: float,
        deadline: float | None,
    ) -> tuple[ToolResult | _Failure, float]:
        budget = attempt_timeout
        cut_by_deadline = False
        remaining = _remaining(deadline)
        if remaining is not None and remaining < budget:
            budget, cut_by_deadline = max(remaining, 0.0), True
        task = asyncio.current_task()
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(budget) as cm:
                reply: Any = call()
                if inspect.isawaitable(reply):
                    reply = await reply
        except TimeoutError as exc:
            elapsed = time.monotonic() - t0
            if not cm.expired():
                # The tool raised a TimeoutError of its own (an HTTP client's read timeout).
                return _Failure(
                    ToolErrorKind.TIMEOUT,
                    f"timed out ({_describe(exc)})",
                    f"tool raised {_describe(exc)}",
                ), elapsed
            if cut_by_deadline:
                return _Failure(
                    ToolErrorKind.DEADLINE,
                    f"the episode's time ran out after {_seconds(elapsed)} s",
                    "attempt cut at the episode deadline",
                ), elapsed
            return _Failure(
                ToolErrorKind.TIMEOUT,
                f"timed out after {_seconds(attempt_timeout)} s",
                f"attempt exceeded its {attempt_timeout} s timeout",
            ), elapsed
        except ToolError as exc:
            return _Failure(
                exc.kind,
                _redact(exc.message) or str(exc.kind).replace("_", " "),
                _redact(f"{type(exc).__name__}: {exc}"),
                retryable=exc.retryable,
                retry_after_s=exc.retry_after_s,
                cost_usd=_as_cost(exc.cost_usd),
            ), time.monotonic() - t0
        except asyncio.CancelledError:
            if task is not None and task.cancelling():
                raise
            return _Failure(
                ToolErrorKind.TOOL_EXCEPTION,
                "the tool was cancelled internally",
                "CancelledError raised by the tool",
            ), time.monotonic() - t0
        except (Exception, SystemExit) as exc:  # a tool's sys.exit() must not end a training run
            return _Failure(
                ToolErrorKind.TOOL_EXCEPTION,
                f"the tool raised {_describe(exc)}",
                _describe(exc),
            ), time.monotonic() - t0
        elapsed = time.monotonic() - t0
        if not isinstance(reply, ToolResult):
            return _Failure(
                ToolErrorKind.BAD_RESPONSE,
                f"the tool returned {type(reply).__name__} instead of a result",
                f"expected ToolResult, got {_redact(repr(reply))[:200]}",
            ), elapsed
        return reply, elapsed

    def _succeeded(
        self, result: ToolResult, attempts: int, attempt_latency: float, billed: float
    ) -> ToolResult:
        # A simulated expert reports its simulated latency; keep it. Otherwise measure.
        latency = result.latency_s if result.latency_s > 0 else attempt_latency
        if result.ok:
            self._successes += 1
        else:
            self._errors[result.error_kind] += 1
        return dataclasses.replace(
            result,
            attempts=attempts,
            latency_s=latency,
            # Money spent by earlier failed attempts (billed tokens) was really spent.
            cost_usd=result.cost_usd + billed,
        )

    def _failed(
        self, tool: str, failure: _Failure, attempts: int, started: float, billed: float
    ) -> ToolResult:
        self._errors[failure.kind] += 1
        return ToolResult(
            observation=f"{tool} failed: {failure.reason}",
            cost_usd=billed,
            latency_s=time.monotonic() - started,
            error_kind=failure.kind,
            error_message=failure.detail,
            attempts=attempts,
        )


def _check_call_arguments(timeout_s: object, deadline: object) -> str | None:
    """What is wrong with run()'s own arguments, naming the argument; None if nothing.

    A wrong value here is a caller's bug, but it must still end as a result, not an exception
    in the middle of a rollout.
    """
    if timeout_s is not None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
            return f"timeout_s must be a number of seconds, got {type(timeout_s).__name__}"
        if not timeout_s > 0:  # NaN fails this too
            return f"timeout_s must be > 0 s, got {timeout_s!r}"
    if deadline is not None:
        if isinstance(deadline, bool) or not isinstance(deadline, int | float):
            return f"deadline must be a time.monotonic() value, got {type(deadline).__name__}"
        if math.isnan(deadline):
            return "deadline must be a time.monotonic() value, got nan"
    return None


def _seconds(value: float) -> str:
    """5.0 for five seconds, 0.05 for fifty milliseconds: readable at both scales."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _as_cost(value: Any) -> float:
    try:
        cost = float(value)
    except (TypeError, ValueError):
        return 0.0
    return cost if math.isfinite(cost) and cost > 0 else 0.0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    described = _redact(described)
    if len(described) > _MAX_MESSAGE_CHARS:
        described = described[: _MAX_MESSAGE_CHARS - 3] + "..."
    return described


def _redact(text: str) -> str:
    """Blank out the values of secret-looking environment variables.

    Some HTTP clients put request headers or URLs with keys into exception text; a result is
    logged, shown to the policy and written to trajectories, so the key must not be in it.
    """
    for name, value in os.environ.items():
        if len(value) >= 8 and any(m in name.upper() for m in _SECRET_NAME_MARKERS):
            if value in text:
                text = text.replace(value, f"<{name}>")
    return text
