"""orchestra train --config experiments/orchestrator_qwen3_8b.py --workdir gs://BUCKET/orch8b \
    --config.model.path=/checkpoints/Qwen3-8B --config.data.path=/data/orchestra/train.jsonl \
    --config.experts.file=/data/orchestra/experts.json \
    --config.search.corpus=/data/orchestra/corpus.jsonl

Every host of the slice runs that same command: `launch/tpu_pod.sh --accelerator v5p-128 --
orchestra train …` starts it with `--worker=all` (`--dry-run` prints the gcloud commands);
`launch/slurm.sh` and `launch/xpk.sh` do the same on GPU clusters (launch/README.md). The
workdir must be shared storage (gs://, with the [tpu] or [gcs] extra). docs/scaling.md gives
the per-device memory of the compiled update step and sampler at this recipe's lengths.

The paper's recipe: ToolOrchestra's Orchestrator-8B, GRPO from Qwen3-8B with the outcome +
efficiency + preference reward, with the hyper-parameters of the released training script.

What to expect. This recipe is written for a TPU v5p-128 slice (64 chips, 95 GB of HBM each; JAX
sees 64 devices), mesh (data 1, fsdp 16, tensor 4); it has not been run by this project and
cannot run on a CPU or one GPU. The paper trained on 16 H100 (FSDP, sequence parallel 2,
gradient checkpointing) with three 8-GPU nodes serving the tool models; reaching its numbers
needs those tool endpoints too. The result to compare with is the paper's Table 1:
Orchestrator-8B with all tools scores HLE 37.1, FRAMES 76.3, tau2-bench 80.2 at 9.2 US cents
and 8.2 minutes per task (prompted Qwen3-8B: 30.6 / 68.9 / 72.3 at 27.6 cents). Runtime is not
measured here; a step is dominated by the rollouts (up to 30 turns; expert calls average ~30 s).
For a v5p-64 slice (32 chips) pass --config.mesh.shape="(1, 8, 4)"; for the paper's 16 H100
(2 hosts x 8) pass --config.mesh.shape="(1, 8, 2)": with pure FSDP, (1, 16, 1), the update step
needs ~101 GiB a GPU and does not fit (docs/scaling.md).

Inputs the user gives:
* model.path: a local (or mounted) directory with the Hugging Face Qwen/Qwen3-8B checkpoint
  (config.json, *.safetensors, tokenizer.json). The default "/checkpoints/Qwen3-8B" is a
  placeholder that names where to put it; it also initialises the frozen KL reference.
* data.path: the training tasks (the paper mixes qa tasks with ToolScale func_call tasks):
  the released training records (per-task alias mapping, prices, tool subsets and preference
  vector) or plain {id, question, answer} rows; func_call rows are reported and skipped until
  the tau2 environment lands.
* experts.file: JSON, expert name -> {model, endpoint (OpenAI-compatible base URL: vLLM,
  SGLang, NIM, llama.cpp, `orchestra serve`), api_key_env, timeout_s, price}; the records'
  model_mapping values are these names, and "judge" names the grader.
* search.corpus: the retrieval corpus, JSONL {id, title, text}.

On a CPU, with a tiny Hugging Face checkpoint and local experts, one real step runs
(tests/train/test_qa_setting.py): --config.model.path=TINY_HF_DIR --config.mesh.shape="(1,1,1)"
--config.model.dtype=float32 --config.model.scan_layers=False --config.rollout.prompts_per_step=1
--config.rollout.group_size=2 --config.rollout.max_turns=2 --config.rollout.max_new_tokens=16
--config.rollout.max_prompt_tokens=2048 --config.rollout.max_batch_size=2
--config.train.steps=1 --config.train.mini_batch_size=2 --config.filter.min_group_std=None
--config.filter.drop_invalid_final_output=False --config.model.chat_template=chatml_tools
plus the data, experts and corpus paths (a random tiny policy rarely calls a tool, so without
the two filter overrides its one group would be dropped and the step would update nothing).

Numbers (released training script; see the project's method notes, section 4):
16 prompts x 8 rollouts per step; prompts up to 24,000 tokens, 8,768 new tokens per turn,
temperature 1.0, top-p 1; 30 turns (the paper says 50). PPO-clip with clip 0.2 / 0.28 and dual
clip 10, token-mean aggregation, k2 KL against the frozen base with coefficient 1e-4 *in the
loss*, no entropy bonus. AdamW, lr 1e-6 constant, betas (0.9, 0.999), weight decay 0.01,
gradient clipping 1.0; one PPO epoch over mini-batches of 16 turn-samples (many optimizer steps
per RL step); a checkpoint every step. Compute in bfloat16 with float32 master weights: at lr
1e-6 an update is ~1e-4 of a typical weight, below bfloat16's resolution (~4e-3), so bfloat16
weights would not move. Advantages follow the paper's formula; to add the release's extras, pass
--config.advantage.clip=3.0 --config.advantage.boost=0.1. train.steps is not given by the
method notes; 100 is a first-run budget, not the paper's.
"""

from __future__ import annotations

import ml_collections
from base import base_config


def get_config() -> ml_collections.ConfigDict:
    """The Orchestrator-8B recipe over the shared defaults."""
    config = base_config()

    config.model.preset = "qwen3_8b"
    config.model.path = "/checkpoints/Qwen3-8B"
    config.model.dtype = "bfloat16"
    config.model.param_dtype = "float32"
    config.model.remat = True
    config.model.scan_layers = True

    config.mesh.shape = (1, 16, 4)

    config.rollout.prompts_per_step = 16
    config.rollout.group_size = 8
    config.rollout.max_turns = 30
    config.rollout.max_prompt_tokens = 24000
    config.rollout.max_new_tokens = 8768
    config.rollout.temperature = 1.0
    config.rollout.top_p = 1.0
    config.rollout.episode_timeout_s = 3600.0
    config.rollout.max_batch_size = 128

    config.filter.min_group_std = 0.1

    config.advantage.estimator = "grpo"
    config.advantage.std = "sample"
    config.advantage.eps = 1e-6

    config.loss.policy_loss = "ppo_clip"
    config.loss.clip_low = 0.2
    config.loss.clip_high = 0.28
    config.loss.dual_clip = 10.0
    config.loss.agg_mode = "token-mean"
    config.loss.kl_coef = 1e-4
    config.loss.kl_estimator = "k2"
    config.loss.kl_in = "loss"
    config.loss.entropy_coef = 0.0

    config.optimizer.name = "adamw"
    config.optimizer.lr = 1e-6
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.weight_decay = 0.01
    config.optimizer.grad_clip = 1.0

    config.train.steps = 100
    config.train.mini_batch_size = 16
    config.train.ppo_epochs = 1
    config.train.micro_batches = 1
    config.train.checkpoint_every = 1
    config.train.keep_checkpoints = 3

    config.data.source = "qa"
    config.data.path = "/data/orchestra/train.jsonl"
    config.data.bad_rows = "skip"  # a bad record is reported and left out, not a lost job
    config.experts.file = "/data/orchestra/experts.json"
    config.experts.orchestrator_model = "qwen3-8b"  # its own tokens, as the release accounts
    config.experts.max_tokens = 8192
    config.search.corpus = "/data/orchestra/corpus.jsonl"
    config.search.k = 5
    config.judge.expert = "judge"  # an entry of the experts file (the paper: an LLM judge)

    return config
