"""The one shape every retriever returns, so search tools can swap local BM25 for web search.

A hit is plain data (no retriever objects), so it can be logged, stored in a trajectory's
`info`, and rendered into the policy's prompt without knowing where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchHit:
    """One retrieved document.

    `doc_id` identifies the document within its source (a corpus row id, or a URL for web
    search); `score` is the retriever's own relevance score: higher is better, and scores are
    only comparable between hits of the same retriever.
    """

    doc_id: str
    title: str
    text: str
    score: float
