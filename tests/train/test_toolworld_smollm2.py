"""`experiments/toolworld_smollm2.py` on the CPU: the real SmolLM2-135M-Instruct (the packaged
weights) through the format warm start, two GRPO steps and the final evaluation on a handful
of toolworld tasks. Slow (minutes), so marked; `python -m pytest -m slow -k smollm2`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestra_jax.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "experiments" / "toolworld_smollm2.py"
#: Two tasks x two episodes of two turns a step, two steps; a warm start of two steps. Two
#: warm-start steps do not teach a 135M model the call syntax, so its groups are mostly
#: uniform (no reward, zero advantages); without the homogeneity filter their samples still
#: go through the update -- the forward and backward passes of the real model, the optimizer
#: step -- which is what this test is for. (Measured on 2 CPU cores: 80 s of rollout and
#: 35-45 s of update a step, compiles included; 9.8 minutes for the whole test.)
SMOKE = [
    "--config.train.steps=2",
    "--config.rollout.prompts_per_step=2",
    "--config.rollout.group_size=2",
    "--config.rollout.max_turns=2",
    "--config.rollout.max_new_tokens=32",  # a call is 23 to 29 tokens
    "--config.data.balanced=False",
    "--config.filter.min_group_std=None",
    "--config.rollout.max_batch_size=8",
    "--config.train.mini_batch_size=8",
    "--config.train.micro_batches=1",
    "--config.train.checkpoint_every=1",
    "--config.sft.episodes=16",
    "--config.sft.steps=2",
    "--config.sft.batch_size=4",
    "--config.world.train_tasks=16",
    "--config.world.test_tasks=4",
    "--config.world.vocabulary_tasks=40",
    "--config.model.dtype=float32",  # bfloat16 matmuls are emulated (slow) on CPUs
]


@pytest.mark.slow
def test_two_grpo_steps_of_smollm2_on_toolworld(tmp_path):
    from orchestra_jax import assets

    try:
        assets.smollm2_gguf_path()
    except (FileNotFoundError, ImportError) as err:
        pytest.skip(str(err))
    from orchestra_jax.tokenization import CHATML_TOOLS_TEMPLATE, load_tokenizer
    from orchestra_jax.train.checkpoint import CheckpointManager

    workdir = tmp_path / "run"
    assert main(["train", "--config", str(RECIPE), "--workdir", str(workdir), *SMOKE]) == 0

    assert CheckpointManager(workdir / "checkpoints").latest_step() == 2
    summary = json.loads((workdir / "summary.json").read_text())
    metrics = summary["final_metrics"]
    assert metrics["update/kept_samples"] > 0  # the second step's samples reached the update
    assert metrics["update/optimizer_steps"] >= 1
    assert metrics["train/prompt_tokens"] > 0 and metrics["train/completion_tokens"] > 0
    # The warm start is saved with SmolLM2's vocabulary and the Hermes tool template the
    # policy was prompted with (its own template would drop the tool schemas).
    warm = load_tokenizer(workdir / "sft")
    assert warm.vocab_size == 49152
    assert warm.chat_template == CHATML_TOOLS_TEMPLATE

    policies = summary["policies"]
    for name in ("trained", "sft", "random", "route:frontier-all"):
        assert 0.0 <= policies[name]["accuracy"] <= 1.0
        assert set(policies[name]["by_family"]) <= {"arithmetic", "easy", "lookup", "multihop"}
    assert summary["best_fixed_route"].startswith("route:")
    assert 0.0 <= summary["preference_eval"]["avoid_frontier"]["frontier_call_share"] <= 1.0
