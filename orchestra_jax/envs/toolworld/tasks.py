"""The task families of toolworld: templates, gold answers, verifiers, and the train/test split.

Four families, each written so that its *surface* gives it away (the tiny policy can only route
on what it reads) and so that each needs a different route:

- `easy`: a general question from `easy_bank` (no digits, no invented names). Any expert knows
  the answer; searching only adds distracting documents.
- `arithmetic`: a word problem with two or three operations on two-digit numbers. A program
  gets it right; answering unaided is error-prone.
- `lookup`: one fact about one invented entity ("the town of Velmere"). Only the encyclopedia
  knows it, so the answer needs a `search`.
- `multihop`: two facts about two entities combined by arithmetic ("How many years after the
  founding of A was B born?"): a search that finds both documents, then a computation.

A task carries, besides its gold answer, a `TaskSpec`: the material the *environment* uses to
play the simulated experts (which documents support it, the query words that find them, a
correct and a broken program, plausible wrong answers). The policy never sees it.

The split: task `i` of split `s` is drawn from a generator seeded by `(seed, s, i)`, and a
drawn question is kept only if the hash of its text falls in that split's half, so no question
text is ever both a training and a test task (even where a family's bank is small).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orchestra_jax.envs.qa import QATask
from orchestra_jax.envs.toolworld.easy_bank import EASY_BANK, answers_of_kind
from orchestra_jax.envs.toolworld.encyclopedia import Encyclopedia, pick_distinct, seeded_rng
from orchestra_jax.tools.answers import answers_match, normalize_answer, parse_number
from orchestra_jax.tools.pricing import Price
from orchestra_jax.tools.qa_tools import TOOL_NAMES

EASY = "easy"
ARITHMETIC = "arithmetic"
LOOKUP = "lookup"
MULTIHOP = "multihop"
FAMILIES: tuple[str, ...] = (EASY, ARITHMETIC, LOOKUP, MULTIHOP)
SPLITS: tuple[str, ...] = ("train", "test")
#: How many distractor answers a look-up carries: an expert without the document guesses
#: uniformly among them and the gold, so its accuracy is 1 / (N + 1).
N_DISTRACTORS = 4


@dataclass(frozen=True)
class TaskSpec:
    """What the environment needs to play the experts on one task (never shown to the policy).

    - `support`: ids of the documents the answer needs (empty for easy and arithmetic).
    - `query_terms`: per supporting document, the words a good query for it contains.
    - `general_query`: the words a query writer uses when the question needs no documents.
    - `distractors`: plausible wrong answers (same kind as the gold).
    - `code`: a program printing the gold answer; for multi-hop only usable once the facts are
      in the notes. `broken_code`: the slip an unskilled programmer makes.
    """

    support: tuple[str, ...] = ()
    query_terms: tuple[tuple[str, str], ...] = ()
    general_query: str = ""
    distractors: tuple[str, ...] = ()
    code: str | None = None
    broken_code: str | None = None


@dataclass(frozen=True)
class WorldTask(QATask):
    """A toolworld task: a `QATask` plus its split, spec, preference and augmentations.

    `preference_vector` is ordered `[per-alias weights (the world's alias order)..., outcome,
    cost, latency]`; `instruction` is the preference's text shown to the policy (None for the
    neutral preference). `tools` is the subset of tool names the task offers; `aliases` (from
    `QATask`) the subset of experts; `prices` a per-alias price schedule replacing the catalog's
    (None: catalog prices).
    """

    split: str = "train"
    index: int = 0
    spec: TaskSpec = field(default_factory=TaskSpec)
    preference: str = "neutral"
    preference_vector: tuple[float, ...] = ()
    instruction: str | None = None
    tools: tuple[str, ...] = TOOL_NAMES
    prices: tuple[tuple[str, Price], ...] | None = None

    @property
    def price_schedule(self) -> dict[str, Price] | None:
        return None if self.prices is None else dict(self.prices)


# ------------------------------------------------------------------------------------------------
# Verifiers: one per family, all lenient about form and strict about content.


def numeric_verifier(predicted: str | None, gold: str) -> bool:
    """True when `predicted` states the gold number exactly (`1,342` = `1342.0`)."""
    if predicted is None:
        return False
    p, g = parse_number(predicted), parse_number(gold)
    return p is not None and g is not None and math.isclose(p, g, rel_tol=0.0, abs_tol=1e-9)


def text_verifier(predicted: str | None, gold: str) -> bool:
    """True when `predicted` equals the gold after normalisation (case, articles, punctuation)."""
    return predicted is not None and bool(normalize_answer(gold)) and (
        normalize_answer(predicted) == normalize_answer(gold)
    )


def fact_verifier(predicted: str | None, gold: str) -> bool:
    """A look-up's answer is a number (a year) or a name: numeric or normalised match."""
    return answers_match(predicted, gold, rel_tol=0.0)


