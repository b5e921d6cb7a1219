"""The paper's qa setting end to end, against two real `orchestra serve` experts on 127.0.0.1.

One module-scoped fleet serves SmolLM2 as `cheap` and `expensive`. The experts file prices them
one way (0.2 / 0.2 and 1.25 / 10 US$ per million tokens); the released-schema task file prices
them another (its `tool_pricing`, US$ per *token* as the release writes them), so every cost
check below also proves that a task's own prices win over the experts file's.

What is pinned (issue 24's acceptance):

* per-task aliases and prices reach the policy's prompt, never the expert names or the experts
  file's prices; a task's `pref_vec` reaches the reward the loop computes (`step_rewards`);
* `orchestra eval` (the real CLI) writes summary.json, trajectories.jsonl (+ one file per
  other policy) and the Pareto plot, and the cost in those files is exactly the servers' own
  token counts x the task file's prices, plus the orchestrator's tokens x its model's price;
* `orchestra train` on the Qwen3-8B recipe with CPU overrides runs one real step;
* bad inputs, each named: a malformed row, a mapping to an unknown expert, an expert with no
  price, an unreachable endpoint, a judge that answers garbage, a missing corpus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestra_jax.cli import main
from orchestra_jax.rl.samples import step_rewards
from orchestra_jax.rollout.episode import task_id_of
from orchestra_jax.rollout.scripted import FixedRoute, scripted_episodes
from orchestra_jax.rollout.statistics import rollout_metrics
from orchestra_jax.serve.fleet import start_fleet
from orchestra_jax.tools.pricing import PricingCatalog
from orchestra_jax.train.builders import default_preference
from orchestra_jax.train.config import load_config
from orchestra_jax.train.envs import build_env_suite
from orchestra_jax.train.errors import ConfigError
from tests.train.tiny_qwen3 import tiny_qwen3

REPO = Path(__file__).resolve().parents[2]
QA_LOCAL = REPO / "experiments" / "qa_local.py"
QWEN3_RECIPE = REPO / "experiments" / "orchestrator_qwen3_8b.py"

#: What the experts file charges (US$ per million tokens): what the tasks must override.
FILE_PRICES = {"cheap": (0.2, 0.2), "expensive": (1.25, 10.0)}
#: The task file's schedules, US$ per token as the release writes `tool_pricing`.
TASK_PRICES = {"cheap": (3e-6, 4e-6), "expensive": (7e-6, 2e-5)}
OTHER_PRICES = {"cheap": (5e-6, 6e-6), "expensive": (9e-6, 3e-5), "dead": (1e-6, 1e-6)}
ORCHESTRATOR_MODEL = "qwen3-8b"
EXPERT_MAX_TOKENS = "16"
MAPPING = {"expert-1": "cheap", "expert-2": "expensive"}


# ------------------------------------------------------------------------------------------------
# Task files, corpus, experts files


def _schema(name: str, aliases: list[str]) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": f"the {name} tool",
        "parameters": {"type": "object", "required": ["model"], "properties": {
            "model": {"type": "string", "enum": aliases}}}}}


def _pricing(prices: dict[str, tuple[float, float]]) -> dict:
    return {model: {"input_tokens_per_million": p_in, "output_tokens_per_million": p_out}
            for model, (p_in, p_out) in prices.items()}


def _record(index: str, problem: str, answer: str, pref: dict[str, float], instruction: str,
            mapping: dict[str, str] = MAPPING,
            prices: dict[str, tuple[float, float]] = TASK_PRICES) -> dict:
    """A released training record (the ToolOrchestra schema)."""
    aliases = list(mapping)
    return {"index": index, "category": "qa", "problem": problem, "answer": answer,
            "tools": [_schema("search", aliases), _schema("answer", aliases)],
            "model_mapping": dict(mapping), "tool_pricing": _pricing(prices),
            "pref_vec": pref, "pref_instruction": instruction}


#: Missed by the experts' answers, so the judge is asked (garbage judge) or it scores 0.
OBSCURE = _record("qa-codename", "What is the codename of the project in the memo?",
                  "Zorblax-7741",
                  {"expert-1": 0.0, "expert-2": 0.0, "accuracy": 1.0, "cost": 0.5,
                   "latency": 0.0}, "Keep the bill low.")
#: SmolLM2 answers it right (exact match, no judge), so its rewards are not all 0.
SUM = _record("qa-sum", "What is 2+3?", "5",
              {"expert-1": 1.0, "expert-2": 0.0, "accuracy": 1.0, "cost": 0.0,
               "latency": 0.0}, "Use expert-1 whenever you can.")
#: A third alias mapped to an endpoint nobody listens on, with a price schedule of its own.
DEAD = _record("qa-dead", "Which river flows through Paris?", "Seine",
               {"expert-1": 0.0, "expert-2": 0.0, "expert-3": 0.0, "accuracy": 1.0,
                "cost": 0.0, "latency": 0.0}, "Any expert will do.",
               mapping={**MAPPING, "expert-3": "dead"}, prices=OTHER_PRICES)


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stats(url: str) -> dict[str, int]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/stats", timeout=10) as response:
        server = json.load(response)["server"]
    return {k: int(server.get(k, 0)) for k in ("prompt_tokens", "completion_tokens")}


@dataclasses.dataclass
class Setting:
    root: Path
    fleet: object
    tasks: Path        # OBSCURE, SUM, DEAD
    eval_tasks: Path   # OBSCURE, SUM
    corpus: Path
    experts: Path      # cheap, expensive
    experts_all: Path  # + judge (a SmolLM2 server) + dead (a closed port)


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> Setting:
    root = tmp_path_factory.mktemp("qa_setting")
    specs = {name: {"price": {"input_usd_per_mtok": p_in, "output_usd_per_mtok": p_out},
                    "serve_args": ["--default-max-tokens", EXPERT_MAX_TOKENS,
                                   "--max-batch-size", "4"],
                    "timeout_s": 120}
             for name, (p_in, p_out) in FILE_PRICES.items()}
    with start_fleet(specs, start_timeout_s=240, log_dir=root / "fleet_logs") as fleet:
        experts = fleet.write(root / "experts.json")
        everything = fleet.experts_config()
        everything["judge"] = dict(everything["expensive"])
        everything["dead"] = {"model": "dead", "endpoint": f"http://127.0.0.1:{_closed_port()}/v1",
                              "timeout_s": 5, "price": {"input_usd_per_mtok": 1.0,
                                                        "output_usd_per_mtok": 1.0}}
        experts_all = root / "experts_all.json"
        experts_all.write_text(json.dumps(everything, indent=2))
        corpus = _write_jsonl(root / "corpus.jsonl", [
            {"id": "d1", "title": "Seine", "text": "The Seine flows through Paris."},
            {"id": "d2", "title": "Arithmetic", "text": "Two plus three is five."}])
        yield Setting(root=root, fleet=fleet,
                      tasks=_write_jsonl(root / "tasks.jsonl", [OBSCURE, SUM, DEAD]),
                      eval_tasks=_write_jsonl(root / "eval.jsonl", [OBSCURE, SUM]),
                      corpus=corpus, experts=experts, experts_all=experts_all)


def _qa_config(s: Setting, *overrides: str):
    """The qa_local recipe over this module's files (judge, dead expert and all)."""
    return load_config(QA_LOCAL, [
        f"data.path={s.tasks}", "data.eval_path=None", f"search.corpus={s.corpus}",
        f"experts.file={s.experts_all}", f"experts.max_tokens={EXPERT_MAX_TOKENS}",
        "judge.expert=judge", "judge.max_tokens=16", "data.bad_rows=fail", *overrides])


