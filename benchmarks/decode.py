"""Decode throughput of SmolLM2-135M-Instruct: lm.generate vs the rollout Sampler vs transformers.

Run (from the repository root, in the project's venv):

    python benchmarks/decode.py                                    # B=8, natural + fixed, 5 repeats
    python benchmarks/decode.py --repeats 1 --stopping natural     # quick check while developing
    python benchmarks/decode.py --frameworks generate,sampler,transformers,tunix --batch-sizes 1,8

What is measured, per stopping mode and batch size B, in one process, on the same fp32 weights
(the packaged GGUF, `load_pretrained("smollm2-135m-instruct")`; transformers dequantizes the
same file with its own GGUF loader -- no downloads) and the same greedy task: B chat prompts
(rendered with the model's own template, of different lengths, so the batch is left-padded).

Stopping modes:
- `natural`: every row stops at the tokenizer's stop token (`<|im_end|>`) or after
  `--natural-max-new-tokens`; a call lasts until its longest row is done. The work counted is
  the tokens each framework actually produced (each row up to and including its stop token);
  `rows_stopped` says how many rows stopped by themselves.
- `fixed`: stop tokens switched off in every framework (no stop ids, or one that cannot occur),
  so every row produces exactly N = `--new-tokens` tokens and every framework does the same
  work.

Frameworks:
- `generate`: the public API, `lm.generate(prompt_strings, max_new_tokens=N, temperature=0.0)`
  (`stop_token_ids=()` in the fixed mode). Its timed call includes tokenizing the prompts and
  decoding the outputs, as a user pays them. Its token counts come from an untimed
  `generate_tokens` call on the same ids (the same compiled program, so the same tokens; the
  benchmark checks that they decode to the texts `generate` returned).
- `sampler`: the rollout sampler, `orchestra_jax.rollout.sampler.Sampler(lm.model, lm.mesh,
  rules=lm.rules, pad_id=pad, stop_token_ids=stops).sample(prompt_ids,
  SamplingParams(max_new_tokens=N, temperature=0.0))` on token ids.
- `transformers`: `model.generate(ids, attention_mask, do_sample=False, max_new_tokens=N,
  eos_token_id=<stop id, or -1 in the fixed mode>, pad_token_id=pad)` on the transformers
  model loaded from the same GGUF (fp32), torch threads = the usable cores, under
  `inference_mode`. (`min_new_tokens=N` would also force N tokens, but by masking EOS out of
  the argmax, which changes the tokens that follow; the impossible EOS id keeps the plain
  greedy argmax.)
- `tunix` (fixed mode only, when google-tunix is installed): Tunix's Llama3 NNX model loaded
  by Tunix's safetensors loader from our model written with `save_pretrained`, driven by its
  public `tunix.generate.sampler.Sampler.__call__` (greedy, `max_prompt_length` = the longest
  prompt rounded up to 8, `eos_tokens=[-1]`, cache = that + N rounded up to 64). Its tokenizer
  returns the exact prompt ids the others get, and its pad id is a special token absent from
  prompts and outputs (Tunix masks every cache slot holding the pad id; SmolLM2's own pad id
  is `<|im_end|>`). Tunix 0.1.7's Llama3 attention ignores `config.rope_theta`; this script
  binds the model's theta into Tunix's `apply_rope` (`tunix_rope_patch` in the output).

Timings: one whole call, prompts in and new tokens back on the host (prefill + decode);
`tokens_per_s` = tokens produced / MEDIAN seconds of `--repeats` timed calls (`min_s` too).
Every framework gets one untimed warm-up call per shape first (`first_call_s`; for the JAX ones
it includes compiling, `compile_s` being the engine's own compile clock), so compile time is
excluded. Repeats are interleaved (generate, sampler, transformers, generate, ...) so load from
other processes hits all alike. In the fixed mode `prefill_median_s` times the same call with
N=1 and `decode_tokens_per_s` = B*(N-1) / (median total - median prefill).

Roofline: one decode step of a B-row batch must read every weight once, so no framework can
beat `roofline_tokens_per_s` = B x read bandwidth / weight bytes (weights counted once: the tied
embedding is also the LM head). The read bandwidth is measured in the same run, before and
after the frameworks: the median of `--bandwidth-repeats` numpy sums over a
`--bandwidth-mib` float32 array (far past the caches), on one thread and with the array's
slices summed on `--threads` threads at once (numpy releases the GIL in a sum); the roofline
uses the faster of the two medians measured before the frameworks run.
`roofline_fraction` = tokens_per_s / roofline_tokens_per_s. (Prefill, attention over the
cache and the host work are all extra, so real numbers sit well below 1; in the natural mode
rows drop out as they finish, which lowers the fraction too.)

Agreement: the new tokens of the first rows are compared with transformers' (fp32 greedy on the
same weights should match for most tokens; near-ties may flip one token and the rest of the row
then differs): `agreement` gives, per framework and row, the identical-prefix length and the
number of positions with the same token. Printed, never asserted.

Output: ONE JSON object on stdout (logs go to stderr). `summary` has one line per mode and
batch size. `results` has one row per mode and batch size with, per framework,
`tokens_per_s`, `tokens`, `median_s`, `min_s`, `roofline_fraction`, `first_call_s`,
`compile_s`; and `ratios` (`generate_over_sampler`, `generate_over_transformers`,
`sampler_over_transformers`, ... on tokens_per_s; > 1: the first-named is faster).
`machine` holds the CPU model, core count, versions, the measured read bandwidth, and the
load average at start and end: a load above the core count means the numbers are noisy
(compare the `min_s` then).
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

FRAMEWORKS = ("generate", "sampler", "transformers", "tunix")
DEFAULT_FRAMEWORKS = ("generate", "sampler", "transformers")
MODES = ("natural", "fixed")
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
CACHE_BUCKET = 64  # Tunix's cache length is rounded up to this
AGREEMENT_ROWS = 2


def log(message: str) -> None:
    print(f"[decode] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="8", help="(default: %(default)s)")
    parser.add_argument("--stopping", default=",".join(MODES),
                        help=f"comma-separated, from {MODES} (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64,
                        help="N new tokens per row in the fixed mode (default: %(default)s)")
    parser.add_argument("--natural-max-new-tokens", type=int, default=256,
                        help="the cap of a row in the natural mode (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per framework")
    parser.add_argument("--frameworks", default=",".join(DEFAULT_FRAMEWORKS),
                        help=f"comma-separated, from {FRAMEWORKS} (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=fwd.usable_cores(),
                        help="torch threads (default: the usable cores, as XLA uses)")
    parser.add_argument("--skip-prefill", action="store_true",
                        help="do not time the prefill separately (fixed mode)")
    parser.add_argument("--bandwidth-mib", type=int, default=512,
                        help="size of the array summed to measure read bandwidth")
    parser.add_argument("--bandwidth-repeats", type=int, default=7)
    args = parser.parse_args(argv)
    args.frameworks = [f.strip().lower() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(args.frameworks) - set(FRAMEWORKS))
    if unknown or not args.frameworks:
        parser.error(f"unknown frameworks {unknown}; known: {list(FRAMEWORKS)}")
    args.stopping = [m.strip().lower() for m in args.stopping.split(",") if m.strip()]
    if not args.stopping or sorted(set(args.stopping) - set(MODES)):
        parser.error(f"--stopping takes modes from {list(MODES)}, got {args.stopping}")
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.new_tokens < 2:
        parser.error("batch sizes must be positive and --new-tokens at least 2")
    if args.repeats < 1 or args.natural_max_new_tokens < 1:
        parser.error("--repeats and --natural-max-new-tokens must be >= 1")
    return args


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def rendered_prompts(lm: Any, batch: int) -> list[str]:
    tok = lm.tokenizer
    rendered = [tok.apply_chat_template([{"role": "user", "content": p}],
                                        add_generation_prompt=True) for p in PROMPTS]
    return [rendered[i % len(rendered)] for i in range(batch)]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, length: int) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
    ids = np.full((len(prompts), length), pad_id, np.int64)
    mask = np.zeros((len(prompts), length), np.int64)
    for row, seq in enumerate(prompts):
        ids[row, length - len(seq):] = seq
        mask[row, length - len(seq):] = 1
    return ids, mask


def cut_at_stop(row: Sequence[int], stops: Sequence[int]) -> list[int]:
    """A row up to and including its first stop token (what a stopping row produced)."""
    for i, token in enumerate(row):
        if token in stops:
            return list(row[: i + 1])
    return list(row)


# ---- the roofline --------------------------------------------------------------------------


def read_bandwidth(mib: int, repeats: int, threads: int) -> dict[str, Any]:
    """Bytes per second numpy sums stream from memory, on one thread and on `threads` threads
    (numpy releases the GIL inside a sum, so equal slices summed in parallel read at once):
    the median (and max) of `repeats` timings each."""
    from concurrent.futures import ThreadPoolExecutor

    array = np.ones(mib * 2**20 // 4, np.float32)
    array.sum()  # touch every page before timing
    slices = np.array_split(array, threads)

    def rates(run: Callable[[], Any]) -> list[float]:
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            out.append(array.nbytes / (time.perf_counter() - start))
        return out

    one = rates(array.sum)
    with ThreadPoolExecutor(threads) as pool:
        many = rates(lambda: list(pool.map(np.sum, slices)))
    result = {"one_thread_median_gb_s": round(statistics.median(one) / 1e9, 2),
              "one_thread_max_gb_s": round(max(one) / 1e9, 2),
              f"{threads}_threads_median_gb_s": round(statistics.median(many) / 1e9, 2),
              f"{threads}_threads_max_gb_s": round(max(many) / 1e9, 2),
              "array_mib": mib, "repeats": repeats,
              "how": "numpy float32 sum over the array; also its slices summed in parallel"}
    # The roofline takes the faster of the two medians: the machine can read at least that.
    result["median_gb_s"] = max(result["one_thread_median_gb_s"],
                                result[f"{threads}_threads_median_gb_s"])
    return result


def weight_bytes(lm: Any) -> int:
    """Bytes of parameters one decode step reads (each array once: a tied LM head is the
    embedding)."""
    import jax
    from flax import nnx

    return int(sum(x.nbytes for x in jax.tree.leaves(nnx.state(lm.model, nnx.Param))))


# ---- the frameworks ------------------------------------------------------------------------
# Each runner maps (prompt ids, new_tokens, stop ids) -> what its public call returns; `rows`
# turns that into the new token ids of every row (cut after the first stop token), on the host.

Runner = Callable[[list[list[int]], int, tuple[int, ...]], Any]


class Framework:
    """One framework: its generate call, its prefill-only call, and what it needed to run."""

    def __init__(self, name: str, run: Runner, prefill: Runner | None, info: dict[str, Any],
                 stats: Callable[[], dict[str, Any]] | None = None,
                 rows: Callable[[Any, list[list[int]], int, tuple[int, ...]],
                                list[list[int]]] | None = None,
                 modes: tuple[str, ...] = MODES):
        self.name, self.run, self.prefill, self.info = name, run, prefill, info
        self.stats = stats  # framework-reported numbers (compile counts), read at the end
        self.rows = rows or (lambda out, prompts, n, stops: [cut_at_stop(r, stops) for r in out])
        self.modes = modes


def make_generate(lm: Any, pad_id: int, texts: dict[tuple[int, ...], str]) -> Framework:
    """`lm.generate` on prompt strings; `texts` maps each prompt's ids back to its string."""
    from orchestra_jax.models import generate_tokens

    def run(prompts: list[list[int]], new_tokens: int, stops: tuple[int, ...]) -> list[str]:
        return lm.generate([texts[tuple(p)] for p in prompts], max_new_tokens=new_tokens,
                           temperature=0.0, stop_token_ids=stops)

    def rows(out: list[str], prompts: list[list[int]], new_tokens: int,
             stops: tuple[int, ...]) -> list[list[int]]:
        # The same compiled program on the same ids: the tokens behind the texts, untimed.
        ids = generate_tokens(lm.model, lm.mesh, prompts, new_tokens, stop_token_ids=stops,
                              pad_id=pad_id, rules=lm.rules or {})
        decoded = [lm.tokenizer.decode([t for t in r if t not in stops]) for r in ids]
        if decoded != out:
            raise RuntimeError("generate_tokens' rows do not decode to lm.generate's texts")
        return ids

    info = {"api": "lm.generate(prompt_strings, max_new_tokens=N, temperature=0.0) "
                   "(stop_token_ids=() in the fixed mode)"}
    return Framework("generate", run, run, info, rows=rows)


