"""`split_reasoning`: a message's `<think>` reasoning apart from its answer."""

from __future__ import annotations

import pytest

from orchestra_jax.tokenization import split_reasoning


def test_think_block_is_separated_and_both_parts_stripped():
    assert split_reasoning("<think>\nadd them\n</think>\n\nThe sum is 4.") == (
        "add them", "The sum is 4.")


def test_no_think_tags_gives_no_reasoning():
    assert split_reasoning("  plain answer\n") == (None, "plain answer")


def test_empty_think_block_is_empty_reasoning_not_none():
    assert split_reasoning("<think></think>Hi") == ("", "Hi")


def test_leading_close_tag_ends_reasoning_that_began_in_the_prompt():
    assert split_reasoning("step one\nstep two\n</think>\n\nDone.") == (
        "step one\nstep two", "Done.")


def test_unclosed_think_makes_the_rest_reasoning():
    assert split_reasoning("Hmm <think>still thinking about") == ("still thinking about", "Hmm")


def test_several_think_blocks_are_joined_and_removed_from_the_content():
    reasoning, content = split_reasoning("<think>a</think>one <think>b</think>two")
    assert reasoning == "a\n\nb" and content == "one two"


@pytest.mark.parametrize("text", ["</think></think>x", "<think><think>x</think>", "</think>",
                                  "<think>", "a</think>b<think>c"])
def test_odd_tag_sequences_still_split_with_no_open_tag_left_in_the_content(text):
    reasoning, content = split_reasoning(text)
    assert reasoning is not None
    assert "<think>" not in content


def test_tool_calls_stay_in_the_content():
    text = "<think>need weather</think>\n<tool_call>{\"name\": \"w\"}</tool_call>"
    assert split_reasoning(text)[1] == "<tool_call>{\"name\": \"w\"}</tool_call>"