def _subprocess_env() -> dict[str, str]:
    """The test session's environment without its 8 fake CPU devices: a user's machine."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
    env["XLA_FLAGS"] = flags.strip()
    return env


def _orchestra(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("orchestra")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "orchestra_jax.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=REPO,
                          env=_subprocess_env(), timeout=timeout_s)


# ------------------------------------------------------------------------------------------------
# 1a. Aliases and the task's prices reach the prompt


def _price_line(alias: str, prices: tuple[float, float]) -> str:
    return f"{alias}: ${prices[0] * 1e6:g} in / ${prices[1] * 1e6:g} out per million tokens"


def test_the_prompt_shows_the_tasks_aliases_and_prices_not_expert_names(setting):
    suite = build_env_suite(_qa_config(setting), setting.root / "wd_prompt")
    by_id = {t.id: t for t in suite.tasks}
    env = suite.make_env()
    for task_id, mapping, prices in (("qa-codename", MAPPING, TASK_PRICES),
                                     ("qa-dead", DEAD["model_mapping"], OTHER_PRICES)):
        env.reset(by_id[task_id])
        messages, tools = env.messages(), env.tools()
        system, user = messages[0]["content"], messages[1]["content"]
        text = json.dumps(messages) + json.dumps(tools)
        for alias, name in mapping.items():
            assert _price_line(alias, prices[name]) in system
        for tool in tools:
            assert tool["function"]["parameters"]["properties"]["model"]["enum"] == list(mapping)
        # the experts' names and the experts file's prices never reach the policy
        assert not re.search(r"\b(cheap|expensive|dead|judge)\b", text), text
        assert "$0.2 in" not in text and "$1.25 in" not in text
        instruction = {"qa-codename": OBSCURE, "qa-dead": DEAD}[task_id]["pref_instruction"]
        assert instruction in user and user.index(instruction) > user.index("Problem:")


# ------------------------------------------------------------------------------------------------
# Scripted episodes through the suite's own env and executor (the judge is a SmolLM2 server)


@pytest.fixture(scope="module")
def scripted(setting):
    """Fixed routes through the real suite: the SUM task answered once by each alias (one
    advantage group), the OBSCURE task answered by expert-1 (a miss: the judge is asked), and
    the DEAD task asking the unreachable expert-3 first, then expert-1."""
    from orchestra_jax.assets import smollm2_gguf_path
    from orchestra_jax.tokenization import HFTokenizer, named_chat_template
    from orchestra_jax.tokenization.gguf_vocab import read_gguf_vocab

    suite = build_env_suite(_qa_config(setting), setting.root / "wd_scripted")
    by_id = {t.id: t for t in suite.tasks}
    plan = [(by_id["qa-sum"], [("answer", {"model": "expert-1"})]),
            (dataclasses.replace(by_id["qa-sum"]), [("answer", {"model": "expert-2"})]),
            (by_id["qa-codename"], [("answer", {"model": "expert-1"})]),
            (by_id["qa-dead"], [("answer", {"model": "expert-3"}),
                                ("answer", {"model": "expert-1"})])]
    routes = {id(task): route for task, route in plan}
    tokenizer = HFTokenizer.from_gguf_vocab(read_gguf_vocab(smollm2_gguf_path()))
    tokenizer.chat_template = named_chat_template("chatml_tools")
    trajectories = asyncio.run(scripted_episodes(
        [task for task, _ in plan], suite.make_env, tokenizer=tokenizer,
        executor=suite.make_executor(), choose_for=lambda task: FixedRoute(routes[id(task)]),
        max_turns=3, timeout_s=300))
    return suite, by_id, trajectories


def test_the_tasks_preference_vector_reaches_the_reward(scripted, setting):
    suite, by_id, trajectories = scripted
    assert suite.tool_names == ("expert-1", "expert-2", "expert-3")
    assert suite.preference_of(by_id["qa-sum"]) == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert suite.preference_of(by_id["qa-codename"]) == [0.0, 0.0, 0.0, 1.0, 0.5, 0.0]

    by_expert1, by_expert2 = trajectories[:2]
    assert [r.alias for r in by_expert1.records] == ["expert-1"]
    assert [r.alias for r in by_expert2.records] == ["expert-2"]
    assert by_expert1.outcome == by_expert2.outcome == 1.0, (by_expert1.info, by_expert2.info)
    group = [dataclasses.replace(t, group=0) for t in (by_expert1, by_expert2)]
    defaults = default_preference(_qa_config(setting))

    def rewards(task):
        values, _ = step_rewards(group, [task], tool_names=suite.tool_names,
                                 count_calls=suite.count_calls,
                                 preference_of=suite.preference_of,
                                 default_preference=defaults, task_label=task_id_of)
        return [float(v) for v in values]

    # the task's own pref_vec (expert-1 preferred) vs the same task preferring expert-2
    prefers_1 = rewards(by_id["qa-sum"])
    prefers_2 = rewards(dataclasses.replace(
        by_id["qa-sum"], preference={"expert-2": 1.0, "accuracy": 1.0}))
    assert prefers_1[0] > prefers_1[1], prefers_1
    assert prefers_2[1] > prefers_2[0], prefers_2


def test_an_unreachable_endpoint_is_a_classified_call_and_the_episode_goes_on(scripted):
    _, _, trajectories = scripted
    dead = trajectories[3]
    failed, answered = dead.records
    assert (failed.alias, str(failed.error_kind)) == ("expert-3", "connection")
    assert failed.cost_usd == 0.0 and failed.tokens_in == failed.tokens_out == 0
    assert answered.alias == "expert-1" and answered.error_kind is None
    assert dead.termination == "answered" and dead.turns == 2 and dead.error is None
    metrics = rollout_metrics(trajectories)
    assert metrics["train/tool_errors/connection"] == pytest.approx(1 / len(trajectories))


def test_a_failed_call_names_the_model_it_tried(scripted):
    _, _, trajectories = scripted
    failed = trajectories[3].records[0]
    assert failed.model == "dead"


def test_a_judge_that_answers_garbage_is_a_counted_judge_error_with_outcome_0(scripted):
    _, _, trajectories = scripted
    judged = trajectories[2]  # the obscure answer: exact match misses, the judge is asked
    assert judged.termination == "answered" and judged.error is None
    assert judged.info["verdict_method"] == "judge"
    assert judged.info["judge_error"] == "unparseable_verdict", judged.info
    assert judged.outcome == 0.0
    assert judged.info["judge_cost_usd"] > 0  # the judge was really called
    exact = trajectories[0]
    assert exact.info["verdict_method"] != "judge" and exact.info["judge_error"] is None
    metrics = rollout_metrics(trajectories)
    errors = sum(1 for t in trajectories if t.info.get("judge_error"))
    assert errors >= 1
    assert metrics["train/judge_error_rate"] == pytest.approx(errors / len(trajectories))
    assert metrics["train/judge_errors/unparseable_verdict"] > 0


# ------------------------------------------------------------------------------------------------
# 1b + 2. `orchestra eval` through the real CLI; the cost identity against the servers' counts


@pytest.fixture(scope="module")
def evaluated(setting):
    """`orchestra eval` as the issue's Interfaces section spells it, plus size overrides;
    the servers' token counters read just before and just after it."""
    out = setting.root / "eval_out" / "summary.json"
    before = {name: _stats(setting.fleet[name].url) for name in FILE_PRICES}
    start = time.perf_counter()
    done = _orchestra(
        "eval", "--config", str(QA_LOCAL), "--checkpoint", "smollm2-135m-instruct",
        "--out", str(out), f"--config.data.eval_path={setting.eval_tasks}",
        f"--config.search.corpus={setting.corpus}", f"--config.experts.file={setting.experts}",
        "--config.eval.max_tasks=2",
        # sizes for two CPU cores, and the orchestrator priced as Qwen3-8B
        f"--config.data.path={setting.eval_tasks}",
        f"--config.experts.max_tokens={EXPERT_MAX_TOKENS}",
        f"--config.experts.orchestrator_model={ORCHESTRATOR_MODEL}",
        "--config.rollout.max_turns=2", "--config.rollout.max_new_tokens=32",
        "--config.rollout.max_batch_size=2")
    seconds = time.perf_counter() - start
    after = {name: _stats(setting.fleet[name].url) for name in FILE_PRICES}
    assert done.returncode == 0, done.stderr[-4000:]
    delta = {name: {k: after[name][k] - before[name][k] for k in before[name]}
             for name in FILE_PRICES}
    return out, delta, seconds, done


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_orchestra_eval_writes_summary_trajectories_and_the_pareto_plot(evaluated):
    out, _, _, done = evaluated
    summary = json.loads(out.read_text())
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    policies = summary["policies"]
    assert set(printed) == set(policies)
    expected = {"trained", "random", "basic_tools:cheap", "basic_tools:expensive",
                *(f"route:{r}:{e}" for r in ("answer", "search-answer")
                  for e in ("cheap", "expensive"))}
    assert set(policies) == expected
    for name, entry in policies.items():
        for key in ("accuracy", "cost_usd", "latency_s", "preference_score"):
            assert isinstance(entry[key], float | int), (name, key)
        assert set(entry["calls"]) == {"expert-1", "expert-2"}, name  # per alias
        assert entry["tasks"] == 2
    assert policies["route:answer:cheap"]["calls"] == {"expert-1": 1.0, "expert-2": 0.0}

    lines = _lines(out.parent / "trajectories.jsonl")
    assert [line["id"] for line in lines] == ["qa-codename", "qa-sum"]
    call_keys = {"alias", "model", "prompt_tokens", "completion_tokens", "cost_usd",
                 "latency_s", "error"}
    for path in [out.parent / "trajectories.jsonl",
                 *sorted((out.parent / "trajectories").glob("*.jsonl"))]:
        for line in _lines(path):
            assert {"id", "outcome", "cost_usd", "latency_s", "calls"} <= set(line), path
            for call in line["calls"]:
                assert call_keys <= set(call), (path, call)
    assert summary["trajectories"]["trained"] == str(out.parent / "trajectories.jsonl")
    plot = Path(summary["pareto_png"])
    assert plot.parent == out.parent and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = "".join(p.read_text() for p in out.parent.rglob("*.json*"))
    assert "127.0.0.1" not in text  # no endpoint leaks into what eval writes


