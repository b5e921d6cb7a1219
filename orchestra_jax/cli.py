"""`orchestra`: the project's command line. Subcommands grow with the project.

    orchestra demo            load the real SmolLM2-135M-Instruct, run a forward pass, chat
    orchestra models          list the model presets and their sizes
    orchestra serve           an OpenAI-compatible chat-completions server for a checkpoint
    orchestra train           RL training: --config FILE[:ARG] --workdir DIR
                              [--config.a.b=value | --config.a.b value ...]
    orchestra eval            every policy on held-out tasks: --config FILE[:ARG]
                              --checkpoint DIR --out FILE [--config.a.b=value ...]
    orchestra export          a run's trained policy as a Hugging Face directory:
                              --workdir DIR --out DIR [--step N]

Each sub-command imports its rooms when it runs, so `orchestra --help` and a mistyped command
answer without loading jax.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from orchestra_jax.logs import configure_cli_logging

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
    from orchestra_jax.serve.server import ServeError, load_chat_server, run_server

    configure_cli_logging(logging.INFO)
    try:
        server = load_chat_server(
            args.model, dtype=args.dtype, scan_layers=args.scan_layers,
            served_model_name=args.served_model_name, max_batch_size=args.max_batch_size,
            max_wait_s=args.max_wait_ms / 1000, default_max_tokens=args.default_max_tokens,
            max_model_len=args.max_model_len, chat_template=args.chat_template,
            api_key_env=args.api_key_env, seed=args.seed,
            decode_chunk_tokens=args.decode_chunk_tokens,
        )
    except ServeError as err:
        print(f"orchestra serve: {err}", file=sys.stderr)
        return 2
    return run_server(server, args.host, args.port)


def _train(args: argparse.Namespace) -> int:
    from orchestra_jax.sharding.multihost import PlacementError, ProcessPlace, initialize
    from orchestra_jax.train.loop import run_from_cli

    configure_cli_logging()
    try:
        place = ProcessPlace.from_environment(args.coordinator, args.num_processes,
                                              args.process_id)
    except PlacementError as err:
        print(f"orchestra train: {err}", file=sys.stderr)
        return 2
    initialize(place)  # before anything touches a device
    return run_from_cli(args.config, args.workdir, args.overrides)


def _eval(args: argparse.Namespace) -> int:
    from orchestra_jax.train.eval_command import evaluate_from_cli

    configure_cli_logging()
    return evaluate_from_cli(args.config, args.checkpoint, args.out, args.overrides)


def _export(args: argparse.Namespace) -> int:
    from orchestra_jax.train.export import export_from_cli

    configure_cli_logging()
    return export_from_cli(args.workdir, args.out, args.step)


_CONFIG_HELP = ("experiment file with get_config() (experiments/*.py); FILE:ARG calls "
                "get_config(ARG) with the string ARG (ml_collections.config_flags' convention)")
_OVERRIDES_HELP = ("Any config field can be overridden: --config.a.b=value or --config.a.b "
                   "value (typed and checked against orchestra_jax/train/schema.py; a bad key "
                   "or value stops with exit status 2, naming it, before the workdir is "
                   "touched).")


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str], str | None]:
    """Take the config overrides out of ``argv``: ``--config.a.b=value``, or ``--config.a.b
    value`` with the value as the next element (``ml_collections.config_flags``' two
    spellings). Returns the other arguments, the overrides as ``--config.a.b=value`` strings,
    and the first override left without a value (None when there is none)."""
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--config."):
            rest.append(arg)
        elif "=" in arg:
            overrides.append(arg)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            overrides.append(f"{arg}={argv[i + 1]}")
            i += 1
        else:
            return rest, overrides, arg
        i += 1
    return rest, overrides, None


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """`orchestra train` and its multi-process flags."""
    train = sub.add_parser(
        "train", help="RL training of an orchestrator (resumes from the workdir's checkpoint)",
        epilog=_OVERRIDES_HELP)
    train.add_argument("--config", required=True, metavar="FILE[:ARG]", help=_CONFIG_HELP)
    train.add_argument("--workdir", required=True, metavar="DIR",
                       help="run directory: config.json, checkpoints, TensorBoard events "
                            "(a local path or a URL such as gs://bucket/run)")
    place = train.add_argument_group(
        "multi-process runs", "one process per host; default: $ORCHESTRA_COORDINATOR, "
        "$ORCHESTRA_NUM_PROCESSES, $ORCHESTRA_PROCESS_ID (then JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID); on a TPU pod slice none are needed")
    place.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0's coordinator service")
    place.add_argument("--num_processes", type=int, metavar="N", help="processes in the run")
    place.add_argument("--process_id", type=int, metavar="I", help="this process, 0..N-1")
    train.set_defaults(run=_train, overrides=[])


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
                       help="packaged model name, .gguf file, HF checkpoint directory, "
                            "Hugging Face hub id (org/name: local cache first), or a run's "
                            "workdir (its latest policy, exported once to WORKDIR/export/)")
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
    serve.add_argument("--chat-template", metavar="NAME_OR_FILE",
                       help="a name in tokenization.NAMED_CHAT_TEMPLATES (chatml_tools, "
                            "compact, ...) or a Jinja file, rendered instead of the model's "
                            "own template")
    serve.add_argument("--decode-chunk-tokens", type=int, metavar="N",
                       help="most decode steps per batch (default 64): a disconnected "
                            "client's request leaves the batch between chunks; 0: whole replies")
    serve.add_argument("--scan-layers", action="store_true",
                       help="scan over layers (much faster compilation)")
    serve.add_argument("--api-key-env", metavar="VAR",
                       help="require the key held in environment variable VAR as a Bearer token")
    serve.add_argument("--seed", type=int, default=0, help="sampling seed of unseeded requests")
    serve.set_defaults(run=_serve)

    _add_train_parser(sub)

    evaluate = sub.add_parser(
        "eval", help="evaluate a trained policy against the sft, random and fixed-route "
                     "policies on the held-out tasks",
        epilog="Writes --out (JSON: per policy accuracy, cost_usd, latency_s, calls per alias, "
               "preference_score, by_family) and the accuracy-vs-cost plot next to it (.png).")
    evaluate.add_argument("--config", required=True, metavar="FILE[:ARG]",
                          help="the experiment file the policy was trained with (FILE:ARG: "
                               "its get_config(ARG))")
    evaluate.add_argument("--checkpoint", required=True, metavar="DIR",
                          help="a run's workdir (its latest checkpoint) or a checkpoint "
                               "directory in Hugging Face layout (e.g. <workdir>/sft)")
    evaluate.add_argument("--out", required=True, metavar="FILE", help="the JSON to write")
    evaluate.set_defaults(run=_eval, overrides=[])

    export = sub.add_parser(
        "export", help="write a run's trained policy as a Hugging Face directory (safetensors, "
                       "config, tokenizer, chat template) for transformers, vLLM or serve",
        epilog="The policy is the moving average when the run keeps one (train.ema_decay).")
    export.add_argument("--workdir", required=True, metavar="DIR",
                        help="the run directory of `orchestra train`")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="the directory to write (absent, empty, or an earlier export)")
    export.add_argument("--step", type=int, metavar="N",
                        help="the checkpoint step to export (default: the latest)")
    export.set_defaults(run=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `--config.a.b=value` / `--config.a.b value` overrides are not argparse options: collect
    # them for train / eval (their values are checked when the config loads).
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, overrides, no_value = _split_overrides(argv)
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if (overrides or no_value) and command not in ("train", "eval"):
        parser.error(f"unrecognized arguments: {' '.join([*overrides, no_value or ''])}".strip())
    if extra:
        if command not in ("train", "eval"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        print(f"orchestra {command}: unrecognized arguments {extra}; overrides look like "
              "--config.a.b=value or --config.a.b value", file=sys.stderr)
        return 2
    if no_value:
        print(f"orchestra {command}: {no_value} has no value; write {no_value}=VALUE or "
              f"{no_value} VALUE", file=sys.stderr)
        return 2
    if command in ("train", "eval"):
        args.overrides = overrides
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
