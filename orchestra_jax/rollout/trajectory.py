"""What one episode leaves behind: the sampled turns, the tool calls, and the learner's arrays.

A trajectory is the hand-off from the rollout engine to the reward module and the learner, and
the unit that gets logged. It stays plain python and numpy (no jax) so it can be built on the
host while the accelerator is busy, pickled, or written to a log line.

Two shapes of training data come out of it, following the two rendering modes:

- **dialogue** mode: every prompt extends the previous one by the sampled tokens and the new
  observations, so the whole episode is ONE token sequence; the policy's sampled tokens sit at
  known offsets in it and carry `loss_mask` 1 and the sampler's log-probs.
- **qa** mode: every turn has its own freshly rendered prompt, so each turn is its own
  sequence (`TurnSample.sequence()`).

`Trajectory.sequences()` returns the list of (token_ids, loss_mask, logprobs) triples in both
modes, so the learner needs no mode switch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from orchestra_jax.envs.base import CallRecord, RenderMode
from orchestra_jax.tokenization.tool_calls import ToolCall

Termination = Literal["answered", "max_turns", "timeout", "error", "context_length"]

#: A later call to a tool already called in the same turn (only the first one runs).
DUPLICATE_CALL = "duplicate_call"
#: A sampled id the tokenizer cannot decode (models often have more rows than the vocabulary).
OUT_OF_VOCABULARY = "out_of_vocabulary"

_MAX_LOGGED_CHARS = 2000


@dataclass(frozen=True)
class TokenSequence:
    """One training sequence: ids, 1 where the policy sampled the token, and its log-probs.

    `logprobs[i]` is 0 wherever `loss_mask[i]` is 0, so the arrays can be padded and stacked
    without looking at the mask.
    """

    token_ids: np.ndarray  # int32 [T]
    loss_mask: np.ndarray  # int32 [T]
    logprobs: np.ndarray  # float32 [T]

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])


@dataclass
class TurnSample:
    """One policy turn: the prompt it saw and what it sampled, with what the parser made of it.

    `malformed` turns (parse errors and no valid call) executed nothing; the learner leaves them
    out of the loss. `format_errors` holds `ToolCallErrorKind` strings, plus `duplicate_call`
    for a second call to one tool in a turn and `out_of_vocabulary` for undecodable ids.
    `new_segment` is True when this turn's prompt does not extend the previous turn's sequence
    (always in qa mode; in dialogue mode only on the first turn, or when the chat template
    could not be extended token-exactly and the prompt was rendered afresh).
    """

    turn: int
    prompt_ids: list[int]
    completion_ids: list[int]
    completion_logprobs: list[float]
    params_version: int
    finish_reason: str
    text: str = ""
    malformed: bool = False
    format_errors: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    new_segment: bool = True

    def sequence(self) -> TokenSequence:
        """This turn alone as a training sequence: prompt (mask 0) then completion (mask 1)."""
        n_prompt, n_completion = len(self.prompt_ids), len(self.completion_ids)
        ids = np.asarray([*self.prompt_ids, *self.completion_ids], dtype=np.int32)
        mask = np.concatenate([np.zeros(n_prompt, np.int32), np.ones(n_completion, np.int32)])
        logprobs = np.concatenate(
            [np.zeros(n_prompt, np.float32), np.asarray(self.completion_logprobs, np.float32)]
        )
        return TokenSequence(ids, mask, logprobs)

    def to_dict(self) -> dict[str, Any]:
        """A log-friendly summary: the text and the parsed calls, no token ids."""
        return {
            "turn": self.turn,
            "text": _clip(self.text),
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.completion_ids),
            "params_version": self.params_version,
            "finish_reason": self.finish_reason,
            "malformed": self.malformed,
            "format_errors": list(self.format_errors),
            "calls": [{"name": c.name, "arguments": c.arguments} for c in self.calls],
        }


@dataclass
class Trajectory:
    """One finished episode. Built by `run_episode`; read by rewards, the learner and logs.

    `termination` says why it ended: "answered" (the environment is done), "max_turns",
    "timeout" (the episode deadline), "context_length" (the next prompt would not fit
    `max_prompt_tokens`) or "error" (`error` then holds the exception's type and message).
    `latency_s` is the sum of the tool calls' latencies (the method's definition: the policy's
    own generation time does not count); `wall_s` is the episode's real duration.
    """

    task_id: str
    mode: RenderMode
    samples: list[TurnSample] = field(default_factory=list)
    records: list[CallRecord] = field(default_factory=list)
    turns: int = 0
    done: bool = False
    outcome: float = 0.0
    termination: Termination = "error"
    error: str | None = None
    wall_s: float = 0.0
    group: int | None = None  # index of the task within a batch: GRPO normalises per group
    #: What the policy's own tokens cost at its model's price (0 unless the environment
    #: prices the orchestrator, as the qa setting does: the release's accounting).
    policy_cost_usd: float = 0.0
    #: What the environment says about the episode beyond the outcome (qa: how the answer
    #: was graded, the judge's error kind), from its optional `episode_info()`.
    info: dict[str, Any] = field(default_factory=dict)

    # ---- totals ---------------------------------------------------------------------------

    @property
    def cost_usd(self) -> float:
        """Money the episode spent: the tools (experts' tokens, sandbox seconds, search fees)
        plus the policy's own tokens when they are priced (`policy_cost_usd`)."""
        return float(sum(r.cost_usd for r in self.records)) + self.policy_cost_usd

    @property
    def tool_cost_usd(self) -> float:
        """Money the tools alone spent."""
        return float(sum(r.cost_usd for r in self.records))

    @property
    def latency_s(self) -> float:
        return float(sum(r.latency_s for r in self.records))

    @property
    def tool_tokens_in(self) -> int:
        return int(sum(r.tokens_in for r in self.records))

    @property
    def tool_tokens_out(self) -> int:
        return int(sum(r.tokens_out for r in self.records))

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens the policy read, summed over turns (what serving it costs)."""
        return int(sum(len(s.prompt_ids) for s in self.samples))

    @property
    def completion_tokens(self) -> int:
        return int(sum(len(s.completion_ids) for s in self.samples))

    @property
    def malformed_turns(self) -> int:
        return sum(s.malformed for s in self.samples)

    def tool_counts(self) -> dict[str, int]:
        """How many calls each tool received (failed calls included)."""
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.tool] = counts.get(record.tool, 0) + 1
        return counts

    # ---- learner arrays -------------------------------------------------------------------

    def sequences(self, *, mask_malformed: bool = False) -> list[TokenSequence]:
        """The episode as training sequences: one in dialogue mode, one per turn in qa mode.

        In dialogue mode each turn's prompt is the previous prompt plus the previous
        completion plus new (unsampled) tokens, so the last turn's prompt and completion hold
        every sampled token at the offset where it was sampled. `mask_malformed` zeroes the
        mask (and log-probs) of malformed turns, which the method leaves out of the loss.
        """
        out: list[TokenSequence] = []
        segment: list[TurnSample] = []
        for sample in self.samples:
            if sample.new_segment and segment:
                out.append(_segment_sequence(segment, mask_malformed))
                segment = []
            segment.append(sample)
        if segment:
            out.append(_segment_sequence(segment, mask_malformed))
        return out

    def _single(self) -> TokenSequence:
        sequences = self.sequences()
        if len(sequences) != 1:
            raise ValueError(
                f"trajectory {self.task_id!r} has {len(sequences)} sequences ({self.mode} mode); "
                "use sequences() or TurnSample.sequence()"
            )
        return sequences[0]

    @property
    def token_ids(self) -> np.ndarray:
        """The dialogue's single token sequence (ValueError when there is not exactly one)."""
        return self._single().token_ids

    @property
    def loss_mask(self) -> np.ndarray:
        return self._single().loss_mask

    @property
    def logprobs(self) -> np.ndarray:
        return self._single().logprobs

    # ---- logging --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs: texts, call arguments, error kinds and totals; no token ids."""
        return {
            "task_id": self.task_id,
            "group": self.group,
            "mode": self.mode,
            "turns": self.turns,
            "done": self.done,
            "outcome": self.outcome,
            "termination": self.termination,
            "error": _clip(self.error) if self.error else None,
            "wall_s": round(self.wall_s, 4),
            "cost_usd": self.cost_usd,
            "policy_cost_usd": self.policy_cost_usd,
            "latency_s": round(self.latency_s, 4),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tool_tokens_in": self.tool_tokens_in,
            "tool_tokens_out": self.tool_tokens_out,
            "malformed_turns": self.malformed_turns,
            "info": dict(self.info),
            "samples": [s.to_dict() for s in self.samples],
            "records": [_record_dict(r) for r in self.records],
        }

    def to_json(self) -> str:
        """One JSON line for a trajectory log (values json cannot encode are written as text)."""
        return json.dumps(self.to_dict(), default=str, ensure_ascii=False)


def _segment_sequence(samples: list[TurnSample], mask_malformed: bool) -> TokenSequence:
    """One sequence from turns whose prompts extend each other (checked, not assumed)."""
    last = samples[-1]
    ids = np.asarray([*last.prompt_ids, *last.completion_ids], dtype=np.int32)
    mask = np.zeros(ids.shape[0], np.int32)
    logprobs = np.zeros(ids.shape[0], np.float32)
    for sample in samples:
        start = len(sample.prompt_ids)
        end = start + len(sample.completion_ids)
        if not np.array_equal(ids[:start], np.asarray(sample.prompt_ids, np.int32)) or not (
            np.array_equal(ids[start:end], np.asarray(sample.completion_ids, np.int32))
        ):
            raise ValueError(
                f"turn {sample.turn}: its prompt and completion are not a prefix of the "
                "dialogue's final sequence (the episode loop broke the dialogue invariant)"
            )
        if mask_malformed and sample.malformed:
            continue
        mask[start:end] = 1
        logprobs[start:end] = sample.completion_logprobs
    return TokenSequence(ids, mask, logprobs)


def _record_dict(record: CallRecord) -> dict[str, Any]:
    return {
        "turn": record.turn,
        "tool": record.tool,
        "arguments": _jsonable(record.arguments),
        "alias": record.alias,
        "model": record.model,
        "cost_usd": record.cost_usd,
        "latency_s": round(record.latency_s, 4),
        "tokens_in": record.tokens_in,
        "tokens_out": record.tokens_out,
        "error_kind": str(record.error_kind) if record.error_kind is not None else None,
        "error_message": _clip(record.error_message) if record.error_message else None,
        "attempts": record.attempts,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= _MAX_LOGGED_CHARS:
        return text
    return text[:_MAX_LOGGED_CHARS] + f"... [{len(text) - _MAX_LOGGED_CHARS} more chars]"
