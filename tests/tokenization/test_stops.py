"""Stop strings become device-matchable id sequences only when their encodings are known."""

from __future__ import annotations

from orchestra_jax.tokenization.stops import stop_id_sequences, tool_call_end_stops


def test_every_encoding_of_the_tool_call_end_is_a_stop_sequence(smollm2):
    sequences = tool_call_end_stops(smollm2)
    assert len(sequences) == 2  # "</" and, after a space, the merged "Ġ</"
    for text in ('<tool_call>{"name": "a", "arguments": {}}</tool_call>',
                 '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>',
                 '<tool_call> {"name": "a", "arguments": {}} </tool_call>'):
        ids = tuple(smollm2.encode(text))
        assert any(ids[-len(s):] == s for s in sequences), text
        # The opening tag is never taken for the end.
        opening = tuple(smollm2.encode(text.split("{")[0]))
        assert not any(opening[-len(s):] == s for s in sequences)


def test_a_stop_merged_with_the_text_before_it_has_no_device_form(smollm2):
    # After "a", BPE spells "aris" as one token: "ris" never shows up as its own ids there,
    # so only the host can cut at it.
    assert stop_id_sequences(smollm2, "ris") is None
    assert stop_id_sequences(smollm2, "") is None
    # A word keeps one variant alone and one with its leading space merged in.
    assert {smollm2.decode(list(s)) for s in stop_id_sequences(smollm2, "Paris")} == {
        "Paris", " Paris"}
