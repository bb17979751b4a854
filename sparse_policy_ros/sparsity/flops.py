"""FLOP accounting with torch.utils.flop_counter.FlopCounterMode on the executed path."""

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .decisions import Decision
from ..policy.model import DiffusionPolicy


def _int8_linear_flops(x_shape, packed, *args, out_shape=None, **kwargs) -> int:
    # quantized::linear_dynamic (policy/frozen.py's int8 matmuls): 2 * rows * in * out, as for
    # the float matmul it replaces (FlopCounterMode has no formula of its own for it).
    rows = 1
    for size in x_shape[:-1]:
        rows *= size
    return 2 * rows * x_shape[-1] * out_shape[-1]


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn`` under FlopCounterMode (this thread only); return (result, total FLOPs)."""
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.quantized.linear_dynamic: _int8_linear_flops})
    with counter:
        result = fn(*args, **kwargs)
    return result, int(counter.get_total_flops())


@torch.inference_mode()
def branch_flop_table(model: DiffusionPolicy, batch: int = 1,
                      precomputed_kv: bool = False) -> list[int]:
    """
    Measure the FLOPs of one call of each branch for a (batch, horizon, E) stream.

    ``precomputed_kv``: cross-attention branches read keys/values projected once per call (what
    ``SparsePolicy`` does on a CPU), so their per-step cost leaves out that projection.
    """
    config = model.config
    device = next(model.parameters()).device
    h = torch.zeros(batch, config.horizon, config.n_emb, device=device)
    memory = torch.zeros(batch, config.memory_len, config.n_emb, device=device)
    net = model.transformer
    cross_kv = None
    if precomputed_kv:
        kv = torch.zeros(1, batch, config.memory_len, 2 * config.n_emb, device=device)
        cross_kv = [kv] * config.n_layer
    return [count_flops(net.branch, i, h, memory, cross_kv)[1] for i in range(len(net.branches))]


def skipped_flops(decisions: torch.Tensor, table: list[int]) -> int:
    """Count the FLOPs the reused entries of ``decisions`` skip, by the per-branch table."""
    reused = (decisions != Decision.COMPUTE).long().sum(dim=0)  # (nb,) reuse count per branch
    return int(sum(int(n) * flops for n, flops in zip(reused.tolist(), table)))