def test_eval_cost_is_the_servers_token_counts_times_the_task_files_prices(evaluated):
    out, delta, seconds, _ = evaluated
    orchestrator = PricingCatalog.load().price(ORCHESTRATOR_MODEL)
    scripted = {"random", *(f"route:{r}:{e}" for r in ("answer", "search-answer")
                            for e in ("cheap", "expensive"))}
    counted = {name: {"prompt_tokens": 0, "completion_tokens": 0} for name in FILE_PRICES}
    tool_cost = orchestrator_cost = 0.0
    summary = json.loads(out.read_text())
    for policy, path in summary["trajectories"].items():
        for line in _lines(Path(path)):
            for call in line["calls"]:
                if call["model"] is None:  # refused before any expert was asked
                    assert call["prompt_tokens"] == call["completion_tokens"] == 0
                    continue
                p_in, p_out = TASK_PRICES[call["model"]]
                assert call["cost_usd"] == pytest.approx(
                    call["prompt_tokens"] * p_in + call["completion_tokens"] * p_out,
                    rel=1e-9, abs=1e-15), call
                for key in ("prompt_tokens", "completion_tokens"):
                    counted[call["model"]][key] += call[key]
            own = line["orchestrator"]
            priced = orchestrator.cost_usd(own["prompt_tokens"], own["completion_tokens"])
            assert own["cost_usd"] == pytest.approx(0.0 if policy in scripted else priced,
                                                    rel=1e-9, abs=1e-15), (policy, own)
            calls_cost = sum(call["cost_usd"] for call in line["calls"])
            assert line["cost_usd"] == pytest.approx(calls_cost + own["cost_usd"],
                                                     rel=1e-9, abs=1e-15), (policy, line)
            tool_cost += calls_cost
            orchestrator_cost += own["cost_usd"]
    # every token a server generated or read during the eval is in some call of the files
    assert counted == delta
    assert all(delta[name]["prompt_tokens"] > 0 for name in FILE_PRICES)
    billed = sum(delta[n]["prompt_tokens"] * TASK_PRICES[n][0]
                 + delta[n]["completion_tokens"] * TASK_PRICES[n][1] for n in FILE_PRICES)
    assert tool_cost == pytest.approx(billed, rel=1e-9)
    at_file_prices = sum(delta[n]["prompt_tokens"] * FILE_PRICES[n][0] / 1e6
                         + delta[n]["completion_tokens"] * FILE_PRICES[n][1] / 1e6
                         for n in FILE_PRICES)
    assert abs(tool_cost - at_file_prices) > 0.1 * tool_cost  # the experts file's lost
    trained = _lines(out.parent / "trajectories.jsonl")
    assert all(line["orchestrator"]["cost_usd"] > 0 for line in trained)
    print(f"\neval {seconds:.0f} s; server tokens {delta}; tools ${tool_cost:.7f} "
          f"(= server tokens x task prices ${billed:.7f}; at the experts file's prices "
          f"${at_file_prices:.7f}); orchestrator ${orchestrator_cost:.7f}")


