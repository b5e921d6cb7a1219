"""ToolExecutor: limits, retries, timeouts, deadlines, classification, cancellation.

Real asyncio with small delays; every test drives its coroutine with asyncio.run.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest

from orchestra_jax.tools.executor import RetryPolicy, ToolExecutor
from orchestra_jax.tools.results import ToolError, ToolErrorKind, ToolResult

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, jitter=0.5)


def ok(text: str = "ok", **kwargs) -> ToolResult:
    return ToolResult(observation=text, **kwargs)


def test_global_and_per_tool_concurrency_limits_hold_under_load():
    """Peak in-flight, measured inside the tools, never exceeds either limit."""

    async def main():
        executor = ToolExecutor(max_concurrency=5, tool_concurrency={"search": 2}, seed=0)
        running = {"search": 0, "code": 0, "all": 0}
        peaks = {"search": 0, "code": 0, "all": 0}

        def tool(name):
            async def call():
                running[name] += 1
                running["all"] += 1
                peaks[name] = max(peaks[name], running[name])
                peaks["all"] = max(peaks["all"], running["all"])
                await asyncio.sleep(0.01)
                running[name] -= 1
                running["all"] -= 1
                return ok(name)

            return call

        names = ["search", "code"] * 20
        results = await asyncio.gather(*(executor.run(n, tool(n)) for n in names))
        return executor, results, peaks

    executor, results, peaks = asyncio.run(main())
    assert all(r.ok for r in results)
    assert peaks["search"] == 2  # the per-tool limit is reached and respected
    assert peaks["all"] == 5  # the global limit is reached and respected
    stats = executor.stats()
    assert stats["peak_in_flight"] == 5
    assert stats["peak_in_flight_by_tool"]["search"] == 2
    assert stats["in_flight"] == 0 and stats["calls"] == 40 and stats["successes"] == 40


def test_backoff_sleep_holds_no_slot():
    """While one call sleeps before its retry, another call can use the only slot."""

    async def main():
        executor = ToolExecutor(
            max_concurrency=1, retry=RetryPolicy(3, 0.2, 0.2, jitter=0.0), seed=0
        )
        attempts = 0

        async def flaky():
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise ToolError(ToolErrorKind.SERVER_ERROR, "HTTP 503")
            return ok("flaky")

        async def quick():
            return ok("quick")

        flaky_task = asyncio.create_task(executor.run("a", flaky))
        await asyncio.sleep(0.05)  # flaky is now sleeping in its backoff
        started = time.monotonic()
        quick_result = await executor.run("b", quick)
        waited = time.monotonic() - started
        return await flaky_task, quick_result, waited

    flaky_result, quick_result, waited = asyncio.run(main())
    assert quick_result.ok and flaky_result.ok and flaky_result.attempts == 2
    assert waited < 0.1  # did not wait for the 0.2 s backoff


def test_server_error_is_retried_and_succeeds_on_third_attempt():
    async def main():
        executor = ToolExecutor(retry=FAST_RETRY, seed=1)
        attempts = 0

        async def call():
            nonlocal attempts
            attempts += 1
            if attempts < 3:
                raise ToolError(ToolErrorKind.SERVER_ERROR, "HTTP 502 bad gateway", cost_usd=0.01)
            return ok("answer", cost_usd=0.5)

        return await executor.run("expert", call), executor.stats()

    result, stats = asyncio.run(main())
    assert result.ok and result.observation == "answer"
    assert result.attempts == 3
    assert result.cost_usd == pytest.approx(0.52)  # tokens billed by the failed attempts count
    assert stats["retries"] == 2 and stats["attempt_errors"] == {"server_error": 2}


def test_client_error_is_not_retried():
    async def main():
        executor = ToolExecutor(retry=FAST_RETRY, seed=0)
        attempts = 0

        async def call():
            nonlocal attempts
            attempts += 1
            raise ToolError(ToolErrorKind.CLIENT_ERROR, "HTTP 400: unknown model 'gpt-9'")

        return await executor.run("expert", call), attempts

    result, attempts = asyncio.run(main())
    assert attempts == 1 and result.attempts == 1
    assert result.error_kind == ToolErrorKind.CLIENT_ERROR
    assert result.observation == "expert failed: HTTP 400: unknown model 'gpt-9'"


def test_retryable_failure_gives_up_after_max_attempts():
    async def main():
        executor = ToolExecutor(retry=FAST_RETRY, seed=0)

        async def call():
            raise ToolError(ToolErrorKind.CONNECTION, "connection refused", cost_usd=0.25)

        return await executor.run("search", call)

    result = asyncio.run(main())
    assert result.error_kind == ToolErrorKind.CONNECTION
    assert result.attempts == 3
    assert result.cost_usd == pytest.approx(0.75)  # sum of the ToolErrors' costs
    assert "after 3 attempts" in result.observation


def test_timeout_is_classified_and_not_retried():
    async def main():
        executor = ToolExecutor(timeout_s=5.0, retry=FAST_RETRY, seed=0)
        attempts = 0

        async def slow():
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(10)
            return ok()

        started = time.monotonic()
        result = await executor.run("search", slow, timeout_s=0.05)
        return result, attempts, time.monotonic() - started

    result, attempts, elapsed = asyncio.run(main())
    assert result.error_kind == ToolErrorKind.TIMEOUT
    assert attempts == 1 and result.attempts == 1
    assert result.observation == "search failed: timed out after 0.05 s"
    assert 0.05 <= elapsed < 1.0
    assert result.latency_s >= 0.05


def test_per_tool_timeout_applies_to_that_tool_only():
    async def main():
        executor = ToolExecutor(timeout_s=1.0, tool_timeouts_s={"search": 0.05}, seed=0)

        async def slowish():
            await asyncio.sleep(0.15)
            return ok()

        return await executor.run("search", slowish), await executor.run("code", slowish)

    search, code = asyncio.run(main())
    assert search.error_kind == ToolErrorKind.TIMEOUT
    assert code.ok


def test_deadline_cuts_a_running_attempt():
    async def main():
        executor = ToolExecutor(timeout_s=10.0, seed=0)

        async def slow():
            await asyncio.sleep(10)
            return ok()

        started = time.monotonic()
        result = await executor.run("expert", slow, deadline=time.monotonic() + 0.1)
        return result, time.monotonic() - started

    result, elapsed = asyncio.run(main())
    assert result.error_kind == ToolErrorKind.DEADLINE
    assert 0.1 <= elapsed < 0.5  # cut at the deadline, long before the 10 s timeout
    assert result.observation.startswith("expert failed: the episode's time ran out")


def test_deadline_prevents_new_attempts():
    """A past deadline starts nothing; a retry that would end past the deadline is not made."""

    async def main():
        executor = ToolExecutor(retry=RetryPolicy(5, 0.5, 1.0, jitter=0.0), seed=0)
        calls = 0

        async def failing():
            nonlocal calls
            calls += 1
            raise ToolError(ToolErrorKind.SERVER_ERROR, "HTTP 503")

        past = await executor.run("expert", failing, deadline=time.monotonic() - 1)
        calls_after_past = calls
        started = time.monotonic()
        near = await executor.run("expert", failing, deadline=time.monotonic() + 0.2)
        return past, calls_after_past, near, calls, time.monotonic() - started

    past, calls_after_past, near, calls, elapsed = asyncio.run(main())
    assert past.error_kind == ToolErrorKind.DEADLINE and past.attempts == 0
    assert calls_after_past == 0
    # The 0.5 s backoff would end past the deadline: one attempt, no sleep into the deadline.
    assert near.attempts == 1 and calls == 1
    assert near.error_kind == ToolErrorKind.SERVER_ERROR
    assert "no time left" in near.observation
    assert elapsed < 0.15


def test_deadline_cuts_waiting_for_a_slot():
    async def main():
        executor = ToolExecutor(max_concurrency=1, seed=0)

        async def hog():
            await asyncio.sleep(0.5)
            return ok()

        hog_task = asyncio.create_task(executor.run("a", hog))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        queued = await executor.run("b", hog, deadline=time.monotonic() + 0.05)
        elapsed = time.monotonic() - started
        await hog_task
        return queued, elapsed

    queued, elapsed = asyncio.run(main())
    assert queued.error_kind == ToolErrorKind.DEADLINE
    assert elapsed < 0.3


def test_retry_after_is_honoured_and_capped():
    async def main():
        executor = ToolExecutor(retry=RetryPolicy(2, 0.001, 0.15, jitter=0.0), seed=0)
        stamps = []

        def factory(retry_after):
            async def call():
                stamps.append(time.monotonic())
                if len(stamps) % 2 == 1:
                    raise ToolError(
                        ToolErrorKind.RATE_LIMITED, "HTTP 429", retry_after_s=retry_after
                    )
                return ok()

            return call

        await executor.run("api", factory(0.1))
        honoured = stamps[1] - stamps[0]
        await executor.run("api", factory(30.0))  # capped at max_delay_s = 0.15
        capped = stamps[3] - stamps[2]
        return honoured, capped

    honoured, capped = asyncio.run(main())
    assert 0.1 <= honoured < 0.14
    assert 0.15 <= capped < 0.25


def test_exceptions_and_garbage_become_classified_results():
    class Boom(RuntimeError):
        pass

    async def raises():
        raise Boom("kaput")

    async def garbage():
        return {"not": "a ToolResult"}

    def not_awaitable():
        return 42

    def factory_raises():
        raise ValueError("bad arguments for the factory")

    async def own_timeout():
        raise TimeoutError("read timed out")

    async def exits():
        raise SystemExit(3)

    async def main():
        executor = ToolExecutor(retry=FAST_RETRY, seed=0)
        return [
            await executor.run("t", f)
            for f in (raises, garbage, not_awaitable, factory_raises, own_timeout, exits)
        ]

    boom, junk, number, factory_error, timeout, exited = asyncio.run(main())
    assert boom.error_kind == ToolErrorKind.TOOL_EXCEPTION
    assert "Boom" in boom.error_message and "kaput" in boom.observation
    assert junk.error_kind == ToolErrorKind.BAD_RESPONSE and "dict" in junk.observation
    assert number.error_kind == ToolErrorKind.BAD_RESPONSE and "int" in number.observation
    assert factory_error.error_kind == ToolErrorKind.TOOL_EXCEPTION
    assert "ValueError" in factory_error.error_message
    assert timeout.error_kind == ToolErrorKind.TIMEOUT
    assert exited.error_kind == ToolErrorKind.TOOL_EXCEPTION
    assert all(r.attempts == 1 for r in (boom, junk, number, factory_error, timeout, exited))


def test_successful_result_latency_and_attempts():
    """A simulated expert's own latency is kept; otherwise the attempt is measured."""

    async def main():
        executor = ToolExecutor(seed=0)

        async def simulated():
            return ok(latency_s=12.5, cost_usd=0.003, tokens_in=10, tokens_out=5)

        async def real():
            await asyncio.sleep(0.05)
            return ok()

        return await executor.run("expert", simulated), await executor.run("search", real)

    simulated, real = asyncio.run(main())
    assert simulated.latency_s == 12.5 and simulated.attempts == 1
    assert simulated.cost_usd == pytest.approx(0.003) and simulated.tokens_out == 5
    assert 0.05 <= real.latency_s < 0.5


