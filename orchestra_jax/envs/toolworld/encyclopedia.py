"""The fictional encyclopedia: towns, people and rivers that no model has ever read about.

Why fictional: a look-up question is only a test of *routing* if no expert can answer it from
memory, so the facts are drawn at random from the world's seed and live nowhere but in this
corpus. The only way to an answer is a `search` whose query names the entity, over a BM25 index
of these documents.

Why short documents in a fixed pattern: the policy reads the retrieved documents in its next
prompt, and the tiny policy's prompt budget is a few hundred tokens. Each document is one or
two sentences. Some words of the documents (the goods a town is known for, "capital") also occur
in arithmetic and general questions, so a search made for a question that needs none retrieves
real but irrelevant documents, as a web search would.

Everything is a pure function of the seed: the same seed gives the same entities, facts and
documents in every process.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

# Syllables for invented names; chosen so that names read as names and never as English words.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "tr", "st", "th", "sh")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
_CODAS = ("", "", "", "n", "r", "l", "s", "m")
_TOWN_ENDINGS = ("mere", "ford", "holm", "wick", "dale", "garth", "stead", "by", "ton", "moor")
_REGIONS = ("Ostmark", "Vellaine", "Karsh Basin", "the Tallow Coast", "Drummel", "Eskerly",
            "the Brinwold", "Harrowmark")  # fmt: skip
#: Goods a town is known for; several also appear in arithmetic templates, on purpose.
GOODS = ("apples", "pears", "pens", "lanterns", "coins", "boats", "bricks", "candles", "goats",
         "cheese", "rope", "glass", "salt", "wool", "marbles", "stamps")  # fmt: skip
_OCCUPATIONS = ("glassmaker", "cartographer", "bell founder", "astronomer", "weaver",
                "shipwright", "clockmaker", "botanist", "painter", "surveyor")  # fmt: skip

TOWN_FOUNDED = (1100, 1650)  # every town is older than every person below
PERSON_BORN = (1700, 1990)
TOWN_POPULATION = (1200, 98000)
RIVER_KM = (20, 950)


@dataclass(frozen=True)
class Town:
    name: str
    region: str
    founded: int
    population: int
    mayor: str  # a person's name
    known_for: str
    capital: bool  # the capital of its region


@dataclass(frozen=True)
class Person:
    name: str
    born: int
    birthplace: str  # a town's name
    occupation: str


@dataclass(frozen=True)
class River:
    name: str
    length_km: int
    through: str  # a town's name


@dataclass(frozen=True)
class Document:
    """One encyclopedia entry as the corpus stores it (`doc_id`, `title`, `text`)."""

    doc_id: str
    title: str
    text: str

    def as_row(self) -> dict[str, str]:
        return {"id": self.doc_id, "title": self.title, "text": self.text}


def seeded_rng(*parts: object) -> random.Random:
    """A generator owned by `parts` (strings and ints), identical in every process.

    Python's `hash` of a string changes between processes, so seeds are derived with SHA-256.
    """
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha256(blob).digest()[:16], "big"))


def _word(rng: random.Random, syllables: int) -> str:
    parts = []
    for i in range(syllables):
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS))
        if i == syllables - 1 or rng.random() < 0.2:
            parts.append(rng.choice(_CODAS))
    return "".join(parts).capitalize()


class Encyclopedia:
    """The world's entities and their documents, drawn from `seed`.

    Attributes: `towns`, `people`, `rivers` (lists, in creation order), `documents` (one per
    entity), and look-ups `doc_of(name)` -> the entity's document id.
    """

    def __init__(self, seed: int, *, n_towns: int = 240, n_people: int = 240, n_rivers: int = 120):
        for name, value in (("n_towns", n_towns), ("n_people", n_people), ("n_rivers", n_rivers)):
            if not isinstance(value, int) or value < 8:
                raise ValueError(f"{name} must be an int >= 8, got {value!r}")
        rng = seeded_rng("encyclopedia", seed)
        used: set[str] = set()

        def fresh(make: object) -> str:
            for _ in range(1000):
                name = make()  # type: ignore[operator]
                key = name.lower()
                parts = [part.lower() for part in name.split()]
                if key not in used and not any(part in used for part in parts):
                    used.update([key, *parts])
                    return name
            raise RuntimeError("ran out of fresh names; lower the entity counts")

        town_names = [
            fresh(lambda: _word(rng, 1) + rng.choice(_TOWN_ENDINGS))
            for _ in range(n_towns)
        ]
        person_names = [
            fresh(lambda: f"{_word(rng, 2)} {_word(rng, 2)}")
            for _ in range(n_people)
        ]
        river_names = [fresh(lambda: _word(rng, 2)) for _ in range(n_rivers)]

        self.people: list[Person] = [
            Person(
                name=name,
                born=rng.randint(*PERSON_BORN),
                birthplace=rng.choice(town_names),
                occupation=rng.choice(_OCCUPATIONS),
            )
            for name in person_names
        ]
        capitals = set(rng.sample(range(n_towns), k=len(_REGIONS)))
        self.towns: list[Town] = []
        for i, name in enumerate(town_names):
            self.towns.append(
                Town(
                    name=name,
                    region=_REGIONS[i % len(_REGIONS)],
                    founded=rng.randint(*TOWN_FOUNDED),
                    population=rng.randint(*TOWN_POPULATION),
                    mayor=rng.choice(person_names),
                    known_for=rng.choice(GOODS),
                    capital=i in capitals,
                )
            )
        self.rivers: list[River] = [
            River(name=name, length_km=rng.randint(*RIVER_KM), through=rng.choice(town_names))
            for name in river_names
        ]
        self.documents: list[Document] = []
        self._doc_of: dict[str, str] = {}
        for i, town in enumerate(self.towns):
            self._add(f"t{i}", town.name, _town_text(town))
        for i, person in enumerate(self.people):
            self._add(f"p{i}", person.name, _person_text(person))
        for i, river in enumerate(self.rivers):
            self._add(f"r{i}", f"{river.name} river", _river_text(river))

    def _add(self, doc_id: str, title: str, text: str) -> None:
        self.documents.append(Document(doc_id, title, text))
        self._doc_of[title] = doc_id

    def doc_of(self, title: str) -> str:
        """The document id of the entity titled `title` (a river's title ends in " river")."""
        try:
            return self._doc_of[title]
        except KeyError:
            raise KeyError(f"no encyclopedia entry titled {title!r}") from None

    def rows(self) -> list[dict[str, str]]:
        """The corpus as JSONL rows for `LocalSearch`."""
        return [d.as_row() for d in self.documents]


def _town_text(town: Town) -> str:
    role = f"the capital of {town.region}" if town.capital else f"a town in {town.region}"
    return (
        f"{town.name} is {role}, founded {town.founded}, population {town.population}, "
        f"mayor {town.mayor}, known for {town.known_for}."
    )


def _person_text(person: Person) -> str:
    return f"{person.name}, a {person.occupation}, was born {person.born} in {person.birthplace}."


def _river_text(river: River) -> str:
    return f"The {river.name} river is {river.length_km} km long and flows through {river.through}."


def pick_distinct(rng: random.Random, pool: Sequence[str], exclude: str, k: int) -> list[str]:
    """`k` distinct values of `pool` other than `exclude` (case-insensitive), in draw order."""
    seen = {exclude.strip().lower()}
    out: list[str] = []
    candidates = list(pool)
    rng.shuffle(candidates)
    for value in candidates:
        key = value.strip().lower()
        if key not in seen:
            seen.add(key)
            out.append(value)
            if len(out) == k:
                break
    return out


__all__ = [
    "GOODS",
    "Document",
    "Encyclopedia",
    "Person",
    "River",
    "Town",
    "pick_distinct",
    "seeded_rng",
]
