"""Rollouts: the jitted sampler, the request batcher, episodes and trajectories."""
