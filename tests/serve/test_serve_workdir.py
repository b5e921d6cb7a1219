"""`orchestra serve --model W` with W a run's workdir: the run's latest policy is exported once
to W/export/step_N, reused by the next server, and answers chat completions on a real server
on 127.0.0.1 (the toy run's own SentencePiece vocabulary and chat template)."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from orchestra_jax.cli import main
from orchestra_jax.serve.server import ServeError, ServerThread, load_chat_server
from orchestra_jax.train.export import MANIFEST_FILE

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "experiments" / "toy_target_call.py"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("serve_run") / "toy"
    assert main(["train", "--config", str(RECIPE), "--workdir", str(workdir),
                 "--config.rollout.prompts_per_step=2", "--config.rollout.group_size=2",
                 "--config.rollout.max_batch_size=4", "--config.data.max_tasks=4",
                 "--config.train.steps=1", "--config.train.mini_batch_size=4"]) == 0
    return workdir


def test_a_run_workdir_is_served_from_its_cached_export(toy_run):
    server = load_chat_server(toy_run, default_max_tokens=8, decode_chunk_tokens=0)
    manifest = toy_run / "export" / "step_1" / MANIFEST_FILE
    assert json.loads(manifest.read_text())["step"] == 1
    assert server.model_name == "toy"
    with ServerThread(server) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        reply = client.chat.completions.create(
            model="toy", max_tokens=8, temperature=0.0,
            messages=[{"role": "user", "content": "Which tool should answer this?"}])
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

    # The next server reuses the export instead of writing it again.
    written = manifest.stat().st_mtime_ns
    load_chat_server(toy_run, served_model_name="again")
    assert manifest.stat().st_mtime_ns == written
    assert sorted(p.name for p in (toy_run / "export").iterdir()) == ["step_1"]


def test_a_workdir_without_a_checkpoint_is_refused_naming_it(tmp_path):
    workdir = tmp_path / "fresh"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text("{}\n")
    with pytest.raises(ServeError, match="no RL checkpoint"):
        load_chat_server(workdir)


def test_serve_help_names_a_runs_workdir(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "workdir" in capsys.readouterr().out
