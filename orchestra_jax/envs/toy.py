"""The toy world the learning-sanity check and the toy recipe train in: call the target tool.

Why it exists: before any real environment can teach anything, the loop itself must be shown
to learn. Here the prompt offers four tools and the outcome is 1 exactly when the policy's one
turn calls `target`. Nothing is executed (the environment judges the parsed call), so the
episodes cost no tool time and a random tiny policy, with a vocabulary where each whole call
is one piece (`call_text`), can find the rewarded call by chance and be taught to repeat it.

Host code: no jax.
"""

from __future__ import annotations

import json
from typing import Any

from orchestra_jax.envs.base import StepOutput

TOOL_NAMES = ("lookup", "search", "target", "answer")
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": name, "description": f"The {name} tool.",
        "parameters": {"type": "object", "properties": {}}}}
    for name in TOOL_NAMES
]
SYSTEM_PROMPT = "You route each request to one tool."
USER_PROMPT = "Call the target tool."


def call_text(name: str) -> str:
    """A compact call (SentencePiece matches user-defined pieces only where no space is)."""
    body = json.dumps({"name": name, "arguments": {}}, separators=(",", ":"))
    return f"<tool_call>{body}</tool_call>"


class TargetCallEnv:
    """One turn; outcome 1 when the turn's first valid call names `target`."""

    mode = "qa"

    def __init__(self) -> None:
        self._done, self._outcome = False, 0.0

    def reset(self, task: Any) -> None:
        del task
        self._done, self._outcome = False, 0.0

    def tools(self) -> list[dict[str, Any]]:
        return TOOLS

    def messages(self) -> list[dict[str, Any]]:
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": USER_PROMPT}]

    async def step(self, assistant_text: str, calls: list[Any], executor: Any,
                   turn: int) -> StepOutput:
        del assistant_text, executor, turn
        self._done = True
        self._outcome = float(bool(calls) and calls[0].name == "target")
        return StepOutput()

    @property
    def done(self) -> bool:
        return self._done

    def outcome(self) -> float:
        return self._outcome


__all__ = ["SYSTEM_PROMPT", "TOOLS", "TOOL_NAMES", "USER_PROMPT", "TargetCallEnv", "call_text"]
