"""Rollout overlap: do tools of some episodes really run while others generate?

Run (from the repository root, in the project's venv):

    python benchmarks/rollout_overlap.py                     # 64 episodes x 3 turns, 0.5 s tools
    python benchmarks/rollout_overlap.py --episodes 16 --skip-baseline    # quick check

The acceptance of the rollout issue: 64 episodes x 3 turns, every turn running one tool of
0.5 s latency, finish within 1.3 x (pure generation time + 3 x 0.5 s). Three timings, in one
process, on the same model, tokenizer, prompts and sampler programs:

- `generation_only_s` (a): the same 64 x 3 generations through the Batcher with no tools (the
  environment returns the same observation text at once), each turn's 64 requests released
  together so that every turn is exactly one full batch: the pure generation time.
- `ours_s` (b): the rollout engine (`run_episodes`): one asyncio task per episode, no turn
  barrier, the real `Batcher` + `Sampler` on the random `tiny` model, every turn one 0.5 s tool
  (an `asyncio.sleep` inside a tool run by the real `ToolExecutor`, 64 concurrent slots).
- `turn_synchronous_s` (c): a baseline shaped like the released system: all episodes generate
  turn k as one batch (a barrier in front of the Batcher releases the requests only when every
  episode has asked), then their tools run two at a time (`ToolExecutor(max_concurrency=2)`),
  then turn k+1.

Run (b) is timed once per batcher quiet gap in `--max-wait-ms` (default 5 ms, the Batcher's
default, and 50 ms), with the Batcher's gather cap of 50 ms. Why it matters: tools of equal
latency finish a few ms apart (each episode's host work after its batch returns spreads them
out), and on a CPU a small batch costs a good part of a full one, so a batcher that flushed a
fixed 5 ms after the first arrival split one turn's requests into a small and a large batch and
missed the bound. The Batcher now keeps gathering while requests keep arriving (a flush after
`max_wait_s` without a new arrival, or `max_gather_s` after the oldest);
`ours[*].batcher_flushes` shows it: `turns` flushes mean no split.

Printed: (a), (c), `bound_s` = 1.3 x (a + turns x latency), and per gather window the time of
(b), `passed` (b <= bound), `ours_over_bound` and `baseline_over_ours` (how many times faster
than the turn-synchronous baseline). With `--repeats` > 1 the times are medians (and minima).
Episodes run in dialogue mode (each prompt extends the last), so prompts grow by the sampled
tokens every turn. Every generation is exactly `--new-tokens` tokens (stop tokens off, so the
work is fixed whatever the random model samples), temperature 1, seeded per episode.

Compilation is excluded: the sampler's buckets are restricted (`--batch-buckets`) and every
(batch bucket, prompt bucket) program the runs can meet is compiled before any timing;
`compiles_during_timing` must be 0.

Output: ONE JSON object on stdout (logs go to stderr). `machine` holds the backend and the load
average at start and end: a load above the core count means other processes shared the CPU.
On 2 busy CPU cores the defaults take a few minutes, most of it the baseline's tools
(64 x 3 x 0.5 s / 2 = 48 s) and compiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MESSAGE_WORDS = ["what", "is", "the", "capital", "of", "country", "number", "tool", "result",
                 "answer", "search", "code", "expert", "model", "price", "latency"]


def log(message: str) -> None:
    print(f"[rollout_overlap] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--tool-latency", type=float, default=0.5, help="seconds per tool call")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per generation")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-wait-ms", default="5,50",
                        help="batcher gather windows to time (b) with, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of (a) and (b)")
    parser.add_argument("--batch-buckets", default="4,16,64",
                        help="sampler batch-size buckets (comma-separated)")
    parser.add_argument("--baseline-concurrency", type=int, default=2,
                        help="tool calls at once in the turn-synchronous baseline")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.batch_buckets = tuple(sorted(int(x) for x in args.batch_buckets.split(",")))
    args.max_wait_ms = tuple(float(x) for x in args.max_wait_ms.split(","))
    if args.batch_buckets[-1] < args.max_batch_size:
        parser.error("the largest batch bucket must hold --max-batch-size rows")
    return args


# ---- world ------------------------------------------------------------------------------------

class SleepToolEnv:
    """Dialogue episodes whose every turn runs one tool of fixed latency, whatever the policy says.

    A random model never writes a valid tool call, so the tool runs unconditionally. With
    `latency_s` 0 no tool runs at all, but the observation text is the same, so the prompts of
    the generation-only run are token for token those of the timed runs.
    """

    mode = "dialogue"

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    def reset(self, task: dict[str, Any]) -> None:
        self.task = task
        self.chat = [{"role": "system", "content": "You are a careful orchestrator."},
                     {"role": "user", "content": task["question"]}]

    def tools(self) -> list[dict[str, Any]]:
        return []

    def messages(self) -> list[dict[str, Any]]:
        return list(self.chat)

    async def step(self, text: str, calls: Any, executor: Any, turn: int) -> Any:
        from orchestra_jax.envs.base import CallRecord, StepOutput
        from orchestra_jax.tokenization.tool_calls import ToolCall
        from orchestra_jax.tools.results import ToolResult

        observation = f"tool result {turn}"
        out = StepOutput()
        if self.latency_s > 0:
            async def wait() -> ToolResult:
                await asyncio.sleep(self.latency_s)
                return ToolResult(observation)

            result = await executor.run("wait", wait)
            call = ToolCall("wait", {}, (0, 0))
            out.records.append(CallRecord.from_result(turn, call, result))
            observation = result.observation
        self.chat.append({"role": "assistant", "content": text})
        self.chat.append({"role": "tool", "content": observation})
        out.observations.append(observation)
        return out

    @property
    def done(self) -> bool:
        return False

    def outcome(self) -> float:
        return 0.0


class NoStopTokenizer:
    """The tokenizer with its stop tokens hidden, so every generation runs `--new-tokens`."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        return ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


