"""Web search through a Tavily-compatible HTTP API: the fall-back retriever of the qa tools.

The paper's `search` tool sends the expert's query to a local index first and to Tavily web
search when that is not enough. This client speaks Tavily's protocol (`POST {base_url}/search`
with a JSON body carrying `query` and `max_results`; results with `url`, `title`, `content`,
`score`) and returns the same `SearchHit`s as local search, so the tool code does not care which
retriever answered.

Web search costs money per query (and per extracted page), so the price is part of the client:
`cost_usd(hits)` says what a search that returned `hits` cost, from the pricing constants. The
API key comes from an environment variable read at construction: a run without a key fails at
start-up, naming the variable, rather than on its first search an hour in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import aiohttp

from orchestra_jax.tools.http_errors import (
    SessionHolder,
    check_base_url,
    post_json,
    read_api_key,
    redact,
)
from orchestra_jax.tools.pricing import WEB_EXTRACT_USD_PER_PAGE, WEB_SEARCH_USD_PER_QUERY
from orchestra_jax.tools.results import ToolError, ToolErrorKind
from orchestra_jax.tools.search_types import SearchHit

#: Tavily returns at most this many results per query.
MAX_RESULTS = 20


class WebSearch:
    """A Tavily-compatible search client.

    The key is sent both as a Bearer header (Tavily's current scheme) and as `api_key` in the
    body (its original scheme, still what many compatible servers read). With
    `include_raw_content` each hit's text is the page's extracted full text (billed per page)
    instead of Tavily's query-focused snippet.
    """

    def __init__(
        self,
        base_url: str = "https://api.tavily.com",
        *,
        api_key_env: str = "TAVILY_API_KEY",
        timeout_s: float = 30.0,
        search_depth: Literal["basic", "advanced"] = "basic",
        include_raw_content: bool = False,
        session: aiohttp.ClientSession | None = None,
    ):
        self.base_url = check_base_url(base_url)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if search_depth not in ("basic", "advanced"):
            raise ValueError(f"search_depth must be 'basic' or 'advanced', got {search_depth!r}")
        self.api_key_env = api_key_env
        self._api_key = read_api_key(api_key_env)
        self.timeout_s = float(timeout_s)
        self.search_depth = search_depth
        self.include_raw_content = include_raw_content
        self.usd_per_query = WEB_SEARCH_USD_PER_QUERY
        self.usd_per_page = WEB_EXTRACT_USD_PER_PAGE
        self._sessions = SessionHolder(session)
        self._url = f"{self.base_url}/search"
        self._what = f"web search {self.base_url}"

    @classmethod
    def from_env(
        cls, var: str = "TAVILY_API_KEY", base_url: str = "https://api.tavily.com", **kwargs: Any
    ) -> WebSearch:
        """A client whose key is read from `var` now; MissingApiKeyError naming it if unset."""
        return cls(base_url, api_key_env=var, **kwargs)

    def cost_usd(self, hits: Sequence[SearchHit]) -> float:
        """What one search that returned `hits` cost: the query fee, plus extracted pages."""
        pages = len(hits) if self.include_raw_content else 0
        return self.usd_per_query + pages * self.usd_per_page

    async def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """The top `k` (1..20) web results for `query`, best first.

        Raises ToolError: INVALID_ARGUMENTS for an empty query or a bad `k`, and the HTTP
        kinds of `http_errors` (CONNECTION, TIMEOUT, RATE_LIMITED, SERVER_ERROR, CLIENT_ERROR,
        BAD_RESPONSE) for everything the server does wrong.
        """
        if not isinstance(query, str) or not query.strip():
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"a search query must be non-empty text, got {query!r}",
            )
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_RESULTS:
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS, f"k must be an int in 1..{MAX_RESULTS}, got {k!r}"
            )
        payload = {
            "api_key": self._api_key,
            "query": query.strip(),
            "max_results": k,
            "search_depth": self.search_depth,
            "include_answer": False,
            "include_raw_content": self.include_raw_content,
            "include_images": False,
        }
        data, _latency_s = await post_json(
            self._sessions.get(),
            self._url,
            payload,
            what=self._what,
            timeout_s=self.timeout_s,
            headers={"Authorization": f"Bearer {self._api_key}"},
            secrets=(self._api_key,),
        )
        return self._parse(data)[:k]

    def _bad(self, problem: str) -> ToolError:
        return ToolError(
            ToolErrorKind.BAD_RESPONSE, redact(f"{self._what}: {problem}", (self._api_key,))
        )

    def _parse(self, data: Any) -> list[SearchHit]:
        if not isinstance(data, Mapping) or not isinstance(data.get("results"), list):
            raise self._bad("reply has no 'results' list")
        hits = []
        for index, result in enumerate(data["results"]):
            if not isinstance(result, Mapping):
                raise self._bad(f"result {index} is not an object")
            url, title = result.get("url"), result.get("title", "")
            text = result.get("raw_content") if self.include_raw_content else None
            if not isinstance(text, str) or not text:
                text = result.get("content")
            score = result.get("score", 0.0)
            if not isinstance(url, str) or not url:
                raise self._bad(f"result {index} has no 'url'")
            if not isinstance(text, str):
                raise self._bad(f"result {index} ({url}) has no text 'content'")
            if (
                isinstance(score, bool)
                or not isinstance(score, int | float)
                or not math.isfinite(score)
            ):
                raise self._bad(f"result {index} ({url}) has a non-numeric score {score!r}")
            hits.append(
                SearchHit(
                    doc_id=url,
                    title=title if isinstance(title, str) else "",
                    text=text,
                    score=float(score),
                )
            )
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits

    async def aclose(self) -> None:
        """Close the client's own session (a lent session is left to its owner)."""
        await self._sessions.aclose()

    def __repr__(self) -> str:
        return f"WebSearch(base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"
