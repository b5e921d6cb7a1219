"""`orchestra export`: a real short RL run's policy as a Hugging Face directory that
transformers loads -- same logits as our forward (float32, <= 1e-4), the run's effective chat
template, the moving average when the run keeps one -- for a Hugging Face vocabulary (a tiny
Qwen3 checkpoint with SmolLM2's tokenizer) and for a trained SentencePiece one (the toy
world's); and bad inputs exit 2 naming the flag."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from orchestra_jax.cli import main
from orchestra_jax.models import load_pretrained
from orchestra_jax.models.safetensors_io import SafetensorsDirectory
from orchestra_jax.tokenization import named_chat_template
from orchestra_jax.train.checkpoint import CheckpointManager
from tests.models.hf_reference import hf_logits, torch, transformers
from tests.train.tiny_qwen3 import tiny_qwen3

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "experiments" / "toy_target_call.py"
#: Two RL steps of two tasks x two episodes; the entropy bonus moves the params every step
#: (whatever the rewards), so the moving average differs from the latest params.
SMALL = [
    "--config.rollout.prompts_per_step=2", "--config.rollout.group_size=2",
    "--config.rollout.max_batch_size=4", "--config.data.max_tasks=4",
    "--config.train.steps=2", "--config.train.mini_batch_size=4",
    "--config.train.checkpoint_every=1", "--config.train.keep_checkpoints=2",
    "--config.loss.entropy_coef=0.01",
]
MESSAGES = [{"role": "system", "content": "Route the question."},
            {"role": "user", "content": "Which tool answers </s> this? <s>"}]


def _train(workdir: Path, *extra: str) -> None:
    assert main(["train", "--config", str(RECIPE), "--workdir", str(workdir), *SMALL,
                 *extra]) == 0


@pytest.fixture(scope="module")
def qwen3_run(tmp_path_factory) -> Path:
    """Two RL steps from a tiny Qwen3 checkpoint, with a moving average and the run's own
    chat template (`model.chat_template`, not SmolLM2's)."""
    root = tmp_path_factory.mktemp("qwen3_run")
    checkpoint = tiny_qwen3(root / "qwen3")
    # SmolLM2's vocabulary spells the toy prompt in more tokens than the toy vocabulary.
    _train(root / "run", f"--config.model.path={checkpoint}",
           "--config.rollout.max_prompt_tokens=1000",
           "--config.model.chat_template=chatml_tools", "--config.train.ema_decay=0.5")
    return root / "run"


def _stored(workdir: Path, step: int, key: str) -> dict[str, np.ndarray]:
    with CheckpointManager(workdir / "checkpoints") as manager:
        state, _, _ = manager.restore(step)
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(state[key])[0]}


def _embedding(params: dict[str, np.ndarray]) -> np.ndarray:
    (name,) = [k for k in params if "embed" in k and "layers" not in k]
    return params[name]


def _assert_transformers_matches_ours(out: Path) -> None:
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours = load_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = ours.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True,
                                         tokenize=False) == text
    ids = ours.tokenizer.encode(text)
    assert tokenizer.encode(text, add_special_tokens=False) == ids
    batch = np.zeros((2, len(ids)), np.int64)
    mask = np.zeros_like(batch)
    batch[0], mask[0] = ids, 1
    batch[1, 3:], mask[1, 3:] = ids[:-3], 1  # left-padded, as batched generation sees it
    real = mask.astype(bool)
    diff = np.abs(ours.logits(batch, mask) - hf_logits(hf, batch, mask))[real].max()
    assert diff <= 1e-4, diff


def test_export_of_a_qwen3_run_loads_in_transformers_with_our_logits(qwen3_run, tmp_path,
                                                                      capsys):
    out = tmp_path / "export"
    assert main(["export", "--workdir", str(qwen3_run), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"out": str(out), "step": 2, "policy": "ema", "tokenizer": "huggingface"}

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["chat_template"] == named_chat_template("chatml_tools")
    assert not list(out.glob(".*")) and not (out / "value_head.safetensors").exists()
    _assert_transformers_matches_ours(out)

    # The exported weights are the moving average of step 2, not its latest params.
    exported = np.asarray(SafetensorsDirectory(out)["model.embed_tokens.weight"])
    np.testing.assert_array_equal(exported, _embedding(_stored(qwen3_run, 2, "ema_params")))
    assert not np.array_equal(exported, _embedding(_stored(qwen3_run, 2, "params")))


def test_export_of_a_chosen_step_and_over_an_earlier_export(qwen3_run, tmp_path):
    out = tmp_path / "export"
    assert main(["export", "--workdir", str(qwen3_run), "--out", str(out)]) == 0
    assert main(["export", "--workdir", str(qwen3_run), "--out", str(out), "--step", "1"]) == 0
    assert json.loads((out / "orchestra_export.json").read_text())["step"] == 1
    exported = np.asarray(SafetensorsDirectory(out)["model.embed_tokens.weight"])
    np.testing.assert_array_equal(exported, _embedding(_stored(qwen3_run, 1, "ema_params")))


def test_export_of_a_sentencepiece_world_loads_in_transformers_token_for_token(tmp_path):
    run = tmp_path / "toy"
    _train(run, "--config.train.steps=1")  # the toy world's own trained vocabulary
    out = tmp_path / "export"
    assert main(["export", "--workdir", str(run), "--out", str(out)]) == 0
    assert (out / "tokenizer.model").is_file() and not (out / "tokenizer.json").exists()
    assert json.loads((out / "orchestra_export.json").read_text())["tokenizer"] == \
        "sentencepiece"
    generation = json.loads((out / "generation_config.json").read_text())
    ours = load_pretrained(out).tokenizer
    assert generation["eos_token_id"] == list(ours.stop_token_ids)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    for text in ("hello world", "  two  spaces\nand a line", "<|im_start|>user\nx<|im_end|>"):
        assert tokenizer.encode(text, add_special_tokens=False) == ours.encode(text), text
    _assert_transformers_matches_ours(out)


def test_bad_inputs_exit_2_naming_the_flag(qwen3_run, tmp_path, capsys):
    assert main(["export", "--workdir", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--workdir" in capsys.readouterr().err
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine\n")
    assert main(["export", "--workdir", str(qwen3_run), "--out", str(occupied)]) == 2
    assert "--out" in capsys.readouterr().err
    assert (occupied / "notes.txt").read_text() == "mine\n"
    assert main(["export", "--workdir", str(qwen3_run), "--out", str(tmp_path / "o"),
                 "--step", "7"]) == 2
    err = capsys.readouterr().err
    assert "--step 7" in err and "[1, 2]" in err


@pytest.mark.parametrize("recipe", ["toolworld_tiny.py", "toy_target_call.py"])
def test_the_recorded_config_reads_back_as_the_run_had_it(recipe, tmp_path):
    from orchestra_jax.train.config import dump_config, load_config
    from orchestra_jax.train.export import run_config

    config = load_config(str(REPO / "experiments" / recipe), ["--config.mesh.shape=(1,1,1)"])
    dump_config(config, tmp_path)
    back = run_config(tmp_path)
    assert back.to_dict() == config.to_dict()  # tuples stay tuples, None-able fields typed
    assert back.mesh.shape == (1, 1, 1)
