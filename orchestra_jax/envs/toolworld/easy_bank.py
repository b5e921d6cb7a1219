"""General questions any expert answers: the world's "easy" family.

Why a fixed bank and not a generator: these stand for the questions a model knows from
pre-training, so they must be real facts. Each entry is (question, answer, kind); answers of
the same kind are the plausible wrong answers an expert gives when it errs. The phrasing is
deliberately unlike the other families' templates (no digits, no invented names), so the policy
can tell the family from the surface of the question.
"""

from __future__ import annotations

_CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Germany", "Berlin"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
    ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Greece", "Athens"), ("Portugal", "Lisbon"),
    ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Poland", "Warsaw"), ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Russia", "Moscow"),
    ("China", "Beijing"), ("India", "New Delhi"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Argentina", "Buenos Aires"), ("Chile", "Santiago"),
    ("Cuba", "Havana"), ("Mexico", "Mexico City"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
    ("Hungary", "Budapest"), ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"),
    ("Australia", "Canberra"), ("Colombia", "Bogota"), ("Morocco", "Rabat"),
    ("Ghana", "Accra"), ("Nepal", "Kathmandu"), ("Iceland", "Reykjavik"),
    ("Switzerland", "Bern"), ("Ukraine", "Kyiv"),
)  # fmt: skip
_OPPOSITES = (
    ("hot", "cold"), ("tall", "short"), ("wet", "dry"), ("early", "late"), ("open", "closed"),
    ("light", "dark"), ("full", "empty"), ("fast", "slow"), ("loud", "quiet"), ("up", "down"),
    ("young", "old"), ("rich", "poor"), ("hard", "soft"), ("thick", "thin"), ("win", "lose"),
    ("buy", "sell"), ("push", "pull"), ("north", "south"), ("east", "west"),
    ("above", "below"), ("inside", "outside"), ("first", "last"), ("day", "night"),
    ("happy", "sad"), ("strong", "weak"), ("clean", "dirty"), ("near", "far"),
    ("heavy", "light"), ("true", "false"), ("friend", "enemy"),
)  # fmt: skip
_LEGS = (
    ("spider", "eight"), ("insect", "six"), ("dog", "four"), ("horse", "four"),
    ("chicken", "two"), ("ant", "six"), ("octopus", "eight"), ("duck", "two"),
    ("cow", "four"), ("beetle", "six"), ("ostrich", "two"), ("cat", "four"),
)  # fmt: skip
_NEXT_DAY = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_NEXT_MONTH = ("January", "February", "March", "April", "May", "June", "July", "August",
               "September", "October", "November", "December")  # fmt: skip
_PLURALS = (
    ("mouse", "mice"), ("child", "children"), ("foot", "feet"), ("tooth", "teeth"),
    ("man", "men"), ("woman", "women"), ("goose", "geese"), ("person", "people"),
    ("ox", "oxen"), ("cactus", "cacti"), ("leaf", "leaves"), ("knife", "knives"),
    ("wolf", "wolves"), ("die", "dice"), ("louse", "lice"),
)  # fmt: skip
_SHAPES = (("triangle", "three"), ("square", "four"), ("pentagon", "five"),
           ("hexagon", "six"), ("octagon", "eight"), ("heptagon", "seven"))  # fmt: skip
_FACTS = (
    ("Which planet is known as the Red Planet?", "Mars", "planet"),
    ("Which planet is the largest in the solar system?", "Jupiter", "planet"),
    ("Which planet is closest to the Sun?", "Mercury", "planet"),
    ("Which ocean is the largest on Earth?", "Pacific", "ocean"),
    ("Which ocean lies between Africa and Australia?", "Indian", "ocean"),
    ("Which gas do plants take in to make their food?", "carbon dioxide", "gas"),
    ("Which gas do people need to breathe to live?", "oxygen", "gas"),
    ("What is frozen water called?", "ice", "substance"),
    ("Which animal is known as the king of the jungle?", "lion", "animal"),
    ("Which is the tallest animal on land?", "giraffe", "animal"),
    ("Which bird is a symbol of peace?", "dove", "animal"),
    ("Which colour do you get by mixing blue and yellow?", "green", "colour"),
    ("Which colour do you get by mixing red and white?", "pink", "colour"),
    ("Which colour do you get by mixing red and yellow?", "orange", "colour"),
    ("What colour is a clear sky on a sunny day?", "blue", "colour"),
    ("Which continent is Brazil part of?", "South America", "continent"),
    ("Which continent is Kenya part of?", "Africa", "continent"),
    ("Which continent is Japan part of?", "Asia", "continent"),
    ("Which metal is liquid at room temperature?", "mercury", "metal"),
    ("Which instrument has black and white keys?", "piano", "instrument"),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare", "person"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "person"),
    ("Which season comes after winter?", "spring", "season"),
    ("Which season comes after summer?", "autumn", "season"),
)  # fmt: skip


#: Plausible wrong answers of kinds the bank itself has few answers of.
_MORE_ANSWERS = {
    "planet": ("Venus", "Saturn", "Neptune"),
    "ocean": ("Atlantic", "Arctic", "Southern"),
    "gas": ("nitrogen", "helium", "hydrogen"),
    "substance": ("steam", "snow", "salt", "glass"),
    "animal": ("elephant", "tiger", "eagle"),
    "colour": ("purple", "brown", "grey"),
    "continent": ("Europe", "Oceania", "North America"),
    "metal": ("iron", "gold", "silver", "copper"),
    "instrument": ("violin", "flute", "drum", "harp"),
    "person": ("Charles Dickens", "Michelangelo", "Jane Austen"),
    "season": ("summer", "winter", "the rainy season"),
}


def _build() -> list[tuple[str, str, str]]:
    bank: list[tuple[str, str, str]] = []
    bank += [(f"Name the capital city of {c}.", city, "city") for c, city in _CAPITALS]
    bank += [(f"Give the opposite of the word '{w}'.", o, "word") for w, o in _OPPOSITES]
    bank += [(f"Say how many legs a {a} has, in words.", n, "count") for a, n in _LEGS]
    bank += [(f"Say how many sides a {s} has, in words.", n, "count") for s, n in _SHAPES]
    bank += [
        (f"Which day of the week comes after {d}?", _NEXT_DAY[(i + 1) % 7], "day")
        for i, d in enumerate(_NEXT_DAY)
    ]
    bank += [
        (f"Which month of the year comes after {m}?", _NEXT_MONTH[(i + 1) % 12], "month")
        for i, m in enumerate(_NEXT_MONTH)
    ]
    bank += [(f"Give the plural of the word '{w}'.", p, "word") for w, p in _PLURALS]
    bank += list(_FACTS)
    return bank


#: (question, answer, kind) for every general question of the world.
EASY_BANK: tuple[tuple[str, str, str], ...] = tuple(_build())


def answers_of_kind(kind: str) -> list[str]:
    """Every answer of `kind` (the plausible wrong answers for a question of that kind)."""
    known = {answer for _, answer, k in EASY_BANK if k == kind}
    return sorted(known | set(_MORE_ANSWERS.get(kind, ())))


__all__ = ["EASY_BANK", "answers_of_kind"]
