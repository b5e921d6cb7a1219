"""`run_coroutine`: run a coroutine to completion from synchronous code, wherever it is called.

Why not `asyncio.run`: it refuses to start inside a thread whose event loop is already running,
and a Jupyter/Colab kernel runs one in the main thread -- so `train(...)` called from a notebook
cell would fail at its first episode. Here the coroutine then runs on a fresh event loop in a
worker thread, and the caller blocks until it is done (what a synchronous call means).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)`, or the same on a worker thread when this thread's loop runs."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchestra-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


__all__ = ["run_coroutine"]