def test_caller_cancellation_propagates_and_frees_the_slot():
    async def main():
        executor = ToolExecutor(max_concurrency=1, seed=0)
        tool_cancelled = asyncio.Event()

        async def slow():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                tool_cancelled.set()
                raise
            return ok()

        task = asyncio.create_task(executor.run("expert", slow))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The slot is free again: a new call runs at once.
        after = await asyncio.wait_for(executor.run("expert", lambda: ok()), 0.5)
        return tool_cancelled.is_set(), after, executor.stats()

    tool_cancelled, after, stats = asyncio.run(main())
    assert tool_cancelled and after.ok and stats["in_flight"] == 0


def test_caller_cancellation_during_backoff_propagates():
    async def main():
        executor = ToolExecutor(retry=RetryPolicy(3, 5.0, 5.0, jitter=0.0), seed=0)

        async def failing():
            raise ToolError(ToolErrorKind.SERVER_ERROR, "HTTP 500")

        task = asyncio.create_task(executor.run("expert", failing))
        await asyncio.sleep(0.05)  # now sleeping 5 s before the retry
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 1.0


def test_cancelled_error_raised_by_the_tool_itself_is_a_tool_exception():
    """A stray CancelledError from inside a tool (nobody cancelled the caller) is classified."""

    async def main():
        executor = ToolExecutor(seed=0)

        async def stray():
            raise asyncio.CancelledError()

        return await executor.run("weird", stray)

    result = asyncio.run(main())
    assert result.error_kind == ToolErrorKind.TOOL_EXCEPTION


