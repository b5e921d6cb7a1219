"""The grain pipeline that hands the RL loop one batch of tasks per step.

Why grain: its `MapDataset` is index based, so the whole position of the stream is one
integer (`{"next_index": n}`) that goes into the checkpoint next to the params; a resumed run
sees exactly the batches the interrupted run would have seen, with no replay of the data.

Order of transformations: shuffle -> repeat -> batch. Shuffling before repeating gives every
epoch its own permutation (grain folds the epoch number into the seed) and keeps epochs from
mixing; batching last means each task is used exactly once per epoch, whatever the number of
tasks, and a batch that straddles an epoch boundary may hold a task twice (harmless for GRPO:
it only enlarges that task's group).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import grain

_MAX_SEED = 2**32 - 1


class PipelineError(ValueError):
    """A task pipeline was asked for with arguments it cannot honour (names the argument)."""


def _check_source(tasks: Any) -> int:
    """Return the number of tasks, or raise naming what was wrong with `tasks`."""
    if isinstance(tasks, str | bytes) or not (
        hasattr(tasks, "__len__") and hasattr(tasks, "__getitem__")
    ):
        raise PipelineError(
            f"tasks must be a sequence or a grain random-access data source "
            f"(__len__ and __getitem__), got {type(tasks).__name__}"
        )
    n = len(tasks)
    if n == 0:
        raise PipelineError("tasks is empty: a task pipeline needs at least one task")
    return n


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def task_pipeline(
    tasks: Sequence[Any] | grain.sources.RandomAccessDataSource,
    *,
    seed: int,
    prompts_per_step: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    state: Mapping[str, Any] | None = None,
    strata: Sequence[Hashable] | None = None,
    strata_weights: Mapping[Hashable, int] | None = None,
) -> grain.DatasetIterator:
    """An iterator of lists of `prompts_per_step` tasks, one list per RL step.

    `strata` (one label per task, e.g. its family) balances the batches: each stratum is
    shuffled and repeated on its own and the strata are dealt round-robin, so a batch of
    `prompts_per_step` tasks holds the strata in equal numbers (up to one when they do not
    divide it) -- a step's gradient then never leans on whichever family the shuffle happened
    to favour. Without `num_epochs` a stratum smaller than the others simply repeats sooner;
    with it, the stream ends when the smallest stratum's last pass does. `strata_weights`
    (label -> positive int, unnamed labels weigh 1) deals the strata in those proportions
    instead -- e.g. more of a family the policy has not learnt yet; a batch whose size is a
    multiple of the weights' sum holds them exactly.

    `seed` fixes the per-epoch shuffles; `num_epochs=None` repeats forever, an integer stops
    after that many passes (the last, partial batch is dropped so every step has the same
    shape). Checkpoint `it.get_state()` (a small JSON-able dict) and resume by building the
    pipeline with the same arguments and `state=` that dict (or calling `it.set_state`);
    passing it here checks it, so a damaged state fails now, naming itself, not mid-run.
    """
    n = _check_source(tasks)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise PipelineError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
    if not _is_positive_int(prompts_per_step):
        raise PipelineError(
            f"prompts_per_step must be a positive integer, got {prompts_per_step!r}"
        )
    if num_epochs is not None and not _is_positive_int(num_epochs):
        raise PipelineError(f"num_epochs must be None or a positive integer, got {num_epochs!r}")
    if strata_weights is not None and strata is None:
        raise PipelineError("strata_weights needs strata (one label per task)")
    if num_epochs is not None and n * num_epochs < prompts_per_step:
        raise PipelineError(
            f"{n} tasks x num_epochs={num_epochs} cannot fill one batch of "
            f"prompts_per_step={prompts_per_step}"
        )

    if strata is not None:
        dataset = _stratified(tasks, strata, seed, shuffle, num_epochs, strata_weights)
    else:
        dataset = grain.MapDataset.source(tasks)
        if shuffle:
            dataset = dataset.shuffle(seed=seed)
        dataset = dataset.repeat(num_epochs)
    dataset = dataset.batch(
        prompts_per_step, drop_remainder=True, batch_fn=list
    )
    # Tasks are in memory: reader threads would only contend for the GIL (grain's own advice).
    read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    iterator = iter(dataset.to_iter_dataset(read_options))
    if state is not None:
        _restore_state(iterator, state)
    return iterator


def strata_weight_problems(labels: Iterable[Hashable], weights: Mapping[Hashable, Any],
                           ) -> tuple[list[Hashable], dict[Hashable, Any]]:
    """The names in `weights` that are not among `labels`, and the weights that are not
    positive integers -- one rule for the pipeline and for callers that check a config
    before building it."""
    known = set(labels)
    unknown = [label for label in weights if label not in known]
    bad = {label: w for label, w in weights.items() if not _is_positive_int(w)}
    return unknown, bad


def _stratified(tasks: Any, strata: Sequence[Hashable], seed: int, shuffle: bool,
                num_epochs: int | None,
                weights: Mapping[Hashable, int] | None = None) -> grain.MapDataset:
    """The strata's own (shuffled, repeated) streams dealt round-robin (in proportion to
    `weights`), in order of first appearance."""
    if len(strata) != len(tasks):
        raise PipelineError(f"strata has {len(strata)} labels for {len(tasks)} tasks")
    members: dict[Hashable, list[int]] = {}
    for index, label in enumerate(strata):
        members.setdefault(label, []).append(index)
    weights = dict(weights or {})
    unknown, bad = strata_weight_problems(members, weights)
    if unknown or bad:
        raise PipelineError(
            f"strata_weights {weights!r}: "
            + (f"labels {unknown!r} are not among the strata {list(members)!r}" if unknown
               else f"weights must be positive integers, got {bad!r}")
        )
    streams = []
    for k, indices in enumerate(members.values()):
        stream = grain.MapDataset.source([tasks[i] for i in indices])
        if shuffle:
            stream = stream.shuffle(seed=(seed + k) % (_MAX_SEED + 1))
        streams.append(stream.repeat(num_epochs))
    return grain.MapDataset.mix(streams, weights=[weights.get(label, 1) for label in members])


def _restore_state(iterator: grain.DatasetIterator, state: Mapping[str, Any]) -> None:
    """Apply a saved iterator state, or raise naming it: grain itself would fail with a bare
    KeyError or TypeError, or only at the next `next()`."""
    expected = iterator.get_state()
    if not isinstance(state, Mapping) or set(state) != set(expected):
        raise PipelineError(
            f"iterator state {state!r} does not match this pipeline's state layout "
            f"(keys {sorted(expected)})"
        )
    index = state.get("next_index")
    if "next_index" in expected and (
        isinstance(index, bool) or not isinstance(index, int) or index < 0
    ):
        raise PipelineError(f"iterator state {dict(state)!r}: next_index must be an int >= 0")
    try:
        iterator.set_state(dict(state))
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineError(f"cannot resume the task pipeline from state {state!r}: {exc}") from exc
