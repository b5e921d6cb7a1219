"""Training metrics to TensorBoard event files, under documented tag names.

People judge a run by its TensorBoard curves, so the curves must mean the same thing in every
run: `TAGS` is the single table of tag names and what each one measures, and the training loop,
the evaluation hooks and the docs all name tags from it. Events are written with the
`tensorboard` package's own writer and protos -- tensorboard is already a dependency for
viewing, and TensorFlow (or tensorboardX) would be a heavy second one for nothing.

Three kinds of record are written, each in the form the stock dashboards read:

- scalars as `Summary.Value.simple_value` (Scalars dashboard);
- histograms as `HistogramProto` (the Histograms/Distributions dashboards migrate it);
- text as a string tensor with the text plugin's metadata (Text dashboard, markdown).

Tag policy: a tag that matches no documented pattern is still written unchanged (experiments
and ad-hoc probes must be able to log without editing this table), but it is logged once as
undocumented and collected in `MetricsWriter.undocumented_tags`, so a typo such as
`train/rewards` is noticed rather than silently forming a second curve.

A metrics writer must never end a training run: a non-finite or non-numeric value is skipped,
counted in `MetricsWriter.skipped` and warned about once per tag; nothing here raises on bad
values.

`rollout_metrics` and `tool_usage_histogram` (from `rollout.statistics`) turn a step's
trajectories into reward-independent numbers.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from orchestra_jax.train.paths import is_url

log = logging.getLogger(__name__)

#: Documented tag patterns and their meaning. `<name>` stands for one free-form segment
#: (an alias, an error kind, a metric name); it may contain "/" (model ids often do).
TAGS: dict[str, str] = {
    # --- outcome, reward and their price (per training step, means over the step's episodes)
    "train/reward": "Mean shaped reward of the step's episodes (the number RL maximises). "
    "With the ToolOrchestra reward it is relative to each group (features min-max normalised "
    "within it; a feature all rollouts share counts 0), so it can fall as the policy improves "
    "and its groups turn uniform: train/reward_raw_outcome, train/accuracy and "
    "train/cost_usd track progress.",
    "train/reward_raw_outcome": "The same reward with the outcome feature left as it is (0 or "
    "1) instead of min-max normalised in its group. The two differ only in groups whose "
    "rollouts all solved the task (the paper's normalisation gives them no outcome credit), "
    "by a constant within such a group that group-relative advantages never see; so this "
    "curve rises with the share of tasks the policy always solves.",
    "train/accuracy": "Mean verified outcome in [0, 1] of the step's episodes (reward-free).",
    "train/cost_usd": "Mean money spent per episode: the tools (experts, sandbox, search) and, "
    "where priced, the policy's own tokens; USD.",
    "train/latency_s": "Mean summed tool-call latency per episode, seconds (the method's "
    "latency: the policy's own generation time does not count).",
    "train/wall_s": "Mean real duration of an episode, seconds.",
    "train/turns": "Mean policy turns per episode.",
    "train/episodes": "Episodes in the step.",
    "train/answered_rate": "Fraction of episodes that ended with an answer.",
    "train/termination/<reason>": "Fraction of episodes ending for <reason> (answered, "
    "max_turns, timeout, error, context_length).",
    # --- tool usage
    "train/calls_per_episode": "Mean tool calls per episode, all tools together.",
    "train/calls_per_episode/<alias>": "Mean calls per episode naming expert <alias>; a call "
    "with no alias (a tool that takes no expert) counts under its tool name.",
    "train/call_share/<alias>": "Fraction of the step's calls that went to <alias> (same key "
    "as calls_per_episode); sums to 1 over aliases when there were calls.",
    "train/tool_calls_per_episode/<tool>": "Mean calls per episode to tool <tool> "
    "(search, enhance_reasoning, answer, ...).",
    "train/tool_error_rate": "Fraction of the step's tool calls that failed (any kind).",
    "train/tool_errors/<kind>": "Mean tool-call failures of ToolErrorKind <kind> per episode.",
    "train/verdicts/<method>": "Fraction of episodes graded by <method> (exact, numeric, "
    "math, judge, none: no answer; environments with a grader, the qa setting).",
    "train/judge_error_rate": "Fraction of episodes whose LLM judge failed (unreachable, time-"
    "out, a reply stating no verdict): outcome 0, the step goes on.",
    "train/judge_errors/<kind>": "Fraction of episodes whose judge failed with <kind>.",
    "train/policy_cost_usd": "Mean cost per episode of the policy's own tokens at its model's "
    "price (experts.orchestrator_model); included in train/cost_usd.",
    "train/format_error_rate": "Fraction of policy turns with at least one format error or "
    "marked malformed (such turns execute nothing).",
    "train/format_errors/<kind>": "Format errors of kind <kind> (ToolCallErrorKind, "
    "duplicate_call, out_of_vocabulary) per policy turn.",
    "train/prompt_tokens": "Mean prompt tokens the policy read per episode, summed over turns.",
    "train/completion_tokens": "Mean tokens the policy sampled per episode.",
    "train/tool_tokens": "Mean expert tokens (in + out) per episode.",
    # --- the update step
    "train/kl": "KL between the sampling and the updated policy (update step's approx_kl).",
    "train/ref_kl": "Mean per-token KL estimate (loss.kl_estimator) between the sampling and "
    "the frozen reference policy, on sampled tokens; with loss.kl_in='reward' it is what the "
    "reward is penalised by (times loss.kl_coef).",
    "train/reward_kl_penalty": "Mean over episodes of kl_coef times the summed token KL to the "
    "reference that was subtracted from the reward (loss.kl_in='reward').",
    "train/entropy": "Mean per-token entropy of the policy on the trained tokens.",
    "train/loss": "Total loss of the update step.",
    "train/policy_loss": "Policy-gradient part of the loss.",
    "train/clipfrac": "Fraction of trained tokens whose ratio was clipped (either side).",
    "train/clipfrac_low": "Fraction of trained tokens clipped at 1 - clip_low.",
    "train/clipfrac_high": "Fraction of trained tokens clipped at 1 + clip_high.",
    "train/grad_norm": "Global gradient norm before clipping.",
    "train/lr": "Learning rate used by the step.",
    "train/tokens": "Tokens that carried loss in the update step.",
    "train/advantage_mean": "Mean advantage over trained tokens.",
    "update/<name>": "Any other number the update step returns, under its own name.",
    # --- timing
    "time/step_s": "Wall seconds of the whole training step.",
    "time/rollout_s": "Wall seconds spent collecting the step's episodes.",
    "time/update_s": "Wall seconds of the update (including device transfer).",
    "time/eval_s": "Wall seconds of an evaluation pass.",
    # --- the warm start
    "sft/<name>": "Per optimizer step of the format-only warm start (sft/loss: mean token "
    "cross-entropy; sft/tokens; sft/grad_norm), stepped 1..sft.steps.",
    # --- evaluation and logs
    "eval/<metric>": "Evaluation metric <metric> (e.g. eval/accuracy, eval/cost_usd).",
    "hist/calls_per_episode": "Histogram over episodes of the number of tool calls.",
    "hist/calls_per_episode/<alias>": "Histogram over episodes of calls to <alias>.",
    "hist/<name>": "Any other histogram.",
    "text/trajectory": "Markdown of sample trajectories (texts, calls, costs).",
    "text/<name>": "Any other text, e.g. text/config for the run's configuration.",
}

#: Update-step metric names (`orchestra_jax.rl.update_step`) -> documented tags.
UPDATE_METRIC_TAGS: dict[str, str] = {
    "approx_kl": "train/kl",
    "loss/entropy": "train/entropy",
    "loss/total": "train/loss",
    "loss/policy": "train/policy_loss",
    "clipfrac": "train/clipfrac",
    "clipfrac_low": "train/clipfrac_low",
    "clipfrac_high": "train/clipfrac_high",
    "grad_norm": "train/grad_norm",
    "lr": "train/lr",
    "tokens": "train/tokens",
    "advantage_mean": "train/advantage_mean",
}


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"<[a-z_]+>", template)
    return re.compile(".+".join(re.escape(p) for p in parts) + r"\Z")


_TAG_PATTERNS = [_pattern(t) for t in TAGS]


def is_documented(tag: str) -> bool:
    """True when `tag` matches one of the patterns in `TAGS`."""
    return any(p.match(tag) for p in _TAG_PATTERNS)


def update_tags(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The update step's metrics under documented tags (`update/<name>` for the rest)."""
    return {UPDATE_METRIC_TAGS.get(k, f"update/{k}"): v for k, v in metrics.items()}


