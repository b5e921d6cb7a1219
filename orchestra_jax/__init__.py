"""orchestra_jax: train small tool-orchestrating LLMs with RL, in JAX."""

__version__ = "0.1.0"
