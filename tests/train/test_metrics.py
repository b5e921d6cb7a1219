"""The metrics writer's event files, read back with tensorboard's own reader, and the
rollout statistics computed from hand-built trajectories."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from tensorboard import data_compat
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.util import tensor_util

from orchestra_jax.envs.base import CallRecord
from orchestra_jax.rollout.statistics import (
    rollout_metrics,
    tool_usage_histogram,
    trajectory_markdown,
)
from orchestra_jax.rollout.trajectory import Trajectory, TurnSample
from orchestra_jax.tools.results import ToolErrorKind
from orchestra_jax.train.metrics import TAGS, MetricsWriter, is_documented, update_tags


def _read(logdir: Path) -> ea.EventAccumulator:
    acc = ea.EventAccumulator(
        str(logdir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}
    )
    acc.Reload()
    return acc


def _record(turn, tool, alias, cost=0.0, latency=0.0, error=None, tokens=(0, 0)):
    return CallRecord(
        turn=turn, tool=tool, arguments={"model": alias} if alias else {}, alias=alias,
        model=None, cost_usd=cost, latency_s=latency, tokens_in=tokens[0],
        tokens_out=tokens[1], error_kind=error,
    )


def _sample(turn, *, malformed=False, errors=(), prompt=3, completion=2, text="t"):
    return TurnSample(
        turn=turn, prompt_ids=list(range(prompt)), completion_ids=list(range(completion)),
        completion_logprobs=[-0.5] * completion, params_version=0, finish_reason="stop",
        text=text, malformed=malformed, format_errors=list(errors),
    )


def _trajectories() -> list[Trajectory]:
    a = Trajectory(
        task_id="a", mode="qa", turns=2, done=True, outcome=1.0, termination="answered",
        wall_s=4.0,
        samples=[_sample(0), _sample(1)],
        records=[
            _record(0, "search", "cheap", cost=0.01, latency=1.0, tokens=(10, 5)),
            _record(1, "answer", "big", cost=0.10, latency=2.0, tokens=(20, 5)),
        ],
    )
    b = Trajectory(
        task_id="b", mode="qa", turns=3, done=False, outcome=0.0, termination="max_turns",
        wall_s=2.0,
        samples=[
            _sample(0, malformed=True, errors=["malformed_json"]),
            _sample(1, errors=["duplicate_call"]),
            _sample(2),
        ],
        records=[
            _record(1, "search", "cheap", cost=0.01, latency=0.5, error=ToolErrorKind.TIMEOUT),
            _record(1, "enhance_reasoning", None, cost=0.0, latency=3.0,
                    error=ToolErrorKind.NONZERO_EXIT),
            _record(2, "search", "cheap", cost=0.02, latency=0.5),
        ],
    )
    return [a, b]


def test_scalars_read_back_under_documented_tags(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        for step in range(3):
            written = writer.scalars(step, {
                "train/reward": 0.5 + step, "train/accuracy": 0.25,
                "train/cost_usd": np.float32(0.125), "train/latency_s": 2.0,
                "train/kl": 0.01, "train/entropy": 1.5, "time/step_s": 3.0,
            })
            assert written == 7
    acc = _read(tmp_path)
    tags = set(acc.Tags()["scalars"])
    assert {"train/reward", "train/accuracy", "train/cost_usd", "train/latency_s",
            "train/kl", "train/entropy", "time/step_s"} <= tags
    assert [(e.step, e.value) for e in acc.Scalars("train/reward")] == [
        (0, 0.5), (1, 1.5), (2, 2.5)]
    assert acc.Scalars("train/cost_usd")[0].value == pytest.approx(0.125)
    assert writer.undocumented_tags == set()


def test_non_finite_and_non_numeric_scalars_are_skipped_and_counted(tmp_path, caplog):
    with MetricsWriter(tmp_path) as writer:
        for step in range(2):
            writer.scalars(step, {
                "train/reward": math.nan, "train/kl": math.inf, "train/lr": "fast",
                "train/accuracy": 0.5,
            })
    assert writer.skipped == {"train/reward": 2, "train/kl": 2, "train/lr": 2}
    # one warning per tag, not one per skip
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 3
    acc = _read(tmp_path)
    assert acc.Tags()["scalars"] == ["train/accuracy"]
    assert len(acc.Scalars("train/accuracy")) == 2


def test_histogram_is_a_real_histogram_the_dashboard_reads(tmp_path):
    values = [0, 1, 1, 2, 2, 2, 3, math.nan, math.inf]
    with MetricsWriter(tmp_path, histogram_buckets=4) as writer:
        assert writer.histogram(5, "hist/calls_per_episode", values)
        assert not writer.histogram(6, "hist/calls_per_episode/none", [math.nan])
        assert writer.histogram(7, "hist/calls_per_episode/one", [2, 2, 2])
    assert writer.skipped["hist/calls_per_episode"] == 1  # the dropped non-finite values
    acc = _read(tmp_path)
    assert "hist/calls_per_episode/none" not in acc.Tags()["histograms"]
    (event,) = acc.Histograms("hist/calls_per_episode")
    h = event.histogram_value
    assert event.step == 5
    assert (h.min, h.max, h.num, h.sum, h.sum_squares) == (0, 3, 7, 11, 23)
    assert sum(h.bucket) == 7 and len(h.bucket) == 4
    assert list(h.bucket_limit) == [0.75, 1.5, 2.25, 3.0]
    (constant,) = acc.Histograms("hist/calls_per_episode/one")
    assert list(constant.histogram_value.bucket) == [3]
    # The Histograms plugin migrates the legacy proto to its own format: check it does.
    raw = next(
        v for e in ea.event_file_loader.EventFileLoader(str(writer.path)).Load()
        for v in e.summary.value if v.tag == "hist/calls_per_episode"
    )
    migrated = data_compat.migrate_value(raw)
    assert migrated.metadata.plugin_data.plugin_name == "histograms"
    buckets = tensor_util.make_ndarray(migrated.tensor)
    assert buckets[:, 2].sum() == 7 and buckets[0, 0] == 0 and buckets[-1, 1] == 3


def test_text_reads_back_as_a_text_plugin_tensor(tmp_path):
    markdown = "**task** `a` · outcome 1\n\n- turn 0: ✓"
    with MetricsWriter(tmp_path) as writer:
        assert writer.text(3, "text/trajectory", markdown)
        assert not writer.text(4, "text/trajectory", 42)  # type: ignore[arg-type]
    acc = _read(tmp_path)
    assert acc.SummaryMetadata("text/trajectory").plugin_data.plugin_name == "text"
    (event,) = acc.Tensors("text/trajectory")
    assert event.step == 3
    assert tensor_util.make_ndarray(event.tensor_proto).item().decode("utf-8") == markdown


def test_disabled_writer_creates_nothing_and_accepts_calls(tmp_path):
    logdir = tmp_path / "off"
    writer = MetricsWriter(logdir, enabled=False)
    assert writer.scalars(0, {"train/reward": 1.0}) == 0
    assert not writer.histogram(0, "hist/x", [1.0])
    assert not writer.text(0, "text/x", "x")
    writer.flush()
    writer.close()
    assert not logdir.exists() and writer.path is None


def test_write_after_close_is_dropped_not_raised(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.scalars(0, {"train/reward": 1.0})
    writer.close()
    assert writer.scalars(1, {"train/reward": 2.0}) == 0
    writer.close()
    assert [e.step for e in _read(tmp_path).Scalars("train/reward")] == [0]


def test_undocumented_tags_are_written_unchanged_and_reported(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.scalars(0, {"train/rewards": 1.0, "eval/accuracy": 0.5})
    assert writer.undocumented_tags == {"train/rewards"}
    assert set(_read(tmp_path).Tags()["scalars"]) == {"train/rewards", "eval/accuracy"}


def test_tag_patterns():
    for tag in ["train/reward", "train/calls_per_episode/expert-1",
                "train/calls_per_episode/Qwen/Qwen3-8B", "train/tool_errors/timeout",
                "train/format_error_rate", "train/clipfrac_low", "train/clipfrac_high",
                "time/update_s", "eval/cost_usd", "hist/calls_per_episode/a"]:
        assert is_documented(tag), tag
    for tag in ["train/rewards", "reward", "train/calls_per_episode/", "time/step"]:
        assert not is_documented(tag), tag
    assert all(isinstance(v, str) and v for v in TAGS.values())


def test_update_tags_maps_update_step_names():
    assert update_tags({"approx_kl": 0.1, "loss/entropy": 2.0, "grad_norm": 3.0,
                        "ratio_max": 1.2}) == {
        "train/kl": 0.1, "train/entropy": 2.0, "train/grad_norm": 3.0, "update/ratio_max": 1.2}
    assert all(is_documented(t) for t in update_tags({"anything": 1}))


def test_rollout_metrics_from_trajectories():
    m = rollout_metrics(_trajectories())
    expected = {
        "train/episodes": 2, "train/accuracy": 0.5, "train/cost_usd": 0.07,
        "train/latency_s": 3.5, "train/wall_s": 3.0, "train/turns": 2.5,
        "train/answered_rate": 0.5, "train/termination/answered": 0.5,
        "train/termination/max_turns": 0.5,
        "train/prompt_tokens": 7.5, "train/completion_tokens": 5.0, "train/tool_tokens": 20.0,
        "train/calls_per_episode": 2.5,
        "train/calls_per_episode/cheap": 1.5, "train/calls_per_episode/big": 0.5,
        "train/calls_per_episode/enhance_reasoning": 0.5,
        "train/call_share/cheap": 0.6, "train/call_share/big": 0.2,
        "train/call_share/enhance_reasoning": 0.2,
        "train/tool_calls_per_episode/search": 1.5,
        "train/tool_calls_per_episode/answer": 0.5,
        "train/tool_calls_per_episode/enhance_reasoning": 0.5,
        "train/tool_error_rate": 0.4,
        "train/tool_errors/timeout": 0.5, "train/tool_errors/nonzero_exit": 0.5,
        "train/format_error_rate": 0.4,
        "train/format_errors/malformed_json": 0.2, "train/format_errors/duplicate_call": 0.2,
    }
    assert m == pytest.approx(expected)
    assert all(is_documented(tag) for tag in m)


def test_rollout_metrics_of_an_empty_step():
    assert rollout_metrics([]) == {"train/episodes": 0.0}
    assert tool_usage_histogram([]) == {}
    no_calls = Trajectory(task_id="x", mode="qa", termination="error", error="boom")
    m = rollout_metrics([no_calls])
    assert m["train/tool_error_rate"] == 0.0 and m["train/calls_per_episode"] == 0.0
    assert "train/format_error_rate" not in m  # no turns, no rate


def test_tool_usage_histogram_and_markdown_round_trip(tmp_path):
    trajectories = _trajectories()
    hists = tool_usage_histogram(trajectories)
    assert {k: v.tolist() for k, v in hists.items()} == {
        "hist/calls_per_episode": [2, 3],
        "hist/calls_per_episode/big": [1, 0],
        "hist/calls_per_episode/cheap": [1, 2],
        "hist/calls_per_episode/enhance_reasoning": [0, 1],
    }
    with MetricsWriter(tmp_path) as writer:
        writer.scalars(1, rollout_metrics(trajectories))
        for tag, values in hists.items():
            writer.histogram(1, tag, values)
        writer.text(1, "text/trajectory", trajectory_markdown(trajectories[1]))
    assert writer.undocumented_tags == set()
    acc = _read(tmp_path)
    assert set(acc.Tags()["histograms"]) == set(hists)
    assert acc.Scalars("train/calls_per_episode/cheap")[0].value == pytest.approx(1.5)
    text = tensor_util.make_ndarray(acc.Tensors("text/trajectory")[0].tensor_proto).item()
    assert b"max_turns" in text and b"error nonzero_exit" in text