class TurnBarrier:
    """A generator in front of the batcher that releases a turn's requests only all together."""

    def __init__(self, generator: Any, parties: int):
        self.generator = generator
        self.barrier = asyncio.Barrier(parties)

    async def generate(self, request: Any) -> Any:
        await self.barrier.wait()
        return await self.generator.generate(request)


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = " ".join(rng.choice(MESSAGE_WORDS) for _ in range(12))
        docs.append(f"<|im_start|>system\nYou are a careful orchestrator.<|im_end|>\n"
                    f"<|im_start|>user\nTask {i}: {words}?<|im_end|>\n<|im_start|>assistant\n"
                    f"{words}<|im_end|>\n<|im_start|>user\n<tool_response>\ntool result "
                    f"{i % 3}\n</tool_response><|im_end|>\n")
    return docs


def tasks(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    return [{"id": f"task{i}",
             "question": f"Task {i}: " + " ".join(rng.choice(MESSAGE_WORDS) for _ in range(12))}
            for i in range(n)]


# ---- runs -------------------------------------------------------------------------------------

async def run_engine(args, batcher, tokenizer, latency_s: float, *, barrier: bool,
                     tool_concurrency: int) -> tuple[float, list[Any]]:
    from orchestra_jax.rollout.engine import run_episodes
    from orchestra_jax.rollout.requests import SamplingParams
    from orchestra_jax.tools.executor import ToolExecutor

    generator = TurnBarrier(batcher, args.episodes) if barrier else batcher
    executor = ToolExecutor(max_concurrency=tool_concurrency, timeout_s=60.0, seed=args.seed)
    episodes = [(SleepToolEnv(latency_s), task) for task in tasks(args.episodes, args.seed)]
    start = time.perf_counter()
    trajectories = await run_episodes(
        episodes, generator=generator, tokenizer=tokenizer, executor=executor,
        sampling=SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0,
                                seed=args.seed),
        max_turns=args.turns, timeout_s=3600.0)
    elapsed = time.perf_counter() - start
    bad = [t for t in trajectories if t.termination != "max_turns" or t.error]
    if bad:
        raise RuntimeError(f"{len(bad)} episodes did not run all turns: {bad[0].to_json()}")
    return elapsed, trajectories


