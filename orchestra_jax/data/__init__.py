"""Task pipelines: where the RL loop's prompts come from, with a resumable iterator state.

Host code only: grain and numpy, no jax, so a pipeline can be built and checked anywhere.
"""

from orchestra_jax.data.pipeline import PipelineError, task_pipeline

__all__ = ["PipelineError", "task_pipeline"]
