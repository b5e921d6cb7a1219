"""The grain task pipeline: deterministic per-epoch shuffles and exact resume from its state."""

import json

import pytest

from orchestra_jax.data import PipelineError, task_pipeline
from orchestra_jax.envs.qa import QATask

TASKS = [QATask(id=f"t{i}", question=f"q{i}?", answer=str(i)) for i in range(11)]


def _ids(batch):
    return [task.id for task in batch]


def _take(it, n):
    return [_ids(next(it)) for _ in range(n)]


def test_same_seed_gives_same_batches_and_other_seed_differs():
    first = _take(task_pipeline(TASKS, seed=7, prompts_per_step=4), 6)
    again = _take(task_pipeline(TASKS, seed=7, prompts_per_step=4), 6)
    other = _take(task_pipeline(TASKS, seed=8, prompts_per_step=4), 6)
    assert first == again
    assert first != other
    assert all(len(batch) == 4 for batch in first)


def test_each_epoch_is_a_fresh_permutation_of_all_tasks():
    it = task_pipeline(TASKS, seed=3, prompts_per_step=1)
    epochs = [[_ids(next(it))[0] for _ in range(len(TASKS))] for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(t.id for t in TASKS)
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[0] != [t.id for t in TASKS]


def test_batches_are_lists_of_the_task_objects_themselves():
    batch = next(task_pipeline(TASKS, seed=0, prompts_per_step=3))
    assert isinstance(batch, list)
    assert all(isinstance(task, QATask) for task in batch)


def test_resume_from_state_yields_exactly_the_batches_that_would_have_come():
    it = task_pipeline(TASKS, seed=5, prompts_per_step=4)
    _take(it, 5)
    state = it.get_state()
    expected = _take(it, 3)
    # The state goes through JSON on its way into the checkpoint.
    state = json.loads(json.dumps(state))
    resumed = task_pipeline(TASKS, seed=5, prompts_per_step=4)
    resumed.set_state(state)
    assert _take(resumed, 3) == expected


def test_state_argument_resumes_like_set_state():
    it = task_pipeline(TASKS, seed=5, prompts_per_step=4)
    _take(it, 4)
    state = it.get_state()
    resumed = task_pipeline(TASKS, seed=5, prompts_per_step=4, state=state)
    assert _take(resumed, 2) == _take(it, 2)


@pytest.mark.parametrize("state", [{"bogus": 1}, {"next_index": "x"}, {"next_index": -2}, [3]])
def test_a_damaged_state_is_a_pipeline_error_naming_it(state):
    with pytest.raises(PipelineError, match="state"):
        task_pipeline(TASKS, seed=5, prompts_per_step=4, state=state)


def test_no_shuffle_keeps_source_order_and_wraps_around():
    it = task_pipeline(TASKS, seed=0, prompts_per_step=4, shuffle=False)
    flat = [task_id for batch in _take(it, 3) for task_id in batch]
    assert flat == [t.id for t in TASKS] + ["t0"]


def test_finite_epochs_stop_and_drop_the_partial_batch():
    batches = list(task_pipeline(TASKS, seed=1, prompts_per_step=4, num_epochs=2))
    assert len(batches) == (2 * len(TASKS)) // 4
    assert all(len(batch) == 4 for batch in batches)


@pytest.mark.parametrize(
    ("tasks", "kwargs", "names"),
    [
        ([], {"seed": 0, "prompts_per_step": 2}, "empty"),
        ("abc", {"seed": 0, "prompts_per_step": 2}, "tasks must be"),
        (TASKS, {"seed": -1, "prompts_per_step": 2}, "seed"),
        (TASKS, {"seed": 0, "prompts_per_step": 0}, "prompts_per_step"),
        (TASKS, {"seed": 0, "prompts_per_step": 2, "num_epochs": 0}, "num_epochs"),
        (TASKS[:2], {"seed": 0, "prompts_per_step": 5, "num_epochs": 1}, "cannot fill"),
    ],
)
def test_bad_arguments_raise_a_pipeline_error_naming_them(tasks, kwargs, names):
    with pytest.raises(PipelineError, match=names):
        task_pipeline(tasks, **kwargs)


def test_strata_balance_every_batch_and_resume_exactly():
    tasks = [f"{'aelm'[i % 4]}{i}" for i in range(40)]  # four kinds of ten
    strata = [t[0] for t in tasks]
    it = task_pipeline(tasks, seed=3, prompts_per_step=8, strata=strata)
    batches = [next(it) for _ in range(6)]  # 48 tasks: past one pass over each stratum of 10
    for batch in batches:
        assert sorted(t[0] for t in batch) == sorted("aelm" * 2)
    first_pass = [t for batch in batches for t in batch][:40]
    assert sorted(first_pass) == sorted(tasks)  # each task once before any repeats
    state = it.get_state()
    expected = next(it)
    resumed = task_pipeline(tasks, seed=3, prompts_per_step=8, strata=strata, state=state)
    assert next(resumed) == expected
    other = task_pipeline(tasks, seed=4, prompts_per_step=8, strata=strata)
    assert [next(other) for _ in range(6)] != batches
    with pytest.raises(PipelineError, match="strata has 3 labels for 40 tasks"):
        task_pipeline(tasks, seed=3, prompts_per_step=8, strata=strata[:3])


def test_strata_weights_deal_each_batch_in_their_proportions_and_resume_exactly():
    tasks = [f"{'aelm'[i % 4]}{i}" for i in range(40)]
    strata = [t[0] for t in tasks]
    weights = {"e": 2, "l": 2, "m": 3}  # "a" unnamed: weight 1
    it = task_pipeline(tasks, seed=3, prompts_per_step=8, strata=strata, strata_weights=weights)
    batches = [next(it) for _ in range(6)]
    for batch in batches:
        assert sorted(t[0] for t in batch) == sorted("a" + "ee" + "ll" + "mmm")
    state = it.get_state()
    expected = next(it)
    resumed = task_pipeline(tasks, seed=3, prompts_per_step=8, strata=strata,
                            strata_weights=weights, state=state)
    assert next(resumed) == expected
    # Equal weights are the plain round-robin.
    plain = task_pipeline(tasks, seed=3, prompts_per_step=8, strata=strata)
    equal = task_pipeline(tasks, seed=3, prompts_per_step=8, strata=strata,
                          strata_weights={"a": 1, "e": 1, "l": 1, "m": 1})
    assert [next(plain) for _ in range(6)] == [next(equal) for _ in range(6)]


@pytest.mark.parametrize("weights, strata, names", [
    ({"x": 2}, "aelm", "labels \\['x'\\] are not among the strata"),
    ({"a": 0}, "aelm", "positive integers"),
    ({"a": 1.5}, "aelm", "positive integers"),
    ({"a": 2}, None, "strata_weights needs strata"),
])
def test_bad_strata_weights_raise_naming_them(weights, strata, names):
    tasks = [f"{'aelm'[i % 4]}{i}" for i in range(40)]
    labels = None if strata is None else [t[0] for t in tasks]
    with pytest.raises(PipelineError, match=names):
        task_pipeline(tasks, seed=3, prompts_per_step=8, strata=labels, strata_weights=weights)
