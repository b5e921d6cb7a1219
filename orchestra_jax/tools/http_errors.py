"""HTTP calls to tool endpoints, and the translation of everything that can go wrong into ToolError.

Expert endpoints and web search fail in the same handful of ways (refused connections, rate
limits, overloaded servers, garbage bodies, slow replies), and the executor decides whether to
retry from the error's kind alone. Keeping the classification in one place means every HTTP tool
fails the same way, and keeping API keys out of it in one place means no message, log line or
trajectory ever carries a secret: every text that leaves here is passed through `redact`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import yarl

from orchestra_jax.tools.results import ToolError, ToolErrorKind

#: Bodies larger than this are not read to the end: no tool reply is legitimately this big.
MAX_BODY_BYTES = 32 * 1024 * 1024
_SNIPPET_CHARS = 300


class MissingApiKeyError(ValueError):
    """A client was configured to read its API key from an environment variable that is unset.

    Raised when the client is built (at start-up), not on its first call mid-run.
    """


class SessionHolder:
    """One aiohttp session per client, created lazily inside the running event loop.

    aiohttp sessions must be created within, and cannot cross, an event loop, while clients
    are often built before any loop runs (from a config). A lent `session` is used as is and
    left to its owner to close; an own session is replaced when the client finds itself under a
    new loop (one `asyncio.run` per evaluation, say) and closed by `aclose`.
    """

    def __init__(self, session: aiohttp.ClientSession | None = None, *, max_connections: int = 256):
        # aiohttp's default pool (100) would queue the calls of a large rollout client-side,
        # where the wait counts against each call's timeout.
        self._max_connections = max_connections
        self._session = session
        self._owned = session is None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        if not self._owned:
            assert self._session is not None
            return self._session
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector)
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._owned and self._session is not None:
            if not self._session.closed:
                await self._session.close()
            self._session, self._loop = None, None


def read_api_key(var: str) -> str:
    """The value of environment variable `var`; MissingApiKeyError naming it when unset/empty."""
    value = os.environ.get(var, "").strip()
    if not value:
        raise MissingApiKeyError(
            f"the environment variable {var} is not set (or empty); export the API key there"
        )
    return value


def check_base_url(base_url: str) -> str:
    """`base_url` without a trailing slash; ValueError naming it unless it is http(s)://host."""
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a string, got {type(base_url).__name__}")
    try:
        url = yarl.URL(base_url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"base_url {base_url!r} is not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url {base_url!r} must look like http(s)://host[:port][/path]")
    return base_url.rstrip("/")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds else None  # NaN -> None


def _snippet(body: str) -> str:
    """The useful part of an error body: an OpenAI-style error message, else the text's start."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            body = error["message"]
        elif isinstance(error, str):
            body = error
        elif isinstance(data.get("detail"), str):
            body = data["detail"]
    body = " ".join(body.split())
    return body if len(body) <= _SNIPPET_CHARS else body[:_SNIPPET_CHARS] + "..."


def error_for_status(
    status: int,
    body: str,
    *,
    what: str,
    retry_after: str | None = None,
    secrets: Iterable[str] = (),
) -> ToolError:
    """The ToolError for a non-2xx HTTP status: 429 rate limit, 5xx server, other 4xx client."""
    detail = redact(f"{what}: HTTP {status}: {_snippet(body)}", secrets)
    if status == 429:
        return ToolError(
            ToolErrorKind.RATE_LIMITED, detail, retry_after_s=parse_retry_after(retry_after)
        )
    if status >= 500:
        return ToolError(
            ToolErrorKind.SERVER_ERROR, detail, retry_after_s=parse_retry_after(retry_after)
        )
    if 400 <= status < 500:
        return ToolError(ToolErrorKind.CLIENT_ERROR, detail)
    return ToolError(ToolErrorKind.BAD_RESPONSE, detail)  # 1xx/3xx where a reply was due


def error_for_exception(
    exc: BaseException, *, what: str, timeout_s: float, secrets: Iterable[str] = ()
) -> ToolError:
    """The ToolError for an exception raised while sending or reading a request."""
    # aiohttp's timeout errors are also ClientErrors: test for them first.
    if isinstance(exc, TimeoutError):
        kind, detail = ToolErrorKind.TIMEOUT, f"no complete reply within {timeout_s:g} s"
    elif isinstance(exc, aiohttp.ClientResponseError):  # malformed status line or headers
        kind, detail = ToolErrorKind.BAD_RESPONSE, f"malformed HTTP reply ({exc.message})"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        kind, detail = ToolErrorKind.CONNECTION, f"reply cut off ({exc})"
    elif isinstance(exc, aiohttp.ClientError | OSError):
        kind, detail = ToolErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}"
    else:
        kind, detail = ToolErrorKind.TOOL_EXCEPTION, f"{type(exc).__name__}: {exc}"
    return ToolError(kind, redact(f"{what}: {detail}", secrets))


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    *,
    what: str,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> tuple[Any, float]:
    """POST `payload` as JSON; the decoded JSON reply and the call's wall-clock seconds.

    Every failure is a classified ToolError whose message names `what` and never a secret:
    transport errors, non-2xx statuses, bodies that are not JSON (BAD_RESPONSE), timeouts.
    """
    secrets = tuple(secrets)
    try:
        data = json.dumps(payload, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ToolError(
            ToolErrorKind.INVALID_ARGUMENTS, f"{what}: request is not JSON-serialisable ({exc})"
        ) from None
    request_headers = {"Content-Type": "application/json", **(headers or {})}
    started = time.perf_counter()
    try:
        async with session.post(
            url,
            data=data.encode("utf-8"),
            headers=request_headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(65536):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ToolError(
                        ToolErrorKind.BAD_RESPONSE,
                        f"{what}: reply larger than {MAX_BODY_BYTES} bytes",
                    )
                chunks.append(chunk)
            status = response.status
            retry_after = response.headers.get("Retry-After")
            charset = response.charset or "utf-8"
    except ToolError:
        raise
    except Exception as exc:
        raise error_for_exception(exc, what=what, timeout_s=timeout_s, secrets=secrets) from None
    latency_s = time.perf_counter() - started
    try:
        body = b"".join(chunks).decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        body = b"".join(chunks).decode("utf-8", errors="replace")
    if not 200 <= status < 300:
        raise error_for_status(status, body, what=what, retry_after=retry_after, secrets=secrets)
    try:
        return json.loads(body), latency_s
    except ValueError:
        raise ToolError(
            ToolErrorKind.BAD_RESPONSE,
            redact(f"{what}: reply is not JSON: {_snippet(body)!r}", secrets),
        ) from None
