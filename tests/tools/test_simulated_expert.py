"""SimulatedExpert: skills follow the profile, replies are reproducible, latency is reported."""

from __future__ import annotations

import asyncio
import math
import os
import re
import statistics
import subprocess
import sys
import time

import pytest

from orchestra_jax.tools.chat import ChatClient
from orchestra_jax.tools.experts import ExpertPool
from orchestra_jax.tools.pricing import PricingCatalog
from orchestra_jax.tools.results import ToolError, ToolErrorKind
from orchestra_jax.tools.simulated_expert import (
    PRESET_PROFILES,
    ExpertProfile,
    FamilySkill,
    SimulatedExpert,
)

FAST = dict(latency_first_token_s=0.0, latency_per_token_s=0.0, latency_sigma=0.0)


def ask(expert: SimulatedExpert, question: str, hints: dict | None = None, **kwargs):
    return asyncio.run(
        expert.complete([{"role": "user", "content": question}], hints=hints, **kwargs)
    )


def answer_of(text: str) -> str | None:
    match = re.search(r"\\boxed\{(.*)\}|<answer>(.*)</answer>", text)
    return None if match is None else (match.group(1) or match.group(2))


def test_it_is_a_chat_client():
    assert isinstance(SimulatedExpert(ExpertProfile("m")), ChatClient)


def test_same_request_same_reply_and_seeds_differ():
    profile = ExpertProfile("m", default_skill=FamilySkill(answer_accuracy=0.5))
    hints = {"role": "answer", "gold": "42", "family": "arith"}
    a, b = SimulatedExpert(profile, seed=1), SimulatedExpert(profile, seed=1)
    assert ask(a, "q", hints) == ask(b, "q", hints)
    replies = {ask(SimulatedExpert(profile, seed=s), "q", hints) for s in range(20)}
    assert len(replies) > 10  # latency and tokens vary with the seed
    outcomes = {answer_of(r.text) == "42" for r in replies}
    assert outcomes == {True, False}


def test_replies_are_the_same_in_another_process():
    # Hash randomisation differs between processes; the reply must not (sets included).
    code = (
        "import asyncio\n"
        "from orchestra_jax.tools.simulated_expert import SimulatedExpert\n"
        "e = SimulatedExpert('gpt-5', seed=7)\n"
        "c = asyncio.run(e.complete([{'role': 'user', 'content': 'q'}],\n"
        "    hints={'role': 'query', 'query_terms': {'alpha', 'beta', 'gamma'}}))\n"
        "print(repr(c))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
        ).stdout
        for hash_seed in (1, 2)
    }
    assert len(outputs) == 1


def test_answer_accuracy_follows_the_family_skill():
    profile = ExpertProfile(
        "m",
        skills={"arith": FamilySkill(answer_accuracy=0.8), "lookup": FamilySkill(0.2)},
        default_skill=FamilySkill(answer_accuracy=0.0),
        **FAST,
    )
    expert = SimulatedExpert(profile)
    n = 400

    def accuracy(family):
        hits = sum(
            answer_of(
                ask(
                    expert, f"question {i}", {"role": "answer", "gold": "17", "family": family}
                ).text
            )
            == "17"
            for i in range(n)
        )
        return hits / n

    assert abs(accuracy("arith") - 0.8) < 0.08
    assert abs(accuracy("lookup") - 0.2) < 0.08
    assert accuracy("never-heard-of-it") == 0.0  # the default skill


def test_wrong_answers_come_from_the_candidates_or_a_near_miss():
    expert = SimulatedExpert(ExpertProfile("m", default_skill=FamilySkill(0.0), **FAST))
    picks = {
        answer_of(
            ask(
                expert,
                f"q{i}",
                {"role": "answer", "gold": "Paris", "wrong": ["Lyon", "Paris", "Nice"]},
            ).text
        )
        for i in range(50)
    }
    assert picks == {"Lyon", "Nice"}  # the gold answer is never picked as a wrong one
    numbers = [
        answer_of(ask(expert, f"q{i}", {"role": "answer", "gold": "120"}).text) for i in range(50)
    ]
    assert all(n != "120" and n.lstrip("-").isdigit() for n in numbers)
    assert all(abs(int(n) - 120) <= 12 for n in numbers)  # plausible: within 10 %
    words = {
        answer_of(ask(expert, f"q{i}", {"role": "answer", "gold": "Paris"}).text) for i in range(20)
    }
    assert "Paris" not in words and all(len(w) == 5 for w in words)


