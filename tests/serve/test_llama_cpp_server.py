"""Our OpenAI client against a second, independent real server: llama.cpp's, on the same GGUF.

`orchestra serve` and `OpenAIChatClient` were written together, so agreeing with each other
proves little; llama.cpp's server is the reference implementation many expert endpoints run.
Slow (model load, a subprocess) and skipped unless `llama-cpp-python[server]` is installed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(proc: subprocess.Popen, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited early with code {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    raise TimeoutError(f"llama_cpp.server did not listen on port {port} in {timeout_s} s")


@pytest.fixture(scope="module")
def llama_server():
    from orchestra_jax.assets import smollm2_gguf_path

    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf_path()),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
           "--model_alias", "smollm2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, NO_PROXY="127.0.0.1"))
    try:
        _wait_until_listening(proc, port, timeout_s=120)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_chat_client_reads_real_usage_from_llama_cpp(llama_server):
    """The project's client gets a reply and the server's real token usage (what gets priced)."""
    from orchestra_jax.tools.openai_client import OpenAIChatClient

    async def ask():
        client = OpenAIChatClient(llama_server, "smollm2", timeout_s=120)
        try:
            return await client.complete(
                [{"role": "user", "content": "What is the capital of France?"}], max_tokens=24)
        finally:
            await client.aclose()

    reply = asyncio.run(ask())
    assert reply.text.strip()
    assert reply.tokens_in > 0
    assert reply.tokens_out > 0
    assert reply.latency_s > 0
