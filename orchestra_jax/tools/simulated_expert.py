"""A simulated LLM expert: a documented skill profile behind the same interface as a real endpoint.

The embedded world and the tests need experts that are free, offline, instant and reproducible,
yet differ the way real models differ: one is accurate but slow and dear, another cheap but
weak at arithmetic, a third writes good code and poor answers. A `SimulatedExpert` reads the
task's `hints` (which the environment knows and the policy never sees) and plays a model with
the skills of its `ExpertProfile`: it answers correctly with the family's accuracy, writes a
useful search query or working code with the family's quality, and reports token counts and a
latency drawn from the profile. The routing the policy must learn is then a property of the
profiles, not of luck.

Every draw comes from a generator seeded by `(seed, model, messages, hints, max_tokens)`, so the
same request always gets the same reply (like a real model at temperature 0), while different
requests and different seeds vary. Latency is *reported*, not slept, unless `sleep=True`
(benchmarks of tool overlap need real waiting).

Hints read (all optional):

- `role`: "answer" (default when `gold` is given), "query" or "code"; without a role and a gold
  answer the expert replies with a short non-committal text.
- `family`: the task family, which selects the profile's skill for it.
- `gold`: the correct answer; `wrong`: plausible wrong answers to choose from when the expert
  errs (without them it invents a near miss of the gold answer).
- `query_terms`: the words a good search query contains (a string or a list of strings).
- `code`: Python that prints the correct result; `broken_code`: a wrong variant written by an
  unskilled expert (without it the expert writes code that prints nothing useful).

Replies: answers end in `\\boxed{...}` or `<answer>...</answer>` (the profile's format); a
query is the bare query text on one line; code is one fenced ```python block. Hints should be
JSON-like (strings, numbers, lists; sets are read in sorted order).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from orchestra_jax.tools.chat import ChatCompletion, check_generation_args, check_messages
from orchestra_jax.tools.results import ToolError, ToolErrorKind

AnswerFormat = Literal["boxed", "tags"]

_ROLES = ("answer", "query", "code")
# Words a careless query writer produces: they retrieve nothing in particular.
_NOISE_WORDS = (
    "information", "details", "about", "general", "overview", "facts", "question", "topic",
    "explain", "history", "answer", "search", "relevant", "data", "known", "things",
)  # fmt: skip


def _check_probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_positive(name: str, value: Any, *, allow_zero: bool = True) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )


@dataclass(frozen=True)
class FamilySkill:
    """How well an expert does one task family; each field is a probability.

    - `answer_accuracy`: P(the final answer is correct) for role "answer".
    - `query_quality`: P(a search query contains the hint's `query_terms`) for role "query".
    - `code_quality`: P(the program is the hint's correct `code`) for role "code".
    """

    answer_accuracy: float = 0.5
    query_quality: float = 0.5
    code_quality: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_probability(f.name, getattr(self, f.name))


@dataclass(frozen=True)
class ExpertProfile:
    """The skills and costs of one simulated model.

    Fields:
    - `name`: the model it plays (the default model name, and the catalog price it gets).
    - `skills`: task family -> `FamilySkill`; `default_skill` covers families not listed.
    - `answer_format`: "boxed" puts final answers in `\\boxed{...}` (math-style models), "tags"
      in `<answer>...</answer>`.
    - `tokens_out_median`, `tokens_out_sigma`: completion tokens are log-normal with this median
      and log-space spread (they stand for hidden reasoning plus the visible reply), at least 1;
      a draw above the request's `max_tokens` is cut there and the reply truncated
      (`finish_reason` "length").
    - `prompt_overhead_tokens`: tokens the server adds to every prompt (its own system prompt);
      prompt tokens are otherwise ~len(message text) / 4.
    - `latency_first_token_s`, `latency_per_token_s`, `latency_sigma`: latency in seconds is
      `(first_token + per_token * tokens_out) * exp(N(0, sigma))`, so long replies take longer.
    """

    name: str
    skills: Mapping[str, FamilySkill] = field(default_factory=dict)
    default_skill: FamilySkill = field(default_factory=FamilySkill)
    answer_format: AnswerFormat = "tags"
    tokens_out_median: float = 200.0
    tokens_out_sigma: float = 0.3
    prompt_overhead_tokens: int = 0
    latency_first_token_s: float = 0.5
    latency_per_token_s: float = 0.01
    latency_sigma: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.answer_format not in ("boxed", "tags"):
            raise ValueError(f"answer_format must be 'boxed' or 'tags', got {self.answer_format!r}")
        for family, skill in self.skills.items():
            if not isinstance(skill, FamilySkill):
                raise ValueError(f"skill of family {family!r} must be a FamilySkill")
        if not isinstance(self.default_skill, FamilySkill):
            raise ValueError("default_skill must be a FamilySkill")
        _check_positive("tokens_out_median", self.tokens_out_median, allow_zero=False)
        for name in (
            "tokens_out_sigma",
            "prompt_overhead_tokens",
            "latency_first_token_s",
            "latency_per_token_s",
            "latency_sigma",
        ):
            _check_positive(name, getattr(self, name))

    def skill(self, family: str | None) -> FamilySkill:
        """The skill for `family` (the default skill for unlisted or missing families)."""
        return self.skills.get(family, self.default_skill) if family else self.default_skill

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpertProfile:
        """The profile from its dict form (a config file): skills as nested dicts."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown profile keys {unknown}; allowed: {sorted(known)}")
        values = dict(data)
        if "skills" in values:
            values["skills"] = {
                family: _skill_from(skill, f"skills[{family!r}]")
                for family, skill in dict(values["skills"]).items()
            }
        if "default_skill" in values:
            values["default_skill"] = _skill_from(values["default_skill"], "default_skill")
        return cls(**values)

    @classmethod
    def coerce(cls, value: ExpertProfile | Mapping[str, Any] | str) -> ExpertProfile:
        """A profile from itself, its dict form, or the name of a preset (`PRESET_PROFILES`)."""
        if isinstance(value, ExpertProfile):
            return value
        if isinstance(value, str):
            if value not in PRESET_PROFILES:
                raise ValueError(
                    f"no preset profile {value!r}; presets: {', '.join(sorted(PRESET_PROFILES))}"
                )
            return PRESET_PROFILES[value]
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise TypeError(
            f"a profile must be an ExpertProfile, a dict or a preset name, "
            f"got {type(value).__name__}"
        )


def _skill_from(value: Any, where: str) -> FamilySkill:
    if isinstance(value, FamilySkill):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, got {value!r}")
    try:
        return FamilySkill(**value)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _preset(name: str, accuracy: float, query: float, code: float, **costs: Any) -> ExpertProfile:
    return ExpertProfile(name=name, default_skill=FamilySkill(accuracy, query, code), **costs)


#: Family-agnostic profiles of the paper's expert models. Latencies are shaped after the
#: paper's tool table (GPT-5 22-96 s, GPT-5-mini 16-27 s, open 32-70B models 8-15 s, the coder
#: 9 s); the skill numbers are illustrative orderings (the tier-1 model best, the coder best at
#: code, math models box their answers), not measurements. Worlds with task families build
#: their own profiles with per-family `skills`.
PRESET_PROFILES: dict[str, ExpertProfile] = {
    p.name: p
    for p in (
        _preset("gpt-5", 0.85, 0.9, 0.85, tokens_out_median=600, tokens_out_sigma=0.3,
                latency_first_token_s=8.0, latency_per_token_s=0.05, latency_sigma=0.4),
        _preset("gpt-5-mini", 0.75, 0.85, 0.75, tokens_out_median=500, tokens_out_sigma=0.3,
                latency_first_token_s=5.0, latency_per_token_s=0.03, latency_sigma=0.2),
        _preset("qwen3-32b", 0.6, 0.75, 0.6, tokens_out_median=400,
                latency_first_token_s=2.0, latency_per_token_s=0.02),
        _preset("llama-3.3-70b-instruct", 0.55, 0.75, 0.5, tokens_out_median=300,
                latency_first_token_s=2.0, latency_per_token_s=0.03),
        _preset("qwen2.5-coder-32b-instruct", 0.4, 0.6, 0.9, tokens_out_median=300,
                latency_first_token_s=3.0, latency_per_token_s=0.02, latency_sigma=0.1),
        _preset("qwen2.5-math-72b-instruct", 0.65, 0.5, 0.6, answer_format="boxed",
                tokens_out_median=400, latency_first_token_s=1.0, latency_per_token_s=0.025),
        _preset("qwen2.5-math-7b-instruct", 0.45, 0.4, 0.4, answer_format="boxed",
                tokens_out_median=350, latency_first_token_s=1.0, latency_per_token_s=0.025),
        _preset("qwen3-8b", 0.4, 0.6, 0.4, tokens_out_median=400,
                latency_first_token_s=1.0, latency_per_token_s=0.015),
    )
}  # fmt: skip


def _message_text(messages: list[dict]) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, Mapping))
    return "".join(parts)


