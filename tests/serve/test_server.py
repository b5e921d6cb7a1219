"""`orchestra serve` end to end: the real SmolLM2 behind a real aiohttp server on 127.0.0.1,
driven by the official `openai` client (and raw HTTP where the wire format itself is the point).

One server is started per module (the model loads once, with scanned layers so each bucket
compiles in about two seconds); most tests keep to `max_tokens=32` -- one decode chunk of that
server -- so they share compiled programs. The CLI test starts `orchestra serve` itself as a
subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import jax
import openai
import pytest
from flax import nnx

from orchestra_jax import cli
from orchestra_jax.models import load_pretrained
from orchestra_jax.rollout.requests import GenerationResult, SamplingParams
from orchestra_jax.rollout.sampler import Sampler
from orchestra_jax.serve.completion import build_reply, completion_body, completion_chunks
from orchestra_jax.serve.prompt import resolve_chat_template
from orchestra_jax.serve.server import ChatServer, ServerThread
from orchestra_jax.tokenization.templates import CHATML_TOOLS_TEMPLATE, NAMED_CHAT_TEMPLATES


class _Reply:
    """What the raw-HTTP checks read of a response (the standard library's client suffices)."""

    def __init__(self, status_code: int, headers, body: bytes):
        self.status_code = status_code
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.text = body.decode("utf-8")

    def json(self):
        return json.loads(self.text)


def _http(method: str, url: str, *, json_body=None, content: bytes | None = None,
          timeout: float = 60) -> _Reply:
    """One plain HTTP request; an error status is a reply, not an exception."""
    if json_body is not None:
        content = json.dumps(json_body).encode()
    request = urllib.request.Request(url, data=content, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as err:
        return _Reply(err.code, err.headers, err.read())


MODEL = "smollm2-135m-instruct"
SERVED = "smollm2"
MAX_TOKENS = 32
CHUNK = 32  # decode steps per batch of the module's server: its rows can leave between chunks
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
TOOL_HISTORY = [
    {"role": "user", "content": "What is the weather in Paris right now?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees Celsius and sunny"},
]


@pytest.fixture(scope="module")
def lm():
    return load_pretrained(MODEL, scan_layers=True)


@pytest.fixture(scope="module")
def served(lm):
    tok = lm.tokenizer
    sampler = Sampler(lm.model, lm.mesh, rules=lm.rules, pad_id=tok.pad_token_id,
                      stop_token_ids=tok.stop_token_ids)
    server = ChatServer(tok, sampler, model_name=SERVED, default_max_tokens=MAX_TOKENS,
                        max_batch_size=8, max_wait_s=0.05, decode_chunk_tokens=CHUNK)
    thread = ServerThread(server)
    yield server, thread.url
    thread.close()


@pytest.fixture(scope="module")
def client(served):
    _, url = served
    with openai.OpenAI(base_url=url, api_key="unchecked", max_retries=0, timeout=300) as c:
        yield c


def _ask(client, messages=QUESTION, **kwargs):
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=SERVED, messages=messages, **kwargs)


def _prompt_ids(tok, messages, **kwargs):
    return tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True, **kwargs))


# ---- the happy path -------------------------------------------------------------------------


