"""The learner's optimizer: AdamW (or Muon) behind global-norm clipping, with a learning-rate
schedule.

The method's released recipe is AdamW, lr 1e-6 constant, betas (0.9, 0.999), weight decay 0.01,
gradient clipping at global norm 1.0; those are the defaults here. Weight decay is masked off
norm scales and biases: decaying a norm's scale towards 0 (rather than towards its initial 1)
shrinks activations for no regularisation benefit, and decaying biases is conventionally avoided
(``decay_biases_and_norms=True`` decays them too, for a recipe that wants it).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ("constant", "cosine", "linear")
OPTIMIZERS = ("adamw", "muon")
#: Muon's updates are scaled to this RMS per entry (times the learning rate), which is about
#: AdamW's, so one learning rate serves both (Liu et al. 2025, "Muon is scalable").
MUON_CONSISTENT_RMS = 0.2


def _key_name(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _names(path: tuple[Any, ...]) -> list[str]:
    """The lower-cased names along ``path``, without the ``.value`` attribute an NNX variable
    flattens to, so that the last name is the parameter's own (``q_bias``, ``scale``)."""
    names = [_key_name(entry).lower() for entry in path]
    if len(names) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and names[-1] == "value":
        names.pop()
    return names


def _is_bias_or_norm(path: tuple[Any, ...]) -> bool:
    """Whether the parameter at ``path`` is a bias (its name holds ``bias``: the Qwen2-style
    attention's ``q_bias``/``k_bias``/``v_bias``, the value head's ``value_bias``) or belongs to
    a norm (a module whose name ends in ``norm``: ``input_norm``, ``post_attention_norm``,
    ``final_norm``, ``q_norm``, ``k_norm``). By path rather than rank: a stacked
    ``(layers, d)`` norm scale or a ``(layers, heads, head_dim)`` bias is still one."""
    names = _names(path)
    if any(name.endswith("norm") for name in names):
        return True
    return bool(names) and "bias" in names[-1]


def _decays(path: tuple[Any, ...], leaf: Any, decay_biases_and_norms: bool = False) -> bool:
    """Whether a parameter at ``path`` gets weight decay: weights do; scalars never; norm
    scales and biases only when ``decay_biases_and_norms`` asks."""
    if not decay_biases_and_norms and _is_bias_or_norm(path):
        return False
    return len(getattr(leaf, "shape", ())) > 0


def weight_decay_mask(params: Any, *, decay_biases_and_norms: bool = False) -> Any:
    """A tree like ``params`` of bools: True where weight decay applies (see `_decays`)."""
    return jax.tree_util.tree_map_with_path(
        functools.partial(_decays, decay_biases_and_norms=decay_biases_and_norms), params)


