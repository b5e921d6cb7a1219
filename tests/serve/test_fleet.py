"""The expert fleet: real `orchestra serve` processes on 127.0.0.1 behind one experts file,
priced per expert, answering through `ExpertPool`, and all gone once the fleet stops."""

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestra_jax.serve.fleet import FleetError, parse_specs, start_fleet
from orchestra_jax.tools.experts import ExpertPool
from orchestra_jax.tools.pricing import Price, PricingCatalog

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPEC = ROOT / "experiments" / "qa_local_experts.json"
QUESTION = [{"role": "user", "content": "Is Paris the capital of France? Answer yes or no."}]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _server_usage(url: str) -> tuple[int, int]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/stats", timeout=10) as response:
        counters = json.load(response)["server"]
    return counters.get("prompt_tokens", 0), counters.get("completion_tokens", 0)


def test_two_priced_experts_answer_through_the_written_experts_file(tmp_path):
    """The recipe's default spec: two SmolLM2 servers, priced like Qwen3-8B and like GPT-5."""
    with start_fleet(DEFAULT_SPEC, start_timeout_s=180, log_dir=tmp_path / "logs") as fleet:
        path = fleet.write(tmp_path / "experts.json")
        config = json.loads(path.read_text())
        assert set(config) == {"cheap", "expensive"}
        for name, entry in config.items():
            assert entry["endpoint"].startswith("http://127.0.0.1:")
            assert entry["model"] == name  # two experts on one checkpoint stay two models
        pool = ExpertPool.from_config(config, PricingCatalog.load())
        assert pool["expensive"].price == Price(1.25, 10.0)

        async def ask_each():
            try:
                return {a: await pool[a].complete(QUESTION, max_tokens=4) for a in pool}
            finally:
                await pool.aclose()

        answers = asyncio.run(ask_each())
        for alias, (completion, cost) in answers.items():
            assert completion.tokens_in > 10 and 1 <= completion.tokens_out <= 4
            # the client's usage is the server's own count, and the cost is usage x the price
            url = fleet[alias].url
            assert _server_usage(url) == (completion.tokens_in, completion.tokens_out)
            assert cost == pytest.approx(
                pool[alias].price.cost_usd(completion.tokens_in, completion.tokens_out))
        assert answers["expensive"][1] > answers["cheap"][1]
        pids = [server.pid for server in fleet.servers.values()]
    assert fleet.stop() == {"cheap": 0, "expensive": 0}  # clean SIGTERM exits; stop is idempotent
    assert all(_gone(pid) for pid in pids)
    assert not path.exists()  # stale ports are not left behind
    assert "POST /v1/chat/completions" in (tmp_path / "logs" / "cheap.log").read_text()


def test_a_server_that_dies_at_start_is_named_with_its_output_and_the_others_stop():
    specs = {"ok": {"serve_args": ["--scan-layers"]},
             "broken": {"model": "no-such-model", "price": {"input_usd_per_mtok": 0,
                                                            "output_usd_per_mtok": 0}}}
    with pytest.raises(FleetError) as caught:
        start_fleet(specs, start_timeout_s=120)
    message = str(caught.value)
    assert "expert 'broken'" in message and "exited with code 2" in message
    assert "cannot load model 'no-such-model'" in message  # the server's own stderr tail
    assert set(caught.value.pids) == {"ok", "broken"}
    assert all(_gone(pid) for pid in caught.value.pids.values())


def test_a_server_slower_than_the_start_timeout_is_named_and_stopped():
    with pytest.raises(FleetError, match=r"expert 'slow': not ready before the start timeout") \
            as caught:
        start_fleet({"slow": {}}, start_timeout_s=0.5, grace_s=10)
    assert _gone(caught.value.pids["slow"])  # stopped, not orphaned


@pytest.mark.parametrize("spec, match", [
    ({"a": {"serve_args": ["--port", "9000"]}}, r"serve_args may not set \['--port'\]"),
    ({"a": {"modle": "x"}}, r"expert 'a': unknown keys \['modle'\]"),
    ({"a": {"price": {"input_usd_per_mtok": 1}}}, r"expert 'a': 'price' needs"),
    ({"a": {}, "b": {"served_model_name": "a"}}, r"served model name 'a' is also expert 'a'"),
    ({}, r"non-empty"),
])
def test_bad_specs_are_refused_naming_the_expert(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_specs(spec)


def test_the_launch_script_prints_the_experts_file_and_cleans_up_on_sigterm(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"solo": {"serve_args": ["--scan-layers"],
                                         "price": {"input_usd_per_mtok": 0.2,
                                                   "output_usd_per_mtok": 0.2}}}))
    out = tmp_path / "run" / "experts.json"
    proc = subprocess.Popen([str(ROOT / "launch" / "qa_local_experts.sh"), str(out), str(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
        assert out.exists(), proc.stdout.read() if proc.poll() is not None else "timed out"
        entry = json.loads(out.read_text())["solo"]
        assert entry["price"] == {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.2}
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    lines = output.splitlines()
    assert str(out.resolve()) in lines
    server_pid = int(next(line for line in lines if "solo (solo, pid" in line)
                     .split("pid ")[1].split(")")[0])
    assert _gone(server_pid)
    assert not out.exists()
    assert (tmp_path / "run" / "experts.logs" / "solo.log").exists()
