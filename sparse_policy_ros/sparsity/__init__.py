"""Test-time sparsity: decisions, rollout cache, pruner, sparse sampler, FLOPs."""