def test_backoff_delays_grow_and_stay_within_jitter_bounds():
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.5, max_delay_s=3.0, jitter=0.5)
    rng = random.Random(0)
    for failed, nominal in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (5, 3.0)]:
        for _ in range(200):
            delay = policy.backoff_s(failed, rng.random())
            assert nominal * 0.5 <= delay <= nominal
    assert policy.backoff_s(1, 0.0) == 0.25 and policy.backoff_s(3, 0.999999) == pytest.approx(2.0)

    # Measured: real sleeps between attempts follow the same schedule.
    async def main():
        executor = ToolExecutor(
            retry=RetryPolicy(max_attempts=4, base_delay_s=0.04, max_delay_s=1.0, jitter=0.5),
            seed=7,
        )
        stamps = []

        async def failing():
            stamps.append(time.monotonic())
            raise ToolError(ToolErrorKind.SERVER_ERROR, "HTTP 503")

        await executor.run("x", failing)
        return [b - a for a, b in itertools.pairwise(stamps)]

    gaps = asyncio.run(main())
    assert len(gaps) == 3
    for gap, nominal in zip(gaps, [0.04, 0.08, 0.16], strict=True):
        assert nominal * 0.5 <= gap <= nominal + 0.05
    assert gaps[2] > gaps[0]