def _stable_json(value: Any) -> Any:
    """A JSON stand-in for values json cannot encode, the same in every process (sets sorted)."""
    if isinstance(value, set | frozenset):
        return sorted(repr(v) for v in value)
    return repr(value)


def _request_rng(
    seed: int, model: str, messages: list[dict], hints: Mapping[str, Any], max_tokens: int
) -> random.Random:
    """A generator owned by this exact request: same request, same draws, on any machine."""
    blob = json.dumps(
        [seed, model, messages, dict(hints), max_tokens],
        sort_keys=True,
        default=_stable_json,
        ensure_ascii=True,
    )
    digest = hashlib.sha256(blob.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


_NUMBER = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


def _near_miss(gold: str, rng: random.Random) -> str:
    """A wrong answer that looks like the right kind of answer."""
    if _NUMBER.match(gold):
        text = gold.strip()
        decimals = len(text.split(".")[1]) if "." in text else 0
        step = 10.0**-decimals
        magnitude = max(1, round(abs(float(text)) * 0.1 / step))
        delta = rng.randint(1, magnitude) * step * rng.choice((-1, 1))
        return f"{float(text) + delta:.{decimals}f}"
    letters = [i for i, c in enumerate(gold) if c.isalpha()]
    if not letters:
        return f"{gold} (not sure)" if gold else "unknown"
    index = rng.choice(letters)
    old = gold[index]
    new = rng.choice([c for c in "aeioustrnl" if c != old.lower()])
    return gold[:index] + (new.upper() if old.isupper() else new) + gold[index + 1 :]


def _strings(value: Any) -> list[str]:
    """A hint that may be one string or a collection, as a list in a process-independent order."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, set | frozenset):  # iteration order would follow string hashing
        return sorted(str(v) for v in value)
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _wrong_answer(gold: str, candidates: Any, rng: random.Random) -> str:
    pool = [c for c in _strings(candidates) if c.strip().lower() != gold.strip().lower()]
    return rng.choice(pool) if pool else _near_miss(gold, rng)


class SimulatedExpert:
    """A `ChatClient` that plays the model described by an `ExpertProfile`.

    `model` defaults to the profile's name; `seed` selects one of many equally plausible
    behaviours; `sleep=True` makes each call actually wait its reported latency.
    """

    def __init__(
        self,
        profile: ExpertProfile,
        *,
        model: str | None = None,
        seed: int = 0,
        sleep: bool = False,
    ):
        self.profile = ExpertProfile.coerce(profile)
        self.model = model or self.profile.name
        self.seed = int(seed)
        self.sleep = sleep
        self.calls = 0  # completed requests, for tests and benchmarks

    async def complete(
        self,
        messages: list[dict],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        hints: Mapping[str, Any] | None = None,
    ) -> ChatCompletion:
        """Reply as the profile's model would; see the module docstring for the hints read.

        `temperature` is accepted for interface parity and ignored: variety comes from the
        request and the seed.
        """
        messages = check_messages(messages)
        check_generation_args(max_tokens, temperature)
        if hints is None:
            hints = {}
        if not isinstance(hints, Mapping):
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"hints must be a mapping, got {type(hints).__name__}",
            )
        rng = _request_rng(self.seed, self.model, messages, hints, max_tokens)
        text = self._reply(hints, rng)

        profile = self.profile
        tokens_out = max(
            1, round(profile.tokens_out_median * math.exp(rng.gauss(0.0, profile.tokens_out_sigma)))
        )
        finish_reason = "stop"
        if tokens_out > max_tokens:
            tokens_out, finish_reason = max_tokens, "length"
            text = text[: len(text) // 2]  # cut off before the reply was finished
        tokens_in = math.ceil(len(_message_text(messages)) / 4) + profile.prompt_overhead_tokens
        latency_s = (
            profile.latency_first_token_s + profile.latency_per_token_s * tokens_out
        ) * math.exp(rng.gauss(0.0, profile.latency_sigma))
        if self.sleep:
            await asyncio.sleep(latency_s)
        self.calls += 1
        return ChatCompletion(
            text=text,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_s=latency_s,
            model=self.model,
            finish_reason=finish_reason,
        )

    def _reply(self, hints: Mapping[str, Any], rng: random.Random) -> str:
        role = hints.get("role", "answer" if "gold" in hints else None)
        if role is None:
            return "I have looked at the problem but cannot add anything definite to it."
        if role not in _ROLES:
            raise ToolError(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"hint 'role' must be one of {', '.join(_ROLES)}, got {role!r}",
            )
        family = hints.get("family")
        skill = self.profile.skill(family if isinstance(family, str) else None)
        draw = rng.random()
        if role == "answer":
            gold = hints.get("gold")
            if gold is None:
                answer = (
                    _wrong_answer("", hints.get("wrong"), rng) if hints.get("wrong") else "unknown"
                )
            elif draw < skill.answer_accuracy:
                answer = str(gold)
            else:
                answer = _wrong_answer(str(gold), hints.get("wrong"), rng)
            if self.profile.answer_format == "boxed":
                return f"Working through the problem step by step gives \\boxed{{{answer}}}."
            return f"Having weighed the evidence, my answer is:\n<answer>{answer}</answer>"
        if role == "query":
            terms = _strings(hints.get("query_terms"))
            if terms and draw < skill.query_quality:
                return " ".join(terms)
            return " ".join(rng.sample(_NOISE_WORDS, 4))
        code = hints.get("code")
        if isinstance(code, str) and draw < skill.code_quality:
            program = code
        else:
            broken = hints.get("broken_code")
            program = (
                broken
                if isinstance(broken, str)
                else ("# I could not work out how to compute this.\nprint('no result')")
            )
        return f"```python\n{program.strip()}\n```"

    def __repr__(self) -> str:
        return f"SimulatedExpert(model={self.model!r}, seed={self.seed}, sleep={self.sleep})"
