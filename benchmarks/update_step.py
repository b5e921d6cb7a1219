"""Throughput, model FLOP/s and CPU MFU of the GRPO update step; SmolLM2 also against Tunix.

Run (from the repository root, in the project's venv):

    python benchmarks/update_step.py                           # tiny 16x1024, SmolLM2 4x256
    python benchmarks/update_step.py --models tiny --repeats 3 # quick check while developing
    python benchmarks/update_step.py --models smollm2 --frameworks ours,tunix \
        --smollm2-shape 4x256 --tunix-python /tmp/tunix-venv/bin/python

What is measured, per model, in one process (Tunix optionally in a subprocess, see below):

- `ours`: `orchestra_jax.rl.update_step.make_update_step(...)` with the method's GRPO recipe
  (`UpdateConfig()`: PPO clip 0.2/0.28, dual clip 10, token-mean, k2 KL at 1e-4 against the
  frozen reference, which the step itself runs forward) and `make_optimizer` (AdamW behind
  global-norm clipping), on one device mesh, with UpdateConfig's own gradient accumulation:
  micro-batches of at most `micro_batch_tokens` (default 2048) tokens, i.e. 8 micro-batches of
  2x1024 on tiny and one of 4x256 on SmolLM2. On a 2-core CPU the smaller working set is much
  faster at identical gradients (tiny 16x1024: ~1.7x over one micro-batch, which
  `--micro-batch-tokens 0` measures; SmolLM2 4x256: 2 micro-batches are ~1.06x faster than
  the default one, `--smollm2-micro-batches 2`). `micro_batches_run` reports the count.
  One call is `(state, batch) -> (state, metrics)`: the reference forward, the policy forward
  and backward, the loss and the optimizer update, timed until the metrics and the new params
  are ready. The state is donated, as in training.
- `tunix` (SmolLM2 only): the same update done by google-tunix: its Llama3 NNX model loaded
  from our `save_pretrained` output (the RoPE-theta patch of `benchmarks/decode.py` applied),
  the reference log-probs by `tunix.rl.common.compute_per_token_logps` on a second copy of the
  weights (what `GRPOLearner` does before its train step), then Tunix's registered GRPO loss
  `tunix.rl.algo_core.grpo_loss_fn` under `nnx.value_and_grad` and `nnx.Optimizer.update`
  in one `nnx.jit` (the body of `PeftTrainer._train_step`), with the same loss settings
  (epsilon 0.2, epsilon_high 0.28, epsilon_c 10, token-mean, `mse_kl` = our k2, beta 1e-4)
  and the same optimizer (clip 1.0 + AdamW). One timed call = both jitted calls.

Batch: B rows of T tokens, the first P = T/4 a prompt (outside the loss), the remaining C
completion tokens all in the loss, no padding (every token real), random ids, advantages and
sampler log-probs; Tunix gets the same ids split into prompt and completion.

Model FLOPs (per token of the batch, MaxText's convention; embedding lookup not counted, the
LM head counted as a matmul even when tied; remat recomputation NOT counted):
  N_mm = layers * (d*(H + 2*KV)*hd + H*hd*d + 3*d*f) + d*V
  attn = layers * 2 * 2 * T * H*hd / 2            (QK^T and AV, forward, causal halving)
  policy fwd+bwd = 3 * (2*N_mm + attn) = 6*N_mm + 6*layers*T*H*hd
  reference fwd  = 2*N_mm + 2*layers*T*H*hd
`model_flops_per_step` counts both (the reference forward is real work of a GRPO step with a
KL term); `mfu` uses it, and `mfu_policy_only` the policy fwd+bwd alone (the usual training
MFU).

Matmul peak: a jitted fp32 `a @ b` of `--matmul-size`^3 (default 2048), timed `--matmul-repeats`
times at the start and again at the end of the run, with XLA's own thread pool (all usable
cores, as the update step uses). `peak_flops_per_s` is the best of those calls, so MFU is
measured against what this machine really reached today (the most conservative choice).

Timings: `--warmups` (default 2) untimed calls per framework and shape (`first_call_s` is the
first, compile included). Two, because Tunix compiles its train step a second time on its
second call (the optimizer state comes back with other shardings), which would otherwise land
in the first timed repeat (~6 s on SmolLM2 1x64);
the repeats are interleaved across frameworks so that load from other processes hits all alike;
times are the MEDIAN and MINIMUM; tokens_per_s = B*T / median seconds. `machine` holds the CPU,
versions and the load average at start and end (above the core count: noisy, compare mins).

Tunix in another interpreter: `--tunix-python PATH` runs the Tunix side as a subprocess of this
script with that interpreter (this file with `--tunix-worker`), for a venv where tunix imports.
Its timings then do not interleave with ours.

Output: ONE JSON object on stdout (logs on stderr). `results` has one row per model with, per
framework, `tokens_per_s`, `median_s`, `min_s`, `first_call_s`, `model_flops_per_s`, `mfu`,
`mfu_policy_only`; `ratios.ours_over_tunix` on tokens_per_s (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("tiny", "smollm2")
FRAMEWORKS = ("ours", "tunix")
LR = 1e-6
KL_COEF = 1e-4
CLIP_LOW, CLIP_HIGH, DUAL_CLIP = 0.2, 0.28, 10.0


def log(message: str) -> None:
    print(f"[update_step] {message}", file=sys.stderr, flush=True)


def parse_shape(text: str) -> tuple[int, int]:
    try:
        rows, length = (int(x) for x in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"shape must be ROWSxLENGTH, got {text!r}") from err
    if rows < 1 or length < 8 or length % 4:
        raise argparse.ArgumentTypeError(f"shape {text!r}: rows >= 1, length >= 8 and a "
                                         "multiple of 4")
    return rows, length


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2",
                        help=f"comma-separated, from {MODELS} (default: %(default)s)")
    parser.add_argument("--frameworks", default="ours,tunix",
                        help=f"comma-separated, from {FRAMEWORKS}; tunix runs on smollm2 only")
    parser.add_argument("--tiny-shape", type=parse_shape, default=(16, 1024),
                        help="ROWSxLENGTH of the tiny batch (default: 16x1024 = 16k tokens)")
    parser.add_argument("--smollm2-shape", type=parse_shape, default=(4, 256),
                        help="ROWSxLENGTH of the SmolLM2 batch (default: 4x256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per framework")
    parser.add_argument("--logits-chunk", type=int, default=None,
                        help="UpdateConfig.logits_chunk for ours (default: UpdateConfig's)")
    parser.add_argument("--micro-batch-tokens", type=int, default=None,
                        help="UpdateConfig.micro_batch_tokens for ours (default: UpdateConfig's;"
                             " 0 = None: exactly the micro-batch count)")
    parser.add_argument("--tiny-micro-batches", type=int, default=None,
                        help="UpdateConfig.micro_batches for ours on tiny (default: "
                             "UpdateConfig's, then sized by micro_batch_tokens)")
    parser.add_argument("--smollm2-micro-batches", type=int, default=None,
                        help="UpdateConfig.micro_batches for ours on SmolLM2 (default: "
                             "UpdateConfig's)")
    parser.add_argument("--remat", action="store_true", help="our decoder with remat=True")
    parser.add_argument("--warmups", type=int, default=2, help="untimed calls per framework")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--matmul-repeats", type=int, default=5)
    parser.add_argument("--tunix-python", default=None,
                        help="run the Tunix side with this interpreter (a subprocess)")
    parser.add_argument("--tunix-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    args.frameworks = [f.strip().lower() for f in args.frameworks.split(",") if f.strip()]
    bad = sorted(set(args.models) - set(MODELS)) + sorted(set(args.frameworks) - set(FRAMEWORKS))
    if bad or not args.models or not args.frameworks:
        parser.error(f"unknown models/frameworks {bad}; known: {MODELS} / {FRAMEWORKS}")
    if min(args.tiny_micro_batches or 1, args.smollm2_micro_batches or 1) < 1:
        parser.error("micro-batch counts must be >= 1")
    if args.micro_batch_tokens is not None and args.micro_batch_tokens < 0:
        parser.error("--micro-batch-tokens must be >= 0")
    if args.repeats < 1 or args.warmups < 1 or args.matmul_repeats < 1 or args.matmul_size < 64:
        parser.error("--repeats and --matmul-repeats must be >= 1, --matmul-size >= 64")
    return args


# ---- FLOPs ---------------------------------------------------------------------------------


def model_flops(cfg: Any, rows: int, length: int) -> dict[str, float]:
    """Model FLOPs of one update step on ``rows x length`` tokens (see the module docstring)."""
    d, f, v, layers = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    q_width, kv_width = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    n_mm = layers * (d * (q_width + 2 * kv_width) + q_width * d + 3 * d * f) + d * v
    attn_fwd = layers * 2 * 2 * length * q_width / 2  # per token, causal halving
    tokens = rows * length
    policy = tokens * 3 * (2 * n_mm + attn_fwd)
    reference = tokens * (2 * n_mm + attn_fwd)
    return {"matmul_params": n_mm, "policy_fwd_bwd": policy, "reference_fwd": reference,
            "total": policy + reference}


def matmul_peak(size: int, repeats: int) -> dict[str, Any]:
    """Best and median FLOP/s of a jitted fp32 ``size^3`` matmul (inputs already on device)."""
    import jax
    import jax.numpy as jnp

    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    mm = jax.jit(jnp.matmul)
    mm(a, b).block_until_ready()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b).block_until_ready()
        seconds.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    return {"size": size, "repeats": repeats, "best_flops_per_s": flops / min(seconds),
            "median_flops_per_s": flops / statistics.median(seconds),
            "min_s": round(min(seconds), 4), "median_s": round(statistics.median(seconds), 4)}


# ---- the batch -----------------------------------------------------------------------------


def host_batch(rows: int, length: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids, prompt = the first quarter, the rest in the loss; no padding anywhere."""
    rng = np.random.default_rng(seed)
    prompt = length // 4
    loss_mask = np.zeros((rows, length), np.float32)
    loss_mask[:, prompt:] = 1.0
    return {
        "input_ids": rng.integers(3, vocab, (rows, length)).astype(np.int32),
        "loss_mask": loss_mask,
        "old_logprobs": (rng.normal(np.log(1.0 / vocab), 0.05, (rows, length))
                         * loss_mask).astype(np.float32),
        "advantages": rng.normal(0.0, 1.0, rows).astype(np.float32),
        "prompt_len": np.asarray(prompt),
    }