def test_jitter_is_deterministic_for_a_seed():
    async def delays(seed):
        executor = ToolExecutor(
            retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, jitter=1.0), seed=seed
        )
        return [executor._wait_before_retry(n, None) for n in (1, 2, 3)]

    assert asyncio.run(delays(3)) == asyncio.run(delays(3))
    assert asyncio.run(delays(3)) != asyncio.run(delays(4))


def test_fault_storm_every_call_ends_classified_and_quickly():
    """Hundreds of mixed calls, 30% faulty in every way at once; nothing escapes, no hang."""
    kinds = ["ok", "raise", "timeout", "garbage", "flaky", "client", "deadline"]
    weights = [70, 6, 6, 6, 4, 4, 4]

    async def main():
        rng = random.Random(1234)
        executor = ToolExecutor(
            max_concurrency=32,
            tool_concurrency={"search": 8},
            timeout_s=0.05,
            retry=RetryPolicy(max_attempts=3, base_delay_s=0.005, max_delay_s=0.02),
            seed=99,
        )
        plan = rng.choices(kinds, weights, k=500)

        def factory(kind, i):
            attempts = 0

            async def call():
                nonlocal attempts
                attempts += 1
                await asyncio.sleep(rng.random() * 0.01)
                if kind == "raise":
                    raise [KeyError, ValueError, ZeroDivisionError, OSError][i % 4](f"fault {i}")
                if kind == "timeout" or kind == "deadline":
                    await asyncio.sleep(5)
                if kind == "garbage":
                    return [None, "text", b"bytes", 3.5][i % 4]
                if kind == "flaky" and attempts < 2:
                    raise ToolError(ToolErrorKind.RATE_LIMITED, "HTTP 429")
                if kind == "client":
                    raise ToolError(ToolErrorKind.CLIENT_ERROR, "HTTP 404")
                return ok(f"result {i}")

            return call

        def run(i, kind):
            tool = "search" if i % 3 == 0 else "expert"
            deadline = time.monotonic() + 0.02 if kind == "deadline" else None
            timeout = 1.0 if kind == "deadline" else None
            return executor.run(tool, factory(kind, i), timeout_s=timeout, deadline=deadline)

        started = time.monotonic()
        results = await asyncio.gather(*(run(i, k) for i, k in enumerate(plan)))
        return plan, results, time.monotonic() - started, executor.stats()

    plan, results, elapsed, stats = asyncio.run(main())
    expected = {
        "ok": None,
        "flaky": None,
        "raise": ToolErrorKind.TOOL_EXCEPTION,
        "timeout": ToolErrorKind.TIMEOUT,
        "garbage": ToolErrorKind.BAD_RESPONSE,
        "client": ToolErrorKind.CLIENT_ERROR,
        "deadline": ToolErrorKind.DEADLINE,
    }
    assert len(results) == 500
    for kind, result in zip(plan, results, strict=True):
        assert isinstance(result, ToolResult)
        assert result.error_kind == expected[kind], (kind, result)
        if not result.ok:
            assert result.observation and result.error_message
    assert sum(k not in ("ok", "flaky") for k in plan) >= 100  # the storm really was ~30%
    assert elapsed < 5.0
    assert stats["in_flight"] == 0
    assert stats["peak_in_flight"] <= 32 and stats["peak_in_flight_by_tool"]["search"] <= 8
    assert stats["calls"] == 500
    assert stats["successes"] == sum(k in ("ok", "flaky") for k in plan)


