"""Evaluation: the one runner (`eval.runner`: the final evaluation of a run, the periodic one
and `orchestra eval`), per-policy tables (accuracy, cost, latency, calls, preference score, per
family) and the accuracy-vs-cost plot, from trajectories of any policy -- a model or a script.
"""

from orchestra_jax.eval.plots import pareto_plot
from orchestra_jax.eval.results import EpisodeOutcome, outcome_of, policy_table

__all__ = ["EpisodeOutcome", "outcome_of", "pareto_plot", "policy_table"]
