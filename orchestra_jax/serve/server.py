"""`orchestra serve`: any checkpoint we can load, behind OpenAI's chat-completions protocol.

Why a server at all: in ToolOrchestra every LLM tool is an endpoint, and so is a trained policy
when it is evaluated by other harnesses (tau2, BFCL) or used as a specialist by another
orchestrator. Requests go through the rollout `Batcher`, so concurrent clients share batches
exactly as concurrent episodes do during RL, and the event loop keeps answering while the
accelerator works. A reply is generated in chunks of `decode_chunk_tokens` (see
`serve.chunked_generation`): when a client disconnects, aiohttp cancels its handler, and its
row leaves the batch at the end of the current chunk instead of being generated to
`max_tokens` for nobody; `/v1/stats` counts such requests as `cancelled_requests`.

Routes: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions`,
and `GET /v1/stats` (batcher flushes and rows, compilations, request counters) for operators
and tests. Every failure is an OpenAI-style `{"error": {...}}` body; a client mistake is a 4xx
naming the field, an internal failure a 500, and the server keeps serving after either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from orchestra_jax.rollout.requests import GenerationRequest
from orchestra_jax.serve.chunked_generation import ChunkedGeneration
from orchestra_jax.serve.completion import (
    build_reply,
    completion_body,
    completion_chunks,
    new_completion_id,
)
from orchestra_jax.serve.prompt import PromptBuilder, resolve_chat_template
from orchestra_jax.serve.protocol import RequestError, parse_chat_request

log = logging.getLogger("orchestra_jax.serve")

#: Largest request body accepted (long conversations with tool outputs run to megabytes).
MAX_BODY_BYTES = 32 * 2**20

#: Default longest stretch of decode steps generated in one batch. A disconnected client's row
#: leaves the batch, and a new request joins one, at the next chunk boundary; every chunk
#: re-prefills its rows (cheap on an accelerator). 64 is the sampler's smallest new-token
#: bucket, so shorter requests run in one call, exactly as without chunking.
DECODE_CHUNK_TOKENS = 64

#: Routes that answer without an API key, so liveness probes need no secret.
OPEN_PATHS = frozenset({"/health"})


class ServeError(Exception):
    """A start-up problem the user must fix (unknown model, no tokenizer, missing key)."""


class _Secret:
    """Holds the API key so that no repr, log line or traceback can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def matches(self, header: str) -> bool:
        expected = f"Bearer {self._value}".encode()
        return hmac.compare_digest(header.encode("utf-8", "replace"), expected)

    def __repr__(self) -> str:
        return "<secret>"


def _error(status: int, message: str, *, error_type: str = "invalid_request_error",
           param: str | None = None, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}},
        status=status)


