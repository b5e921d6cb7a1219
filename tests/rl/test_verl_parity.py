"""Parity with verl 0.9.1's ``core_algos`` (the trainer ToolOrchestra builds on), in fp32.

The golden values come from ``fixtures/make_verl_golden.py`` run in a throwaway venv with verl
and torch; this test reads them and needs neither. Five cases: several seeds, shapes up to
16 x 40, ragged masks with interior gaps, fully masked rows, fixed and ragged groups, tied
groups, tokens far enough off-policy to hit the dual clip.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from orchestra_jax.rl import (
    AGG_MODES,
    aggregate_loss,
    compute_advantages,
    entropy_from_logits,
    finalize_loss,
    gae_advantages_and_returns,
    kl_divergence,
    policy_loss,
    ppo_metrics,
)

GOLDEN = Path(__file__).parent / "fixtures" / "verl_golden.npz"
TOL = 1e-6
PPO_SETTINGS = ((0.2, 0.28, 10.0), (0.2, 0.28, 3.0), (0.2, 0.2, 3.0))


def _load() -> list[dict[str, np.ndarray]]:
    blob = np.load(GOLDEN)
    cases: dict[int, dict[str, np.ndarray]] = {}
    for key in blob.files:
        if not key.startswith("c"):
            continue
        index, rest = key.split("/", 1)
        cases.setdefault(int(index[1:]), {})[rest] = blob[key]
    return [cases[i] for i in sorted(cases)]


CASES = _load()
IDS = [f"case{i}" for i in range(len(CASES))]


def _close(ours, theirs, tol: float = TOL) -> None:
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=tol, atol=tol)


def test_fixture_is_small_and_from_the_pinned_verl():
    blob = np.load(GOLDEN)
    assert str(blob["verl_version"]) == "0.9.1"
    assert GOLDEN.stat().st_size < 1_000_000
    assert len(CASES) >= 4


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_outcome_advantages_match_verl(case):
    rewards = jnp.asarray(case["rewards"])
    group_size = int(case["group_size"])
    grouping = ({"group_size": group_size} if group_size else
                {"group_ids": jnp.asarray(case["group_ids"])})
    _close(compute_advantages("grpo", rewards, **grouping), case["verl/grpo"])
    _close(compute_advantages("drgrpo", rewards, **grouping), case["verl/drgrpo"])
    _close(compute_advantages("rloo", rewards, **grouping), case["verl/rloo"])
    # ragged ids also reproduce the fixed-size layout
    _close(compute_advantages("grpo", rewards, group_ids=jnp.asarray(case["group_ids"])),
           case["verl/grpo"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gae_matches_verl(case):
    adv, returns = gae_advantages_and_returns(
        jnp.asarray(case["token_rewards"]), jnp.asarray(case["values"]),
        jnp.asarray(case["mask"]), gamma=0.99, lam=0.95)
    _close(returns, case["verl/gae_returns"])
    _close(adv, case["verl/gae_adv"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregation_matches_verl(case, mode):
    total, denom = aggregate_loss(mode, jnp.asarray(case["per_token_loss"]),
                                  jnp.asarray(case["mask"]))
    _close(finalize_loss(total, denom), case[f"verl/agg/{mode}"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_token_sum_norm_with_constant_scale_matches_verl(case):
    total, denom = aggregate_loss("seq-mean-token-sum-norm", jnp.asarray(case["per_token_loss"]),
                                  jnp.asarray(case["mask"]), loss_scale_factor=64)
    _close(total / denom, case["verl/agg/seq-mean-token-sum-norm/scale64"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("name", ["k1", "k2", "k3", "abs"])
def test_kl_estimators_match_verl(case, name):
    _close(kl_divergence(name, jnp.asarray(case["logp"]), jnp.asarray(case["ref_logp"])),
           case[f"verl/kl/{name}"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_entropy_matches_verl(case):
    # logsumexp(z) - sum(p z) subtracts two numbers near max(z) ~ 10: both sides lose ~1e-6
    # to fp32 cancellation in different places, so this one is compared at 1e-5.
    _close(entropy_from_logits(jnp.asarray(case["logits"])), case["verl/entropy"], tol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("setting", PPO_SETTINGS, ids=lambda s: "/".join(map(str, s)))
@pytest.mark.parametrize("adv_key", ["adv_bt", "adv_b"])
def test_ppo_clip_loss_and_metrics_match_verl(case, setting, adv_key):
    lo, hi, c = setting
    tag = f"verl/ppo/{lo}/{hi}/{c}/{adv_key}"
    logp, old = jnp.asarray(case["logp"]), jnp.asarray(case["old_logp"])
    adv, mask = jnp.asarray(case[adv_key]), jnp.asarray(case["mask"])
    for mode in AGG_MODES:
        total, denom = policy_loss("ppo_clip", logp, old, adv, mask, clip_low=lo, clip_high=hi,
                                   dual_clip=c, agg_mode=mode)
        _close(total / denom, case[f"{tag}/{mode}"])
    metrics = ppo_metrics(logp, old, adv, mask, clip_low=lo, clip_high=hi, dual_clip=c)
    for ours, theirs in (("clipfrac", "pg_clipfrac"), ("approx_kl", "ppo_kl"),
                         ("clipfrac_dual", "pg_clipfrac_lower")):
        total, count = metrics[ours]
        _close(total / count, case[f"{tag}/{theirs}"])


def test_fixtures_exercise_the_dual_clip():
    """Guard against a fixture too tame to test the dual clip: it must bind somewhere."""
    fractions = [case["verl/ppo/0.2/0.28/3.0/adv_bt/pg_clipfrac_lower"] for case in CASES]
    assert max(fractions) > 0


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("mode", AGG_MODES)
def test_gspo_and_reinforce_match_verl(case, mode):
    logp, mask, adv = (jnp.asarray(case[k]) for k in ("logp", "mask", "adv_bt"))
    total, denom = policy_loss("gspo", logp, jnp.asarray(case["verl/gspo_old_logp"]), adv, mask,
                               clip_low=3e-4, clip_high=4e-4, agg_mode=mode)
    _close(total / denom, case[f"verl/gspo/{mode}"])
    total, denom = policy_loss("reinforce", logp, jnp.asarray(case["old_logp"]), adv, mask,
                               agg_mode=mode)
    _close(total / denom, case[f"verl/reinforce/{mode}"])
