"""Task files as users have them: plain FRAMES / HLE rows and ToolOrchestra's released records,
read into `QATask`s with their aliases, prices (per-token values read as the release means
them), tool subsets and preferences; every bad row named by file:line, failed or skipped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestra_jax.envs.qa import QATask as QATaskFromEnv
from orchestra_jax.envs.qa_tasks import (
    QATask,
    TaskFile,
    TaskFileError,
    load_qa_tasks,
    load_task_file,
)
from orchestra_jax.tools.experts import Expert, ExpertPool
from orchestra_jax.tools.pricing import Price
from orchestra_jax.tools.simulated_expert import ExpertProfile, SimulatedExpert


def tool_schema(name: str, aliases: list[str] | None) -> dict:
    model: dict = {"type": "string"}
    if aliases is not None:
        model["enum"] = aliases
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} with a chosen expert",
            "parameters": {"type": "object", "properties": {"model": model}, "required": ["model"]},
        },
    }


def released(**overrides) -> dict:
    """A released qa record as the ToolOrchestra data has it."""
    row = {
        "index": "wiki____7",
        "category": "qa",
        "problem": "Which river flows through Berlin?",
        "answer": "Spree",
        "tools": [
            tool_schema("search", ["search-1"]),
            tool_schema("answer", ["answer-1", "answer-2"]),
        ],
        "model_mapping": {"search-1": "small", "answer-1": "small", "answer-2": "big"},
        "tool_pricing": {
            "small-model": {"input_tokens_per_million": 2e-07, "output_tokens_per_million": 4e-07},
            "big-model": {"input_tokens_per_million": 1.25e-06, "output_tokens_per_million": 1e-05},
            "code_interpreter_per_second": 8.3e-06,
            "tavily": {"search": 0.01, "extract": 0.002},
        },
        "pref_vec": {"answer-2": 0.0, "accuracy": 1.0, "cost": 0.5, "latency": 0.0},
        "pref_instruction": "Avoid the expensive expert.",
        "source": "frames-like",
    }
    row.update(overrides)
    return row


def write(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pool() -> ExpertPool:
    profile = ExpertProfile("m")
    return ExpertPool([
        Expert("small", "small-model", SimulatedExpert(profile), Price(0.1, 0.1)),
        Expert("big", "big-model", SimulatedExpert(profile), Price(9.0, 9.0)),
    ])  # fmt: skip


def test_qatask_lives_in_qa_tasks_and_the_env_module_re_exports_it():
    assert QATaskFromEnv is QATask
    task = QATask("t", "q?", "a")
    assert task.visible_aliases is None and task.prices == {} and task.extra == {}
    assert QATask("t", "q", "a", aliases=("x",)).visible_aliases == ("x",)
    mapped = QATask("t", "q", "a", aliases=("x",), model_mapping={"e-1": "big", "e-2": "small"})
    assert mapped.visible_aliases == ("e-1", "e-2")  # the mapping's keys win


def test_plain_frames_and_hle_rows_keep_their_extra_fields(tmp_path):
    path = write(tmp_path / "hle.jsonl", [
        {"id": "wiki____0", "question": "Who wrote Hamlet?", "answer": "Shakespeare"},
        {"id": "h1", "question": "2+2?", "answer": 4, "answer_type": "exactMatch",
         "category": "Math"},
        {"id": "h2", "question": "q?", "answer": "a", "category": "Physics", "family": "phys",
         "doc_ids": ["d1", "d2"]},
    ])  # fmt: skip
    loaded = load_task_file(path)
    assert isinstance(loaded, TaskFile) and loaded.skipped == [] and loaded.path == path
    frames, math_row, physics = loaded.tasks
    assert frames == QATask("wiki____0", "Who wrote Hamlet?", "Shakespeare")
    assert (math_row.answer, math_row.family) == ("4", "Math")  # HLE's category is the family
    assert math_row.extra == {"answer_type": "exactMatch", "category": "Math"}
    assert physics.family == "phys" and physics.doc_ids == ("d1", "d2")  # explicit family wins
    assert load_task_file(path, family="frames").tasks[0].family == "frames"


def test_a_released_record_becomes_a_task_with_its_aliases_prices_tools_and_preference(
    tmp_path,
):
    (task,) = load_task_file(write(tmp_path / "train.jsonl", [released()])).tasks
    assert (task.id, task.question, task.answer) == (
        "wiki____7", "Which river flows through Berlin?", "Spree")  # fmt: skip
    assert task.model_mapping == {"search-1": "small", "answer-1": "small", "answer-2": "big"}
    assert task.visible_aliases == ("search-1", "answer-1", "answer-2")
    assert task.tool_aliases == {"search": ("search-1",), "answer": ("answer-1", "answer-2")}
    # The release's per-million keys hold dollars per token: 1.25e-06 $/token = $1.25 / Mtok.
    assert task.prices["big-model"] == Price(1.25, 10.0)
    assert task.prices["small-model"].input_usd_per_mtok == pytest.approx(0.2)
    assert task.sandbox_usd_per_second == 8.3e-06 and task.search_usd_per_query == 0.01
    assert task.preference == {"answer-2": 0.0, "accuracy": 1.0, "cost": 0.5, "latency": 0.0}
    assert task.instruction == "Avoid the expensive expert."
    assert task.family == "qa" and task.extra == {"category": "qa", "source": "frames-like"}


@pytest.mark.parametrize("key", ["pref_instruction", "preference_instruction", "instruction"])
def test_the_preference_instruction_is_read_under_each_name_the_data_uses(tmp_path, key):
    row = released()
    del row["pref_instruction"]
    row[key] = "  Prefer open models.  "
    (task,) = load_task_file(write(tmp_path / "t.jsonl", [row])).tasks
    assert task.instruction == "Prefer open models."


def test_a_tool_without_a_model_enum_accepts_every_alias_and_records_need_no_extras(tmp_path):
    row = {"index": "x____1", "problem": "q?", "answer": "a",
           "tools": [tool_schema("answer", None), {"name": "search"}]}  # fmt: skip
    (task,) = load_task_file(write(tmp_path / "t.jsonl", [row])).tasks
    assert task.tool_aliases == {"answer": (), "search": ()}
    assert task.model_mapping is None and task.prices == {} and task.preference is None


def test_func_call_records_are_skipped_with_a_reason_in_either_mode(tmp_path):
    func_call = {"index": "airline____3", "category": "func_call", "problem": "book it",
                 "answer": "", "example": {"id": "3"}}  # fmt: skip
    path = write(tmp_path / "mixed.jsonl", [func_call, released()])
    for mode in ("fail", "skip"):
        loaded = load_task_file(path, on_bad_row=mode)
        assert [t.id for t in loaded.tasks] == ["wiki____7"]
        assert loaded.skipped == [f"{path}:1: a func_call record (it belongs to the tau2 "
                                  "environment)"]  # fmt: skip


BAD_ROWS = [
    ('{"index": "x____1", "problem": "q"', "not valid JSON"),
    ('["a list"]', "a row must be a JSON object"),
    (json.dumps({"index": "x____2", "answer": "a"}), "missing field 'problem'"),
    (json.dumps(released(answer=None)), "missing field 'answer'"),
    (json.dumps(released(tool_pricing={"big-model": {"input_tokens_per_million": "cheap",
                                                     "output_tokens_per_million": 1e-6}})),
     r"tool_pricing\['big-model'\]\['input_tokens_per_million'\] must be a number"),
    (json.dumps(released(tool_pricing={"big-model": {"input_tokens_per_million": 1e-6}})),
     r"tool_pricing\['big-model'\]\['output_tokens_per_million'\] must be a number"),
    (json.dumps(released(tool_pricing={"code_interpreter_per_second": "free"})),
     "code_interpreter_per_second"),
    (json.dumps(released(pref_vec={"accuracy": "high"})), r"pref_vec\['accuracy'\]"),
    (json.dumps(released(pref_vec={"answer-9": 1.0})), "pref_vec key 'answer-9'"),
    (json.dumps(released(tools=[tool_schema("answer", ["answer-3"])])),
     r"tool 'answer' offers aliases \['answer-3'\] that model_mapping lacks"),
    (json.dumps(released(tools=[tool_schema("search", ["search-1"])])), "must offer 'answer'"),
    (json.dumps(released(tools=[tool_schema("browse", ["search-1"])])), "named one of"),
    (json.dumps(released(model_mapping={"answer-1": 3})), "model_mapping alias 'answer-1'"),
    (json.dumps(released(pref_instruction=["x"])), "'pref_instruction' must be a string"),
    (json.dumps(released(index="wiki____1")), "duplicate id 'wiki____1'"),
]  # fmt: skip


@pytest.mark.parametrize(("bad_line", "message"), BAD_ROWS)
def test_a_bad_row_fails_naming_file_and_line(tmp_path, bad_line, message):
    path = write(tmp_path / "t.jsonl", [released(index="wiki____1"), bad_line])
    with pytest.raises(TaskFileError, match=message) as caught:
        load_task_file(path)
    assert f"{path}:2: " in str(caught.value)


@pytest.mark.parametrize(("bad_line", "message"), BAD_ROWS)
def test_a_bad_row_is_skipped_and_reported_under_the_skip_switch(tmp_path, bad_line, message):
    path = write(tmp_path / "t.jsonl", [released(index="wiki____1"), bad_line,
                                        released(index="wiki____3")])  # fmt: skip
    loaded = load_task_file(path, on_bad_row="skip")
    assert [t.id for t in loaded.tasks] == ["wiki____1", "wiki____3"]
    (why,) = loaded.skipped
    assert why.startswith(f"{path}:2: ")
    assert re.search(message, why)


def test_bytes_that_are_not_utf8_are_one_bad_row(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(json.dumps(released()).encode() + b"\n\xff\xfe\n")
    assert load_task_file(path, on_bad_row="skip").skipped == [f"{path}:2: not UTF-8 "
                                                              "(invalid start byte)"]  # fmt: skip
    with pytest.raises(TaskFileError, match=f"{path}:2: not UTF-8"):
        load_task_file(path)


def test_a_file_without_usable_tasks_or_a_missing_file_or_a_bad_switch_is_an_error(tmp_path):
    with pytest.raises(TaskFileError, match="task file not found"):
        load_task_file(tmp_path / "absent.jsonl")
    only_bad = write(tmp_path / "bad.jsonl", ["{nope"])
    with pytest.raises(TaskFileError, match=r"no usable tasks \(1 row\(s\) skipped; first: "):
        load_task_file(only_bad, on_bad_row="skip")
    with pytest.raises(ValueError, match="on_bad_row"):
        load_task_file(only_bad, on_bad_row="ignore")  # type: ignore[arg-type]


def test_given_the_pool_a_mapping_naming_an_unknown_expert_is_a_bad_row(tmp_path):
    ghost = released(index="g____1", model_mapping={"search-1": "small", "answer-1": "small",
                                                    "answer-2": "ghost"})  # fmt: skip
    path = write(tmp_path / "t.jsonl", [released(), ghost,
                                        {"id": "p", "question": "q", "answer": "a",
                                         "aliases": ["big", "phantom"]}])  # fmt: skip
    with pytest.raises(TaskFileError) as caught:
        load_task_file(path, experts=pool())
    message = str(caught.value)
    assert f"{path}:2: task 'g____1'" in message
    assert "'answer-2'" in message and "'ghost'" in message and "small, big" in message
    loaded = load_task_file(path, experts=pool(), on_bad_row="skip")
    assert [t.id for t in loaded.tasks] == ["wiki____7"]
    assert loaded.skipped[1].startswith(f"{path}:3: task 'p': aliases ['phantom']")
    assert load_task_file(path, on_bad_row="skip").skipped == []  # no pool: no check


def test_load_qa_tasks_still_reads_plain_rows_with_custom_field_names(tmp_path):
    path = write(tmp_path / "t.jsonl", [{"qid": "1", "q": "Who?", "gold": "Ada", "year": 1843}])
    (task,) = load_qa_tasks(path, id_field="qid", question_field="q", answer_field="gold")
    assert (task.id, task.question, task.answer, task.extra) == ("1", "Who?", "Ada",
                                                                 {"year": 1843})  # fmt: skip