def test_secret_values_never_reach_results(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-very-secret-value")

    async def main():
        executor = ToolExecutor(seed=0)

        async def leaky():
            raise RuntimeError("401 for Authorization: Bearer sk-test-very-secret-value")

        return await executor.run("expert", leaky)

    result = asyncio.run(main())
    assert "sk-test-very-secret-value" not in result.observation + result.error_message
    assert "<OPENAI_API_KEY>" in result.error_message


def test_bad_configuration_is_rejected_with_the_name_of_the_setting():
    with pytest.raises(ValueError, match="max_concurrency"):
        ToolExecutor(max_concurrency=0)
    with pytest.raises(ValueError, match="search"):
        ToolExecutor(tool_concurrency={"search": 0})
    with pytest.raises(ValueError, match="code"):
        ToolExecutor(tool_timeouts_s={"code": -1.0})
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2.0)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_bad_call_arguments_become_invalid_arguments_results():
    async def main():
        executor = ToolExecutor(seed=0)
        called = []

        async def tool():
            called.append(1)
            return ok()

        return (
            await executor.run("search", tool, timeout_s="soon"),  # type: ignore[arg-type]
            await executor.run("search", tool, timeout_s=float("nan")),
            await executor.run("search", tool, deadline=float("nan")),
            called,
        )

    bad_type, bad_nan, bad_deadline, called = asyncio.run(main())
    assert called == []
    for result, name in (
        (bad_type, "timeout_s"),
        (bad_nan, "timeout_s"),
        (bad_deadline, "deadline"),
    ):
        assert result.error_kind == ToolErrorKind.INVALID_ARGUMENTS
        assert name in result.observation and result.attempts == 0