VERIFIERS: dict[str, Callable[[str | None, str], bool]] = {
    EASY: text_verifier,
    ARITHMETIC: numeric_verifier,
    LOOKUP: fact_verifier,
    MULTIHOP: numeric_verifier,
}


def verify(task: QATask, predicted: str | None) -> bool:
    """Whether `predicted` is a correct answer to `task`, by its family's verifier."""
    return VERIFIERS.get(task.family, fact_verifier)(predicted, task.answer)


# ------------------------------------------------------------------------------------------------
# Families.

_NAMES = ("Mara", "Tomas", "Ines", "Omar", "Lena", "Priya", "Jonah", "Aiko", "Felix", "Nadia")
_ITEMS = ("apples", "pens", "coins", "marbles", "stamps", "candles", "bricks", "lanterns",
          "pears", "buttons")  # fmt: skip

Draft = tuple[str, str, TaskSpec]  # question, gold answer, spec


def _near_numbers(rng: random.Random, gold: int, k: int) -> list[str]:
    """`k` distinct plausible wrong numbers near `gold` (never negative when gold is not)."""
    out: list[str] = []
    spread = max(3, abs(gold) // 8)
    while len(out) < k:
        value = gold + rng.choice((-1, 1)) * rng.randint(1, spread)
        if value != gold and str(value) not in out and (value >= 0 or gold < 0):
            out.append(str(value))
    return out


def make_easy(rng: random.Random, enc: Encyclopedia) -> Draft:
    del enc
    question, answer, kind = rng.choice(EASY_BANK)
    wrong = pick_distinct(rng, answers_of_kind(kind), answer, N_DISTRACTORS)
    words = [w.strip("?.,'").lower() for w in question.split()]
    query = " ".join(w for w in words if len(w) > 3)
    return question, answer, TaskSpec(general_query=query, distractors=tuple(wrong))


def make_arithmetic(rng: random.Random, enc: Encyclopedia) -> Draft:
    del enc
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    form = rng.randrange(6)
    a, b, c = rng.randint(12, 96), rng.randint(12, 48), rng.randint(11, 89)
    if form == 0:
        q = f"{name} packs {a} boxes of {b} {item} and gives away {c}. How many are left?"
        gold, slip = a * b - c, a * b + c
        code_expr, slip_expr = f"{a} * {b} - {c}", f"{a} * {b} + {c}"
    elif form == 1:
        q = f"A stall has {a} {item} and buys {b} crates of {c}. How many {item} now?"
        gold, slip = a + b * c, (a + b) * c
        code_expr, slip_expr = f"{a} + {b} * {c}", f"({a} + {b}) * {c}"
    elif form == 2:
        q = f"{name} splits {a * b} {item} into {b} bags and adds {c} to each. How many in all?"
        gold, slip = (a + c) * b, a * b + c
        code_expr, slip_expr = f"({a * b} // {b} + {c}) * {b}", f"{a * b} + {c}"
    elif form == 3:
        c = rng.randint(2, a - 2)
        q = f"A hall has {a} rows of {b} {item}. {c} rows are removed. How many {item} remain?"
        gold, slip = (a - c) * b, a * b - c
        code_expr, slip_expr = f"({a} - {c}) * {b}", f"{a} * {b} - {c}"
    elif form == 4:
        q = f"{name} earns {a} coins a day for {b} days and spends {c}. How many coins are left?"
        gold, slip = a * b - c, a * b + c
        code_expr, slip_expr = f"{a} * {b} - {c}", f"{a} * {b} + {c}"
    else:
        if (a + b * c) % 2:
            a += 1
        q = f"{name} has {a} {item}, buys {b} packs of {c}, then loses half. How many remain?"
        gold, slip = (a + b * c) // 2, a + b * c // 2
        code_expr, slip_expr = f"({a} + {b} * {c}) // 2", f"{a} + {b} * {c} // 2"
    wrong = [str(slip), *_near_numbers(rng, gold, N_DISTRACTORS)]
    wrong = list(dict.fromkeys(w for w in wrong if w != str(gold)))[:N_DISTRACTORS]
    query = f"{item} {name.lower() if form != 1 else 'market'}"
    spec = TaskSpec(
        general_query=query,
        distractors=tuple(wrong),
        code=f"print({code_expr})\n",
        broken_code=f"print({slip_expr})\n",
    )
    return q, str(gold), spec


def make_lookup(rng: random.Random, enc: Encyclopedia) -> Draft:
    kind = rng.randrange(8)
    if kind < 4:
        town = rng.choice(enc.towns)
        doc, subject = enc.doc_of(town.name), f"the town of {town.name}"
        if kind == 0:
            q, gold, word = f"In which year was {subject} founded?", str(town.founded), "founded"
            pool = [str(t.founded) for t in enc.towns]
        elif kind == 1:
            q, gold, word = f"What is the population of {subject}?", str(town.population), (
                "population"
            )
            pool = [str(t.population) for t in enc.towns]
        elif kind == 2:
            q, gold, word = f"Who is the mayor of {subject}?", town.mayor, "mayor"
            pool = [p.name for p in enc.people]
        else:
            q, gold, word = f"What is {subject} known for?", town.known_for, "known"
            pool = sorted({t.known_for for t in enc.towns})
        terms = f"{town.name} {word}"
    elif kind < 6:
        person = rng.choice(enc.people)
        doc = enc.doc_of(person.name)
        subject = f"the {person.occupation} {person.name}"
        if kind == 4:
            q, gold = f"In which year was {subject} born?", str(person.born)
            pool = [str(p.born) for p in enc.people]
        else:
            q, gold = f"In which town was {subject} born?", person.birthplace
            pool = [t.name for t in enc.towns]
        terms = f"{person.name} born"
    else:
        river = rng.choice(enc.rivers)
        doc = enc.doc_of(f"{river.name} river")
        if kind == 6:
            q, gold = f"How long is the {river.name} river, in km?", str(river.length_km)
            pool = [str(r.length_km) for r in enc.rivers]
        else:
            q, gold = f"Which town does the {river.name} river flow through?", river.through
            pool = [t.name for t in enc.towns]
        terms = f"{river.name} river"
    wrong = pick_distinct(rng, pool, gold, N_DISTRACTORS)
    return q, gold, TaskSpec(support=(doc,), query_terms=((doc, terms),), distractors=tuple(wrong))


def make_multihop(rng: random.Random, enc: Encyclopedia) -> Draft:
    kind = rng.randrange(4)
    if kind == 0:
        town, person = rng.choice(enc.towns), rng.choice(enc.people)
        q = (f"How many years after the founding of the town of {town.name} was the "
             f"{person.occupation} {person.name} born?")
        docs = ((enc.doc_of(town.name), town.name), (enc.doc_of(person.name), person.name))
        gold = person.born - town.founded
        code = f"founded = {town.founded}\nborn = {person.born}\nprint(born - founded)\n"
        broken = f"founded = {town.founded}\nborn = {person.born}\nprint(born + founded)\n"
    elif kind == 1:
        t1, t2 = rng.sample(enc.towns, 2)
        q = f"What is the combined population of the towns of {t1.name} and {t2.name}?"
        docs = ((enc.doc_of(t1.name), t1.name), (enc.doc_of(t2.name), t2.name))
        gold = t1.population + t2.population
        code = f"print({t1.population} + {t2.population})\n"
        broken = f"print({t1.population} - {t2.population})\n"
    elif kind == 2:
        r1, r2 = sorted(rng.sample(enc.rivers, 2), key=lambda r: (-r.length_km, r.name))
        if r1.length_km == r2.length_km:
            r2 = next(r for r in enc.rivers if r.length_km != r1.length_km)
            r1, r2 = sorted((r1, r2), key=lambda r: -r.length_km)
        q = f"How many km longer is the {r1.name} river than the {r2.name} river?"
        docs = ((enc.doc_of(f"{r1.name} river"), f"{r1.name} river"),
                (enc.doc_of(f"{r2.name} river"), f"{r2.name} river"))  # fmt: skip
        gold = r1.length_km - r2.length_km
        code = f"print({r1.length_km} - {r2.length_km})\n"
        broken = f"print({r1.length_km} + {r2.length_km})\n"
    else:
        p1, p2 = sorted(rng.sample(enc.people, 2), key=lambda p: (p.born, p.name))
        if p1.born == p2.born:
            p2 = next(p for p in enc.people if p.born != p1.born)
            p1, p2 = sorted((p1, p2), key=lambda p: p.born)
        q = (f"How many years older is the {p1.occupation} {p1.name} than the "
             f"{p2.occupation} {p2.name}?")
        docs = ((enc.doc_of(p1.name), p1.name), (enc.doc_of(p2.name), p2.name))
        gold = p2.born - p1.born
        code = f"print({p2.born} - {p1.born})\n"
        broken = f"print({p1.born} - {p2.born})\n"
    spec = TaskSpec(
        support=tuple(d for d, _ in docs),
        query_terms=docs,
        distractors=tuple(_near_numbers(rng, gold, N_DISTRACTORS)),
        code=code,
        broken_code=broken,
    )
    return q, str(gold), spec


MAKERS: dict[str, Callable[[random.Random, Encyclopedia], Draft]] = {
    EASY: make_easy,
    ARITHMETIC: make_arithmetic,
    LOOKUP: make_lookup,
    MULTIHOP: make_multihop,
}


def split_of_text(question: str) -> str:
    """The split a question text belongs to (a fixed half of all texts each)."""
    return SPLITS[hashlib.sha256(question.encode("utf-8")).digest()[0] % 2]


def generate_task(
    enc: Encyclopedia, seed: int, split: str, index: int, families: Sequence[str] = FAMILIES
) -> WorldTask:
    """Task `index` of `split`: family `families[index % len(families)]`, neutral preference.

    Deterministic in `(seed, split, index)`; its question text always belongs to `split`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"task index must be an int >= 0, got {index!r}")
    family = families[index % len(families)]
    if family not in MAKERS:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    for attempt in range(1000):
        rng = seeded_rng("task", seed, split, index, attempt)
        question, answer, spec = MAKERS[family](rng, enc)
        if split_of_text(question) == split:
            return WorldTask(
                id=f"{split}-{index:05d}",
                question=question,
                answer=answer,
                family=family,
                split=split,
                index=index,
                spec=spec,
            )
    raise RuntimeError(f"could not draw a {family} task for split {split!r}")  # pragma: no cover


__all__ = [
    "ARITHMETIC",
    "EASY",
    "FAMILIES",
    "LOOKUP",
    "MULTIHOP",
    "SPLITS",
    "VERIFIERS",
    "TaskSpec",
    "WorldTask",
    "fact_verifier",
    "generate_task",
    "numeric_verifier",
    "split_of_text",
    "text_verifier",
    "verify",
]
