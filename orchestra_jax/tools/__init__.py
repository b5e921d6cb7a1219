"""Tools the policy calls: the async executor, the code sandbox, search, LLM experts, pricing.

Host code: never imports jax.
"""
