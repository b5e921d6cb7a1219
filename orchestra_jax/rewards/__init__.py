"""Rewards: the ToolOrchestra reward, the appendix-L preference score, outcome verifiers.

The reward and the score are pure `jnp` (they run inside jitted steps); the verifiers in
`orchestra_jax.rewards.verifiers` are host code that decides whether an answer is right.
Nothing here imports `rollout`, `rl` or `train`.
"""

from orchestra_jax.rewards.preference_score import preference_score, preference_scores
from orchestra_jax.rewards.toolorchestra import (
    NUM_EXTRA_FEATURES,
    dense_group_ids,
    feature_vector,
    group_minmax_normalize,
    toolorchestra_reward,
)
from orchestra_jax.rewards.verifiers import (
    Label,
    LLMJudge,
    Verdict,
    exact_match,
    math_equivalent,
    numeric_match,
    token_f1,
    verify_answer,
    verify_cheap,
)

__all__ = [
    "NUM_EXTRA_FEATURES",
    "LLMJudge",
    "Label",
    "Verdict",
    "dense_group_ids",
    "exact_match",
    "feature_vector",
    "group_minmax_normalize",
    "math_equivalent",
    "numeric_match",
    "preference_score",
    "preference_scores",
    "token_f1",
    "toolorchestra_reward",
    "verify_answer",
    "verify_cheap",
]
