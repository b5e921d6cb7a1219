"""Install orchestra_jax: `pip install -e .` (add `[test]` for the test and reference extras)."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.8",
    "flax>=0.12",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "etils[epath]>=1.7",  # etils.epath: workdirs and checkpoints on local disk or gs:// alike
    "grain>=0.2.12",
    "tensorstore>=0.1.70",
    "sentencepiece>=0.2",
    "tensorboard>=2.18",
    "ml-collections>=1.0",
    "numpy>=1.26",
    "safetensors>=0.5",
    "tokenizers>=0.21",
    "jinja2>=3.1",
    "gguf>=0.16",
    "psutil>=5.9",
    "aiohttp>=3.10",  # expert/search HTTP clients and `orchestra serve`
    "bm25s>=0.2",  # local search
    "math-verify>=0.9",  # math answer equivalence in the outcome verifiers
    "matplotlib>=3.8",  # the accuracy-vs-cost plot of `orchestra eval`
]

EXTRAS_REQUIRE = {
    # The reference implementation the JAX models are checked against, and the test runner.
    # torch is pinned to the CPU build that lies on the CI machines' disk.
    "test": [
        "pytest>=8",
        "torch==2.13.0",
        "transformers>=4.56",
        "accelerate>=1.0",  # transformers needs it to load GGUF references
        "ruff>=0.8",
        "openai>=1.50",  # the official client, talking to `orchestra serve` in tests
        "nbclient>=0.10",  # CI executes the quickstart notebook
        "nbformat>=5.10",
        "ipykernel>=6.29",
    ],
    # Accelerator builds of jax, pinned to the release the project is tested with (the base
    # `jax>=0.8` installs the CPU build; each jax release pins its own libtpu / CUDA plugin).
    # cuda12, not cuda13: its pip-installed CUDA runs on the older drivers of Colab and most
    # clusters (cuda13 needs a CUDA 13 driver, the 580 series or newer).
    "tpu": [
        "jax[tpu]==0.10.2",
        "gcsfs>=2026.4.0",  # same as [gcs]: a TPU VM reads its data and writes its workdir on GCS
    ],
    "cuda": [
        "jax[cuda12]==0.10.2",
    ],
    # gs:// paths: etils.epath reads them through fsspec's gcsfs (or TensorFlow, if present).
    # The lower bound is etils' own (`etils[epath-gcs]`).
    "gcs": [
        "gcsfs>=2026.4.0",
    ],
    # Peers that the benchmarks compare against (not needed by the tests).
    "bench": [
        "google-tunix>=0.1.7",
    ],
}

setup(
    name="orchestra_jax",
    version="0.1.0",
    description="JAX/TPU-native training of tool-orchestrating LLMs with reinforcement learning.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["orchestra_jax", "orchestra_jax.*"]),
    include_package_data=True,
    package_data={"orchestra_jax.tools": ["data/*.json"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["orchestra=orchestra_jax.cli:main"]},
)