# ------------------------------------------------------------------------------------------------
# 3. `orchestra train` on the Qwen3-8B recipe: one real step on CPU


def _train_args(s: Setting, workdir: Path, model: Path, tasks: Path, *extra: str) -> list[str]:
    """The recipe's CPU overrides (its docstring's list), the module's files, and filters
    that keep the step's turns, so that the update really sees samples."""
    return ["train", "--config", str(QWEN3_RECIPE), "--workdir", str(workdir),
            f"--config.model.path={model}", f"--config.data.path={tasks}",
            f"--config.experts.file={s.experts_all}", f"--config.search.corpus={s.corpus}",
            "--config.mesh.shape=(1,1,1)", "--config.model.dtype=float32",
            "--config.model.scan_layers=False", "--config.model.chat_template=chatml_tools",
            "--config.rollout.prompts_per_step=1", "--config.rollout.group_size=2",
            "--config.rollout.max_turns=2", "--config.rollout.max_new_tokens=16",
            "--config.rollout.max_prompt_tokens=2048", "--config.rollout.max_batch_size=2",
            "--config.train.steps=1", "--config.train.mini_batch_size=2",
            f"--config.experts.max_tokens={EXPERT_MAX_TOKENS}",
            "--config.filter.min_group_std=None",
            "--config.filter.drop_invalid_final_output=False", *extra]