def make_sampler(lm: Any, pad_id: int) -> Framework:
    from orchestra_jax.rollout.requests import SamplingParams
    from orchestra_jax.rollout.sampler import Sampler

    samplers: dict[tuple[int, ...], Any] = {}  # one per stop set: natural / fixed

    def sampler_for(stops: tuple[int, ...]) -> Any:
        if stops not in samplers:
            samplers[stops] = Sampler(lm.model, lm.mesh, rules=lm.rules, pad_id=pad_id,
                                      stop_token_ids=stops)
        return samplers[stops]

    def run(prompts: list[list[int]], new_tokens: int, stops: tuple[int, ...]) -> list[list[int]]:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
        return [list(o.token_ids) for o in sampler_for(stops).sample(prompts, params)]

    info = {"api": "Sampler(lm.model, lm.mesh, rules=lm.rules, pad_id=pad, stop_token_ids="
                   "stops).sample(prompt_ids, SamplingParams(max_new_tokens=N, "
                   "temperature=0.0))"}

    def stats() -> dict[str, Any]:
        return {"programs_compiled": sum(s.compile_count() for s in samplers.values()),
                "compile_seconds": round(sum(s.compile_seconds for s in samplers.values()), 3)}

    return Framework("sampler", run, run, info, stats)


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

    def run(prompts: list[list[int]], new_tokens: int, stops: tuple[int, ...]) -> list[list[int]]:
        ids, mask = left_pad(prompts, pad_id, max(len(p) for p in prompts))
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                do_sample=False, max_new_tokens=new_tokens,
                eos_token_id=list(stops) if stops else -1, pad_token_id=pad_id)
        return out[:, ids.shape[1]:].tolist()

    info = {"api": "AutoModelForCausalLM.from_pretrained(gguf dir, gguf_file=..., "
                   "dtype=float32).generate(ids, attention_mask, do_sample=False, "
                   "max_new_tokens=N, eos_token_id=stops (-1 in the fixed mode), "
                   "pad_token_id=pad)",
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

    def run(prompts: list[list[int]], n: int, stops: tuple[int, ...] = ()) -> list[list[int]]:
        out = sampler([" ".join(map(str, p)) for p in prompts], max_generation_steps=n,
                      max_prompt_length=max_prompt_len, eos_tokens=[-1], temperature=0.0,
                      echo=False)
        return [np.asarray(t).tolist() for t in out.tokens]

    def prefill(prompts: list[list[int]], n: int, stops: tuple[int, ...] = ()) -> list[list[int]]:
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
    return Framework("tunix", run, prefill, info, modes=("fixed",))


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


def bench_case(frameworks: list[Framework], prompts: list[list[int]], mode: str,
               args: argparse.Namespace, stops: tuple[int, ...], roofline_tps: float,
               pad_check: int | None, decode: Callable[[list[int]], str]) -> dict[str, Any]:
    batch = len(prompts)
    fixed = mode == "fixed"
    n = args.new_tokens if fixed else args.natural_max_new_tokens
    stops = () if fixed else stops
    time_prefill = fixed and not args.skip_prefill
    row: dict[str, Any] = {"stopping": mode, "batch_size": batch, "max_new_tokens": n,
                           "stop_token_ids": list(stops),
                           "prompt_lengths": sorted({len(p) for p in prompts}),
                           "roofline_tokens_per_s": round(roofline_tps, 1),
                           "frameworks": {}, "errors": {}}
    live: list[Framework] = []
    outputs: dict[str, list[list[int]]] = {}
    for fw in frameworks:  # warm-up (compiles), and the outputs used for counting and agreement
        if mode not in fw.modes:
            row["errors"][fw.name] = f"runs in the {', '.join(fw.modes)} mode only"
            continue
        try:
            compiled_before = fw.stats()["compile_seconds"] if fw.stats else None
            first_s, out = timed_call(lambda fw=fw: fw.run(prompts, n, stops))
            compiled = fw.stats()["compile_seconds"] - compiled_before if fw.stats else None
            rows = fw.rows(out, prompts, n, stops)
            lengths = sorted({len(o) for o in rows})
            if len(rows) != batch or (fixed and lengths != [n]):
                raise RuntimeError(f"expected {batch} rows of {n} tokens, got {len(rows)} rows "
                                   f"of lengths {lengths}")
            prefill_first_s = None
            if fw.prefill is not None and time_prefill:
                prefill_first_s, _ = timed_call(lambda fw=fw: fw.prefill(prompts, 1, stops))
        except Exception as err:  # a framework that fails is reported, the others still run
            log(f"{mode} B={batch}: {fw.name} failed: {err!r}")
            row["errors"][fw.name] = repr(err)[:500]
            continue
        live.append(fw)
        outputs[fw.name] = rows
        stats = {"first_call_s": round(first_s, 3), "tokens": sum(map(len, rows)),
                 "row_lengths": [len(r) for r in rows]}
        if not fixed:
            stats["rows_stopped"] = sum(bool(r) and r[-1] in stops for r in rows)
        if compiled is not None:  # the framework's own count beats first_call_s - median
            stats["compile_s"] = round(compiled, 2)
        if prefill_first_s is not None:
            stats["prefill_first_call_s"] = round(prefill_first_s, 3)
        row["frameworks"][fw.name] = stats
        log(f"{mode} B={batch}: {fw.name} warm-up {first_s:.2f}s, {stats['tokens']} tokens")
    if pad_check is not None and "tunix" in outputs:
        hits = sum(t == pad_check for o in outputs.values() for t in o)
        row["tunix_pad_id_in_outputs"] = hits  # > 0 would mean Tunix masked a real token
    totals: dict[str, list[float]] = {fw.name: [] for fw in live}
    prefills: dict[str, list[float]] = {fw.name: [] for fw in live}
    for _ in range(args.repeats):  # interleaved across frameworks
        for fw in live:
            totals[fw.name].append(timed_call(lambda fw=fw: fw.run(prompts, n, stops))[0])
            if fw.prefill is not None and time_prefill:
                prefills[fw.name].append(
                    timed_call(lambda fw=fw: fw.prefill(prompts, 1, stops))[0])
    for fw in live:
        stats = row["frameworks"][fw.name]
        median = statistics.median(totals[fw.name])
        rate = stats["tokens"] / median
        stats.update({"tokens_per_s": round(rate, 1), "median_s": round(median, 4),
                      "min_s": round(min(totals[fw.name]), 4),
                      "roofline_fraction": round(rate / roofline_tps, 3)})
        if fw.name != "transformers" and "compile_s" not in stats:  # eager torch compiles nothing
            stats["compile_s"] = round(max(stats["first_call_s"] - median, 0.0), 2)
        if prefills[fw.name]:
            pre = statistics.median(prefills[fw.name])
            stats.update({"prefill_median_s": round(pre, 4),
                          "prefill_min_s": round(min(prefills[fw.name]), 4)})
            if median > pre:
                stats["decode_tokens_per_s"] = round(batch * (n - 1) / (median - pre), 1)
        log(f"{mode} B={batch}: {fw.name} {stats['tokens_per_s']:.1f} tok/s (median "
            f"{median:.3f}s, min {stats['min_s']:.3f}s)")
    rates = {name: s["tokens_per_s"] for name, s in row["frameworks"].items()
             if "tokens_per_s" in s}
    pairs = (("generate", "sampler"), ("generate", "transformers"), ("sampler", "transformers"),
             ("generate", "tunix"), ("sampler", "tunix"))
    row["ratios"] = {f"{a}_over_{b}": round(rates[a] / rates[b], 3)
                     for a, b in pairs if a in rates and b in rates}
    if not row["errors"]:
        del row["errors"]
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
    parts = [f"{name} {s['tokens_per_s']:.0f} ({s['roofline_fraction']:.0%} of roofline)"
             for name, s in row["frameworks"].items() if "tokens_per_s" in s]
    ratios = [f"{k} {v:.2f}" for k, v in row["ratios"].items()]
    return (f"{row['stopping']} B={row['batch_size']}: tok/s " + ", ".join(parts)
            + ("; " + ", ".join(ratios) if ratios else ""))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from orchestra_jax.models import load_pretrained

    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "benchmark": "greedy decode throughput of SmolLM2-135M-Instruct (fp32): lm.generate vs "
                     "the rollout Sampler vs transformers (vs Tunix)",
        "measured": (
            "tokens_per_s = tokens produced / median seconds of one whole call (prompts in, "
            "new ids or texts back on the host; prefill + decode), compile excluded (one "
            "untimed warm-up each). natural: rows stop at the tokenizer's stop token (counted) "
            "or the cap; fixed: stop tokens disabled, every row N tokens. Repeats interleaved "
            "across frameworks. roofline_fraction = tokens_per_s / (B x measured read "
            "bandwidth / weight bytes). ratios > 1: the first-named is faster."),
        "settings": {"batch_sizes": args.batch_sizes, "stopping": args.stopping,
                     "new_tokens_fixed": args.new_tokens,
                     "max_new_tokens_natural": args.natural_max_new_tokens,
                     "repeats": args.repeats, "frameworks": args.frameworks,
                     "threads": args.threads, "dtype": "float32", "greedy": True},
        "machine": fwd.machine_info(args.threads),
        "frameworks": {},
        "skipped": {},
        "results": [],
    }
    bandwidth_before = read_bandwidth(args.bandwidth_mib, args.bandwidth_repeats, args.threads)
    log(f"read bandwidth {bandwidth_before['median_gb_s']} GB/s")
    start = time.perf_counter()
    lm = load_pretrained("smollm2-135m-instruct")
    weights = weight_bytes(lm)
    report["model"] = {"name": "smollm2-135m-instruct", "source": str(fwd.smollm2_gguf_path()),
                       "jax_load_s": round(time.perf_counter() - start, 2),
                       "weight_bytes": weights}
    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    stops = tuple(tok.stop_token_ids)
    texts = rendered_prompts(lm, max(len(PROMPTS), max(args.batch_sizes)))
    all_prompts = [list(tok.encode(t)) for t in texts]
    by_ids = {tuple(ids): text for ids, text in zip(all_prompts, texts, strict=True)}
    max_prompt_len = round_up(max(len(p) for p in all_prompts), 8)
    tunix_pad = tunix_pad_id(lm, all_prompts)

    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        frameworks: list[Framework] = []
        for name in args.frameworks:
            log(f"setting up {name}")
            try:
                if name == "generate":
                    fw = make_generate(lm, pad_id, by_ids)
                elif name == "sampler":
                    fw = make_sampler(lm, pad_id)
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
        bandwidth = bandwidth_before["median_gb_s"] * 1e9
        for mode in args.stopping:
            for batch in args.batch_sizes:
                roofline = batch * bandwidth / weights
                row = bench_case(frameworks, all_prompts[:batch], mode, args, stops, roofline,
                                 tunix_pad if "tunix" in args.frameworks else None, tok.decode)
                report["results"].append(row)
        for fw in frameworks:
            if fw.stats is not None:
                report["frameworks"][fw.name].update(fw.stats())
    bandwidth_after = read_bandwidth(args.bandwidth_mib, args.bandwidth_repeats, args.threads)
    report["machine"]["read_bandwidth_at_start"] = bandwidth_before
    report["machine"]["read_bandwidth_at_end"] = bandwidth_after
    report["roofline"] = {
        "formula": "B x read bandwidth (at start; the faster of one thread and all threads, "
                   "medians) / weight bytes",
        "read_bandwidth_gb_s": bandwidth_before["median_gb_s"],
        "weight_bytes": weights,
        "tokens_per_s_per_row": round(bandwidth / weights, 2),
    }
    report["total_s"] = round(time.perf_counter() - start, 1)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = [summary_line(r) for r in report["results"]]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