def test_answer_format_is_boxed_for_math_profiles_and_tagged_otherwise():
    hints = {"role": "answer", "gold": "7"}
    math_expert = SimulatedExpert(
        ExpertProfile("m", answer_format="boxed", default_skill=FamilySkill(1.0), **FAST)
    )
    chat_expert = SimulatedExpert(ExpertProfile("c", default_skill=FamilySkill(1.0), **FAST))
    assert "\\boxed{7}" in ask(math_expert, "q", hints).text
    assert "<answer>7</answer>" in ask(chat_expert, "q", hints).text


def test_query_quality_decides_whether_the_key_terms_appear():
    hints = {"role": "query", "query_terms": ["Zorblat", "founding year"]}
    good = SimulatedExpert(ExpertProfile("g", default_skill=FamilySkill(query_quality=1.0)))
    bad = SimulatedExpert(ExpertProfile("b", default_skill=FamilySkill(query_quality=0.0)))
    for i in range(20):
        good_query, bad_query = ask(good, f"q{i}", hints).text, ask(bad, f"q{i}", hints).text
        assert "Zorblat" in good_query and "founding year" in good_query
        assert "Zorblat" not in bad_query and "founding" not in bad_query
        assert bad_query.strip()  # noise, but a query


def _run_python(reply: str) -> str:
    code = re.search(r"```python\n(.*)\n```", reply, re.S).group(1)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout.strip()


def test_skilled_coders_write_the_correct_program_and_unskilled_the_broken_one():
    hints = {"role": "code", "code": "print(6 * 7)", "broken_code": "print(6 + 7)"}
    skilled = SimulatedExpert(ExpertProfile("s", default_skill=FamilySkill(code_quality=1.0)))
    unskilled = SimulatedExpert(ExpertProfile("u", default_skill=FamilySkill(code_quality=0.0)))
    assert _run_python(ask(skilled, "q", hints).text) == "42"
    assert _run_python(ask(unskilled, "q", hints).text) == "13"
    no_broken = {"role": "code", "code": "print(6 * 7)"}
    assert _run_python(ask(unskilled, "q", no_broken).text) != "42"


def test_prompt_tokens_are_a_quarter_of_the_text_plus_overhead():
    expert = SimulatedExpert(ExpertProfile("m", prompt_overhead_tokens=11))
    messages = [
        {"role": "system", "content": "x" * 101},
        {"role": "user", "content": [{"type": "text", "text": "y" * 20}]},
    ]
    completion = asyncio.run(expert.complete(messages))
    assert completion.tokens_in == math.ceil(121 / 4) + 11


def test_completion_tokens_follow_the_profile_and_stop_at_max_tokens():
    profile = ExpertProfile("m", tokens_out_median=300, tokens_out_sigma=0.2, **FAST)
    expert = SimulatedExpert(profile)
    counts = [ask(expert, f"q{i}").tokens_out for i in range(300)]
    assert 270 < statistics.median(counts) < 330
    cut = ask(expert, "q", {"role": "answer", "gold": "5"}, max_tokens=50)
    assert cut.tokens_out == 50 and cut.finish_reason == "length"
    assert answer_of(cut.text) is None  # the reply was cut before its answer


def test_latency_is_reported_not_slept():
    expert = SimulatedExpert(PRESET_PROFILES["gpt-5"])
    started = time.perf_counter()
    completion = ask(expert, "q", {"role": "answer", "gold": "1"})
    assert time.perf_counter() - started < 0.5
    assert 5 < completion.latency_s < 200  # GPT-5-like: tens of seconds, reported


def test_latency_grows_with_completion_length():
    profile = ExpertProfile(
        "m",
        tokens_out_sigma=1.0,
        latency_first_token_s=1.0,
        latency_per_token_s=0.01,
        latency_sigma=0.0,
    )
    replies = [ask(SimulatedExpert(profile), f"q{i}") for i in range(20)]
    for reply in replies:
        assert reply.latency_s == pytest.approx(1.0 + 0.01 * reply.tokens_out)


def test_sleep_option_waits_for_real_and_calls_overlap():
    profile = ExpertProfile(
        "m", latency_first_token_s=0.25, latency_per_token_s=0.0, latency_sigma=0.0
    )
    expert = SimulatedExpert(profile, sleep=True)

    async def many():
        return await asyncio.gather(
            *(expert.complete([{"role": "user", "content": f"q{i}"}]) for i in range(10))
        )

    started = time.perf_counter()
    replies = asyncio.run(many())
    elapsed = time.perf_counter() - started
    assert all(r.latency_s == pytest.approx(0.25) for r in replies)
    assert 0.25 <= elapsed < 1.5  # ten 0.25 s calls overlapped, not 2.5 s in a row
    assert expert.calls == 10


