"""`run_coroutine` works both where `asyncio.run` does and inside a running event loop (a
notebook kernel), where `asyncio.run` refuses."""

from __future__ import annotations

import asyncio

import pytest

from orchestra_jax.sync import run_coroutine


async def _answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_run_coroutine_outside_and_inside_a_running_loop():
    assert run_coroutine(_answer()) == 42

    async def inside() -> int:
        refused = _answer()
        with pytest.raises(RuntimeError):
            asyncio.run(refused)  # what a notebook cell would hit
        refused.close()
        return run_coroutine(_answer())

    assert asyncio.run(inside()) == 42