# ---- ours ----------------------------------------------------------------------------------


class Runner:
    """One framework on one shape: ``step()`` runs and waits for one full update."""

    def __init__(self, name: str, step: Callable[[], None], info: dict[str, Any]):
        self.name, self.step, self.info = name, step, info


def make_ours(model: Any, mesh: Any, rules: Any, batch: dict[str, np.ndarray],
              args: argparse.Namespace, micro_batches: int | None) -> Runner:
    import jax

    from orchestra_jax.rl.batch import TrainBatch, put_batch
    from orchestra_jax.rl.optimizer import make_optimizer
    from orchestra_jax.rl.train_state import init_train_state, train_state_shardings
    from orchestra_jax.rl.update_step import UpdateConfig, make_update_step, micro_batch_count

    extra: dict[str, Any] = {}
    if args.logits_chunk is not None:
        extra["logits_chunk"] = args.logits_chunk
    if micro_batches is not None:
        extra["micro_batches"] = micro_batches
    if args.micro_batch_tokens is not None:
        extra["micro_batch_tokens"] = args.micro_batch_tokens or None
    config = UpdateConfig(kl_coef=KL_COEF, **extra)
    optimizer = make_optimizer(LR)
    graphdef, state = init_train_state(model, optimizer, mesh, rules, reference=True)
    step = make_update_step(graphdef, config, mesh, rules, train_state_shardings(state),
                            optimizer=optimizer)
    ids = batch["input_ids"]
    train_batch = put_batch(TrainBatch(
        input_ids=ids, attention_mask=np.ones_like(ids), loss_mask=batch["loss_mask"],
        old_logprobs=batch["old_logprobs"], advantages=batch["advantages"]), mesh, rules)
    holder = {"state": state}

    def run() -> None:
        new_state, metrics = step(holder["state"], train_batch)
        jax.block_until_ready((new_state.params, metrics))
        holder["state"] = new_state

    info = {"api": "make_update_step(graphdef, UpdateConfig(kl_coef=1e-4), mesh, rules, "
                   "train_state_shardings(state), optimizer=make_optimizer(1e-6))"
                   "(state, put_batch(batch))",
            "update_config": {"logits_chunk": config.logits_chunk, "kl_coef": config.kl_coef,
                              "kl_estimator": config.kl_estimator,
                              "agg_mode": config.agg_mode,
                              "micro_batches": config.micro_batches,
                              "micro_batch_tokens": config.micro_batch_tokens},
            "micro_batches_run": micro_batch_count(*ids.shape, config),
            "remat": bool(model.config.remat)}
    return Runner("ours", run, info)


