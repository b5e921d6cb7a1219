"""Bad checkpoints and bad batches are clear errors that name what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestra_jax.models import load_pretrained
from orchestra_jax.models.safetensors_io import SafetensorsDirectory, write_safetensors


@pytest.fixture(scope="module")
def tiny():
    return load_pretrained("tiny")


def test_mismatched_mask_names_both_shapes(tiny):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        tiny.logits(np.zeros((2, 4), int), np.ones((2, 3), int))


def test_out_of_vocabulary_ids_are_rejected(tiny):
    with pytest.raises(ValueError, match="4096"):
        tiny.logits(np.array([[1, 4096]]))


def test_missing_tensor_is_named(tmp_path, tiny):
    tiny.save_pretrained(tmp_path)
    tensors = SafetensorsDirectory(tmp_path)
    kept = {n: np.array(tensors[n]) for n in tensors if "layers.1.mlp.up_proj" not in n}
    write_safetensors(tmp_path / "model.safetensors", kept)
    with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_pretrained(tmp_path)


def test_wrong_shape_names_the_parameter(tmp_path, tiny):
    tiny.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 512
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.\w+_proj expects"):
        load_pretrained(tmp_path)


def test_unknown_source_lists_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match="preset"):
        load_pretrained(tmp_path / "nowhere")
