"""The learner's optimizer: AdamW behind global-norm clipping, with a learning-rate schedule.

The method's released recipe is AdamW, lr 1e-6 constant, betas (0.9, 0.999), weight decay 0.01,
gradient clipping at global norm 1.0; those are the defaults here. Weight decay is masked off
norm scales and biases: decaying a norm's scale towards 0 (rather than towards its initial 1)
shrinks activations for no regularisation benefit, and decaying biases is conventionally avoided.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

SCHEDULES = ("constant", "cosine", "linear")


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _decays(path: tuple[Any, ...], leaf: Any) -> bool:
    """Whether a parameter at ``path`` gets weight decay: matrices do; norm scales, biases and
    scalars do not (a stacked ``(layers, d)`` norm scale is still a norm, hence the path test
    rather than a rank test)."""
    names = [_key_name(entry).lower() for entry in path]
    if any(name.endswith("norm") for name in names):
        return False
    if names and "bias" in names[-1]:
        return False
    return len(getattr(leaf, "shape", ())) > 0


def weight_decay_mask(params: Any) -> Any:
    """A tree like ``params`` of bools: True where weight decay applies."""
    return jax.tree_util.tree_map_with_path(_decays, params)


def make_schedule(
    lr: float,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    final_lr_fraction: float = 0.0,
) -> optax.Schedule:
    """Learning rate by step: a linear warm-up from 0 over ``warmup_steps``, then constant, a
    cosine decay or a linear decay to ``final_lr_fraction * lr`` at ``total_steps``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if lr < 0:
        raise ValueError(f"learning rate must be >= 0, got {lr}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if schedule == "constant":
        main = optax.constant_schedule(lr)
    else:
        if total_steps is None or total_steps <= warmup_steps:
            raise ValueError(f"schedule {schedule!r} needs total_steps > warmup_steps "
                             f"({warmup_steps}), got {total_steps}")
        decay_steps = total_steps - warmup_steps
        if schedule == "cosine":
            main = optax.cosine_decay_schedule(lr, decay_steps, alpha=final_lr_fraction)
        else:
            main = optax.linear_schedule(lr, lr * final_lr_fraction, decay_steps)
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def make_optimizer(
    lr: float = 1e-6,
    *,
    schedule: str = "constant",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    final_lr_fraction: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    grad_clip: float | None = 1.0,
) -> optax.GradientTransformation:
    """``clip_by_global_norm(grad_clip)`` then AdamW with the schedule; ``grad_clip=None`` or
    ``0`` disables clipping. Decay is masked by ``weight_decay_mask``."""
    learning_rate = make_schedule(lr, schedule=schedule, warmup_steps=warmup_steps,
                                  total_steps=total_steps, final_lr_fraction=final_lr_fraction)
    adamw = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                        mask=weight_decay_mask)
    if not grad_clip:
        return adamw
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be > 0 (or None), got {grad_clip}")
    return optax.chain(optax.clip_by_global_norm(grad_clip), adamw)