def _jsonable(value: Any) -> Any:
    """Stats may hold numpy scalars or tuples; make them plain JSON."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item")
                                 else str(v)))


class ChatServer:
    """The aiohttp application around one tokenizer and one sampler.

    The batcher is created when the application starts (inside its event loop) and closed when
    it stops. `make_batcher(sampler)` defaults to the rollout `Batcher` with `max_batch_size`
    and `max_wait_s`; `context_length` defaults to the model's. `chat_template` is Jinja source
    (`resolve_chat_template` turns a registry name or a file into it). `decode_chunk_tokens`
    bounds the decode steps of one batch (0: a whole reply per batch, never cancelled early).
    """

    def __init__(
        self,
        tokenizer: Any,
        sampler: Any,
        *,
        model_name: str,
        context_length: int | None = None,
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
        default_max_tokens: int = 512,
        chat_template: str | None = None,
        api_key: str | None = None,
        make_batcher: Callable[[Any], Any] | None = None,
        decode_chunk_tokens: int = DECODE_CHUNK_TOKENS,
    ) -> None:
        if tokenizer is None:
            raise ServeError(f"model {model_name!r} has no tokenizer; a server needs one to "
                             "render chat prompts and decode replies")
        self.tokenizer = tokenizer
        self.sampler = sampler
        self.model_name = model_name
        if context_length is None:
            context_length = sampler.config.max_position_embeddings
        self.context_length = int(context_length)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        if decode_chunk_tokens < 0:
            raise ServeError(f"--decode-chunk-tokens must be >= 0, got {decode_chunk_tokens}")
        self.decode_chunk_tokens = int(decode_chunk_tokens)
        limits = getattr(sampler, "buckets", None)
        stop_limits = ((limits.max_stop_sequences, limits.max_stop_sequence_length)
                       if limits is not None else (8, 16))
        self.prompts = PromptBuilder(tokenizer, context_length=self.context_length,
                                     default_max_tokens=default_max_tokens,
                                     chat_template=chat_template, stop_limits=stop_limits)
        self._api_key = _Secret(api_key) if api_key else None
        self._make_batcher = make_batcher or self._default_batcher
        self.batcher: Any = None
        self.counters: Counter[str] = Counter()
        self.created = int(time.time())
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"ChatServer(model_name={self.model_name!r}, context={self.context_length})"

    def _default_batcher(self, sampler: Any) -> Any:
        from orchestra_jax.rollout.batcher import Batcher

        return Batcher(sampler, max_batch_size=self.max_batch_size, max_wait_s=self.max_wait_s)

    # ---- application ------------------------------------------------------------------------

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this model."""
        app = web.Application(client_max_size=MAX_BODY_BYTES,
                              middlewares=[self._error_middleware, self._auth_middleware])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model_id:.+}", self.get_model)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/stats", self.stats)
        app.on_startup.append(self._start_batcher)
        app.on_cleanup.append(self._close_batcher)
        return app

    async def _start_batcher(self, _app: web.Application) -> None:
        self.batcher = self._make_batcher(self.sampler)

    async def _close_batcher(self, _app: web.Application) -> None:
        if self.batcher is not None:
            await self.batcher.aclose()
            self.batcher = None

    @web.middleware
    async def _error_middleware(self, request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as err:
            self.counters[f"errors_{err.status}"] += 1
            log.info("%s %s -> %d: %s", request.method, request.path, err.status, err.message)
            return web.json_response(err.body(), status=err.status)
        except web.HTTPException as exc:  # unknown route, wrong method, body too large
            if exc.status < 400:
                raise
            self.counters[f"errors_{exc.status}"] += 1
            return _error(exc.status, f"{exc.reason}: {request.method} {request.path}",
                          code=str(exc.status))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as err:
            self.counters["errors_500"] += 1
            log.exception("internal error serving %s %s", request.method, request.path)
            return _error(500, f"internal server error: {type(err).__name__}: {err}",
                          error_type="server_error")

    @web.middleware
    async def _auth_middleware(self, request: web.Request,
                               handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                               ) -> web.StreamResponse:
        if self._api_key is not None and request.path not in OPEN_PATHS:
            if not self._api_key.matches(request.headers.get("Authorization", "")):
                self.counters["errors_401"] += 1
                return _error(401, "missing or wrong API key; send it as "
                              "'Authorization: Bearer <key>'", code="invalid_api_key")
        return await handler(request)

    # ---- routes -----------------------------------------------------------------------------

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created,
                "owned_by": "orchestra_jax", "max_model_len": self.context_length}

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model": self.model_name})

    async def list_models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def get_model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id != self.model_name:
            raise RequestError(f"model {model_id!r} is not served here (this server serves "
                               f"{self.model_name!r})", param="model", code="model_not_found",
                               status=404)
        return web.json_response(self._model_card())

    async def stats(self, _request: web.Request) -> web.Response:
        return web.json_response(_jsonable(self.stats_snapshot()))

    def stats_snapshot(self) -> dict[str, Any]:
        """Request counters, the batcher's statistics and the sampler's compilations."""
        sampler: dict[str, Any] = {}
        if callable(getattr(self.sampler, "compile_count", None)):
            sampler["compile_count"] = self.sampler.compile_count()
        for name in ("compile_seconds", "params_version"):
            if hasattr(self.sampler, name):
                sampler[name] = getattr(self.sampler, name)
        batcher = self.batcher.stats() if self.batcher is not None else {}
        return {"model": self.model_name, "server": dict(self.counters),
                "batcher": batcher, "sampler": sampler}

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        self.counters["chat_requests"] += 1
        chat = parse_chat_request(await request.read())
        if chat.model is not None and chat.model != self.model_name:
            raise RequestError(f"model {chat.model!r} is not served here (this server serves "
                               f"{self.model_name!r})", param="model", code="model_not_found",
                               status=404)
        prepared = self.prompts.prepare(chat)
        if self.batcher is None:
            raise RuntimeError("the batcher is not running (server not started?)")
        start = time.perf_counter()
        generation = ChunkedGeneration(
            GenerationRequest(prompt_ids=prepared.prompt_ids, params=prepared.params),
            chunk_tokens=self.decode_chunk_tokens)
        try:
            result = await generation.run(self.batcher)
        except asyncio.CancelledError:
            # The client disconnected (aiohttp cancels its handler) or the server is stopping.
            self.counters["cancelled_requests"] += 1
            self.counters["cancelled_completion_tokens"] += len(generation.token_ids)
            log.info("request cancelled (client went away) after %d of %d tokens, %d chunks",
                     len(generation.token_ids), prepared.params.max_new_tokens,
                     generation.chunks)
            raise
        self.counters["chunks"] += generation.chunks
        tools = chat.tools if chat.tool_choice != "none" else None
        reply = build_reply(self.tokenizer, result, prompt_tokens=len(prepared.prompt_ids),
                            stop=chat.stop, tools=tools, want_logprobs=chat.logprobs)
        self.counters["completions"] += 1
        self.counters["prompt_tokens"] += reply.prompt_tokens
        self.counters["completion_tokens"] += reply.completion_tokens
        log.info("chat completion: %d prompt + %d completion tokens, %s, %.2f s",
                 reply.prompt_tokens, reply.completion_tokens, reply.finish_reason,
                 time.perf_counter() - start)
        completion_id = new_completion_id()
        if not chat.stream:
            return web.json_response(completion_body(reply, model=self.model_name,
                                                     completion_id=completion_id))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            for chunk in completion_chunks(self.tokenizer, reply, model=self.model_name,
                                           completion_id=completion_id,
                                           include_usage=chat.include_usage):
                await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                                     .encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            log.info("client went away while its answer was streamed")
        return response

    # ---- running ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on `host:port` (0 picks a free port) in the running loop; return the port.

        `handler_cancellation`: a client that disconnects gets its handler cancelled, which is
        what takes its row out of the batch (see `serve.chunked_generation`).
        """
        runner = web.AppRunner(self.app(), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        return int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening, finish the batcher's work and close it."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class ServerThread:
    """A `ChatServer` running in a background thread with its own event loop.

    For notebooks and tests that want a real endpoint beside other work in the same process:
    `with ServerThread(server) as url: OpenAI(base_url=url)`.
    """

    def __init__(self, server: ChatServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self.host = host
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="orchestra-serve")
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(
                server.start(host, port), self._loop).result(timeout=60)
        except BaseException:
            self._shutdown_loop()
            raise

    @property
    def url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=60)
        self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_chat_server(
    model: str | Path,
    *,
    dtype: str = "float32",
    scan_layers: bool = False,
    served_model_name: str | None = None,
    max_batch_size: int = 16,
    max_wait_s: float = 0.005,
    default_max_tokens: int = 512,
    max_model_len: int | None = None,
    chat_template: str | None = None,
    api_key_env: str | None = None,
    seed: int = 0,
    decode_chunk_tokens: int | None = None,
) -> ChatServer:
    """Load `model` (a packaged name, a .gguf, a HF directory, a hub id, or a run's workdir)
    and wrap it in a `ChatServer`.

    A run's workdir (`orchestra train`'s: config.json and checkpoints/) serves its latest
    policy: exported once to `WORKDIR/export/step_N` (`train.export.cached_export`) and
    reused while no newer checkpoint exists; the served name defaults to the workdir's.

    `chat_template` is a name in `tokenization.NAMED_CHAT_TEMPLATES` or a Jinja file; anything
    else is refused before the model loads. `decode_chunk_tokens` None means
    `DECODE_CHUNK_TOKENS`. The API key, when
    `api_key_env` names a variable, is read from the environment here and never printed.
    Problems the user can fix raise `ServeError` with a message naming the input.
    """
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ServeError(f"--api-key-env {api_key_env}: the environment variable "
                             f"{api_key_env} is not set or is empty")
    if chat_template is not None:
        try:
            chat_template = resolve_chat_template(chat_template)
        except (ValueError, OSError) as err:
            raise ServeError(f"--chat-template: {err}") from None
    if max_batch_size < 1:
        raise ServeError(f"--max-batch-size must be >= 1, got {max_batch_size}")
    if decode_chunk_tokens is None:
        decode_chunk_tokens = DECODE_CHUNK_TOKENS
    if decode_chunk_tokens < 0:
        raise ServeError(f"--decode-chunk-tokens must be >= 0, got {decode_chunk_tokens}")

    from orchestra_jax.models import load_pretrained
    from orchestra_jax.rollout.sampler import Sampler

    name = served_model_name or _default_name(model)
    model = _run_policy(model)
    if _is_random_preset(model):  # refuse before spending seconds initialising weights
        raise ServeError(
            f"model {str(model)!r} is a preset with random weights and no tokenizer; "
            "orchestra serve needs a tokenizer to render chat prompts: use a packaged model, "
            "a .gguf file, or a HF checkpoint directory with tokenizer.json")
    try:
        lm = load_pretrained(model, dtype=dtype, scan_layers=scan_layers)
    except (FileNotFoundError, ValueError) as err:
        raise ServeError(f"cannot load model {str(model)!r}: {err}") from None
    if lm.tokenizer is None:
        raise ServeError(
            f"model {str(model)!r} was loaded without a tokenizer (a random preset?); "
            "orchestra serve needs one to render chat prompts: use a packaged model, a .gguf "
            "file, or a HF checkpoint directory with tokenizer.json")
    tok = lm.tokenizer
    context = lm.config.max_position_embeddings
    if max_model_len is not None:
        if max_model_len < 2:
            raise ServeError(f"--max-model-len must be >= 2, got {max_model_len}")
        context = min(context, max_model_len)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    sampler = Sampler(lm.model, lm.mesh, rules=lm.rules, pad_id=pad,
                      stop_token_ids=tok.stop_token_ids, seed=seed)
    return ChatServer(tok, sampler, model_name=name, context_length=context,
                      max_batch_size=max_batch_size, max_wait_s=max_wait_s,
                      default_max_tokens=default_max_tokens, chat_template=chat_template,
                      api_key=api_key, decode_chunk_tokens=decode_chunk_tokens)


def _run_policy(model: str | Path) -> str | Path:
    """A run's workdir as the directory of its latest exported policy; anything else as is."""
    from orchestra_jax.train.export import cached_export, is_run_directory

    if not is_run_directory(model):
        return model
    from orchestra_jax.train.checkpoint import CheckpointError
    from orchestra_jax.train.errors import ConfigError

    try:
        done = cached_export(model)
    except (ConfigError, CheckpointError) as err:
        raise ServeError(f"--model {model}: cannot export the run's policy: {err}") from None
    log.info("serving step %d of run %s from %s", done.step, done.workdir, done.directory)
    return done.directory


def _is_random_preset(model: str | Path) -> bool:
    from orchestra_jax.models import PRESETS
    from orchestra_jax.models.pretrained import PACKAGED_MODELS

    source = str(model)
    return (source.lower() not in PACKAGED_MODELS and not source.endswith(".gguf")
            and not Path(source).is_dir() and source.lower().replace("-", "_") in PRESETS)


def _default_name(model: str | Path) -> str:
    path = Path(model)
    if path.suffix == ".gguf":
        return path.stem
    if path.is_dir():
        return path.resolve().name
    return str(model)


async def _serve_until_signalled(server: ChatServer, host: str, port: int) -> None:
    bound = await server.start(host, port)
    print(f"orchestra serve: {server.model_name} on http://{host}:{bound}/v1 "
          f"(context {server.context_length} tokens)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        print("orchestra serve: shutting down", flush=True)
        await server.stop()


def run_server(server: ChatServer, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve until SIGINT/SIGTERM; prints the bound URL first. Returns a process exit code."""
    try:
        asyncio.run(_serve_until_signalled(server, host, port))
    except OSError as err:
        print(f"orchestra serve: cannot listen on {host}:{port}: {err}", file=sys.stderr,
              flush=True)
        return 1
    return 0
