"""Environments: the worlds episodes run in (qa and dialogue modes).

Host code: never imports jax.
"""
