"""Decode throughput of SmolLM2-135M-Instruct: our sampler vs transformers vs Tunix.

Run (from the repository root, in the project's venv):

    python benchmarks/decode.py                                   # B=1,8,32, 64 new tokens
    python benchmarks/decode.py --batch-sizes 1 --repeats 1       # quick check while developing
    python benchmarks/decode.py --frameworks ours,transformers --batch-sizes 8 --repeats 5

What is measured, per batch size B, in one process, on the same fp32 weights and the same
greedy task: B chat prompts (rendered with the model's own template, of different lengths, so
the batch is left-padded) each continued by exactly N = `--new-tokens` new tokens. Stop tokens
are switched off in every framework (a stop id that cannot occur, or none at all), so every
row produces N tokens and throughput counts the same work everywhere:

- `ours`: the rollout sampler, `orchestra_jax.rollout.sampler.Sampler(..., stop_token_ids=())
  .sample(prompt_ids, SamplingParams(max_new_tokens=N, temperature=0))` (prefill and the whole
  decode loop in one compiled program; its cache is its prompt-length bucket + its new-token
  bucket). Skipped, with the reason in `skipped`, when that module is
  missing or its constructor does not take these arguments.
- `ours_simple`: `orchestra_jax.models.generation.generate_tokens`, the plain reference loop
  (one jitted prefill, then one jitted one-token step per new token, a host sync per step).
  Kept beside `ours` to show what the sampler gains.
- `transformers`: `model.generate(ids, attention_mask, do_sample=False, max_new_tokens=N,
  eos_token_id=-1)` on the transformers model loaded from the same GGUF (dequantized to fp32
  by transformers' own loader), torch threads = the usable cores, under `inference_mode`.
  (`min_new_tokens=N` would also force N tokens, but by masking EOS out of the argmax, which
  changes the tokens that follow; the impossible EOS id keeps the plain greedy argmax.)
- `tunix`: google-tunix's Llama3 NNX model, loaded by Tunix's safetensors loader from our model
  written with `save_pretrained` (HF-layout safetensors), driven by its public
  `tunix.generate.sampler.Sampler.__call__` (greedy, `max_prompt_length` = our padded prompt
  length, `eos_tokens=[-1]`). Its KV cache has the length ours_simple allocates (padded prompt +
  N, rounded up to 64). Tunix's sampler takes strings, so it is given a tokenizer whose
  `encode` returns the exact prompt ids the other frameworks get (no BOS added) and whose pad
  id is a special token absent from the prompts and outputs: Tunix masks every cache slot
  holding the pad id, and SmolLM2's own pad id is `<|im_end|>`, which greedy decoding emits.
  Tunix 0.1.7's Llama3 attention ignores `config.rope_theta` (it always uses 1e6); SmolLM2 uses
  1e5, so this script binds the model's theta into Tunix's `apply_rope` (see
  `tunix_rope_patch` in the output) -- without that its outputs are a different model's.

Timings: `total` is one whole call, prompt ids in and N token ids per row back on the host
(prefill + decode; tokens_per_s = B*N / median total seconds). `prefill` is measured
separately by the cheapest faithful route: the same call with N=1 for ours / ours_simple /
transformers, and Tunix's own jitted prefill function (`_compiled_prefill_fn`, what
`Sampler.__call__` runs first) for tunix. `decode_tokens_per_s` = B*(N-1) / (median total -
median prefill): the rate of the one-token steps alone (the first new token comes out of the
prefill). Tunix runs one more one-token step than the others (N after its prefill, the last
token falling outside its buffer), so its rate is slightly understated. Every framework gets
one untimed warm-up call per shape (`first_call_s`, which for the JAX ones includes compiling;
`compile_s` is the sampler's own compile clock for ours, first_call_s - median total for
ours_simple and tunix, and absent for eager torch). Repeats are
interleaved (ours, ours_simple, transformers, tunix, ours, ...) so load from other processes
hits all alike; times are the MEDIAN and the MINIMUM over `--repeats`.

Agreement: the new tokens of the first rows are compared with transformers' (fp32 greedy on the
same weights should match for most of the N tokens; near-ties may flip one token and the rest
of the row then differs): `agreement` gives, per framework and row, the identical-prefix
length and the number of positions with the same token. Printed, never asserted.
`first_row_text` shows the first row decoded, for the reference and for any framework whose
row differs from it.

Output: ONE JSON object on stdout (logs go to stderr). `summary` has one line per batch size.
`results` has one row per batch size with, per framework, `tokens_per_s`, `median_s`, `min_s`,
`prefill_median_s`, `prefill_min_s`, `decode_tokens_per_s`, `first_call_s`, `compile_s`; and
`ratios` (`ours_over_transformers`, `ours_over_tunix`, ... on tokens_per_s; > 1: ours is
faster). `machine` holds the CPU, core count, versions and the load average at start and end:
a load above the core count means the numbers are noisy (compare the `*_min_s` then).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import forward as fwd  # the house benchmark helpers: machine info, timing

FRAMEWORKS = ("ours", "ours_simple", "transformers", "tunix")
#: Chat prompts of different lengths; row i of a batch gets PROMPTS[i % len(PROMPTS)].
PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three uses of a paperclip.",
    "What is 17 times 23? Show your steps.",
    "Give me a short recipe for pancakes.",
    "Who wrote 'Pride and Prejudice', and when was it published?",
    "Translate 'good morning, how are you?' into Spanish and German.",
)
CACHE_BUCKET = 64  # ours_simple rounds its cache length up to this; Tunix gets the same length
AGREEMENT_ROWS = 2


def log(message: str) -> None:
    print(f"[decode] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,8,32", help="(default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="N new tokens per row")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per framework")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                        help=f"comma-separated, from {FRAMEWORKS} (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=fwd.usable_cores(),
                        help="torch threads (default: the usable cores, as XLA uses)")
    parser.add_argument("--skip-prefill", action="store_true",
                        help="do not time the prefill separately")
    args = parser.parse_args(argv)
    args.frameworks = [f.strip().lower() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(args.frameworks) - set(FRAMEWORKS))
    if unknown or not args.frameworks:
        parser.error(f"unknown frameworks {unknown}; known: {list(FRAMEWORKS)}")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.new_tokens < 2:
        parser.error("batch sizes must be positive and --new-tokens at least 2")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def prompt_ids(lm: Any, batch: int) -> list[list[int]]:
    tok = lm.tokenizer
    rendered = [tok.apply_chat_template([{"role": "user", "content": p}],
                                        add_generation_prompt=True) for p in PROMPTS]
    encoded = [list(tok.encode(r)) for r in rendered]
    return [encoded[i % len(encoded)] for i in range(batch)]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, length: int) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
    ids = np.full((len(prompts), length), pad_id, np.int64)
    mask = np.zeros((len(prompts), length), np.int64)
    for row, seq in enumerate(prompts):
        ids[row, length - len(seq):] = seq
        mask[row, length - len(seq):] = 1
    return ids, mask


# ---- the frameworks ------------------------------------------------------------------------
# Each runner maps (prompts, new_tokens) -> the new token ids of every row, on the host.

Runner = Callable[[list[list[int]], int], list[list[int]]]


class Framework:
    """One framework: its generate call, its prefill-only call, and what it needed to run."""

    def __init__(self, name: str, run: Runner, prefill: Runner | None, info: dict[str, Any],
                 stats: Callable[[], dict[str, Any]] | None = None):
        self.name, self.run, self.prefill, self.info = name, run, prefill, info
        self.stats = stats  # framework-reported numbers (compile counts), read at the end


def make_ours(lm: Any, pad_id: int) -> Framework:
    from orchestra_jax.rollout.requests import SamplingParams
    from orchestra_jax.rollout.sampler import Sampler  # the lead's sampler: may not exist yet

    # No stop ids: every row must produce exactly N tokens (stop tokens are counted work).
    sampler = Sampler(lm.model, lm.mesh, rules=lm.rules, pad_id=pad_id, stop_token_ids=())

    def run(prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
        return [list(o.token_ids) for o in sampler.sample(prompts, params)]

    info = {"api": "Sampler(lm.model, lm.mesh, rules=lm.rules, pad_id=pad_id, "
                   "stop_token_ids=()).sample(prompt_ids, SamplingParams(max_new_tokens=N, "
                   "temperature=0.0))",
    }

    def stats() -> dict[str, Any]:
        return {"programs_compiled": sampler.compile_count(),
                "compile_seconds": round(sampler.compile_seconds, 3)}

    return Framework("ours", run, run, info, stats)


def make_ours_simple(lm: Any, pad_id: int) -> Framework:
    from orchestra_jax.models.generation import generate_tokens
    from orchestra_jax.sharding import logical_rules

    def run(prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        with logical_rules(lm.rules or {}):
            return generate_tokens(lm.model, lm.mesh, prompts, new_tokens, stop_token_ids=(),
                                   pad_id=pad_id, temperature=0.0)

    info = {"api": "generate_tokens(model, mesh, prompt_ids, N, stop_token_ids=(), "
                   "temperature=0.0)"}
    return Framework("ours_simple", run, run, info)


def make_transformers(pad_id: int, threads: int) -> Framework:
    import torch
    import transformers

    path = fwd.smollm2_gguf_path()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - start

    # Forcing N tokens with `min_new_tokens` would mask EOS out of the argmax and change every
    # token after the first EOS the model wants; an EOS id that cannot occur (-1) keeps the
    # plain argmax, comparable with the other frameworks, and runs exactly `max_new_tokens`.
    # transformers warns about the negative id on every call: quiet its logger.
    transformers.logging.set_verbosity_error()

    def run(prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
        ids, mask = left_pad(prompts, pad_id, max(len(p) for p in prompts))
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                do_sample=False, max_new_tokens=new_tokens, eos_token_id=-1,
                pad_token_id=pad_id)
        return out[:, ids.shape[1]:].tolist()

    info = {"api": "AutoModelForCausalLM.from_pretrained(gguf dir, gguf_file=..., "
                   "dtype=float32).generate(ids, attention_mask, do_sample=False, "
                   "max_new_tokens=N, eos_token_id=-1, pad_token_id=pad)",
            "load_s": round(load_s, 2), "attn_implementation": model.config._attn_implementation,
            "torch_threads": torch.get_num_threads()}
    return Framework("transformers", run, run, info)


class _IdsTokenizer:
    """Tunix's sampler tokenizes strings itself; this one hands back the exact prompt ids.

    The benchmark passes each prompt as its ids joined by spaces and `encode` parses them back,
    so Tunix sees the same tokens as the other frameworks; `bos_id` 0 keeps Tunix from
    prepending a BOS of its own.
    """

    def __init__(self, pad_id: int, decode: Callable[[list[int]], str]):
        self._pad, self._decode = pad_id, decode

    def encode(self, text: str, **_: Any) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids: list[int], **_: Any) -> str:
        return self._decode(ids)

    def bos_id(self) -> int:
        return 0

    def eos_id(self) -> int:
        return -1

    def pad_id(self) -> int:
        return self._pad


def tunix_pad_id(lm: Any, prompts: Sequence[Sequence[int]]) -> int:
    """The lowest id past 0 that no prompt, stop or special id uses (SmolLM2: `<repo_name>`).

    Tunix masks every cache slot holding its pad id, prompt or generated; the benchmark checks
    the outputs for it afterwards (`tunix_pad_id_in_outputs`).
    """
    used = {t for p in prompts for t in p} | set(lm.tokenizer.stop_token_ids)
    used |= {lm.config.bos_token_id, lm.config.eos_token_id, lm.config.pad_token_id, 0}
    return next(t for t in range(1, lm.config.vocab_size) if t not in used)


def patch_tunix_rope(model_lib: Any, rope_theta: float) -> bool:
    """Bind the model's RoPE theta into Tunix's Llama3 `apply_rope` when Tunix does not pass it.

    Tunix 0.1.7's `Attention.block` calls `apply_rope(x, pos, head_dim=...)`, so the default
    theta (1e6) applies whatever the config says. Returns whether the patch was needed.
    """
    source = inspect.getsource(model_lib.Attention.block)
    if "rope_theta" in source:
        return False
    original = getattr(model_lib.apply_rope, "func", model_lib.apply_rope)
    model_lib.apply_rope = functools.partial(original, rope_theta=rope_theta)
    return True


def make_tunix(lm: Any, workdir: Path, pad_id: int, max_prompt_len: int,
               new_tokens: int) -> Framework:
    import jax
    import jax.numpy as jnp
    from tunix.generate import sampler as tunix_sampler
    from tunix.models.llama3 import model as llama_model
    from tunix.models.llama3 import params as llama_params

    cfg = lm.config
    info: dict[str, Any] = {}
    directory = workdir / "smollm2-safetensors"
    if not directory.is_dir():
        lm.save_pretrained(directory)
    info["tunix_rope_patch"] = patch_tunix_rope(llama_model, cfg.rope_theta)
    config = llama_model.ModelConfig(
        num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.hidden_size,
        hidden_dim=cfg.intermediate_size, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
        num_kv_heads=cfg.num_kv_heads, rope_theta=cfg.rope_theta, norm_eps=cfg.rms_norm_eps,
        weight_tying=cfg.tie_word_embeddings,
        shd_config=llama_model.ShardingConfig.get_default_sharding(is_sampling=True))
    start = time.perf_counter()
    model = llama_params.create_model_from_safe_tensors(str(directory), config,
                                                        dtype=jnp.float32)
    info["load_s"] = round(time.perf_counter() - start, 2)
    cache_size = round_up(max_prompt_len + new_tokens, CACHE_BUCKET)
    cache_config = tunix_sampler.CacheConfig(cache_size=cache_size, num_layers=cfg.num_layers,
                                             num_kv_heads=cfg.num_kv_heads,
                                             head_dim=cfg.head_dim)
    sampler = tunix_sampler.Sampler(model, _IdsTokenizer(pad_id, lm.tokenizer.decode),
                                    cache_config)

    def run(prompts: list[list[int]], n: int) -> list[list[int]]:
        out = sampler([" ".join(map(str, p)) for p in prompts], max_generation_steps=n,
                      max_prompt_length=max_prompt_len, eos_tokens=[-1], temperature=0.0,
                      echo=False)
        return [np.asarray(t).tolist() for t in out.tokens]

    def prefill(prompts: list[list[int]], n: int) -> list[list[int]]:
        # What Sampler.__call__ runs before its decode loop, with its own jitted prefill.
        ids = np.array([[pad_id] * (max_prompt_len - len(p)) + list(p) for p in prompts],
                       np.int32)
        state = sampler.init_sample_state(
            jnp.asarray(ids), total_sampling_steps=max_prompt_len + new_tokens,
            include_logits=False, forbidden_token_ids=None, temperature=0.0, top_p=None,
            top_k=None, seed=jax.random.PRNGKey(0), beam_size=None)
        state = sampler._compiled_prefill_fn(sampler._flattened_transformer_state, state, None,
                                             echo=False)
        first = np.asarray(jax.device_get(state.token_buffer[:, max_prompt_len]))
        return [[int(t)] for t in first]

    info.update({
        "api": "tunix.models.llama3.params.create_model_from_safe_tensors(dir, ModelConfig(...),"
               " dtype=float32); tunix.generate.sampler.Sampler(model, tokenizer, CacheConfig("
               "cache_size, ...))(prompts, max_generation_steps=N, max_prompt_length=P, "
               "eos_tokens=[-1], temperature=0.0)",
        "cache_size": cache_size, "pad_id": pad_id, "max_prompt_length": max_prompt_len,
        "note": "Tunix runs N one-token steps after the prefill (the last one's token falls "
                "outside its buffer), one more than the others' N-1",
    })
    return Framework("tunix", run, prefill, info)


# ---- measuring -----------------------------------------------------------------------------


def timed_call(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def agreement(reference: list[list[int]], other: list[list[int]]) -> list[dict[str, int]]:
    rows = []
    for ref, out in zip(reference[:AGREEMENT_ROWS], other[:AGREEMENT_ROWS], strict=False):
        prefix = 0
        while prefix < min(len(ref), len(out)) and ref[prefix] == out[prefix]:
            prefix += 1
        same = sum(a == b for a, b in zip(ref, out, strict=False))
        rows.append({"identical_prefix": prefix, "same_positions": same, "of": len(ref)})
    return rows


def bench_batch(frameworks: list[Framework], prompts: list[list[int]], args: argparse.Namespace,
                pad_check: int | None, decode: Callable[[list[int]], str]) -> dict[str, Any]:
    batch, n = len(prompts), args.new_tokens
    row: dict[str, Any] = {"batch_size": batch, "new_tokens": n,
                           "prompt_lengths": sorted({len(p) for p in prompts}),
                           "frameworks": {}, "errors": {}}
    live: list[Framework] = []
    outputs: dict[str, list[list[int]]] = {}
    for fw in frameworks:  # warm-up (compiles), and the outputs used for the agreement check
        try:
            compiled_before = fw.stats()["compile_seconds"] if fw.stats else None
            first_s, out = timed_call(lambda fw=fw: fw.run(prompts, n))
            compiled = fw.stats()["compile_seconds"] - compiled_before if fw.stats else None
            lengths = sorted({len(o) for o in out})
            if len(out) != batch or lengths != [n]:
                raise RuntimeError(f"expected {batch} rows of {n} tokens, got {len(out)} rows "
                                   f"of lengths {lengths}")
            prefill_first_s = None
            if fw.prefill is not None and not args.skip_prefill:
                prefill_first_s, _ = timed_call(lambda fw=fw: fw.prefill(prompts, 1))
        except Exception as err:  # a framework that fails is reported, the others still run
            log(f"B={batch}: {fw.name} failed: {err!r}")
            row["errors"][fw.name] = repr(err)[:500]
            continue
        live.append(fw)
        outputs[fw.name] = out
        row["frameworks"][fw.name] = {"first_call_s": round(first_s, 3)}
        if compiled is not None:  # the framework's own count beats first_call_s - median
            row["frameworks"][fw.name]["compile_s"] = round(compiled, 2)
        if prefill_first_s is not None:
            row["frameworks"][fw.name]["prefill_first_call_s"] = round(prefill_first_s, 3)
        log(f"B={batch}: {fw.name} warm-up {first_s:.2f}s")
    if pad_check is not None and "tunix" in outputs:
        hits = sum(t == pad_check for o in outputs.values() for t in o)
        row["tunix_pad_id_in_outputs"] = hits  # > 0 would mean Tunix masked a real token
    totals: dict[str, list[float]] = {fw.name: [] for fw in live}
    prefills: dict[str, list[float]] = {fw.name: [] for fw in live}
    for _ in range(args.repeats):  # interleaved across frameworks
        for fw in live:
            totals[fw.name].append(timed_call(lambda fw=fw: fw.run(prompts, n))[0])
            if fw.prefill is not None and not args.skip_prefill:
                prefills[fw.name].append(timed_call(lambda fw=fw: fw.prefill(prompts, 1))[0])
    for fw in live:
        stats = row["frameworks"][fw.name]
        median = statistics.median(totals[fw.name])
        stats.update({"tokens_per_s": round(batch * n / median, 1),
                      "median_s": round(median, 4), "min_s": round(min(totals[fw.name]), 4)})
        if fw.name != "transformers" and "compile_s" not in stats:  # eager torch compiles nothing
            stats["compile_s"] = round(max(stats["first_call_s"] - median, 0.0), 2)
        if prefills[fw.name]:
            pre = statistics.median(prefills[fw.name])
            stats.update({"prefill_median_s": round(pre, 4),
                          "prefill_min_s": round(min(prefills[fw.name]), 4)})
            if median > pre:
                stats["decode_tokens_per_s"] = round(batch * (n - 1) / (median - pre), 1)
        log(f"B={batch}: {fw.name} {stats['tokens_per_s']:.1f} tok/s (median {median:.3f}s, "
            f"min {stats['min_s']:.3f}s)")
    rates = {name: s["tokens_per_s"] for name, s in row["frameworks"].items()
             if "tokens_per_s" in s}
    row["ratios"] = {f"{a}_over_{b}": round(rates[a] / rates[b], 3)
                     for a in ("ours", "ours_simple", "tunix")
                     for b in ("transformers", "tunix", "ours_simple")
                     if a != b and a in rates and b in rates}
    reference = "transformers" if "transformers" in outputs else next(iter(outputs), None)
    if reference is not None:
        row["agreement_reference"] = reference
        row["agreement"] = {name: agreement(outputs[reference], out)
                            for name, out in outputs.items() if name != reference}
        # The first row as text, for the reference and for any framework whose row differs.
        row["first_row_text"] = {name: decode(out[0]) for name, out in outputs.items()
                                 if name == reference or out[0] != outputs[reference][0]}
    return row


def summary_line(row: dict[str, Any]) -> str:
    parts = [f"{name} {s['tokens_per_s']:.0f}" for name, s in row["frameworks"].items()
             if "tokens_per_s" in s]
    ratios = [f"{k} {v:.2f}" for k, v in row["ratios"].items()
              if k.startswith("ours_over") or k.startswith("ours_simple_over_transformers")]
    return (f"B={row['batch_size']} N={row['new_tokens']}: tok/s " + ", ".join(parts)
            + ("; " + ", ".join(ratios) if ratios else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from orchestra_jax.models import load_pretrained

    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "benchmark": "greedy decode throughput of SmolLM2-135M-Instruct (fp32): ours vs "
                     "transformers vs Tunix",
        "measured": (
            "tokens_per_s = B*N / median seconds of one whole generate call (prompt ids in, "
            "N new ids per row on the host; prefill + decode), every row forced to produce "
            "exactly N tokens (stop tokens disabled), same chat prompts, same fp32 weights, "
            "greedy. prefill_*_s: the prefill alone; decode_tokens_per_s = B*(N-1) / (total - "
            "prefill). Repeats interleaved across frameworks; one warm-up call each "
            "(first_call_s, compile included). ratios > 1: the first-named is faster."),
        "settings": {"batch_sizes": args.batch_sizes, "new_tokens": args.new_tokens,
                     "repeats": args.repeats, "frameworks": args.frameworks,
                     "threads": args.threads, "dtype": "float32", "greedy": True},
        "machine": fwd.machine_info(args.threads),
        "frameworks": {},
        "skipped": {},
        "results": [],
    }
    start = time.perf_counter()
    lm = load_pretrained("smollm2-135m-instruct")
    report["model"] = {"name": "smollm2-135m-instruct", "source": str(fwd.smollm2_gguf_path()),
                       "jax_load_s": round(time.perf_counter() - start, 2)}
    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    all_prompts = prompt_ids(lm, max(len(PROMPTS), max(args.batch_sizes)))
    # Same padded prompt length as ours_simple uses (rounded up to 8), so the caches match.
    max_prompt_len = round_up(max(len(p) for p in all_prompts), 8)
    tunix_pad = tunix_pad_id(lm, all_prompts)

    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        frameworks: list[Framework] = []
        for name in args.frameworks:
            log(f"setting up {name}")
            try:
                if name == "ours":
                    fw = make_ours(lm, pad_id)
                elif name == "ours_simple":
                    fw = make_ours_simple(lm, pad_id)
                elif name == "transformers":
                    fw = make_transformers(pad_id, args.threads)
                else:
                    fw = make_tunix(lm, Path(tmp), tunix_pad, max_prompt_len, args.new_tokens)
            except ImportError as err:
                log(f"{name} skipped: {err!r}")
                report["skipped"][name] = f"import failed: {err!r}"
                continue
            except Exception as err:
                log(f"{name} skipped: setup failed: {err!r}")
                report["skipped"][name] = f"setup failed: {err!r}"[:500]
                continue
            frameworks.append(fw)
            report["frameworks"][name] = fw.info
        for batch in args.batch_sizes:
            prompts = all_prompts[:batch]
            row = bench_batch(frameworks, prompts, args,
                              tunix_pad if "tunix" in args.frameworks else None, tok.decode)
            report["results"].append(row)
        for fw in frameworks:
            if fw.stats is not None:
                report["frameworks"][fw.name].update(fw.stats())
    report["total_s"] = round(time.perf_counter() - start, 1)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = [summary_line(r) for r in report["results"]]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