def test_models_endpoint_lists_the_served_model(client, served):
    models = client.models.list()
    assert [m.id for m in models.data] == [SERVED]
    assert client.models.retrieve(SERVED).id == SERVED
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    health = _http("GET", served[1].removesuffix("/v1") + "/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"


def test_greedy_answer_is_paris_with_exact_usage(client, served, lm):
    """Usage is the tokenizer's count of the rendered prompt and every generated token."""
    tok = lm.tokenizer
    reply = _ask(client, logprobs=True)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    prompt_ids = _prompt_ids(tok, QUESTION)
    assert reply.usage.prompt_tokens == len(prompt_ids)
    # One log-prob per generated token; the end-of-turn token is generated and counted too.
    assert reply.usage.completion_tokens == len(choice.logprobs.content)
    assert reply.usage.completion_tokens == len(tok.encode(choice.message.content)) + 1
    assert choice.logprobs.content[-1].token == "<|im_end|>"
    assert all(entry.logprob <= 0 for entry in choice.logprobs.content)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # The same tokens the sampler produces for the same prompt on its own.
    direct = served[0].sampler.sample(
        [prompt_ids], SamplingParams(max_new_tokens=MAX_TOKENS, temperature=0.0))[0]
    assert tok.decode(direct.token_ids) == choice.message.content + "<|im_end|>"


def test_stop_strings_cut_the_reply_on_device_or_on_host(client):
    full = _ask(client)
    assert full.choices[0].message.content == "The capital of France is Paris."
    # " Paris" always encodes to the same token: the sampler stops right after it.
    device = _ask(client, stop=[" Paris", "never-said"])
    assert device.choices[0].message.content == "The capital of France is"
    assert device.choices[0].finish_reason == "stop"
    assert device.usage.completion_tokens == full.usage.completion_tokens - 2  # no "." nor end
    # "Paris" is matched in each of its encodings, here the merged " Paris" token.
    merged = _ask(client, stop="Paris")
    assert merged.choices[0].message.content == "The capital of France is "
    assert merged.usage.completion_tokens == full.usage.completion_tokens - 2
    # "ris" only ever lies inside a larger token here: only the host can cut at it.
    host = _ask(client, stop="ris")
    assert host.choices[0].message.content == "The capital of France is Pa"
    assert host.choices[0].finish_reason == "stop"
    assert host.usage.completion_tokens == full.usage.completion_tokens


def test_seeded_sampling_is_reproducible(client):
    first = _ask(client, temperature=1.0, seed=1234)
    second = _ask(client, temperature=1.0, seed=1234)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage.completion_tokens == second.usage.completion_tokens


def test_eight_concurrent_requests_share_batches(served):
    server, url = served
    questions = ["What is the capital of France?", "What is the capital of Italy?",
                 "What is the capital of Spain?", "What is the capital of Germany?",
                 "Name a primary color.", "What is 2 plus 2?", "Name a large ocean.",
                 "What is the largest planet?"]
    before = server.batcher.stats()

    async def ask_all():
        async with openai.AsyncOpenAI(base_url=url, api_key="unchecked", max_retries=0,
                                      timeout=300) as aclient:
            return await asyncio.gather(*[
                aclient.chat.completions.create(
                    model=SERVED, messages=[{"role": "user", "content": q}],
                    max_tokens=MAX_TOKENS, temperature=0)
                for q in questions])

    replies = asyncio.run(ask_all())
    after = server.batcher.stats()
    assert len(replies) == 8
    for reply in replies:
        assert reply.choices[0].message.content
        assert reply.usage.completion_tokens > 0
    assert "Paris" in replies[0].choices[0].message.content
    flushes = after["flushes"] - before["flushes"]
    assert after["rows"] - before["rows"] == 8
    assert 1 <= flushes < 8, f"8 concurrent requests ran in {flushes} flushes: not batched"
    assert after["max_rows"] > 1
    assert _http("GET", f"{url}/stats").json()["batcher"]["flushes"] == after["flushes"]


def test_streaming_sends_openai_chunks_that_add_up_to_the_reply(client, served):
    plain = _ask(client)
    stream = _ask(client, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump(include={"prompt_tokens", "completion_tokens"}) == \
        plain.usage.model_dump(include={"prompt_tokens", "completion_tokens"})
    # The wire format: `data: {json}` events ending with `data: [DONE]`.
    raw = _http("POST", f"{served[1]}/chat/completions", timeout=300, json_body={
        "model": SERVED, "messages": QUESTION, "max_tokens": MAX_TOKENS, "temperature": 0,
        "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e.removeprefix("data: "))["object"] == "chat.completion.chunk"
               for e in events[:-1])
    assert "usage" not in json.loads(events[-2].removeprefix("data: "))


def test_tool_conversation_renders_with_the_tools_template_and_answers(client, lm):
    """SmolLM2's own template has no tools; the ChatML + tools template must take over."""
    tok = lm.tokenizer
    reply = _ask(client, messages=TOOL_HISTORY, tools=[WEATHER_TOOL])
    expected = _prompt_ids(tok, TOOL_HISTORY, tools=[WEATHER_TOOL],
                           chat_template=CHATML_TOOLS_TEMPLATE)
    assert reply.usage.prompt_tokens == len(expected)
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    if choice.finish_reason == "tool_calls":
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert isinstance(json.loads(call.function.arguments), dict)
    else:
        assert choice.message.content
    # tool_choice "none": the tools leave the prompt and no calls are parsed.
    none = _ask(client, messages=TOOL_HISTORY, tools=[WEATHER_TOOL], tool_choice="none")
    assert none.usage.prompt_tokens == len(_prompt_ids(tok, TOOL_HISTORY,
                                                       chat_template=CHATML_TOOLS_TEMPLATE))
    assert none.choices[0].message.tool_calls is None


def test_project_client_reads_usage_from_our_server(served, lm):
    from orchestra_jax.tools.openai_client import OpenAIChatClient

    async def ask():
        chat = OpenAIChatClient(served[1], SERVED, timeout_s=300)
        try:
            return await chat.complete(QUESTION, max_tokens=MAX_TOKENS)
        finally:
            await chat.aclose()

    reply = asyncio.run(ask())
    assert "Paris" in reply.text
    assert reply.tokens_in == len(_prompt_ids(lm.tokenizer, QUESTION))
    assert reply.tokens_out == len(lm.tokenizer.encode(reply.text)) + 1


# ---- chunked decoding and clients that go away ---------------------------------------------

COUNTING = [{"role": "user", "content": "Write the numbers from 1 to 300, separated by commas."}]


def test_a_reply_longer_than_a_chunk_continues_where_the_chunk_ended(client, served, lm):
    """48 tokens are two batcher calls (32 + 16): the same tokens as one sampler call."""
    server, _ = served
    tok = lm.tokenizer
    chunks_before = server.counters["chunks"]
    reply = _ask(client, messages=COUNTING, max_tokens=CHUNK + 16)
    assert server.counters["chunks"] - chunks_before == 2
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == CHUNK + 16
    direct = server.sampler.sample(
        [_prompt_ids(tok, COUNTING)], SamplingParams(max_new_tokens=CHUNK + 16, temperature=0.0))
    assert reply.choices[0].message.content == tok.decode(direct[0].token_ids)


def _counting_body(max_tokens: int, **extra) -> dict:
    return {"model": SERVED, "messages": COUNTING, "max_tokens": max_tokens, "temperature": 0,
            **extra}


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, bytes]:
    async with session.post(f"{url}/chat/completions", json=body) as response:
        return response.status, await response.read()


async def _timed(url: str, bodies: list[dict]) -> float:
    """Seconds until every request in `bodies`, sent together, has been answered."""
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        answers = await asyncio.gather(*[_post(session, url, b) for b in bodies])
        elapsed = time.perf_counter() - start
    assert all(status == 200 for status, _ in answers), answers
    return elapsed


def test_disconnected_clients_are_cancelled_and_free_the_batch(served):
    """Four 256-token requests (two streamed) are abandoned in their first chunk: they leave
    the batch, and a short request that follows waits for at most that chunk, not for the
    eight chunks the abandoned rows would have cost."""
    server, url = served
    n, long_tokens = 4, 8 * CHUNK

    async def scenario() -> tuple[float, float, int]:
        # Compile the 4-row and the 1-row programs, then time one chunk of four rows.
        await _timed(url, [_counting_body(1)] * n)
        await _timed(url, [_counting_body(8)])
        one_chunk = await _timed(url, [_counting_body(CHUNK)] * n)

        before = server.batcher.stats()
        async with aiohttp.ClientSession() as session:
            abandoned = [asyncio.ensure_future(_post(session, url, _counting_body(
                long_tokens, stream=i % 2 == 0))) for i in range(n)]
            deadline = time.monotonic() + 60
            while True:  # wait until their first chunk is being generated
                stats = server.batcher.stats()
                if stats["requests"] - before["requests"] >= n and stats["pending"] == 0:
                    break
                assert time.monotonic() < deadline, stats
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            for task in abandoned:
                task.cancel()
            await asyncio.gather(*abandoned, return_exceptions=True)
        # The session is closed: every abandoned connection is gone.
        short = await _timed(url, [_counting_body(8)])
        return one_chunk, short, before["rows"]

    cancelled_before = server.counters["cancelled_requests"]
    tokens_before = server.counters["cancelled_completion_tokens"]
    one_chunk, short, rows_before = asyncio.run(scenario())
    deadline = time.monotonic() + 30
    while server.counters["cancelled_requests"] - cancelled_before < n:
        assert time.monotonic() < deadline, dict(server.counters)
        time.sleep(0.05)
    time.sleep(0.5)  # nothing may be left running on their behalf
    assert server.counters["cancelled_requests"] - cancelled_before == n
    # They were cut in their first chunk: no chunk of theirs came back, none ran after it.
    assert server.counters["cancelled_completion_tokens"] - tokens_before == 0
    assert server.batcher.stats()["rows"] - rows_before <= n + 1
    assert server.batcher.stats()["pending"] == 0
    # Uncancelled, the abandoned rows would have run 8 chunks (at least 8 x one_chunk) before
    # the short request; cancelled, it waits for the rest of one chunk and then its own run.
    would_have_cost = long_tokens // CHUNK * one_chunk
    assert short < would_have_cost / 2, (short, one_chunk)
    print(f"one chunk of {n} rows: {one_chunk:.2f} s; short request after the abandoned "
          f"ones: {short:.2f} s")
    assert _http("GET", f"{url}/stats").json()["server"]["cancelled_requests"] == \
        server.counters["cancelled_requests"]


# ---- chat templates: the one registry ---------------------------------------------------------


def test_chat_template_names_come_from_the_tokenization_registry(tmp_path):
    for name, source in NAMED_CHAT_TEMPLATES.items():
        assert resolve_chat_template(name) == source
    jinja = tmp_path / "mine.jinja"
    jinja.write_text("{{ messages[0]['content'] }}", encoding="utf-8")
    assert resolve_chat_template(str(jinja)) == "{{ messages[0]['content'] }}"
    for wrong in ("hermes", "chatml-tools", str(tmp_path / "missing.jinja"), str(tmp_path)):
        with pytest.raises(ValueError, match="chatml_tools, compact"):
            resolve_chat_template(wrong)


@pytest.mark.parametrize("value", ["hermes", "{{ messages }}", "no/such/template.jinja"])
def test_cli_refuses_an_unknown_chat_template_naming_the_flag(capsys, value):
    assert cli.main(["serve", "--chat-template", value, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--chat-template" in err and repr(value) in err
    assert all(name in err for name in NAMED_CHAT_TEMPLATES)


def _prompt_tokens(url: str, messages, **body) -> int:
    reply = _http("POST", f"{url}/chat/completions", timeout=300, json_body={
        "messages": messages, "max_tokens": 1, "temperature": 0, **body})
    assert reply.status_code == 200, reply.text
    return reply.json()["usage"]["prompt_tokens"]


def test_server_renders_prompts_with_the_named_template(served, lm):
    """`chatml_tools` by name: the prompt is that template's rendering, not the native one."""
    tok = lm.tokenizer
    server = ChatServer(tok, served[0].sampler, model_name=SERVED, max_batch_size=8,
                        chat_template=resolve_chat_template("chatml_tools"))
    with ServerThread(server) as url:
        with_tools = _prompt_tokens(url, QUESTION, tools=[WEATHER_TOOL])
        plain = _prompt_tokens(url, QUESTION)
    source = NAMED_CHAT_TEMPLATES["chatml_tools"]
    assert with_tools == len(_prompt_ids(tok, QUESTION, tools=[WEATHER_TOOL],
                                         chat_template=source))
    assert with_tools != len(_prompt_ids(tok, QUESTION, tools=[WEATHER_TOOL],
                                         chat_template=NAMED_CHAT_TEMPLATES["compact"]))
    assert plain == len(_prompt_ids(tok, QUESTION, chat_template=source))
    assert plain != len(_prompt_ids(tok, QUESTION))  # SmolLM2's own adds a system turn


# ---- taking a generated reply apart ---------------------------------------------------------


def _result(tok, text, finish="stop"):
    ids = tok.encode(text) + ([tok.eos_token_id] if finish == "stop" else [])
    return GenerationResult(token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason=finish)


def test_generated_tool_calls_become_openai_tool_calls(lm):
    tok = lm.tokenizer
    text = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}\n</tool_call>')
    result = _result(tok, text)
    reply = build_reply(tok, result, prompt_tokens=10, tools=[WEATHER_TOOL])
    assert reply.finish_reason == "tool_calls"
    assert reply.content == "Let me check."
    assert reply.completion_tokens == len(result.token_ids)
    [call] = reply.tool_calls
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    # The official client's types accept the body, arguments stay a JSON string.
    parsed = openai.types.chat.ChatCompletion.model_validate(
        completion_body(reply, model=SERVED, completion_id="chatcmpl-x"))
    assert json.loads(parsed.choices[0].message.tool_calls[0].function.arguments) == \
        {"city": "Paris"}
    # Streamed, the call arrives whole with its index, before the finishing chunk.
    chunks = list(completion_chunks(tok, reply, model=SERVED, completion_id="c",
                                    include_usage=False))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[-2]["tool_calls"][0]["index"] == 0
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_invalid_calls_stay_text_and_reasoning_is_split_out(lm):
    tok = lm.tokenizer
    unknown = '<tool_call>{"name": "launch_rocket", "arguments": {}}</tool_call>'
    reply = build_reply(tok, _result(tok, unknown), prompt_tokens=3, tools=[WEATHER_TOOL])
    assert reply.finish_reason == "stop" and reply.tool_calls == []
    assert reply.content == unknown
    no_tools = build_reply(tok, _result(tok, '<tool_call>{"name": "get_weather"}</tool_call>'),
                           prompt_tokens=3, tools=None)
    assert no_tools.tool_calls == [] and no_tools.content.startswith("<tool_call>")
    thought = build_reply(tok, _result(tok, "<think>Paris, surely.</think>Paris.", "length"),
                          prompt_tokens=3)
    assert (thought.reasoning, thought.content, thought.finish_reason) == \
        ("Paris, surely.", "Paris.", "length")


# ---- bad requests and failures --------------------------------------------------------------

LONG_TEXT = "word " * 9000  # more tokens than SmolLM2's 8192-token context

BAD_REQUESTS = {
    "invalid JSON": (b"{not json", None, None),
    "array body": (b"[1, 2]", None, None),
    "no messages": (json.dumps({"model": SERVED}).encode(), "messages", None),
    "messages not a list": ({"messages": "hi"}, "messages", None),
    "empty messages": ({"messages": []}, "messages", None),
    "unknown role": ({"messages": [{"role": "wizard", "content": "x"}]},
                     "messages[0].role", None),
    "missing content": ({"messages": [{"role": "user"}]}, "messages[0].content", None),
    "content a number": ({"messages": [{"role": "user", "content": 5}]},
                         "messages[0].content", None),
    "tool without id": ({"messages": [{"role": "tool", "content": "x"}]},
                        "messages[0].tool_call_id", None),
    "max_tokens 0": ({"max_tokens": 0}, "max_tokens", None),
    "max_tokens text": ({"max_tokens": "ten"}, "max_tokens", None),
    "max_tokens bool": ({"max_tokens": True}, "max_tokens", None),
    "temperature text": ({"temperature": "hot"}, "temperature", None),
    "temperature 3": ({"temperature": 3}, "temperature", None),
    "top_p 0": ({"top_p": 0}, "top_p", None),
    "n 2": ({"n": 2}, "n", None),
    "tool_choice required": ({"tool_choice": "required"}, "tool_choice", None),
    "tool_choice named": ({"tool_choice": {"type": "function", "function": {"name": "f"}}},
                          "tool_choice", None),
    "stop a number": ({"stop": 5}, "stop", None),
    "stream text": ({"stream": "yes"}, "stream", None),
    "tools not a list": ({"tools": "get_weather"}, "tools", None),
    "top_logprobs": ({"logprobs": True, "top_logprobs": 3}, "top_logprobs", None),
    "prompt too long": ({"messages": [{"role": "user", "content": LONG_TEXT}]}, "messages",
                        "context_length_exceeded"),
    "reply too long": ({"max_tokens": 8190}, "max_tokens", "context_length_exceeded"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_gets_openai_error_json(served, name):
    body, param, code = BAD_REQUESTS[name]
    if isinstance(body, dict):
        body = json.dumps({"model": SERVED, "messages": QUESTION, **body}).encode()
    response = _http("POST", f"{served[1]}/chat/completions", content=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert error["param"] == param
    assert error["code"] == code


def test_server_answers_after_bad_requests_and_client_sees_typed_errors(client, served):
    with pytest.raises(openai.BadRequestError) as excinfo:
        _ask(client, n=2)
    assert excinfo.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=4)
    unknown_route = _http("GET", f"{served[1]}/does-not-exist")
    assert unknown_route.status_code == 404 and "error" in unknown_route.json()
    assert "Paris" in _ask(client).choices[0].message.content
    counters = _http("GET", f"{served[1]}/stats").json()["server"]
    assert counters["errors_400"] >= 1 and counters["errors_404"] >= 2


def test_internal_failure_is_a_500_and_the_server_recovers(client, served, lm):
    """Broken parameters make the real sampler fail inside the batcher: 500, then recovery."""
    server, _ = served
    good = nnx.state(lm.model)
    failed_before = server.batcher.stats()["failed_batches"]
    server.sampler.update_params(jax.tree.map(lambda x: x[:1], good), version=1)
    try:
        with pytest.raises(openai.InternalServerError) as excinfo:
            _ask(client)
        assert excinfo.value.status_code == 500
        assert excinfo.value.body["type"] == "server_error"
        assert excinfo.value.body["message"]
    finally:
        server.sampler.update_params(good, version=0)
    assert server.batcher.stats()["failed_batches"] == failed_before + 1
    assert "Paris" in _ask(client).choices[0].message.content


# ---- the command line -----------------------------------------------------------------------


def _orchestra_command() -> list[str]:
    script = Path(sys.executable).with_name("orchestra")
    return [str(script)] if script.exists() else [sys.executable, "-m", "orchestra_jax.cli"]


def _read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


class _CliServer:
    """`orchestra serve` as a subprocess; its output is collected line by line."""

    secret = "sk-test-5f1c2e9d"  # a made-up key for these tests only

    def __init__(self) -> None:
        env = dict(os.environ, ORCHESTRA_TEST_KEY=self.secret)
        cmd = [*_orchestra_command(), "serve", "--model", MODEL, "--host", "127.0.0.1",
               "--port", "0", "--scan-layers", "--served-model-name", "smol",
               "--default-max-tokens", "8", "--api-key-env", "ORCHESTRA_TEST_KEY",
               "--chat-template", "compact"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self._lines: queue.Queue = queue.Queue()
        self._output: list[str] = []
        threading.Thread(target=_read_lines, args=(self.proc.stdout, self._lines),
                         daemon=True).start()
        self.url = self._wait_for_url(timeout_s=180)

    def _wait_for_url(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, "orchestra serve exited:\n" + "".join(self._output)
            self._output.append(line)
            if " on http://" in line:
                return line.split(" on ")[1].split()[0]
        raise AssertionError("orchestra serve did not start:\n" + "".join(self._output))

    def output(self, until_exit: bool = False) -> str:
        """Everything printed so far (waiting for the end of output when `until_exit`)."""
        time.sleep(0.2)  # let the log lines of the last request arrive
        while True:
            try:
                line = self._lines.get(timeout=30 if until_exit else 0)
            except queue.Empty:
                break
            if line is None:
                break
            self._output.append(line)
        return "".join(self._output)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="module")
def cli_server():
    server = _CliServer()
    try:
        yield server
    finally:
        server.stop()


def test_cli_serves_behind_an_api_key_that_never_reaches_the_logs(cli_server):
    url, secret = cli_server.url, cli_server.secret
    assert _http("GET", url.removesuffix("/v1") + "/health").status_code == 200
    with openai.OpenAI(base_url=url, api_key="wrong-key", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="smol", messages=QUESTION)
    with openai.OpenAI(base_url=url, api_key=secret, max_retries=0, timeout=300) as right:
        assert [m.id for m in right.models.list().data] == ["smol"]
        with pytest.raises(openai.BadRequestError):
            right.chat.completions.create(model="smol", messages=QUESTION, max_tokens=0)
    log = cli_server.output()
    assert "POST /v1/chat/completions" in log  # requests are logged ...
    assert secret not in log  # ... the key never is


def test_cli_server_renders_with_the_chat_template_it_was_given_by_name(cli_server, lm):
    """`--chat-template compact`: tools are one line of names, not JSON schemas."""
    tok = lm.tokenizer
    with openai.OpenAI(base_url=cli_server.url, api_key=cli_server.secret, max_retries=0,
                       timeout=300) as right:
        reply = right.chat.completions.create(model="smol", messages=QUESTION,
                                              tools=[WEATHER_TOOL], max_tokens=1)
    compact = NAMED_CHAT_TEMPLATES["compact"]
    assert reply.usage.prompt_tokens == len(_prompt_ids(tok, QUESTION, tools=[WEATHER_TOOL],
                                                        chat_template=compact))
    assert reply.usage.prompt_tokens < len(_prompt_ids(
        tok, QUESTION, tools=[WEATHER_TOOL], chat_template=NAMED_CHAT_TEMPLATES["chatml_tools"]))


@pytest.mark.slow
def test_cli_server_answers_and_shuts_down_cleanly(cli_server):
    with openai.OpenAI(base_url=cli_server.url, api_key=cli_server.secret, max_retries=0,
                       timeout=300) as right:
        reply = right.chat.completions.create(model="smol", messages=QUESTION)
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens <= 8  # --default-max-tokens
    assert cli_server.stop() == 0
    log = cli_server.output(until_exit=True)
    assert "shutting down" in log
    assert cli_server.secret not in log


def test_cli_refuses_a_model_without_a_tokenizer(capsys):
    assert cli.main(["serve", "--model", "tiny", "--port", "0"]) == 2
    assert "tokenizer" in capsys.readouterr().err


def test_cli_names_a_missing_key_variable_and_an_unknown_model(capsys, tmp_path):
    os.environ.pop("ORCHESTRA_UNSET_KEY", None)
    assert cli.main(["serve", "--api-key-env", "ORCHESTRA_UNSET_KEY"]) == 2
    assert "ORCHESTRA_UNSET_KEY" in capsys.readouterr().err
    missing = tmp_path / "missing.gguf"
    assert cli.main(["serve", "--model", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
