"""`train_sentencepiece`: atomic chat/tool tokens, exact round trips, reproducible models."""

from __future__ import annotations

import random
import time

import pytest

from orchestra_jax.tokenization import (
    CHAT_SPECIAL_TOKENS,
    SentencePieceTokenizer,
    Tokenizer,
    load_tokenizer,
    parse_tool_calls,
    train_sentencepiece,
)
from orchestra_jax.tokenization.sentencepiece_training import _chunks
from tests.tokenization.parser_corpus import TOOLS

CITIES = ["Paris", "Oslo", "Lima", "Kyoto", "Cairo", "Quito", "Perth", "Bern"]


def synthetic_corpus(n: int = 150, seed: int = 0) -> list[str]:
    """Chats with tool calls, prose and code: what a tiny orchestrator trains on."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        city = rng.choice(CITIES)
        docs.append(
            f"<|im_start|>user\nWhat is the weather in {city} for {rng.randint(1, 9)} days?"
            "<|im_end|>\n<|im_start|>assistant\n<think>\nI should call the weather tool.\n"
            f"</think>\n\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": "
            f"{{\"city\": \"{city}\", \"days\": {rng.randint(1, 9)}}}}}\n</tool_call><|im_end|>\n"
            f"<|im_start|>user\n<tool_response>\n{{\"temp_c\": {rng.randint(-5, 35)}}}\n"
            "</tool_response><|im_end|>\n")
        docs.append(f"def f{i}(x):\n    return x * {i} + {rng.randint(0, 99)}\n\n")
        docs.append(" ".join(rng.choice(["the", "model", "calls", "a", "tool", "and", "reads",
                                         "its", "answer", "carefully"]) for _ in range(30)))
    return docs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> SentencePieceTokenizer:
    return train_sentencepiece(synthetic_corpus(), tmp_path_factory.mktemp("sp"), vocab_size=700)


ROUND_TRIP = [
    "Hello, world!",
    "  leading and   inner   spaces \t tabs\n\n\nnewlines\r\n",
    "unseen: naïve café Ελληνικά 日本語 😀👍🏽 \x00\x07",
    '{"name": "get_weather", "arguments": {"city": "Zürich", "days": 12345}}',
    "<|im_start|>assistant\n<tool_call>\n{}\n</tool_call><|im_end|>",
    "",
]


def test_trained_tokenizer_satisfies_the_protocol(trained):
    assert isinstance(trained, Tokenizer)
    assert 300 < trained.vocab_size <= 700


def test_reserved_ids_and_chat_tokens_come_first(trained):
    assert [trained.id_to_token(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert [trained.id_to_token(4 + i) for i in range(len(CHAT_SPECIAL_TOKENS))] == list(
        CHAT_SPECIAL_TOKENS)
    assert (trained.unk_token_id, trained.bos_token_id, trained.pad_token_id) == (0, 1, 3)
    assert trained.eos_token_id == trained.token_to_id("<|im_end|>") == 5
    assert trained.stop_token_ids == (5, 2)


@pytest.mark.parametrize("token", CHAT_SPECIAL_TOKENS)
def test_chat_and_tool_tags_are_single_tokens_even_when_glued_to_text(trained, token):
    token_id = trained.token_to_id(token)
    assert trained.encode(token) == [token_id]
    glued = trained.encode(f"x{token}{{\"a\"")
    assert glued.count(token_id) == 1
    assert trained.decode(glued) == f"x{token}{{\"a\""


def test_text_round_trips_exactly_including_unseen_characters(trained):
    for text in ROUND_TRIP:
        assert trained.decode(trained.encode(text)) == text, text
    assert trained.token_to_id("<0xF0>") is not None  # byte fallback pieces exist


def test_unseen_characters_fall_back_to_bytes_not_unk(trained):
    assert trained.unk_token_id not in trained.encode("日本語 😀")


def test_lower_one_eighth_block_decodes_as_a_space(trained):
    # SentencePiece's own space marker cannot survive a round trip: a known limit, pinned here.
    assert trained.decode(trained.encode("a\u2581b")) == "a b"


def test_skip_special_tokens_drops_chat_markers_but_keeps_tool_tags(trained):
    ids = trained.encode("<s><|im_start|>assistant\n<tool_call>{}</tool_call><|im_end|></s>")
    assert trained.decode(ids, skip_special_tokens=True) == "assistant\n<tool_call>{}</tool_call>"


def test_no_bos_is_added_for_chat_use(trained):
    assert trained.encode("hi", add_special_tokens=True) == trained.encode("hi")


def test_chat_template_prompts_encode_with_atomic_tags_and_parse_back(trained):
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather",
                                              "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": '{"temp_c": 4}'},
    ]
    prompt = trained.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True)
    ids = trained.encode(prompt)
    assert trained.decode(ids) == prompt
    for tag in ("<tool_call>", "</tool_call>", "<tools>", "<tool_response>", "<|im_start|>"):
        assert ids.count(trained.token_to_id(tag)) == prompt.count(tag) > 0, tag
    reply = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0] + "<|im_end|>"
    calls, errors = parse_tool_calls(trained.decode(trained.encode(reply)), TOOLS)
    assert errors == [] and calls[0].arguments == {"city": "Oslo"}


def test_saved_tokenizer_reloads_with_the_same_behaviour(trained, tmp_path):
    trained.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, SentencePieceTokenizer)
    assert [again.encode(t) for t in ROUND_TRIP] == [trained.encode(t) for t in ROUND_TRIP]
    assert again.chat_template == trained.chat_template
    assert again.stop_token_ids == trained.stop_token_ids
    assert again.special_tokens == trained.special_tokens


def test_training_is_deterministic_and_fast(tmp_path):
    corpus = synthetic_corpus(seed=3)
    start = time.perf_counter()
    first = train_sentencepiece(corpus, tmp_path / "a", vocab_size=500)
    elapsed = time.perf_counter() - start
    second = train_sentencepiece(list(corpus), tmp_path / "b", vocab_size=500)
    assert first.processor.serialized_model_proto() == second.processor.serialized_model_proto()
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == (
        tmp_path / "b" / "tokenizer.model").read_bytes()
    assert elapsed < 5.0


def test_extra_special_tokens_are_reserved_after_the_chat_tokens(tmp_path):
    tok = train_sentencepiece(synthetic_corpus(20), tmp_path, vocab_size=400,
                              extra_special_tokens=["<|tool_router|>"])
    assert tok.token_to_id("<|tool_router|>") == 4 + len(CHAT_SPECIAL_TOKENS)
    assert tok.encode("a<|tool_router|>b").count(tok.token_to_id("<|tool_router|>")) == 1


def test_reserved_pieces_cannot_be_extra_special_tokens(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        train_sentencepiece(["abc"], tmp_path, extra_special_tokens=["<pad>"])


def test_too_small_a_vocabulary_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_sentencepiece(synthetic_corpus(5), tmp_path, vocab_size=100)


def test_long_texts_are_cut_at_line_ends_not_dropped():
    text = "".join(f"line {i}\n" for i in range(1000))
    chunks = list(_chunks([text, "", "short"], max_bytes=100))
    assert all(len(c.encode()) <= 100 for c in chunks)
    assert "".join(chunks) == text + "short"
    assert all(c.endswith("\n") for c in chunks[:-1])
