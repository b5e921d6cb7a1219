"""Does the paper's Orchestrator-8B recipe fit? Compile (never run) its programs for a target
and read XLA's memory analysis per device.

    python research/fit_orchestrator_8b.py --attention-block 512 \
        --libtpu /work/tpu_venv/lib/python3.11/site-packages/libtpu/libtpu.so \
        --out /tmp/fit.md --json /tmp/fit.json

(libtpu: `pip install "libtpu==0.0.42.*"` -- the version `jax[tpu]==0.10.2` pins -- into any
venv; only its libtpu.so is used. Results and findings: docs/research/scaling-log.md.)

What is compiled, for `experiments/orchestrator_qwen3_8b.py` as `load_config` reads it (the
recipe's preset, dtypes, remat, scanned layers, mesh rules, loss and optimizer), with nothing
but shapes (`nnx.eval_shape` / `jax.ShapeDtypeStruct` carrying their shardings):

- `update`: the jitted update step of `rl.update_step.make_update_step` for ONE mini-batch:
  `train.mini_batch_size` rows rounded as `train.builders.mini_batch_rows` rounds them, of
  `max_prompt_tokens + max_new_tokens` tokens rounded as `train.builders.sequence_buckets`
  does, with the train state of `rl.train_state.abstract_train_state` (f32 master params,
  AdamW moments, the frozen KL reference since `loss.kl_coef > 0`), donated as in training.
- `generate`: the rollout sampler's program, `models.sampling.DecodeEngine`'s one program per
  bucket that runs the chunked prefill AND the on-device decode loop (the engine compiles
  them as one program, so there is no separate prefill or decode program to compile): the
  run's batch of `prompts_per_step x group_size` rows (rounded to the batch shards as
  `train.builders.build_run` rounds `rollout.max_batch_size`), a 24,000-token prompt and
  8,768 new tokens, each rounded up to the engine's buckets (32,768 and 16,384), on the whole
  mesh with the learner's (f32) params. The KV cache is created inside the program, so it is
  temp memory there.
- `generate_host`: the same program as one host runs it in the multi-host design (each host
  rolls out its share of the episodes on its own devices with a gathered copy of the params):
  `rows / hosts` rows on the first host's devices, mesh `(1, local / tensor, tensor)`.

Memory columns (GiB per device, from `compiled.memory_analysis()`): argument, output, alias
(output bytes that reuse donated arguments), temp, and `peak = argument + output - alias +
temp`. `resident` adds what stays on the device while the program runs but is not among its
arguments: for `generate`, the optimizer state and the KL reference that the learner keeps
between updates (collocated); for `generate_host`, the learner's whole per-device train state.
`fits` compares `resident` with the target's memory (v5p 95 GB, H100 80 GB; decimal GB).

Backends. A TPU target is compiled for its real topology when libtpu is found (`--libtpu`,
$TPU_LIBRARY_PATH or an installed `libtpu` package): `jax.experimental.topologies` describes
the slice on a CPU-only machine and the TPU compiler does the rest, so the numbers are the
TPU's own. Otherwise, and always for H100 (a GPU program cannot be compiled without a GPU
here), the program is compiled for `--xla_force_host_platform_device_count` fake CPU devices:
the same SPMD partitioning (so argument and output bytes are exact), but the CPU compiler's
fusion, layouts and buffer assignment, so temp is an approximation of the accelerator's.

Each target compiles in its own subprocess (the device count is fixed when jax starts); the
script prints one JSON object and writes a markdown table (`--out`, else stdout).
`--layers N` compiles an N-layer version of the recipe (for quick checks; the table says so),
`--mesh`/`--hosts`/`--hbm-gb` describe an ad-hoc CPU target (`--targets custom`).
`--attention-block N` pins the query block of the training attention: the library's choice at
32,768 tokens (32-query blocks, 1,024 of them unrolled) did not finish compiling in 25 min and
20 GB of host memory here; 512 compiles in ~7 min, and bigger blocks only hold more scores at
once, so its peak bounds the library's from above. `--from-json A,B` merges earlier `--json`
files into one table without compiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "experiments" / "orchestrator_qwen3_8b.py"
GIB = 2**30
PROGRAMS = ("update", "generate", "generate_host")


@dataclasses.dataclass(frozen=True)
class Target:
    """A machine to compile for: its chips, memory per chip, the recipe's mesh on it, hosts,
    and (for TPU) the topology `jax.experimental.topologies.get_topology_desc` takes."""

    name: str
    devices: int
    hbm_bytes: int
    mesh: tuple[int, int, int]
    hosts: int
    tpu_topology: str | None = None  # e.g. "v5:4x4x4"
    kind: str = "cpu"  # "tpu" | "gpu" | "cpu": what the real machine is

    @property
    def devices_per_host(self) -> int:
        return self.devices // self.hosts


#: v5p: 4 chips a host, 95 GB HBM2e a chip; mesh shapes are the recipe's.
#: H100 SXM: 80 GB, 8 a host; (1, 16, 1) is pure FSDP, what the paper ran.
TARGETS = {
    "v5p-64": Target("v5p-64", 32, 95 * 10**9, (1, 8, 4), 8, "v5:2x4x4", "tpu"),
    "v5p-128": Target("v5p-128", 64, 95 * 10**9, (1, 16, 4), 16, "v5:4x4x4", "tpu"),
    "h100x16": Target("h100x16", 16, 80 * 10**9, (1, 16, 1), 2, None, "gpu"),
    "h100x16-tp2": Target("h100x16-tp2", 16, 80 * 10**9, (1, 8, 2), 2, None, "gpu"),
    # The same 16-device mesh and shapes, compiled by the TPU compiler for 16 v5p chips: its
    # buffer assignment (one cache buffer updated in place, as a GPU compiler does) is a
    # closer stand-in for the GPU's than the CPU compiler's, which copies loop-carried
    # buffers. Still not the GPU compiler: a proxy, and the table says so.
    "h100x16-tpuproxy": Target("h100x16-tpuproxy", 16, 80 * 10**9, (1, 16, 1), 2,
                               "v5:2x2x4", "gpu"),
    "h100x16-tp2-tpuproxy": Target("h100x16-tp2-tpuproxy", 16, 80 * 10**9, (1, 8, 2), 2,
                                   "v5:2x2x4", "gpu"),
}


# ---------------------------------------------------------------------------------------------
# The parent: one subprocess per target


def find_libtpu(explicit: str | None) -> str | None:
    """A libtpu.so to compile TPU programs with, or None."""
    for candidate in (explicit, os.environ.get("TPU_LIBRARY_PATH")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    spec = importlib.util.find_spec("libtpu")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "libtpu.so"
        if path.is_file():
            return str(path)
    return None


def child_env(target: Target, backend: str, libtpu: str | None) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    if backend == "cpu":
        flags.append(f"--xla_force_host_platform_device_count={target.devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    if backend == "tpu":
        env["TPU_LIBRARY_PATH"] = str(libtpu)
        env.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server: this is no TPU VM
        # libtpu takes a machine-wide lock file for the chips; compiling touches no chip, so
        # two compiles (two targets, or a test beside a run) may share the machine.
        env.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    return env


def run_target(target: Target, args: argparse.Namespace, libtpu: str | None) -> dict[str, Any]:
    backend = "tpu" if (target.tpu_topology and libtpu and args.backend != "cpu") else "cpu"
    if args.backend == "tpu" and backend != "tpu":
        raise SystemExit(f"--backend tpu: no libtpu found, or {target.name} is no TPU target")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child",
           "--target-json", json.dumps(dataclasses.asdict(target)), "--backend", backend,
           "--programs", args.programs]
    for flag in ("layers", "prompt_tokens", "new_tokens", "attention_block"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=child_env(target, backend, libtpu), capture_output=True,
                          text=True, timeout=args.timeout_s)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or "").splitlines()[-25:])
        return {"target": target.name, "backend": backend, "error": f"exit {proc.returncode}",
                "stderr_tail": tail, "wall_s": round(time.perf_counter() - start, 1)}
    result = json.loads(lines[-1])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """The table of every program of every target (GiB per device)."""
    head = ("| target | backend | program | shape | mesh | argument | output | alias | temp | "
            "peak | resident | memory | fits | compile s |")
    rows = [head, "|" + "---|" * 14]
    for res in results:
        if "error" in res:
            rows.append(f"| {res['target']} | {res['backend']} | (failed: {res['error']}) |"
                        + " |" * 11)
            continue
        limit = res["target_spec"]["hbm_bytes"]
        for name, prog in res["programs"].items():
            if "error" in prog:
                rows.append(f"| {res['target']} | {res['backend']} | {name} | "
                            f"failed: {prog['error'][:80]} |" + " |" * 10)
                continue
            m = prog["memory"]
            fits = "yes" if prog["resident_bytes"] <= limit else "**no**"
            rows.append(
                f"| {res['target']} | {res['backend']} | {name} | {prog['shape']} | "
                f"{prog['mesh']} | {_gib(m['argument'])} | {_gib(m['output'])} | "
                f"{_gib(m['alias'])} | {_gib(m['temp'])} | {_gib(prog['peak_bytes'])} | "
                f"{_gib(prog['resident_bytes'])} | {_gib(limit)} | {fits} | "
                f"{prog['compile_s']:.0f} |")
    notes = []
    for res in results:
        if "error" in res:
            continue
        layers = res["recipe"]["num_layers"]
        block = res.get("attention_block")
        block = f"attention query block {block}" if block else "the library's attention block"
        notes.append(f"- {res['target']}: {res['backend']} backend, {layers} layers, {block}, "
                     f"max RSS of the compiling process {res['max_rss_gib']:.1f} GiB, "
                     f"wall {res['wall_s']:.0f} s.")
    return "\n".join([*rows, "", *notes]) + "\n"


# ---------------------------------------------------------------------------------------------
# The child: build abstractly, compile, analyse


def _abstract(shape: tuple[int, ...], dtype: Any, sharding: Any) -> Any:
    import jax

    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _memory(compiled: Any) -> dict[str, int]:
    stats = compiled.memory_analysis()
    return {"argument": int(stats.argument_size_in_bytes),
            "output": int(stats.output_size_in_bytes),
            "alias": int(stats.alias_size_in_bytes),
            "temp": int(stats.temp_size_in_bytes),
            "code": int(stats.generated_code_size_in_bytes)}


def _peak(m: dict[str, int]) -> int:
    return m["argument"] + m["output"] - m["alias"] + m["temp"]


def _devices(target: Target, backend: str) -> list[Any]:
    import jax

    if backend == "tpu":
        from jax.experimental import topologies

        topo = topologies.get_topology_desc(
            platform="tpu", topology_name=target.tpu_topology, chip_config_name="megacore",
            chips_per_host_bounds=(2, 2, 1), num_slices=1)
        devices = list(topo.devices)
    else:
        devices = jax.devices()
    if len(devices) != target.devices:
        raise SystemExit(f"{target.name}: {len(devices)} devices, expected {target.devices}")
    return devices


def _host_devices(devices: list[Any], target: Target) -> list[Any]:
    """The first host's devices: by process index on a TPU topology, else the first ones."""
    first = [d for d in devices if getattr(d, "process_index", 0) == 0]
    if len(first) == target.devices_per_host:
        return first
    return devices[: target.devices_per_host]


