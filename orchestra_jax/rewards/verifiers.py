"""Outcome verifiers: decide whether a rollout's final answer is right (host code).

Why several: the reward's outcome bit has to be cheap and reliable for most answers and only
fall back to an expensive judge when it must. The cheap checks, cheapest first:

* `exact_match` -- normalised string equality (case, punctuation, articles, LaTeX wrappers);
* `numeric_match` -- both sides parse as numbers and agree within a tolerance;
* `math_equivalent` -- symbolic equivalence with `math-verify` (`\\frac{1}{2}` = `0.5`,
  `x^2-1` = `(x-1)(x+1)`), for math answers a string compare misses;
* `token_f1` -- the SQuAD-style bag-of-tokens F1, a graded score for open QA metrics.

The paper asks an LLM judge when exact match fails (`LLMJudge`, any `ChatClient` or priced
`Expert`). A judge is a network call that can fail in every way an endpoint can; a failed or
unreadable judge reply is a verdict of "unknown" with the error kind, never an exception, so a
training run never dies from one bad judge call and the caller decides what unknown counts as.

Normalisation is shared with the tools (`orchestra_jax.tools.answers`) so that an expert's
answer is read the same way everywhere. Gold answers may be one string or several acceptable
strings (aliases); a prediction matches when it matches any of them.
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestra_jax.tools.answers import (
    answers_match,
    extract_final_answer,
    normalize_answer,
    parse_number,
)
from orchestra_jax.tools.experts import ChatClient, Expert
from orchestra_jax.tools.results import ToolError, ToolErrorKind

Gold = str | Sequence[str]


def _golds(gold: Any) -> list[str]:
    """The acceptable gold strings; anything that is not a string is dropped."""
    if isinstance(gold, str):
        return [gold]
    if isinstance(gold, Sequence):
        return [g for g in gold if isinstance(g, str)]
    return []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def exact_match(predicted: str | None, gold: Gold) -> bool:
    """Normalised exact match against any gold string; empty predictions never match."""
    text = _text(predicted)
    if text is None:
        return False
    normalized = normalize_answer(text)
    return any(normalize_answer(g) and normalize_answer(g) == normalized for g in _golds(gold))


def numeric_match(
    predicted: str | None, gold: Gold, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9
) -> bool:
    """Both sides state plain numbers (`1,000`, `$5`, `3/4`, `12.5%`) that agree within tolerance.

    False when either side is not a number: this check says nothing about words.
    """
    text = _text(predicted)
    value = parse_number(text) if text is not None else None
    if value is None:
        return False
    for g in _golds(gold):
        target = parse_number(g)
        if target is not None and math.isclose(value, target, rel_tol=rel_tol, abs_tol=abs_tol):
            return True
    return False


def token_f1(predicted: str | None, gold: Gold) -> float:
    """Best bag-of-tokens F1 over the gold strings after normalisation, in [0, 1]."""
    text = _text(predicted)
    if text is None:
        return 0.0
    predicted_tokens = normalize_answer(text).split()
    best = 0.0
    for g in _golds(gold):
        gold_tokens = normalize_answer(g).split()
        if not predicted_tokens or not gold_tokens:
            continue
        common = collections.Counter(predicted_tokens) & collections.Counter(gold_tokens)
        overlap = sum(common.values())
        if overlap:
            precision = overlap / len(predicted_tokens)
            recall = overlap / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _wrap_for_math(text: str) -> str:
    """math-verify looks for LaTeX anchors; a bare answer is wrapped so it is parsed as math."""
    stripped = text.strip()
    if "\\boxed" in stripped or stripped.startswith("$"):
        return stripped
    return f"${stripped}$"


def math_equivalent(predicted: str | None, gold: Gold, *, timeout_s: int = 5) -> bool:
    """Symbolic equivalence via `math-verify`; False on anything it cannot parse.

    math-verify's timeouts use SIGALRM, which only the main thread may set; off the main
    thread (an executor's worker) the check runs without its timeout rather than failing.
    """
    text = _text(predicted)
    if text is None:
        return False
    from math_verify import parse, verify  # heavy import (sympy), only when used

    on_main = threading.current_thread() is threading.main_thread()
    timeout = timeout_s if on_main else None
    try:
        target = parse(_wrap_for_math(text), parsing_timeout=timeout)
        if not target:
            return False
        for g in _golds(gold):
            reference = parse(_wrap_for_math(g), parsing_timeout=timeout)
            if reference and verify(reference, target, timeout_seconds=timeout):
                return True
    except Exception:  # math-verify raises on pathological input; that is not equivalence
        return False
    return False


class Label(StrEnum):
    """A verifier's decision. UNKNOWN means no decision could be made (a failed judge)."""

    CORRECT = "correct"
    INCORRECT = "incorrect"
    UNKNOWN = "unknown"


#: The judge replied, but not with a verdict the parser recognises.
UNPARSEABLE_VERDICT = "unparseable_verdict"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification and what it cost.

    `method` names the check that decided (exact, numeric, math, judge, none); `error_kind` is
    a `ToolErrorKind` value or `UNPARSEABLE_VERDICT` when the judge failed; `reply` is the
    judge's text (truncated), kept for audits of judge decisions.
    """

    label: Label
    method: str
    error_kind: str | None = None
    error_message: str | None = None
    cost_usd: float = 0.0
    latency_s: float = 0.0
    reply: str | None = None

    @property
    def correct(self) -> bool | None:
        """True / False, or None when unknown."""
        if self.label is Label.UNKNOWN:
            return None
        return self.label is Label.CORRECT

    @property
    def outcome(self) -> int:
        """The reward's outcome bit: 1 only for a known correct answer."""
        return int(self.label is Label.CORRECT)


_JUDGE_SYSTEM = (
    "You grade answers to questions. Compare the candidate answer with the reference answer "
    "and decide whether they state the same thing; differences in wording, formatting, units "
    "written out or trivial rounding do not matter, missing or contradicting content does. "
    "Reply with a short justification, then the verdict on the last line as "
    "<verdict>correct</verdict> or <verdict>incorrect</verdict>."
)
_VERDICT_TAG = re.compile(r"<verdict>\s*(.*?)\s*</verdict>", re.DOTALL | re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_NEGATIVE = ("incorrect", "not correct", "wrong", "no", "false")
_POSITIVE = ("correct", "yes", "right", "true")


def parse_verdict(reply: str) -> Label:
    """The label a judge's reply states, or UNKNOWN when it states none (or only thinks)."""
    if not isinstance(reply, str):
        return Label.UNKNOWN
    visible = _THINK.sub(" ", reply)
    tags = _VERDICT_TAG.findall(visible)
    candidate = tags[-1] if tags else extract_final_answer(visible)
    if not candidate:
        return Label.UNKNOWN
    words = normalize_answer(candidate).removeprefix("verdict ")
    if not words:
        return Label.UNKNOWN
    for label, starts in ((Label.INCORRECT, _NEGATIVE), (Label.CORRECT, _POSITIVE)):
        if any(words == s or words.startswith(s + " ") for s in starts):
            return label
    return Label.UNKNOWN


class LLMJudge:
    """Asks an LLM whether a predicted answer states the gold answer.

    `judge` is an `Expert` (then the verdict carries the call's cost in USD from the catalog
    price) or any `ChatClient` (cost 0: the client has no price). `timeout_s` bounds the whole
    call, on top of the client's own timeout, so a judge can never hang a run.
    """

    def __init__(
        self,
        judge: Expert | ChatClient,
        *,
        max_tokens: int = 512,
        timeout_s: float = 120.0,
        max_reply_chars: int = 2000,
    ):
        if not isinstance(judge, Expert | ChatClient):
            raise TypeError(f"judge must be an Expert or a ChatClient, got {type(judge).__name__}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.judge = judge
        self.max_tokens = max_tokens
        self.timeout_s = float(timeout_s)
        self.max_reply_chars = max_reply_chars

    def messages(self, question: str, predicted: str, gold: Gold) -> list[dict]:
        """The judge's chat: the grading instruction, then question, reference and candidate."""
        references = " | ".join(_golds(gold)) or "(none)"
        user = (
            f"Question:\n{question}\n\nReference answer:\n{references}\n\n"
            f"Candidate answer:\n{predicted}"
        )
        return [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": user}]

    async def __call__(
        self,
        question: str,
        predicted: str | None,
        gold: Gold,
        *,
        hints: Mapping[str, Any] | None = None,
    ) -> Verdict:
        """The judge's verdict; failures become UNKNOWN with the error kind, never raise."""
        if _text(predicted) is None:
            return Verdict(Label.INCORRECT, "none")  # nothing to judge: no answer was given
        messages = self.messages(str(question), str(predicted), gold)
        kwargs: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": 0.0}
        if hints is not None:
            kwargs["hints"] = hints
        cost = 0.0
        try:
            if isinstance(self.judge, Expert):
                completion, cost = await asyncio.wait_for(
                    self.judge.complete(messages, **kwargs), self.timeout_s
                )
            else:
                completion = await asyncio.wait_for(
                    self.judge.complete(messages, **kwargs), self.timeout_s
                )
        except ToolError as exc:
            return self._failed(exc.kind, exc.message, cost_usd=exc.cost_usd)
        except TimeoutError:
            return self._failed(
                ToolErrorKind.TIMEOUT, f"judge gave no verdict within {self.timeout_s:g} s"
            )
        except Exception as exc:  # a client bug must not end the run; it is recorded
            return self._failed(ToolErrorKind.TOOL_EXCEPTION, f"{type(exc).__name__}: {exc}")
        reply = completion.text[: self.max_reply_chars]
        label = parse_verdict(completion.text)
        if label is Label.UNKNOWN:
            why = "reply was cut off" if completion.finish_reason == "length" else "no verdict"
            return Verdict(
                Label.UNKNOWN,
                "judge",
                error_kind=UNPARSEABLE_VERDICT,
                error_message=f"judge reply states no verdict ({why})",
                cost_usd=cost,
                latency_s=completion.latency_s,
                reply=reply,
            )
        return Verdict(label, "judge", cost_usd=cost, latency_s=completion.latency_s, reply=reply)

    @staticmethod
    def _failed(kind: ToolErrorKind, message: str, *, cost_usd: float = 0.0) -> Verdict:
        return Verdict(
            Label.UNKNOWN,
            "judge",
            error_kind=str(kind),
            error_message=message[:500],
            cost_usd=cost_usd,
        )


def verify_cheap(predicted: str | None, gold: Gold, *, use_math: bool = True) -> Verdict:
    """The host-only checks, cheapest first: exact, numeric, math. Never calls a model.

    A miss here is INCORRECT as far as these checks can tell; `verify_answer` asks a judge
    about such misses when one is given.
    """
    if _text(predicted) is None:
        return Verdict(Label.INCORRECT, "none")
    if exact_match(predicted, gold):
        return Verdict(Label.CORRECT, "exact")
    if numeric_match(predicted, gold) or any(answers_match(predicted, g) for g in _golds(gold)):
        return Verdict(Label.CORRECT, "numeric")
    if use_math and math_equivalent(predicted, gold):
        return Verdict(Label.CORRECT, "math")
    return Verdict(Label.INCORRECT, "math" if use_math else "numeric")


async def verify_answer(
    predicted: str | None,
    gold: Gold,
    *,
    question: str = "",
    judge: LLMJudge | None = None,
    use_math: bool = True,
    hints: Mapping[str, Any] | None = None,
) -> Verdict:
    """The paper's qa outcome: cheap checks first, the LLM judge only when they all miss.

    An empty answer is INCORRECT without asking anyone.
    """
    cheap = verify_cheap(predicted, gold, use_math=use_math)
    if cheap.label is Label.CORRECT or judge is None or _text(predicted) is None:
        return cheap
    return await judge(question, predicted, gold, hints=hints)
