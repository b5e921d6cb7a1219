"""RL maths: advantage estimators, policy losses, KL, entropy, loss aggregation, filters.

The public names (``compute_advantages``, ``policy_loss``, ``kl_divergence``,
``aggregate_loss``, ...) are addressed by name from configs; the device maths is pure
``jax.numpy`` and returns ``(sum, denominator)`` pairs that reduce late.

Names are resolved lazily (PEP 562) so that host code importing
``orchestra_jax.rl.filters`` (numpy only) does not pay for, or depend on, importing jax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # eager imports for type checkers and IDEs only
    from orchestra_jax.rl.advantages import (
        ADVANTAGES,
        compute_advantages,
        gae_advantages_and_returns,
        group_mean_std,
        register_advantage,
    )
    from orchestra_jax.rl.filters import (
        FilterResult,
        filter_samples,
        group_reward_std,
    )
    from orchestra_jax.rl.losses import (
        AGG_MODES,
        KL_ESTIMATORS,
        POLICY_LOSSES,
        aggregate_loss,
        entropy_from_logits,
        finalize_loss,
        kl_divergence,
        kl_loss,
        kl_penalized_rewards,
        policy_loss,
        ppo_metrics,
        register_policy_loss,
    )

_EXPORTS = {
    "orchestra_jax.rl.advantages": (
        "ADVANTAGES",
        "compute_advantages",
        "gae_advantages_and_returns",
        "group_mean_std",
        "register_advantage",
    ),
    "orchestra_jax.rl.losses": (
        "AGG_MODES",
        "KL_ESTIMATORS",
        "POLICY_LOSSES",
        "aggregate_loss",
        "entropy_from_logits",
        "finalize_loss",
        "kl_divergence",
        "kl_loss",
        "kl_penalized_rewards",
        "policy_loss",
        "ppo_metrics",
        "register_policy_loss",
    ),
    "orchestra_jax.rl.filters": (
        "FilterResult",
        "filter_samples",
        "group_reward_std",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [  # kept literal for linters; the lazy table above must name the same
    "ADVANTAGES",
    "AGG_MODES",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "FilterResult",
    "aggregate_loss",
    "compute_advantages",
    "entropy_from_logits",
    "filter_samples",
    "finalize_loss",
    "gae_advantages_and_returns",
    "group_mean_std",
    "group_reward_std",
    "kl_divergence",
    "kl_loss",
    "kl_penalized_rewards",
    "policy_loss",
    "ppo_metrics",
    "register_advantage",
    "register_policy_loss",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestra_jax.rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
