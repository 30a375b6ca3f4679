"""Rollout engines: the protocol, the registry of offered engines, and the built-in adapters."""

from rlport.rollout.protocol import EngineConfig, Generation, RolloutEngine, SamplingParams

__all__ = ["EngineConfig", "Generation", "RolloutEngine", "SamplingParams"]