# ---- Tunix ---------------------------------------------------------------------------------


def make_tunix(safetensors_dir: str, cfg: dict[str, Any], batch: dict[str, np.ndarray]) -> Runner:
    import jax
    import jax.numpy as jnp
    import optax
    from decode import patch_tunix_rope
    from flax import nnx
    from tunix.models.llama3 import model as llama_model
    from tunix.models.llama3 import params as llama_params
    from tunix.rl import algo_core, common
    from tunix.rl.grpo import grpo_learner

    patched = patch_tunix_rope(llama_model, cfg["rope_theta"])
    config = llama_model.ModelConfig(
        num_layers=cfg["num_layers"], vocab_size=cfg["vocab_size"], embed_dim=cfg["hidden_size"],
        hidden_dim=cfg["intermediate_size"], num_heads=cfg["num_heads"],
        head_dim=cfg["head_dim"], num_kv_heads=cfg["num_kv_heads"],
        rope_theta=cfg["rope_theta"], norm_eps=cfg["rms_norm_eps"],
        weight_tying=cfg["tie_word_embeddings"])
    start = time.perf_counter()
    policy = llama_params.create_model_from_safe_tensors(safetensors_dir, config,
                                                         dtype=jnp.float32)
    reference = llama_params.create_model_from_safe_tensors(safetensors_dir, config,
                                                            dtype=jnp.float32)
    load_s = time.perf_counter() - start
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(LR, weight_decay=0.01))
    optimizer = nnx.Optimizer(policy, tx, wrt=nnx.Param)
    algo = grpo_learner.GRPOConfig(num_generations=2, beta=KL_COEF, epsilon=CLIP_LOW,
                                   loss_agg_mode="token-mean", kl_loss_mode="mse_kl")
    algo.epsilon_high = CLIP_HIGH
    algo.epsilon_c = DUAL_CLIP
    algo.temperature = 1.0
    # A pad id that no row contains: Tunix masks pad positions out of attention and positions.
    pad_id, eos_id = 0, 1
    prompt = int(batch["prompt_len"])
    ids = jnp.asarray(batch["input_ids"])
    prompt_ids, completion_ids = ids[:, :prompt], ids[:, prompt:]
    completion_mask = jnp.asarray(batch["loss_mask"][:, prompt:])
    old_logps = jnp.asarray(batch["old_logprobs"][:, prompt:])
    advantages = jnp.asarray(batch["advantages"])
    ref_graphdef, ref_state = nnx.split(reference)

    @nnx.jit
    def train_step(model: Any, opt: Any, ref_logps: Any) -> Any:
        example = grpo_learner.TrainExample(
            prompt_ids=prompt_ids, prompt_mask=(prompt_ids != pad_id).astype(jnp.int32),
            completion_ids=completion_ids, completion_mask=completion_mask,
            advantages=advantages, ref_per_token_logps=ref_logps,
            old_per_token_logps=old_logps)

        def loss_fn(m: Any) -> Any:
            return algo_core.grpo_loss_fn(m, example, algo, pad_id, eos_id)

        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        grad_norm = optax.global_norm(grads)
        opt.update(model, grads)
        return loss, aux, grad_norm

    def run() -> None:
        ref_logps = common.compute_per_token_logps(
            ref_graphdef, ref_state, prompt_tokens=prompt_ids, completion_tokens=completion_ids,
            pad_id=pad_id, eos_id=eos_id, stop_gradient=True)
        out = train_step(policy, optimizer, ref_logps)
        jax.block_until_ready((out, nnx.state(policy)))

    info = {"api": "tunix.rl.common.compute_per_token_logps(reference) + nnx.jit(value_and_grad("
                   "tunix.rl.algo_core.grpo_loss_fn) + nnx.Optimizer.update)",
            "grpo_config": {"beta": KL_COEF, "epsilon": CLIP_LOW, "epsilon_high": CLIP_HIGH,
                            "epsilon_c": DUAL_CLIP, "loss_agg_mode": "token-mean",
                            "kl_loss_mode": "mse_kl"},
            "remat_config": str(config.remat_config), "tunix_rope_patch": patched,
            "load_s": round(load_s, 2)}
    return Runner("tunix", run, info)