def compile_update(recipe: Any, model_cfg: Any, mesh: Any, rules: Any) -> dict[str, Any]:
    """The update step of one mini-batch, lowered on abstract state and batch."""
    import jax
    import jax.numpy as jnp

    from orchestra_jax.models.sharded import abstract_decoder
    from orchestra_jax.rl.batch import TrainBatch, batch_shards
    from orchestra_jax.rl.train_state import (
        abstract_train_state,
        bytes_per_device,
        train_state_shardings,
    )
    from orchestra_jax.rl.update_step import make_update_step, micro_batch_count
    from orchestra_jax.sharding import logical_to_spec
    from orchestra_jax.train.builders import (
        build_optimizer,
        mini_batch_rows,
        sequence_buckets,
        update_config,
    )

    optimizer = build_optimizer(recipe)
    update_cfg = update_config(recipe)
    state = abstract_train_state(model_cfg, optimizer, mesh, rules,
                                 reference=recipe.loss.kl_coef > 0)
    graphdef, _ = abstract_decoder(model_cfg)
    shards = batch_shards(mesh, rules)
    rows = mini_batch_rows(recipe, shards)
    length = sequence_buckets(recipe)[-1]
    step = make_update_step(graphdef, update_cfg, mesh, rules, train_state_shardings(state),
                            optimizer=optimizer)
    batch_spec = logical_to_spec(("batch",), None, mesh, rules)
    row_sharding = jax.sharding.NamedSharding(mesh, batch_spec)
    two_d = (rows, length)
    batch = TrainBatch(
        input_ids=_abstract(two_d, jnp.int32, row_sharding),
        attention_mask=_abstract(two_d, jnp.int32, row_sharding),
        loss_mask=_abstract(two_d, jnp.float32, row_sharding),
        old_logprobs=_abstract(two_d, jnp.float32, row_sharding),
        advantages=_abstract((rows,), jnp.float32, row_sharding))
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    seconds = time.perf_counter() - start
    memory = _memory(compiled)
    state_bytes = bytes_per_device(state)
    k = micro_batch_count(rows, length, update_cfg, shards)
    return {"shape": f"{rows}x{length} ({k} micro-batch{'es' if k > 1 else ''})",
            "mesh": "x".join(str(v) for v in mesh.shape.values()),
            "memory": memory, "peak_bytes": _peak(memory), "resident_bytes": _peak(memory),
            "compile_s": seconds, "state_bytes": state_bytes}


