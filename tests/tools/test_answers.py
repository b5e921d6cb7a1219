"""Final-answer extraction from expert replies, and the answer verifier behind qa outcomes."""

from __future__ import annotations

import pytest

from orchestra_jax.tools.answers import (
    answers_match,
    extract_final_answer,
    normalize_answer,
    parse_number,
)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # \boxed with nested braces keeps the whole expression.
        (r"So the result is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{x^{2} + {y}_{1}}", r"x^{2} + {y}_{1}"),
        # The last marked answer wins: models correct themselves.
        (r"First \boxed{3}, no wait, \boxed{4}", "4"),
        ("<answer>Paris</answer> ... <answer>Lyon</answer>", "Lyon"),
        # Between the two markers, the one later in the text wins.
        (r"<answer>Paris</answer> then \boxed{7}", "7"),
        (r"\boxed{7} then <answer> Paris </answer>", "Paris"),
        ("<ANSWER>Oslo</ANSWER>", "Oslo"),
        # No marker: the last non-empty line, without an 'Answer:' prefix or bold.
        ("Some reasoning.\n\nFinal answer: **Mount Everest**\n\n", "Mount Everest"),
        ("Reasoning\nAnswer: 42", "42"),
        ("just this", "just this"),
        # A marker inside reasoning does not count.
        ("<think>maybe \\boxed{9}</think>\nThe total is\n12", "12"),
        ("reasoning carried over</think><answer>ok</answer>", "ok"),
        # An unclosed \boxed is skipped; an unclosed <answer> at the end was cut off mid-answer.
        (r"\boxed{5} and \boxed{oops", "5"),
        ("<answer>Marie Curie", "Marie Curie"),
    ],
)
def test_extract_final_answer(reply, expected):
    assert extract_final_answer(reply) == expected


@pytest.mark.parametrize("reply", ["", "   \n\n ", "<think>still thinking", None, 12])
def test_replies_without_any_answer_give_none(reply):
    assert extract_final_answer(reply) is None


def test_normalize_answer_ignores_case_punctuation_articles_whitespace_and_latex():
    assert normalize_answer("  The  Eiffel-Tower! ") == "eiffel tower"
    assert normalize_answer(r"$\text{An Apple}$") == "apple"
    assert normalize_answer("“Théâtre”") == "théâtre"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42.0),
        ("-3.5", -3.5),
        ("1,234,567", 1234567.0),
        ("$5", 5.0),
        ("12.5%", 12.5),
        ("3/4", 0.75),
        (r"\frac{3}{4}", 0.75),
        (r"\dfrac{1}{8}", 0.125),
        ("1e3", 1000.0),
        ("7.", 7.0),
        (r"$\text{10}$", 10.0),
    ],
)
def test_parse_number_reads_plain_numbers(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["five", "3 apples", "1/0", "x+1", "1,2", "inf", "nan", ""])
def test_parse_number_rejects_non_numbers(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("predicted", "gold"),
    [
        ("the eiffel tower", "Eiffel Tower"),
        ("1,000", "1000"),
        ("1000.0000001", "1000"),
        (r"\frac{1}{2}", "0.5"),
        ("$1,500", "1500"),
        ("Marie  Curie.", "marie curie"),
    ],
)
def test_answers_that_match(predicted, gold):
    assert answers_match(predicted, gold)


@pytest.mark.parametrize(
    ("predicted", "gold"),
    [
        ("3", "3.5"),  # numbers must agree within tolerance, not after rounding
        ("-5", "5"),
        ("Eiffel", "Eiffel Tower"),
        ("five", "5"),
        (None, "Paris"),
        ("", "Paris"),
        ("the", "a"),  # nothing left after normalising is never a match
    ],
)
def test_answers_that_do_not_match(predicted, gold):
    assert not answers_match(predicted, gold)


def test_numeric_tolerance_is_configurable():
    assert not answers_match("3.14", "3.14159")
    assert answers_match("3.14", "3.14159", rel_tol=1e-3)
