"""Pull the final answer out of an expert's reply, and decide whether it matches the gold.

Experts format answers differently: math models put them in `\\boxed{...}` (whose content may
hold nested braces, `\\boxed{\\frac{1}{2}}`), instruction models in `<answer>...</answer>`, and
some just write a last line. The last marked answer wins, because models often restate or
correct themselves. Reasoning inside `<think>...</think>` is ignored, since a rehearsed answer
there is not the one the model committed to.

Matching is deliberately lenient about form and strict about content: case, punctuation,
articles and whitespace do not matter, LaTeX wrappers (`$`, `\\text{}`) are peeled off, and
numbers compare numerically (`1,000` = `1000.0`, `\\frac{1}{2}` = `0.5`) within a tolerance.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:\*\*)?(?:final\s+answer|answer)\s*(?:\*\*)?\s*[:：]\s*(?:\*\*)?", re.IGNORECASE
)
_LATEX_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|operatorname|mbox)\s*\{([^{}]*)\}"
)
_FRAC = re.compile(r"^\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}$")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—", "…"}
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?$", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    """(start, content) of every closed `\\boxed{...}`, matching nested braces."""
    found = []
    for match in _BOXED.finditer(text):
        depth, pos = 1, match.end()
        while pos < len(text) and depth:
            if text[pos] == "{":
                depth += 1
            elif text[pos] == "}":
                depth -= 1
            pos += 1
        if depth == 0:
            found.append((match.start(), text[match.end() : pos - 1]))
    return found


def extract_final_answer(text: str) -> str | None:
    """The reply's final answer, or None when it has no answer at all (empty or only thinking).

    Order of preference: the last `\\boxed{}` or `<answer></answer>` (whichever comes later in
    the text), else the last non-empty line without an "Answer:" prefix.
    """
    if not isinstance(text, str):
        return None
    visible = _THINK_BLOCK.sub("\n", text)
    if "</think>" in visible:  # reasoning that began before the reply did
        visible = visible.rsplit("</think>", 1)[1]
    if "<think>" in visible:  # reasoning that never ended: nothing after it was committed to
        visible = visible.split("<think>", 1)[0]
    candidates = [(m.start(), m.group(1)) for m in _ANSWER_TAG.finditer(visible)]
    candidates += _boxed_spans(visible)
    if candidates:
        return max(candidates, key=lambda item: item[0])[1].strip()
    open_tag = visible.lower().rfind("<answer>")
    if open_tag != -1 and visible[open_tag + len("<answer>") :].strip():  # cut off mid-answer
        return visible[open_tag + len("<answer>") :].strip()
    lines = [line.strip() for line in visible.splitlines() if line.strip()]
    if not lines:
        return None
    last = _ANSWER_PREFIX.sub("", lines[-1]).strip().strip("*").strip()
    return last or None


def _strip_latex(text: str) -> str:
    text = text.strip()
    for _ in range(4):  # nested wrappers, innermost first
        stripped = _LATEX_WRAPPER.sub(r"\1", text)
        if stripped == text:
            break
        text = stripped
    text = text.replace("\\!", "").replace("\\,", "").replace("\\%", "%").replace("\\$", "$")
    return text.strip().strip("$").strip()


def normalize_answer(text: str) -> str:
    """Lower-case, without punctuation, articles, LaTeX wrappers or extra whitespace."""
    text = unicodedata.normalize("NFKC", _strip_latex(text)).lower()
    text = "".join(" " if ch in _PUNCTUATION else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def parse_number(text: str) -> float | None:
    """The number a short answer states (`1,234`, `$5`, `12.5%`, `3/4`, `\\frac{3}{4}`).

    None when the answer is not a plain number (words, units, expressions)."""
    body = _strip_latex(text).replace(" ", "")
    body = body.rstrip(".")
    body = _THOUSANDS.sub("", body)
    for symbol in ("$", "€", "£", "¥"):
        body = body.removeprefix(symbol)
    body = body.removesuffix("%")
    frac = _FRAC.match(body)
    if frac:
        num, den = parse_number(frac.group(1)), parse_number(frac.group(2))
        return None if num is None or den in (None, 0.0) else num / den
    if body.count("/") == 1:
        num_text, den_text = body.split("/")
        if _NUMBER.match(num_text) and _NUMBER.match(den_text) and float(den_text) != 0.0:
            return float(num_text) / float(den_text)
        return None
    if _NUMBER.match(body):
        value = float(body)
        return value if math.isfinite(value) else None
    return None


def answers_match(
    predicted: str | None, gold: str, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9
) -> bool:
    """Whether `predicted` states the gold answer: numerically when both are numbers, else by
    normalised exact match. An empty or missing prediction never matches."""
    if predicted is None or not predicted.strip():
        return False
    gold_number, predicted_number = parse_number(gold), parse_number(predicted)
    if gold_number is not None and predicted_number is not None:
        return math.isclose(predicted_number, gold_number, rel_tol=rel_tol, abs_tol=abs_tol)
    normalized_gold = normalize_answer(gold)
    return bool(normalized_gold) and normalize_answer(predicted) == normalized_gold