def compile_generate(recipe: Any, model_cfg: Any, mesh: Any, rules: Any, rows: int,
                     resident_extra: int) -> dict[str, Any]:
    """DecodeEngine's program (chunked prefill + decode loop) for `rows` rows of the recipe's
    lengths, lowered on abstract f32 params and inputs. Mirrors `DecodeEngine._program` /
    `_abstract_inputs` (private: the engine puts its example inputs on devices, which a
    topology-only mesh does not have)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from orchestra_jax.models.decoder import Decoder
    from orchestra_jax.models.kv_cache import KVCache
    from orchestra_jax.models.sampling import DecodeEngine, SamplingParams, _generate_program
    from orchestra_jax.rl.batch import batch_shards
    from orchestra_jax.rl.train_state import abstract_train_state
    from orchestra_jax.sharding import logical_rules, logical_to_spec, tree_shardings
    from orchestra_jax.train.builders import build_optimizer

    abstract_model = nnx.eval_shape(lambda: Decoder(model_cfg, rngs=nnx.Rngs(0)))
    shards = batch_shards(mesh, rules)
    rows = -(-rows // shards) * shards
    engine = DecodeEngine(abstract_model, mesh, rules=rules, pad_id=0,
                          stop_token_ids=(model_cfg.eos_token_id,))
    prompt_len = int(recipe.rollout.max_prompt_tokens)
    params = SamplingParams(max_new_tokens=int(recipe.rollout.max_new_tokens),
                            temperature=float(recipe.rollout.temperature),
                            top_p=float(recipe.rollout.top_p))
    shape = engine._shape_for([[0] * prompt_len] * rows, [params] * rows)
    # The learner's params with their shardings on this mesh (what the collocated sampler
    # reads); the engine takes them as they are.
    state = abstract_train_state(model_cfg, build_optimizer(recipe), mesh, rules,
                                 reference=False).params
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    ids_sharding = jax.sharding.NamedSharding(
        mesh, logical_to_spec(("batch", "length"), None, mesh, rules))
    row_sh = engine._row_shardings(shape)
    b = shape.batch
    key_words = jax.random.key_data(jax.random.key(0)).shape[-1]
    row = {"temperature": _abstract((b,), jnp.float32, row_sh["temperature"]),
           "top_k": _abstract((b,), jnp.int32, row_sh["top_k"]),
           "top_p": _abstract((b,), jnp.float32, row_sh["top_p"]),
           "max_new": _abstract((b,), jnp.int32, row_sh["max_new"]),
           "stop_ids": _abstract((b, shape.stop_ids), jnp.int32, row_sh["stop_ids"]),
           "stop_seqs": _abstract((b, max(shape.stop_seqs, 1), max(shape.stop_len, 1)),
                                  jnp.int32, row_sh["stop_seqs"]),
           "key": _abstract((b, key_words), jnp.uint32, row_sh["key"])}
    inputs = (state, _abstract((b, shape.prompt_len), jnp.int32, ids_sharding),
              _abstract((b, shape.prompt_len), jnp.int32, ids_sharding),
              _abstract((), jnp.int32, replicated), row)
    cache_len = shape.prompt_len + shape.new_tokens
    start = time.perf_counter()
    with jax.set_mesh(mesh), logical_rules(dict(rules or {})):
        cache_shape = jax.eval_shape(lambda: KVCache.init(model_cfg, b, cache_len))
        cache_shardings = tree_shardings(cache_shape.logical_axes(), cache_shape, mesh, rules)
        run = _generate_program(engine.graphdef, shape, cache_shardings)

        def with_keys(state, ids, mask, first_slot, row):
            row = dict(row, key=jax.random.wrap_key_data(row["key"]))
            return run(state, ids, mask, first_slot, row)

        compiled = jax.jit(with_keys).lower(*inputs).compile()
    seconds = time.perf_counter() - start
    memory = _memory(compiled)
    kv = cache_shape.k
    kv_bytes = 2 * int(jnp.dtype(kv.dtype).itemsize) * math.prod(kv.shape)
    kv_spec = cache_shardings.k.spec
    return {"shape": f"{b} rows x ({shape.prompt_len} prompt + {shape.new_tokens} new)",
            "mesh": "x".join(str(v) for v in mesh.shape.values()),
            "memory": memory, "peak_bytes": _peak(memory),
            "resident_bytes": _peak(memory) + resident_extra, "compile_s": seconds,
            "kv_cache_total_bytes": kv_bytes, "kv_cache_spec": str(kv_spec),
            "kv_cache_bytes_per_device": kv_bytes // _ways(kv_spec, mesh),
            "resident_extra_bytes": resident_extra}


def _ways(spec: Any, mesh: Any) -> int:
    ways = 1
    for axes in spec:
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            ways *= mesh.shape[axis]
    return ways


def child_main(args: argparse.Namespace) -> None:
    import jax

    from orchestra_jax.rl.train_state import abstract_train_state, bytes_per_device
    from orchestra_jax.sharding import make_mesh
    from orchestra_jax.train.builders import build_optimizer, mesh_rules, model_config
    from orchestra_jax.train.config import load_config

    target = Target(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in json.loads(args.target_json).items()})
    if args.attention_block is not None:
        # The cache-free attention's query block is picked by `attention_block_size` from
        # these two module constants at trace time; pinning both sets the block.
        from orchestra_jax.models import layers

        layers.MIN_ATTENTION_BLOCK = layers.ATTENTION_BLOCK = int(args.attention_block)
    recipe = load_config(RECIPE)
    recipe.mesh.shape = target.mesh
    if args.prompt_tokens is not None:
        recipe.rollout.max_prompt_tokens = args.prompt_tokens
    if args.new_tokens is not None:
        recipe.rollout.max_new_tokens = args.new_tokens
    rules = mesh_rules(recipe)
    model_cfg = model_config(recipe, vocab_size=151936)
    if args.layers is not None:
        model_cfg = model_cfg.replace(num_layers=args.layers)
    devices = _devices(target, args.backend)
    mesh = make_mesh(target.mesh, devices=devices)
    wanted = [p for p in args.programs.split(",") if p]
    learner = bytes_per_device(abstract_train_state(model_cfg, build_optimizer(recipe), mesh,
                                                    rules, reference=recipe.loss.kl_coef > 0))
    rows = int(recipe.rollout.prompts_per_step) * int(recipe.rollout.group_size)
    programs: dict[str, Any] = {}
    for name in wanted:
        try:
            if name == "update":
                programs[name] = compile_update(recipe, model_cfg, mesh, rules)
            elif name == "generate":
                # Collocated: the sampler reads the learner's params; the optimizer state
                # and the KL reference stay on the devices meanwhile.
                programs[name] = compile_generate(
                    recipe, model_cfg, mesh, rules, rows,
                    learner["optimizer"] + learner["reference"])
            elif name == "generate_host":
                local = _host_devices(devices, target)
                tensor = min(target.mesh[2], len(local))
                host_mesh = make_mesh((1, len(local) // tensor, tensor), devices=local)
                # A gathered copy of the params on the host's devices, plus the learner's
                # whole per-device state (params, moments, reference) left where it is.
                programs[name] = compile_generate(
                    recipe, model_cfg, host_mesh, rules, -(-rows // target.hosts),
                    learner["total"])
            else:
                raise SystemExit(f"unknown program {name!r}; known: {', '.join(PROGRAMS)}")
        except Exception as exc:  # one program's failure is a result, not the end
            programs[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        print(f"# {target.name} {name} done", file=sys.stderr, flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "target": target.name, "backend": args.backend, "target_spec": dataclasses.asdict(target),
        "jax": jax.__version__,
        "attention_block": args.attention_block,
        "recipe": {"num_layers": model_cfg.num_layers, "params": model_cfg.num_params(),
                   "max_prompt_tokens": int(recipe.rollout.max_prompt_tokens),
                   "max_new_tokens": int(recipe.rollout.max_new_tokens), "rows": rows},
        "learner_state_bytes_per_device": learner, "programs": programs,
        "max_rss_gib": rss / GIB}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets",
                        default="v5p-64,v5p-128,h100x16-tpuproxy,h100x16-tp2-tpuproxy",
                        help=f"comma-separated, of {', '.join(TARGETS)}, or 'custom'")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--backend", choices=("auto", "tpu", "cpu"), default="auto")
    parser.add_argument("--libtpu", default=None, help="path of libtpu.so (TPU targets)")
    parser.add_argument("--layers", type=int, default=None, help="compile an N-layer recipe")
    parser.add_argument("--prompt-tokens", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--attention-block", type=int, default=None,
                        help="query block of the training attention (None: the library's)")
    parser.add_argument("--mesh", default=None, help="custom target: data,fsdp,tensor")
    parser.add_argument("--hosts", type=int, default=1, help="custom target: hosts")
    parser.add_argument("--hbm-gb", type=float, default=16.0, help="custom target: GB/device")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    parser.add_argument("--out", default=None, help="markdown table here (else stdout)")
    parser.add_argument("--json", default=None, help="the JSON results here too")
    parser.add_argument("--from-json", default=None,
                        help="comma-separated --json files of earlier runs: merge them (the "
                             "programs of a target across files) and write the table; "
                             "compiles nothing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    if args.from_json:
        results = merge([json.loads(Path(f).read_text()) for f in args.from_json.split(",")])
        return write(results, args)
    targets = []
    for name in [t for t in args.targets.split(",") if t]:
        if name == "custom":
            mesh = tuple(int(v) for v in (args.mesh or "1,8,1").split(","))
            n = mesh[0] * mesh[1] * mesh[2]
            targets.append(Target("custom", n, int(args.hbm_gb * 10**9), mesh, args.hosts))
        elif name in TARGETS:
            targets.append(TARGETS[name])
        else:
            parser.error(f"unknown target {name!r}; known: {', '.join(TARGETS)}, custom")
    libtpu = find_libtpu(args.libtpu)
    results = []
    for target in targets:
        results.append(run_target(target, args, libtpu))
        print(f"# {target.name}: {results[-1].get('error', 'ok')} "
              f"({results[-1]['wall_s']} s)", file=sys.stderr, flush=True)
    return write(results, args)


def merge(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One result per target and backend: later files add (or replace) programs of earlier
    ones."""
    by_target: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        for res in run:
            key = (res["target"], res["backend"])
            old = by_target.get(key)
            if old is None or "error" in old:
                by_target[key] = json.loads(json.dumps(res))
            elif "error" not in res:
                old["programs"].update(res["programs"])
                old["max_rss_gib"] = max(old["max_rss_gib"], res["max_rss_gib"])
                old["wall_s"] = old["wall_s"] + res["wall_s"]
    return list(by_target.values())


def write(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    table = markdown(results)
    if args.out:
        Path(args.out).write_text(table)
    else:
        print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