def prompt_lengths(trajectories: list[Any]) -> list[int]:
    return sorted({len(s.prompt_ids) for t in trajectories for s in t.samples})


def precompile(sampler, buckets, prompt_lengths_seen: list[int], new_tokens: int) -> None:
    """Compile every (batch bucket, prompt bucket) program the timed runs can meet."""
    from orchestra_jax.rollout.requests import SamplingParams

    for length in sorted({sampler.buckets.pick(sampler.buckets.prompt_lengths, n, "prompt")
                          for n in prompt_lengths_seen}):
        for batch in buckets:
            sampler.sample([[5] * length] * batch, SamplingParams(max_new_tokens=new_tokens))


def machine_info() -> dict[str, Any]:
    import flax
    import jax

    device = jax.devices()[0]
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_device_kind": device.device_kind,
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


async def measure(args, sampler, tokenizer) -> dict[str, Any]:
    from orchestra_jax.rollout.batcher import Batcher

    def batcher(wait_ms: float) -> Batcher:
        return Batcher(sampler, max_batch_size=args.max_batch_size, max_wait_s=wait_ms / 1000,
                       max_gather_s=max(0.05, wait_ms / 1000))

    latency = args.tool_latency
    plain = batcher(args.max_wait_ms[0])
    log("warm-up: one generation-only rollout (compiles the full-batch programs)")
    _, warm = await run_engine(args, plain, tokenizer, 0.0, barrier=False,
                               tool_concurrency=args.episodes)
    seen = prompt_lengths(warm)
    log(f"precompiling batch buckets {args.batch_buckets} for prompt lengths {seen[0]}..{seen[-1]}")
    await asyncio.get_running_loop().run_in_executor(
        None, precompile, sampler, args.batch_buckets, seen, args.new_tokens)
    compiled = sampler.compile_count()

    generation: list[float] = []
    generation_busy: list[float] = []  # seconds the sampler ran during (a)
    generation_flushes: list[int] = []
    ours: dict[float, list[tuple[float, dict[str, Any]]]] = {w: [] for w in args.max_wait_ms}
    tool_latency = 0.0
    for repeat in range(args.repeats):
        log(f"repeat {repeat}: (a) generation only")
        before = plain.stats()
        seconds, _ = await run_engine(args, plain, tokenizer, 0.0, barrier=True,
                                      tool_concurrency=args.episodes)
        after = plain.stats()
        generation.append(seconds)
        generation_busy.append(after["busy_s"] - before["busy_s"])
        generation_flushes.append(after["flushes"] - before["flushes"])
        log(f"(a) {seconds:.2f} s, {generation_flushes[-1]} flushes")
        for wait_ms in args.max_wait_ms:
            gatherer = batcher(wait_ms)
            try:
                seconds, trajectories = await run_engine(
                    args, gatherer, tokenizer, latency, barrier=False,
                    tool_concurrency=args.episodes)
                stats = gatherer.stats()
            finally:
                await gatherer.aclose()
            tool_latency = trajectories[0].latency_s
            ours[wait_ms].append((seconds, stats))
            log(f"(b) ours, batcher gather window {wait_ms} ms: {seconds:.2f} s, "
                f"{stats['flushes']} flushes")
    baseline_s = None
    if not args.skip_baseline:
        log(f"(c) turn-synchronous baseline, tools {args.baseline_concurrency} at a time")
        baseline_s, _ = await run_engine(args, plain, tokenizer, latency, barrier=True,
                                         tool_concurrency=args.baseline_concurrency)
        log(f"(c) {baseline_s:.2f} s")
    await plain.aclose()

    generation_s = statistics.median(generation)
    bound = 1.3 * (generation_s + args.turns * latency)
    rows = []
    for wait_ms, runs in ours.items():
        seconds = statistics.median(s for s, _ in runs)
        flushes = [st["flushes"] for _, st in runs]
        # The same ratio per repeat, against that repeat's own (a): robust to load drifting
        # between repeats.
        per_repeat = [s / (1.3 * (a + args.turns * latency))
                      for (s, _), a in zip(runs, generation, strict=True)]
        rows.append({
            "max_wait_ms": wait_ms,
            "ours_s": round(seconds, 3),
            "ours_min_s": round(min(s for s, _ in runs), 3),
            "passed": seconds <= bound,
            "ours_over_bound": round(seconds / bound, 3),
            "ours_over_bound_per_repeat": [round(x, 3) for x in per_repeat],
            "ours_minus_generation_s": round(seconds - generation_s, 3),
            "baseline_over_ours": round(baseline_s / seconds, 2) if baseline_s else None,
            "ours_per_repeat_s": [round(s, 3) for s, _ in runs],
            "batcher_flushes": flushes,
            "mean_rows_per_flush": [round(st["mean_rows"], 1) for _, st in runs],
            "batcher_busy_s": [round(st["busy_s"], 2) for _, st in runs],
        })
    return {
        "generation_only_s": round(generation_s, 3),
        "generation_only_min_s": round(min(generation), 3),
        "generation_only_per_repeat_s": [round(x, 3) for x in generation],
        "generation_only_sampler_busy_s": [round(x, 3) for x in generation_busy],
        "generation_only_flushes": generation_flushes,
        "turn_synchronous_s": round(baseline_s, 3) if baseline_s is not None else None,
        "bound_s": round(bound, 3),
        "ours": rows,
        "compiles_during_timing": sampler.compile_count() - compiled,
        "tool_latency_sum_per_episode_s": round(tool_latency, 3),
        "prompt_lengths": [seen[0], seen[-1]],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from orchestra_jax.models import get_preset, init_decoder
    from orchestra_jax.rollout.sampler import Sampler, SamplerBuckets
    from orchestra_jax.sharding.mesh import single_device_mesh
    from orchestra_jax.tokenization import train_sentencepiece

    report: dict[str, Any] = {
        "benchmark": "rollout overlap: episodes with tools, no turn barrier vs turn-synchronous",
        "measured": (
            "wall-clock seconds of E episodes x T turns, N new tokens per generation (stop "
            "tokens off), random tiny model, real Batcher + Sampler, real ToolExecutor. "
            "(a) no tools; (b) run_episodes, one L s tool per turn, no barrier; (c) barrier "
            "before each turn's generation, tools K at a time. Compile excluded. "
            "passed: b <= 1.3 x (a + T x L)."
        ),
        "settings": {k: v for k, v in vars(args).items()},
        "machine": machine_info(),
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rollout-overlap-") as tmp:
        tokenizer = train_sentencepiece(corpus(400, args.seed), Path(tmp), vocab_size=1024)
    vocab = -(-tokenizer.vocab_size // 128) * 128  # room for every id, in whole tiles
    model = init_decoder(get_preset("tiny", vocab_size=vocab), seed=args.seed)
    buckets = SamplerBuckets(batch_sizes=args.batch_buckets,
                             new_tokens=(max(16, 1 << (args.new_tokens - 1).bit_length()),))
    sampler = Sampler(model, single_device_mesh(), pad_id=tokenizer.pad_token_id,
                      buckets=buckets, seed=args.seed)
    log(f"tiny model, vocab {vocab} (tokenizer {tokenizer.vocab_size}), "
        f"backend {report['machine']['jax_backend']}")

    report["results"] = asyncio.run(measure(args, sampler, NoStopTokenizer(tokenizer)))
    report["compile_s"] = round(sampler.compile_seconds, 1)
    report["total_s"] = round(time.perf_counter() - start, 1)
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    r = report["results"]
    report["summary"] = [
        f"{args.episodes} episodes x {args.turns} turns, {args.tool_latency} s tools, "
        f"{args.new_tokens} new tokens: generation only {r['generation_only_s']} s, bound "
        f"1.3 x (a + {args.turns} x {args.tool_latency}) = {r['bound_s']} s, turn-synchronous "
        f"baseline {r['turn_synchronous_s']} s",
        *(f"ours, gather window {row['max_wait_ms']} ms: {row['ours_s']} s "
          f"({'PASS' if row['passed'] else 'FAIL'}, {row['ours_over_bound']} x bound, "
          f"flushes {row['batcher_flushes']}), baseline/ours {row['baseline_over_ours']}"
          for row in r["ours"]),
    ]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