def time_runners(runners: list[Runner], repeats: int,
                 warmups: int = 2) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    live = []
    for runner in runners:
        start = time.perf_counter()
        try:
            runner.step()
            first = time.perf_counter() - start
            for _ in range(warmups - 1):
                runner.step()
        except Exception as err:  # one failing framework is reported, the other still runs
            log(f"{runner.name} failed: {err!r}")
            out[runner.name] = {"error": repr(err)[:800]}
            continue
        out[runner.name] = {"first_call_s": round(first, 2), "seconds": []}
        live.append(runner)
        log(f"{runner.name}: warm-up {out[runner.name]['first_call_s']}s")
    for i in range(repeats):
        for runner in live:
            start = time.perf_counter()
            runner.step()
            out[runner.name]["seconds"].append(time.perf_counter() - start)
            log(f"{runner.name}: repeat {i + 1}/{repeats} {out[runner.name]['seconds'][-1]:.3f}s")
    return out


def tunix_worker(spec_path: str) -> int:
    """Subprocess entry: the Tunix side alone, timings as JSON on stdout."""
    spec = json.loads(Path(spec_path).read_text())
    batch = {k: np.asarray(v) for k, v in np.load(spec["batch"]).items()}
    runner = make_tunix(spec["safetensors"], spec["config"], batch)
    timings = time_runners([runner], spec["repeats"], spec["warmups"])["tunix"]
    print(json.dumps({"timings": timings, "info": runner.info}))
    return 0