def test_without_hints_it_replies_without_an_answer():
    reply = ask(SimulatedExpert(ExpertProfile("m")), "Tell me something.")
    assert reply.text and answer_of(reply.text) is None


@pytest.mark.parametrize(
    ("messages", "kwargs"),
    [
        ([], {}),
        ([{"role": "user", "content": "q"}], {"hints": {"role": "poem"}}),
        ([{"role": "user", "content": "q"}], {"hints": ["role", "answer"]}),
        ([{"role": "user", "content": "q"}], {"temperature": -1}),
    ],
)
def test_bad_requests_are_invalid_arguments(messages, kwargs):
    with pytest.raises(ToolError) as info:
        asyncio.run(SimulatedExpert(ExpertProfile("m")).complete(messages, **kwargs))
    assert info.value.kind == ToolErrorKind.INVALID_ARGUMENTS


def test_profiles_validate_and_load_from_dicts():
    with pytest.raises(ValueError, match="answer_accuracy"):
        FamilySkill(answer_accuracy=1.5)
    with pytest.raises(ValueError, match="answer_format"):
        ExpertProfile("m", answer_format="latex")
    with pytest.raises(ValueError, match="tokens_out_median"):
        ExpertProfile("m", tokens_out_median=0)
    with pytest.raises(ValueError, match="unknown profile keys"):
        ExpertProfile.from_dict({"name": "m", "acuracy": 1})
    profile = ExpertProfile.from_dict(
        {
            "name": "m",
            "answer_format": "boxed",
            "skills": {"arith": {"answer_accuracy": 0.9}},
            "default_skill": {"code_quality": 0.1},
        }
    )
    assert profile.skill("arith").answer_accuracy == 0.9
    assert profile.skill("other").code_quality == 0.1
    assert ExpertProfile.coerce("gpt-5") is PRESET_PROFILES["gpt-5"]
    with pytest.raises(ValueError, match="no preset profile"):
        ExpertProfile.coerce("gpt-6")


def test_presets_are_priced_models_and_order_the_tiers():
    catalog = PricingCatalog.load()
    assert all(name in catalog for name in PRESET_PROFILES)
    acc = {name: p.default_skill.answer_accuracy for name, p in PRESET_PROFILES.items()}
    assert acc["gpt-5"] > acc["gpt-5-mini"] > acc["qwen3-32b"] > acc["qwen3-8b"]
    coder = PRESET_PROFILES["qwen2.5-coder-32b-instruct"].default_skill
    assert coder.code_quality == max(p.default_skill.code_quality for p in PRESET_PROFILES.values())


def test_pool_builds_simulated_experts_and_prices_their_usage():
    catalog = PricingCatalog.load()
    pool = ExpertPool.from_config(
        {
            "expert-1": {"endpoint": "simulated", "model": "gpt-5", "profile": "gpt-5"},
            "math": {
                "endpoint": "simulated",
                "model": "qwen2.5-math-7b-instruct",
                "seed": 3,
                "profile": {"name": "m7", "answer_format": "boxed", **FAST},
            },
        },
        catalog,
    )
    completion, cost = asyncio.run(
        pool["math"].complete(
            [{"role": "user", "content": "1+1?"}], hints={"role": "answer", "gold": "2"}
        )
    )
    assert completion.model == "qwen2.5-math-7b-instruct"
    assert cost == pytest.approx(
        (completion.tokens_in + completion.tokens_out) * 0.2 / 1e6, rel=1e-12
    )
    _, gpt5_cost = asyncio.run(pool["expert-1"].complete([{"role": "user", "content": "q"}]))
    assert gpt5_cost > 0
    asyncio.run(pool.aclose())  # simulated clients hold nothing; closing is harmless


def test_pool_uses_ready_made_clients_by_alias():
    own = SimulatedExpert(ExpertProfile("anything", **FAST), model="gpt-5-mini")
    pool = ExpertPool.from_config(
        {"mini": {"model": "gpt-5-mini"}}, PricingCatalog.load(), clients={"mini": own}
    )
    assert pool["mini"].client is own and "mini" in pool and len(pool) == 1
    assert pool["mini"].price == PricingCatalog.load().price("gpt-5-mini")
