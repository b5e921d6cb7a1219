"""`orchestra`: the project's command line. Subcommands grow with the project.

    orchestra demo            load the real SmolLM2-135M-Instruct, run a forward pass, chat
    orchestra models          list the model presets and their sizes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

DEFAULT_PROMPTS = (
    "What is the capital of France?",
    "Name three primary colors.",
)


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from orchestra_jax.models import load_pretrained

    start = time.perf_counter()
    lm = load_pretrained(args.model, dtype=args.dtype)
    load_s = time.perf_counter() - start
    cfg = lm.config
    print(f"loaded {args.model}: {cfg.num_params() / 1e6:.1f}M parameters, {cfg.num_layers} "
          f"layers, vocab {cfg.vocab_size}, {args.dtype} ({load_s:.1f} s)")

    text = "The quick brown fox jumps over the lazy dog."
    ids = np.asarray([lm.tokenizer.encode(text)])
    logits = lm.logits(ids)
    log_probs = logits[0, :-1] - np.logaddexp.reduce(logits[0, :-1], axis=-1, keepdims=True)
    nll = -log_probs[np.arange(ids.shape[1] - 1), ids[0, 1:]].mean()
    print(f"forward: {ids.shape[1]} tokens of {text!r}: mean NLL {nll:.3f} "
          f"(perplexity {np.exp(nll):.1f})")

    prompts = args.prompt or list(DEFAULT_PROMPTS)
    rendered = [
        lm.tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                         add_generation_prompt=True)
        for p in prompts
    ]
    start = time.perf_counter()
    replies = lm.generate(rendered, max_new_tokens=args.max_new_tokens)
    gen_s = time.perf_counter() - start
    for prompt, reply in zip(prompts, replies, strict=True):
        print(f"\nuser: {prompt}\nassistant: {reply.strip()}")
    print(f"\n(generated {len(prompts)} replies in {gen_s:.1f} s, compilation included)")
    return 0


def _models(args: argparse.Namespace) -> int:
    from orchestra_jax.models import PRESETS

    rows = {name: {"params_millions": round(cfg.num_params() / 1e6, 1),
                   "layers": cfg.num_layers, "hidden": cfg.hidden_size,
                   "heads": f"{cfg.num_heads}/{cfg.num_kv_heads}"}
            for name, cfg in PRESETS.items()}
    print(json.dumps(rows, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestra",
        description="Train small tool-orchestrating LLMs with reinforcement learning, in JAX.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="forward pass and chat with a real pretrained model")
    demo.add_argument("--model", default="smollm2-135m-instruct",
                      help="packaged model name, .gguf file or HF checkpoint directory")
    demo.add_argument("--prompt", action="append", help="a user message (repeatable)")
    demo.add_argument("--max-new-tokens", type=int, default=48)
    demo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    demo.set_defaults(run=_demo)

    models = sub.add_parser("models", help="list model presets")
    models.set_defaults(run=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