def summarize(timings: dict[str, Any], tokens: int, flops: dict[str, float],
              peak: float) -> dict[str, Any]:
    if "seconds" not in timings:
        return timings
    seconds = timings.pop("seconds")
    median = statistics.median(seconds)
    rate = flops["total"] / median
    return {**timings, "tokens_per_s": round(tokens / median, 1), "median_s": round(median, 4),
            "min_s": round(min(seconds), 4), "model_flops_per_s": round(rate / 1e9, 2),
            "mfu": round(rate / peak, 4),
            "mfu_policy_only": round(flops["policy_fwd_bwd"] / median / peak, 4),
            "mfu_at_min_s": round(flops["total"] / min(seconds) / peak, 4)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tunix_worker:
        return tunix_worker(args.tunix_worker)
    import forward as fwd  # house helpers: machine info
    import jax

    from orchestra_jax.models import load_pretrained
    from orchestra_jax.models.config import get_preset
    from orchestra_jax.models.decoder import init_decoder
    from orchestra_jax.sharding import make_mesh

    report: dict[str, Any] = {
        "benchmark": "GRPO update step throughput and CPU MFU (fp32): ours, and Tunix on SmolLM2",
        "measured": (
            "tokens_per_s = B*T / median seconds of one whole update step (reference forward, "
            "policy forward+backward, GRPO loss with k2 KL, clip + AdamW update), inputs on "
            "device, timed to block_until_ready. model FLOPs: 6*N_mm + 6*L*T*H*hd per token "
            "for the policy (LM head included, causal attention halved, remat not counted) + "
            "2*N_mm + 2*L*T*H*hd for the reference forward. mfu = model FLOP/s / best measured "
            "fp32 matmul FLOP/s of this run."),
        "settings": {"models": args.models, "frameworks": args.frameworks,
                     "tiny_shape": list(args.tiny_shape),
                     "smollm2_shape": list(args.smollm2_shape), "repeats": args.repeats,
                     "warmups": args.warmups,
                     "logits_chunk": args.logits_chunk,
                     "micro_batch_tokens": args.micro_batch_tokens,
                     "tiny_micro_batches": args.tiny_micro_batches,
                     "smollm2_micro_batches": args.smollm2_micro_batches, "remat": args.remat,
                     "tunix_python": args.tunix_python, "dtype": "float32"},
        "machine": fwd.machine_info(fwd.usable_cores()),
        "results": [],
    }
    start_all = time.perf_counter()
    log("matmul peak (start)")
    peaks = [matmul_peak(args.matmul_size, args.matmul_repeats)]
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    with tempfile.TemporaryDirectory(prefix="update-bench-") as tmp:
        for name in args.models:
            rows, length = args.tiny_shape if name == "tiny" else args.smollm2_shape
            log(f"{name}: {rows}x{length}")
            if name == "tiny":
                model = init_decoder(get_preset("tiny", remat=args.remat), 0)
                model_mesh, rules, lm = mesh, None, None
            else:
                lm = load_pretrained("smollm2-135m-instruct", remat=args.remat)
                model, model_mesh, rules = lm.model, lm.mesh, lm.rules
            cfg = model.config
            batch = host_batch(rows, length, cfg.vocab_size)
            flops = model_flops(cfg, rows, length)
            runners: list[Runner] = []
            row: dict[str, Any] = {"model": name, "rows": rows, "seq_len": length,
                                   "tokens": rows * length, "prompt_len": length // 4,
                                   "parameters": cfg.num_params(),
                                   "matmul_params": flops["matmul_params"],
                                   "model_flops_per_step": flops["total"],
                                   "policy_flops_per_step": flops["policy_fwd_bwd"],
                                   "frameworks": {}, "skipped": {}}
            if "ours" in args.frameworks:
                micro = args.tiny_micro_batches if name == "tiny" else args.smollm2_micro_batches
                runners.append(make_ours(model, model_mesh, rules, batch, args, micro))
            tunix_spec = None
            if "tunix" in args.frameworks and name == "smollm2":
                directory = Path(tmp) / "smollm2-safetensors"
                lm.save_pretrained(directory)
                tunix_cfg = {k: getattr(cfg, k) for k in (
                    "num_layers", "vocab_size", "hidden_size", "intermediate_size",
                    "num_heads", "head_dim", "num_kv_heads", "rope_theta", "rms_norm_eps",
                    "tie_word_embeddings")}
                if args.tunix_python:
                    np.savez(Path(tmp) / "batch.npz", **batch)
                    tunix_spec = Path(tmp) / "spec.json"
                    tunix_spec.write_text(json.dumps({
                        "safetensors": str(directory), "config": tunix_cfg,
                        "batch": str(Path(tmp) / "batch.npz"), "repeats": args.repeats,
                        "warmups": args.warmups}))
                else:
                    try:
                        runners.append(make_tunix(str(directory), tunix_cfg, batch))
                    except Exception as err:
                        log(f"tunix skipped: {err!r}")
                        row["skipped"]["tunix"] = f"setup failed: {err!r}"[:800]
            timings = time_runners(runners, args.repeats, args.warmups)
            for runner in runners:
                row["frameworks"][runner.name] = {"info": runner.info, **timings[runner.name]}
            del runners
            if tunix_spec is not None:
                log("tunix in a subprocess")
                proc = subprocess.run([args.tunix_python, __file__, "--tunix-worker",
                                       str(tunix_spec)], capture_output=True, text=True,
                                      check=False)
                sys.stderr.write(proc.stderr[-4000:])
                if proc.returncode == 0:
                    out = json.loads(proc.stdout.strip().splitlines()[-1])
                    row["frameworks"]["tunix"] = {"info": out["info"], **out["timings"]}
                else:
                    row["skipped"]["tunix"] = f"subprocess failed: {proc.stderr[-800:]}"
            row["_flops"] = flops
            report["results"].append(row)
            del model, lm
    log("matmul peak (end)")
    peaks.append(matmul_peak(args.matmul_size, args.matmul_repeats))
    peak = max(p["best_flops_per_s"] for p in peaks)
    report["matmul_peak"] = {"peak_flops_per_s": round(peak / 1e9, 2),
                             "unit": "GFLOP/s",
                             "runs": [{**p, "best_flops_per_s": round(p["best_flops_per_s"] / 1e9,
                                                                      2),
                                       "median_flops_per_s": round(
                                           p["median_flops_per_s"] / 1e9, 2)} for p in peaks]}
    summary = []
    for row in report["results"]:
        flops = row.pop("_flops")
        for fw_name, stats in list(row["frameworks"].items()):
            info = stats.pop("info")
            row["frameworks"][fw_name] = {"info": info, **summarize(stats, row["tokens"], flops,
                                                                    peak)}
        rates = {n: s["tokens_per_s"] for n, s in row["frameworks"].items()
                 if "tokens_per_s" in s}
        if "ours" in rates and "tunix" in rates:
            row["ratios"] = {"ours_over_tunix": round(rates["ours"] / rates["tunix"], 3)}
        parts = [f"{n} {s['tokens_per_s']:.0f} tok/s, {s['model_flops_per_s']:.1f} GFLOP/s, "
                 f"MFU {100 * s['mfu']:.1f}% (policy-only {100 * s['mfu_policy_only']:.1f}%)"
                 for n, s in row["frameworks"].items() if "tokens_per_s" in s]
        ratio = f"; ours/tunix {row['ratios']['ours_over_tunix']:.2f}" if "ratios" in row else ""
        summary.append(f"{row['model']} {row['rows']}x{row['seq_len']}: " + "; ".join(parts)
                       + ratio + f" (peak {peak / 1e9:.1f} GFLOP/s)")
    report["total_s"] = round(time.perf_counter() - start_all, 1)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = summary
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
