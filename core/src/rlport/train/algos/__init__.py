"""Pure tensor math: advantages, KL, policy and value losses, aggregation, rollout correction."""
