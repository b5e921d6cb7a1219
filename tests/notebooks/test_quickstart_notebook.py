"""CI runs notebooks/quickstart.ipynb top to bottom, as a Colab user would, with the smoke
setting (a few RL steps on a small toolworld): every cell must execute without error and the
run must leave its summary, curves and plot behind. Run from inside the checkout, the install
cell must find it and install nothing; the run must use a mesh over every device jax sees."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    monkeypatch.setenv("ORCHESTRA_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("ORCHESTRA_NOTEBOOK_WORKDIR", str(workdir))
    notebook = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})
    client.execute()
    summary = json.loads((workdir / "summary.json").read_text())
    assert {"trained", "sft", "random"} <= set(summary["policies"])
    assert summary["best_fixed_route"].startswith("route:")
    assert (workdir / "pareto.png").is_file()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for o in cell.get("outputs", []))
    assert "best fixed route" in outputs and "--- step 1 ---" in outputs
    assert "orchestra_jax is installed already: nothing to install" in outputs
    assert f"checkout {REPO}; orchestra_jax imported from {REPO}" in outputs
    config = json.loads((workdir / "config.json").read_text())
    assert config["mesh"]["shape"] == [1, jax.device_count(), 1]
