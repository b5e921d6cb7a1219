"""setup.py's accelerator extras: `pip install -e '.[tpu]'` / `'.[cuda]'` must pull the jax
build of the very release the project is tested with, one that the base requirement admits,
and a TPU install must be able to read gs:// paths. Read from setup.py itself (its `setup()`
call captured), not from the installed metadata, which is stale until the next `pip install`."""

from __future__ import annotations

import importlib.metadata
import runpy
from pathlib import Path
from typing import Any

import pytest
import setuptools
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_kwargs() -> dict[str, Any]:
    captured: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)  # setup.py reads README.md relative to the working directory
        mp.setattr(setuptools, "setup", lambda **kw: captured.update(kw))
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    return captured


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def _pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} must pin one jax release"
    return spec.version


def test_accelerator_extras_pin_the_tested_jax_release_with_the_matching_build(setup_kwargs):
    base = _requirements(setup_kwargs["install_requires"])["jax"]
    extras = setup_kwargs["extras_require"]
    tpu = _requirements(extras["tpu"])["jax"]
    cuda = _requirements(extras["cuda"])["jax"]
    assert tpu.extras == {"tpu"}
    assert cuda.extras <= {"cuda12", "cuda13"} and len(cuda.extras) == 1
    versions = {_pinned_version(tpu), _pinned_version(cuda)}
    assert versions == {importlib.metadata.version("jax")}, (
        f"the extras pin jax {versions}; the tests run on {importlib.metadata.version('jax')}")
    assert base.specifier.contains(versions.pop()), "the base requirement must admit the pin"


def test_tpu_extra_includes_the_gcs_extra_and_epath_is_a_base_requirement(setup_kwargs):
    extras = setup_kwargs["extras_require"]
    assert "gcsfs" in _requirements(extras["gcs"])
    assert set(extras["gcs"]) <= set(extras["tpu"])
    assert "epath" in _requirements(setup_kwargs["install_requires"])["etils"].extras