def muon_dimension_numbers(params: Any, *, embeddings: bool = False) -> Any:
    """Which parameters Muon orthogonalises, and as which matrix: the decoder layers' projection
    weights (attention q/k/v ``(d, heads, head_dim)`` and o ``(heads, head_dim, d)``, MLP
    ``(d_in, d_out)``; a leading stacked-layers axis is a batch axis), each as the matrix from
    its input to its output features. Everything else -- the embedding (the tied LM head), a
    separate LM head, the value head, norm scales, biases -- gets None, i.e. AdamW: Muon is
    for hidden matrices, whose gradient is dominated by a few directions that orthogonalising
    evens out. ``embeddings=True`` adds the embedding (as the head's matrix from hidden size
    to vocabulary) and a separate LM head: the head's gradient sums every decision's hidden
    state, so it is the most nearly rank-one of all."""
    from optax.contrib import MuonDimensionNumbers

    def spec(path: tuple[Any, ...], leaf: Any) -> Any:
        names = _names(path)
        ndim = len(getattr(leaf, "shape", ()))
        if embeddings and ndim == 2 and names[0] in ("embed", "lm_head"):
            # embed is (vocab, d): the head reads it as d -> vocab; lm_head is (d, vocab).
            return (MuonDimensionNumbers(1, 0) if names[0] == "embed"
                    else MuonDimensionNumbers(0, 1))
        if "layers" not in names or ndim == 0 or _is_bias_or_norm(path):
            return None
        last = names[-1]
        if last in ("q_proj", "k_proj", "v_proj") and ndim >= 3:
            return MuonDimensionNumbers(ndim - 3, (ndim - 2, ndim - 1))
        if last == "o_proj" and ndim >= 3:
            return MuonDimensionNumbers((ndim - 3, ndim - 2), ndim - 1)
        if ndim >= 2:
            return MuonDimensionNumbers(ndim - 2, ndim - 1)
        return None

    return jax.tree_util.tree_map_with_path(spec, params)


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
    name: str = "adamw",
    muon_embeddings: bool = False,
    decay_biases_and_norms: bool = False,
) -> optax.GradientTransformation:
    """``clip_by_global_norm(grad_clip)`` then AdamW with the schedule; ``grad_clip=None`` or
    ``0`` disables clipping. Decay is masked by ``weight_decay_mask``: off biases and norm
    scales unless ``decay_biases_and_norms``.

    ``name="muon"``: Muon (``optax.contrib.muon``, Nesterov momentum 0.95, updates scaled to
    ``MUON_CONSISTENT_RMS``) on the matrices of ``muon_dimension_numbers`` and, with the same
    schedule and decay, Adam on the rest (Nesterov Adam: optax's muon uses its own Nesterov
    flag on both sides). Why it is offered: a gradient summed over many prompts that
    share most of their hidden state is nearly rank one; AdamW then moves every prompt's
    output alike, while Muon's orthogonalised step gives the directions that tell prompts
    apart the same size as the shared one. ``muon_embeddings``: see
    ``muon_dimension_numbers``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    learning_rate = make_schedule(lr, schedule=schedule, warmup_steps=warmup_steps,
                                  total_steps=total_steps, final_lr_fraction=final_lr_fraction)
    decay_mask = functools.partial(weight_decay_mask,
                                   decay_biases_and_norms=decay_biases_and_norms)
    if name == "muon":
        from optax.contrib import muon

        inner = muon(learning_rate, weight_decay=weight_decay,
                     weight_decay_mask=decay_mask, adam_b1=b1, adam_b2=b2,
                     adam_weight_decay=weight_decay, eps=eps,
                     muon_weight_dimension_numbers=functools.partial(
                         muon_dimension_numbers, embeddings=muon_embeddings),
                     consistent_rms=MUON_CONSISTENT_RMS)
        if weight_decay:
            # optax's muon decays its Adam side (embedding, head, norms, biases) unmasked.
            inner = _decay_only_where(inner, decay_mask)
    else:
        inner = optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                            mask=decay_mask)
    if not grad_clip:
        return inner
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be > 0 (or None), got {grad_clip}")
    return optax.chain(optax.clip_by_global_norm(grad_clip), inner)


def _decay_only_where(inner: optax.GradientTransformation,
                      mask: Any) -> optax.GradientTransformationExtraArgs:
    """``inner`` with decoupled weight decay restricted to ``mask(params)``, for an optimizer
    that offers no mask of its own (optax's muon, whose Adam side decays every parameter).

    Why zeroed params: a decoupled decay adds ``weight_decay * param`` to the update, and the
    params are read for nothing else (Muon and Adam scale the gradient alone), so handing
    ``inner`` a zero where the mask says no removes exactly the decay there, while decayed
    parameters see their own values and update bit for bit as before. Stateless: ``inner``'s
    state (and so checkpoints and shardings) keeps its structure."""

    def update(updates: Any, state: Any, params: Any = None, **extra: Any) -> Any:
        if params is not None:
            params = jax.tree.map(lambda p, keep: p if keep else jnp.zeros_like(p),
                                  params, mask(params))
        return inner.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(inner.init, update)


#: The name of the multiplier `with_lr_scale` keeps in the optimizer state.
_LR_SCALE = "step_size"


def with_lr_scale(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` followed by a multiplier that lives in the optimizer state (1 at first), which
    `set_lr_scale` replaces between steps. Why: an RL step runs a varying number of optimizer
    updates (one per mini-batch of the turn-samples its filters keep), so a schedule over
    optax's update count cannot say where in the run it is; the training loop evaluates the
    schedule at the RL step instead and sets it here. Scaling the final update is scaling the
    learning rate, decoupled weight decay included (AdamW and Muon both multiply it by lr)."""
    return optax.chain(inner, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def set_lr_scale(opt_state: Any, value: float) -> Any:
    """``opt_state`` of a `with_lr_scale` optimizer with its multiplier set to ``value``, on
    the device placement of the multiplier it replaces."""
    inner_state, scale_state = opt_state
    old = scale_state.hyperparams[_LR_SCALE]
    if isinstance(old, jax.Array):  # from host memory: a mesh may span processes
        new = jax.device_put(np.asarray(value, dtype=old.dtype), old.sharding)
    else:
        new = jnp.asarray(value, dtype=old.dtype)
    hyperparams = dict(scale_state.hyperparams, **{_LR_SCALE: new})
    return (inner_state, scale_state._replace(hyperparams=hyperparams))
