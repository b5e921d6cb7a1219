"""`orchestra export`: a run's trained policy as a Hugging Face directory.

Why: a policy trained here lives in orbax checkpoints next to its optimizer state, and the
tools a trained orchestrator is used with -- transformers, vLLM, SGLang, `orchestra serve`,
other harnesses -- read the Hugging Face layout. The export holds

* `config.json` (the architecture's own HF config: `Qwen3ForCausalLM` or `LlamaForCausalLM`
  as the model is, with the run tokenizer's bos/eos/pad ids) and `generation_config.json`
  (every stop id of the run's tokenizer as `eos_token_id`, so generation ends where ours does);
* the weights as safetensors (`models.hf_checkpoint.save_hf_checkpoint`), without the value
  head of a critic run: it is no part of the policy, and vLLM loads every `*.safetensors` of
  a directory;
* the tokenizer with the run's *effective* chat template (`model.chat_template` when the run
  set one; the rebuilt run's tokenizer carries it), inline in `tokenizer_config.json`.
  - A Hugging Face (`tokenizers`) vocabulary is saved as `tokenizer.json` +
    `tokenizer_config.json` (+ `chat_template.jinja`).
  - A trained SentencePiece vocabulary (the toy and toolworld worlds) is saved as
    `tokenizer.model` + `sp_tokenizer_config.json` (what we read back) + a
    `tokenizer_config.json` naming transformers' `SentencePieceBackend` (transformers >= 5),
    with every control piece as a special token, so `AutoTokenizer.from_pretrained` encodes
    exactly as we do (the same SentencePiece model underneath). transformers 4 has no such
    class and says so when it loads the directory; nothing else is written for it.
  - A tokenizer of any other kind stops the export with `ConfigError` naming it.
* `orchestra_export.json`: which run, which step and which params (the moving average when
  the run keeps one, `Run.policy_params`), so a cached export is recognised and reused.

The run is rebuilt from its recorded `config.json` exactly as `orchestra eval` rebuilds it
(`build_run`, then the checkpoint restored into its state), so an export is the policy that
run evaluates; what the rebuild reads (`model.path`, task files) must still be where the run
found it. The directory is written aside and renamed, so a killed export never leaves a
half-written one for `orchestra serve` to pick up.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from orchestra_jax.train.checkpoint import CheckpointError, CheckpointManager, abstract_like
from orchestra_jax.train.errors import ConfigError

#: Where `orchestra serve --model W` caches its exports inside a run's workdir.
EXPORT_CACHE_DIR = "export"
#: The file that marks a directory as a finished export (and says what it holds).
MANIFEST_FILE = "orchestra_export.json"
#: The transformers class that reads a SentencePiece `tokenizer.model` as SentencePiece does.
SENTENCEPIECE_TOKENIZER_CLASS = "SentencePieceBackend"


@dataclasses.dataclass(frozen=True)
class Export:
    """A finished export: where it is and what it holds."""

    directory: Path
    workdir: Path
    step: int
    policy: str  # "ema" (the moving average) or "params"
    tokenizer: str  # "huggingface" or "sentencepiece"


# ---------------------------------------------------------------------------------------------
# The run's recorded config


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the config held (mappings stay mappings)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _merge(target: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), ml_collections.ConfigDict):
            _merge(target[key], value)
        elif isinstance(value, dict):
            target[key] = ml_collections.ConfigDict(value)
        else:
            target[key] = value


def run_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config a run recorded in `workdir/config.json`, over the schema's defaults (so its
    None-able fields keep their types), checked and locked; `ConfigError` naming the file."""
    from orchestra_jax.train.schema import default_config, validate_config

    path = Path(workdir) / "config.json"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--workdir {workdir}: no config.json; not a run directory of "
                          "`orchestra train`") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the run's config ({exc})") from exc
    if not isinstance(recorded, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(recorded).__name__}")
    config = default_config()
    try:
        _merge(config, _tuples(recorded))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        validate_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (recorded in {path})") from exc
    config.lock()
    return config


# ---------------------------------------------------------------------------------------------
# Writing the directory