def _finite_float(value: Any) -> float | None:
    """`value` as a python float, or None when it is not a finite number."""
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)  # numpy / jax scalars and 0-d arrays convert
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class MetricsWriter:
    """Writes scalars, histograms and text to one TensorBoard event file under `logdir`.

    `enabled=False` makes every method a no-op and creates no file, so the training loop can
    call it unconditionally (on non-zero hosts, or with logging turned off). Writes are queued
    and flushed by tensorboard's background writer every `flush_every_s` seconds, on `flush()`
    and on `close()`; a write after `close()` is dropped with a warning.
    """

    def __init__(
        self,
        logdir: str | Path,
        *,
        enabled: bool = True,
        flush_every_s: float = 30.0,
        histogram_buckets: int = 30,
    ):
        # A URL (gs://…) reaches TensorBoard's writer as a URL: its file layer (fsspec) writes
        # there; `Path` would fold it into a local folder named "gs:".
        self.logdir = logdir if is_url(logdir) else Path(logdir)
        self.enabled = enabled
        self.histogram_buckets = max(1, int(histogram_buckets))
        #: Values skipped (non-finite, non-numeric, empty histogram), counted per tag.
        self.skipped: Counter[str] = Counter()
        #: Tags written that match no pattern in `TAGS`.
        self.undocumented_tags: set[str] = set()
        self._closed = False
        self._writer: EventFileWriter | None = None
        if enabled:
            self._writer = EventFileWriter(str(self.logdir), flush_secs=flush_every_s)

    # ---- writing -----------------------------------------------------------------------------

    def scalars(self, step: int, mapping: Mapping[str, Any]) -> int:
        """Write every finite value of `mapping` (tag -> number) at `step`; returns how many.

        Non-finite and non-numeric values are skipped and counted (a NaN loss must show up as
        a gap and a warning, not as a crash or a poisoned curve).
        """
        if not self._writable():
            return 0
        summary = summary_pb2.Summary()
        for tag, value in mapping.items():
            number = _finite_float(value)
            if number is None:
                self._skip(tag, f"value {value!r} is not a finite number")
                continue
            self._check_tag(tag)
            summary.value.add(tag=tag, simple_value=number)
        if summary.value:
            self._add(step, summary)
        return len(summary.value)

    def histogram(self, step: int, tag: str, values: Iterable[Any] | np.ndarray) -> bool:
        """Write a histogram of `values` (non-finite ones dropped); False when nothing was."""
        if not self._writable():
            return False
        try:
            array = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            self._skip(tag, "values are not numbers")
            return False
        finite = array[np.isfinite(array)]
        if finite.size < array.size:
            self._skip(tag, f"{array.size - finite.size} non-finite value(s) dropped")
        if finite.size == 0:
            self._skip(tag, "no finite values to histogram")
            return False
        self._check_tag(tag)
        summary = summary_pb2.Summary()
        summary.value.add(tag=tag, histo=_histogram_proto(finite, self.histogram_buckets))
        self._add(step, summary)
        return True

    def text(self, step: int, tag: str, markdown: str) -> bool:
        """Write `markdown` for the Text dashboard; False (and a warning) for a non-string."""
        if not self._writable():
            return False
        if not isinstance(markdown, str):
            self._skip(tag, f"text must be a str, got {type(markdown).__name__}")
            return False
        self._check_tag(tag)
        self._add(step, text_summary.text_pb(tag, markdown))
        return True

    def flush(self) -> None:
        """Push queued events to disk now (e.g. before an evaluation or a checkpoint)."""
        if self._writer is not None and not self._closed:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the file; later calls are harmless."""
        if self._writer is not None and not self._closed:
            self._writer.close()
        self._closed = True

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path | None:
        """The event file being written (None when disabled)."""
        return None if self._writer is None else Path(self._writer._file_name)

    # ---- internals ---------------------------------------------------------------------------

    def _writable(self) -> bool:
        if self._writer is None:
            return False
        if self._closed:
            if not self.skipped["<closed>"]:
                log.warning("MetricsWriter(%s): write after close() dropped", self.logdir)
            self.skipped["<closed>"] += 1
            return False
        return True

    def _add(self, step: int, summary: summary_pb2.Summary) -> None:
        assert self._writer is not None
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._writer.add_event(event)

    def _skip(self, tag: str, why: str) -> None:
        if not self.skipped[tag]:
            log.warning("metrics: tag %r skipped: %s (further skips counted silently)", tag, why)
        self.skipped[tag] += 1

    def _check_tag(self, tag: str) -> None:
        if tag not in self.undocumented_tags and not is_documented(tag):
            self.undocumented_tags.add(tag)
            log.warning("metrics: tag %r is not documented in metrics.TAGS; written as is", tag)


def _histogram_proto(values: np.ndarray, buckets: int) -> summary_pb2.HistogramProto:
    """A legacy `HistogramProto` of equal-width buckets spanning [min, max].

    Equal widths keep small integer counts (calls per episode) in readable bins; the
    dashboards convert this proto to their own bucket format.
    """
    low, high = float(values.min()), float(values.max())
    if low == high:
        counts, limits = np.asarray([values.size]), np.asarray([high])
    else:
        counts, edges = np.histogram(values, bins=buckets, range=(low, high))
        limits = edges[1:]
    return summary_pb2.HistogramProto(
        min=low,
        max=high,
        num=float(values.size),
        sum=float(values.sum()),
        sum_squares=float(np.square(values).sum()),
        bucket_limit=[float(x) for x in limits],
        bucket=[float(c) for c in counts],
    )
