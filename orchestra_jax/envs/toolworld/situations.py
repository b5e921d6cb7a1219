"""What an expert can know at this point of an episode: the situation and the hints it reads.

The simulated experts (`tools/simulated_expert.py`) play a model from a skill profile and the
task's hints. In toolworld the hints are not fixed per task: they are recomputed from the
episode's state before every turn, because what an expert can do depends on what the notes
already hold. This is where the world's "physics" lives:

- A look-up or multi-hop answer needs its supporting documents *in the notes*. Without them the
  expert is not told the gold answer at all and guesses uniformly among the gold and the task's
  distractors (1 in 5), whatever its skill: no model knows these invented facts.
- With the documents present, answer accuracy follows the expert's profile for the situation
  (`lookup+docs`, `multihop+docs`); multi-hop also needs arithmetic, so a correct *computed*
  result in the notes (`multihop+docs+result`) raises it further.
- Arithmetic: a program the sandbox really ran whose printed output is the gold number puts the
  task in `arithmetic+result`, where answering is mostly reading the number off.
- Documents in the notes of a question that needs none (easy, arithmetic) are noise that
  distracts the answerer (`+noise` situations).
- A good query names the entities whose documents are still missing (one query may fetch both
  of a multi-hop pair); a program for a multi-hop task can only be right once both facts are in
  the notes.

The situation string is passed to the expert as its `family` hint, so a profile's per-family
skill table is indexed by situation.
"""

from __future__ import annotations

from typing import Any

from orchestra_jax.envs.toolworld.tasks import (
    ARITHMETIC,
    EASY,
    LOOKUP,
    MULTIHOP,
    VERIFIERS,
    WorldTask,
)
from orchestra_jax.tools.qa_tools import QAState

#: Every situation key, by family (the rows of the profile tables).
SITUATIONS: dict[str, tuple[str, ...]] = {
    EASY: ("easy", "easy+noise"),
    ARITHMETIC: (
        "arithmetic",
        "arithmetic+noise",
        "arithmetic+result",
        "arithmetic+result+noise",
    ),
    LOOKUP: ("lookup", "lookup+docs"),
    MULTIHOP: ("multihop", "multihop+docs", "multihop+docs+result"),
}
_NO_FACTS_CODE = "# The facts this needs are not in the notes yet.\nprint('unknown')\n"


def family_of(situation: str) -> str:
    """`lookup+docs` -> `lookup`."""
    return situation.split("+", 1)[0]


def has_correct_result(task: WorldTask, state: QAState) -> bool:
    """Whether a program ran cleanly and the last line it printed is the gold answer."""
    verifier = VERIFIERS[task.family]
    for run in state.code_runs:
        if run.exit_kind is not None:
            continue
        lines = [line.strip() for line in run.output.splitlines() if line.strip()]
        if lines and verifier(lines[-1], task.answer):
            return True
    return False


def situation(task: WorldTask, state: QAState) -> str:
    """The situation key of `task` given the notes gathered in `state`."""
    seen = state.seen_doc_ids()
    support = task.spec.support
    if task.family in (EASY, ARITHMETIC):
        key = task.family
        if task.family == ARITHMETIC and has_correct_result(task, state):
            key += "+result"
        return key + ("+noise" if seen else "")
    if not all(doc in seen for doc in support):
        return task.family
    if task.family == MULTIHOP and has_correct_result(task, state):
        return "multihop+docs+result"
    return f"{task.family}+docs"


def expert_hints(task: WorldTask, state: QAState) -> dict[str, Any]:
    """The hints the simulated experts read for the next turn of `task` (see module doc)."""
    key = situation(task, state)
    spec = task.spec
    seen = state.seen_doc_ids()
    hints: dict[str, Any] = {"family": key, "wrong": list(spec.distractors)}
    facts_known = all(doc in seen for doc in spec.support)
    if facts_known:
        hints["gold"] = task.answer
    else:  # a guess among the gold and the distractors, in a fixed order
        hints["wrong"] = sorted([task.answer, *spec.distractors])
    if spec.query_terms:
        missing = [terms for doc, terms in spec.query_terms if doc not in seen]
        hints["query_terms"] = missing or [terms for _, terms in spec.query_terms]
    elif spec.general_query:
        hints["query_terms"] = [spec.general_query]
    if task.family == ARITHMETIC or (task.family == MULTIHOP and facts_known):
        if spec.code is not None:
            hints["code"] = spec.code
        if spec.broken_code is not None:
            hints["broken_code"] = spec.broken_code
    elif task.family == MULTIHOP:
        hints["broken_code"] = _NO_FACTS_CODE
    return hints


__all__ = ["SITUATIONS", "expert_hints", "family_of", "has_correct_result", "situation"]