def _sentencepiece_config(directory: Path, tokenizer: Any) -> dict[str, Any]:
    """`tokenizer_config.json` for transformers' SentencePiece backend, from the
    `sp_tokenizer_config.json` our tokenizer just saved: every piece our wrapper treats as a
    token (control and unknown pieces, the named specials) is a special token there too."""
    ours = json.loads((directory / "sp_tokenizer_config.json").read_text(encoding="utf-8"))
    sp = tokenizer.processor
    named = [ours.get(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")]
    extra = [*ours.get("special_tokens", ()), *ours.get("extra_stop_tokens", ()),
             *(sp.id_to_piece(i) for i in range(sp.get_piece_size())
               if sp.is_control(i) or sp.is_unknown(i))]
    config: dict[str, Any] = {
        "tokenizer_class": SENTENCEPIECE_TOKENIZER_CLASS,
        "vocab_file": ours.get("model_file", "tokenizer.model"),
        "legacy": True,  # encode each segment as SentencePiece does, no extra prefix logic
        "add_bos_token": bool(ours.get("add_bos_token")),
        "add_eos_token": bool(ours.get("add_eos_token")),
        "clean_up_tokenization_spaces": False,
        **{k: ours.get(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
           if ours.get(k) is not None},
        "additional_special_tokens": [t for t in dict.fromkeys(extra)
                                      if t is not None and t not in named],
    }
    template = tokenizer.chat_template
    if isinstance(template, str):
        config["chat_template"] = template
    elif isinstance(template, Mapping):
        config["chat_template"] = [{"name": k, "template": v} for k, v in template.items()]
    return config


def _save_tokenizer(tokenizer: Any, directory: Path) -> str:
    """The run tokenizer, as transformers and we both read it; its kind."""
    from orchestra_jax.tokenization import HFTokenizer
    from orchestra_jax.tokenization.sentencepiece_tokenizer import SentencePieceTokenizer

    if isinstance(tokenizer, HFTokenizer):
        tokenizer.save(directory)
        return "huggingface"
    if isinstance(tokenizer, SentencePieceTokenizer):
        tokenizer.save(directory)
        config = _sentencepiece_config(directory, tokenizer)
        (directory / "tokenizer_config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return "sentencepiece"
    raise ConfigError(f"the run's tokenizer ({type(tokenizer).__name__}) has no Hugging Face "
                      "form this export knows how to write")


def _token_ids(directory: Path, tokenizer: Any) -> None:
    """The run tokenizer's special ids in config.json, its stop ids in generation_config.json:
    a preset-initialised policy's config knows nothing of the vocabulary it was trained on."""
    path = directory / "config.json"
    config = json.loads(path.read_text())
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config.update({k: v for k, v in ids.items() if v is not None})
    path.write_text(json.dumps(config, indent=2) + "\n")
    stops = list(tokenizer.stop_token_ids)
    generation = {k: v for k, v in ids.items() if v is not None}
    if stops:
        generation["eos_token_id"] = stops if len(stops) > 1 else stops[0]
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def _write_policy(run: Any, params: Any, directory: Path) -> str:
    from flax import nnx

    from orchestra_jax.models import save_hf_checkpoint
    from orchestra_jax.models.hf_checkpoint import VALUE_HEAD_FILE

    save_hf_checkpoint(nnx.merge(run.graphdef, params), directory)
    (directory / VALUE_HEAD_FILE).unlink(missing_ok=True)  # a critic's head: not the policy
    kind = _save_tokenizer(run.tokenizer, directory)
    _token_ids(directory, run.tokenizer)
    return kind


def _prepare_out(out: Path) -> Path:
    """The scratch directory next to `out`; `out` may be absent, empty, or an earlier export
    (replaced), never anything else."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
            raise ConfigError(f"--out {out}: exists, is not empty and is not an earlier "
                              "export; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.parent / f".{out.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    return scratch


def _restore(run: Any, workdir: Path, step: int | None) -> int:
    """The chosen (or newest restorable) checkpoint into `run.state`; its step."""
    manager = CheckpointManager(workdir / "checkpoints", keep=1, reader=True)
    abstract = abstract_like(run.checkpoint_state())
    try:
        if step is None:
            restored = manager.restore_latest(abstract)
            if restored is None:
                raise ConfigError(f"--workdir {workdir}: no RL checkpoint saved yet")
            step, stored, _, _ = restored
        else:
            stored, _, _ = manager.restore(step, abstract_state=abstract)
    finally:
        manager.close()
    run.restore_state(stored)
    return int(step)


def export_policy(workdir: str | Path, out: str | Path, step: int | None = None) -> Export:
    """Write the policy of run `workdir` at checkpoint `step` (default: the newest that
    restores) to `out` in Hugging Face layout (see the module docstring); the `Export`.

    Problems the user can fix -- not a run directory, no checkpoint, an unknown step, an
    occupied `out` -- raise `ConfigError` or `CheckpointError` naming the input."""
    from orchestra_jax.train.builders import build_run

    workdir = Path(workdir).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    if not (workdir / "checkpoints").is_dir():
        raise ConfigError(f"--workdir {workdir}: no checkpoints/ directory; not a run of "
                          "`orchestra train` (or it has saved no checkpoint yet)")
    if step is not None:
        with CheckpointManager(workdir / "checkpoints", keep=1, reader=True) as manager:
            steps = manager.all_steps()
        if step not in steps:
            raise ConfigError(f"--step {step}: no checkpoint of that step in {workdir}; "
                              f"saved steps: {steps}")
    config = run_config(workdir)
    scratch = _prepare_out(out)
    run = build_run(config, workdir)
    step = _restore(run, workdir, step)
    policy = "params" if run.state.ema_params is None else "ema"
    try:
        kind = _write_policy(run, run.policy_params, scratch)
        result = Export(directory=out, workdir=workdir, step=step, policy=policy,
                        tokenizer=kind)
        manifest = {**dataclasses.asdict(result), "directory": str(out),
                    "workdir": str(workdir)}
        (scratch / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        scratch.rename(out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return result


def read_export(directory: str | Path) -> Export | None:
    """The manifest of a finished export in `directory`; None when there is none."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
        return Export(directory=Path(directory), workdir=Path(data["workdir"]),
                      step=int(data["step"]), policy=str(data["policy"]),
                      tokenizer=str(data["tokenizer"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_run_directory(path: str | Path) -> bool:
    """A workdir of `orchestra train`: its recorded config and a checkpoints/ directory."""
    path = Path(path)
    return (path / "checkpoints").is_dir() and (path / "config.json").is_file()


def cached_export(workdir: str | Path) -> Export:
    """The run's newest policy exported to `workdir/export/step_N`, written once and reused:
    what `orchestra serve --model W` loads."""
    workdir = Path(workdir).expanduser().absolute()
    with CheckpointManager(workdir / "checkpoints", keep=1, reader=True) as manager:
        latest = manager.latest_step()
    if latest is None:
        raise ConfigError(f"--model {workdir}: the run has saved no RL checkpoint yet")
    cache = workdir / EXPORT_CACHE_DIR
    found = read_export(cache / f"step_{latest}")
    if found is not None:
        return found
    done = export_policy(workdir, cache / ".latest")
    final = cache / f"step_{done.step}"  # an older step when the newest one is damaged
    if read_export(final) is None:
        shutil.rmtree(final, ignore_errors=True)
        done.directory.rename(final)
        manifest = json.loads((final / MANIFEST_FILE).read_text())
        manifest["directory"] = str(final)
        (final / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    else:
        shutil.rmtree(done.directory, ignore_errors=True)
    return dataclasses.replace(done, directory=final)


def export_from_cli(workdir: str, out: str, step: int | None = None) -> int:
    """`orchestra export`: exit status 2 with the message for bad input."""
    try:
        result = export_policy(workdir, out, step)
    except (ConfigError, CheckpointError) as err:
        print(f"orchestra export: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(result.directory), "step": result.step,
                      "policy": result.policy, "tokenizer": result.tokenizer}))
    return 0


__all__ = ["EXPORT_CACHE_DIR", "MANIFEST_FILE", "Export", "cached_export", "export_from_cli",
           "export_policy", "is_run_directory", "read_export", "run_config"]
