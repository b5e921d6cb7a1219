"""`orchestra`: the project's command line. Subcommands grow with the project.

    orchestra demo            load the real SmolLM2-135M-Instruct, run a forward pass, chat
    orchestra models          list the model presets and their sizes
    orchestra serve           an OpenAI-compatible chat-completions server for a checkpoint
    orchestra train           RL training: --config FILE --workdir DIR [--config.a.b=value ...]
    orchestra eval            every policy on held-out tasks: --config FILE --checkpoint DIR
                              --out FILE [--config.a.b=value ...]
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


def _serve(args: argparse.Namespace) -> int:
    import logging

    from orchestra_jax.serve.server import ServeError, load_chat_server, run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        server = load_chat_server(
            args.model, dtype=args.dtype, scan_layers=args.scan_layers,
            served_model_name=args.served_model_name, max_batch_size=args.max_batch_size,
            max_wait_s=args.max_wait_ms / 1000, default_max_tokens=args.default_max_tokens,
            max_model_len=args.max_model_len, chat_template=args.chat_template,
            api_key_env=args.api_key_env, seed=args.seed,
        )
    except ServeError as err:
        print(f"orchestra serve: {err}", file=sys.stderr)
        return 2
    return run_server(server, args.host, args.port)


def _train(args: argparse.Namespace) -> int:
    import logging

    from orchestra_jax.train.loop import run_from_cli

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    return run_from_cli(args.config, args.workdir, args.overrides)


def _eval(args: argparse.Namespace) -> int:
    import logging

    from orchestra_jax.train.loop import evaluate_from_cli

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    return evaluate_from_cli(args.config, args.checkpoint, args.out, args.overrides)


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

    serve = sub.add_parser("serve", help="OpenAI-compatible chat-completions server")
    serve.add_argument("--model", default="smollm2-135m-instruct",
                       help="packaged model name, .gguf file or HF checkpoint directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    serve.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    serve.add_argument("--served-model-name", help="the model id clients send (default: --model)")
    serve.add_argument("--max-batch-size", type=int, default=16,
                       help="most requests generated together")
    serve.add_argument("--max-wait-ms", type=float, default=5.0,
                       help="how long a request waits for others to share its batch")
    serve.add_argument("--default-max-tokens", type=int, default=512,
                       help="reply length when a request sets no max_tokens")
    serve.add_argument("--max-model-len", type=int,
                       help="context length to allow (default: the model's)")
    serve.add_argument("--chat-template",
                       help="Jinja file or 'chatml-tools' instead of the model's own template")
    serve.add_argument("--scan-layers", action="store_true",
                       help="scan over layers (much faster compilation)")
    serve.add_argument("--api-key-env", metavar="VAR",
                       help="require the key held in environment variable VAR as a Bearer token")
    serve.add_argument("--seed", type=int, default=0, help="sampling seed of unseeded requests")
    serve.set_defaults(run=_serve)

    train = sub.add_parser(
        "train", help="RL training of an orchestrator (resumes from the workdir's checkpoint)",
        epilog="Any config field can be overridden: --config.a.b=value (typed; an unknown key "
               "or a wrong type stops with exit status 2, naming it).")
    train.add_argument("--config", required=True, metavar="FILE",
                       help="experiment file with get_config() (experiments/*.py)")
    train.add_argument("--workdir", required=True, metavar="DIR",
                       help="run directory: config.json, checkpoints, TensorBoard events")
    train.set_defaults(run=_train, overrides=[])

    evaluate = sub.add_parser(
        "eval", help="evaluate a trained policy against the sft, random and fixed-route "
                     "policies on the held-out tasks",
        epilog="Writes --out (JSON: per policy accuracy, cost_usd, latency_s, calls per alias, "
               "preference_score, by_family) and the accuracy-vs-cost plot next to it (.png).")
    evaluate.add_argument("--config", required=True, metavar="FILE",
                          help="the experiment file the policy was trained with")
    evaluate.add_argument("--checkpoint", required=True, metavar="DIR",
                          help="a run's workdir (its latest checkpoint) or a checkpoint "
                               "directory in Hugging Face layout (e.g. <workdir>/sft)")
    evaluate.add_argument("--out", required=True, metavar="FILE", help="the JSON to write")
    evaluate.set_defaults(run=_eval, overrides=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `--config.a.b=value` overrides are not argparse options: collect them for train / eval.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if getattr(args, "command", None) not in ("train", "eval"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        bad = [e for e in extra if not e.startswith("--config.")]
        if bad:
            print(f"orchestra {args.command}: unrecognized arguments {bad}; overrides look like "
                  "--config.a.b=value", file=sys.stderr)
            return 2
        args.overrides = extra
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