@pytest.fixture(scope="module")
def tiny_model(setting) -> Path:
    return tiny_qwen3(setting.root / "qwen3")


@pytest.fixture(scope="module")
def train_tasks_with_a_bad_row(setting) -> Path:
    return _write_jsonl(setting.root / "train.jsonl",
                        [OBSCURE, "{not json", SUM, DEAD])


def test_orchestra_train_runs_one_step_of_the_qwen3_recipe_on_cpu(setting, tiny_model,
                                                                   train_tasks_with_a_bad_row):
    workdir = setting.root / "train_run"
    start = time.perf_counter()
    done = _orchestra(*_train_args(setting, workdir, tiny_model, train_tasks_with_a_bad_row))
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-4000:]
    # the recipe's data.bad_rows='skip': the malformed row is named and the run goes on
    assert f"{train_tasks_with_a_bad_row}:2: not valid JSON" in done.stdout + done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["step"] == 1 and printed["checkpoint_step"] == 1
    assert (workdir / "checkpoints" / "1" / "commit_success.txt").is_file()
    metrics = json.loads((workdir / "summary.json").read_text())["final_metrics"]
    assert metrics["step"] == 1 and metrics["train/episodes"] == 2.0
    assert metrics["update/kept_samples"] > 0  # rollout, reward and a real update
    assert "train/reward" in metrics and "train/judge_error_rate" in metrics
    assert metrics["train/policy_cost_usd"] > 0  # its own tokens, priced as qwen3-8b
    assert list((workdir / "tensorboard").iterdir())
    print(f"\ntrain step {seconds:.0f} s: {json.dumps(printed)}")


# ------------------------------------------------------------------------------------------------
# 4. Bad inputs, each named


def test_a_malformed_row_stops_the_start_naming_file_and_line(setting, tiny_model,
                                                              train_tasks_with_a_bad_row,
                                                              capsys):
    workdir = setting.root / "bad_row_fail"
    code = main(_train_args(setting, workdir, tiny_model, train_tasks_with_a_bad_row,
                            "--config.data.bad_rows=fail"))
    err = capsys.readouterr().err
    assert code == 2
    assert f"{train_tasks_with_a_bad_row}:2" in err and "data.path" in err, err
    assert not (workdir / "checkpoints").exists()


def test_a_malformed_row_fails_before_the_workdir_is_written(setting, tiny_model,
                                                             train_tasks_with_a_bad_row):
    workdir = setting.root / "bad_row_untouched"
    code = main(_train_args(setting, workdir, tiny_model, train_tasks_with_a_bad_row,
                            "--config.data.bad_rows=fail"))
    assert code == 2
    assert not workdir.exists()


def test_a_mapping_to_an_expert_the_experts_file_lacks_is_named(setting):
    unknown = _record("qa-unknown", "What is 1+1?", "2", {"accuracy": 1.0}, "Be quick.",
                      mapping={**MAPPING, "expert-3": "nowhere"})
    tasks = _write_jsonl(setting.root / "unknown.jsonl", [SUM, unknown])
    with pytest.raises(ConfigError) as caught:
        build_env_suite(_qa_config(setting, f"data.path={tasks}"), setting.root / "wd_unknown")
    message = str(caught.value)
    for part in ("data.path", "qa-unknown", "expert-3", "nowhere", "cheap", "expensive"):
        assert part in message, message
    # data.bad_rows='skip': the task is left out, the rest train
    suite = build_env_suite(_qa_config(setting, f"data.path={tasks}", "data.bad_rows=skip"),
                            setting.root / "wd_unknown_skip")
    assert [t.id for t in suite.tasks] == ["qa-sum"]


def test_an_expert_with_no_price_anywhere_is_named(setting):
    experts = json.loads(setting.experts.read_text())
    experts["mystery"] = {"model": "mystery-model", "endpoint": experts["cheap"]["endpoint"]}
    path = setting.root / "experts_unpriced.json"
    path.write_text(json.dumps(experts))
    with pytest.raises(ConfigError) as caught:
        build_env_suite(_qa_config(setting, f"experts.file={path}", "judge.expert=None"),
                        setting.root / "wd_unpriced")
    message = str(caught.value)
    assert "experts.file" in message and "mystery" in message and "mystery-model" in message


def test_a_missing_corpus_file_is_named(setting):
    missing = setting.root / "no_such_corpus.jsonl"
    with pytest.raises(ConfigError) as caught:
        build_env_suite(_qa_config(setting, f"search.corpus={missing}"),
                        setting.root / "wd_corpus")
    assert "search.corpus" in str(caught.value) and str(missing) in str(caught.value)
