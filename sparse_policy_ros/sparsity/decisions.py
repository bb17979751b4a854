"""
Per (denoising step, branch) decisions: compute, or reuse one of three cached values.

A decisions tensor has shape ``[K, n_branches]`` and dtype int8. Static schedules and the
pruner both produce it; one sampler executes it. Execution rules:

* step 0 is always computed (every reuse source needs a first value);
* REUSE_BLOCK takes the latest *computed* branch of the same kind earlier in the same forward;
  where no such branch exists it is rewritten to REUSE_STEP by :func:`make_executable`;
* REUSE_STEP takes this branch's latest computed value from an earlier step of this call;
* REUSE_ROLLOUT takes this branch at this step from the RolloutCache (earlier calls); where
  the cache does not hold that entry (after a reset) it is computed instead.

As text (a pruner's recorded table in pruner.json), a decisions tensor is one string per step
holding its branches' lower-case Decision names separated by spaces (:func:`to_rows`).
"""

from enum import IntEnum

import numpy as np
import torch

BRANCHES_PER_LAYER = 3


class Decision(IntEnum):
    """What to do for one branch at one denoising step."""

    COMPUTE = 0
    REUSE_BLOCK = 1
    REUSE_STEP = 2
    REUSE_ROLLOUT = 3


N_DECISIONS = len(Decision)
DECISION_DTYPE = torch.int8


def dense_decisions(steps: int, n_branches: int) -> torch.Tensor:
    """All COMPUTE: the dense model."""
    return torch.full((steps, n_branches), int(Decision.COMPUTE), dtype=DECISION_DTYPE)


def sparsity_of(decisions: torch.Tensor) -> float:
    """Fraction of (step, branch) entries that are not computed."""
    return float((decisions != Decision.COMPUTE).float().mean())


def validate_decisions(decisions: torch.Tensor, steps: int, n_branches: int) -> None:
    """Raise ValueError unless ``decisions`` is an integer [steps, n_branches] of valid codes."""
    if not isinstance(decisions, torch.Tensor):
        raise ValueError(f'decisions must be a torch.Tensor, got {type(decisions).__name__}')
    if tuple(decisions.shape) != (steps, n_branches):
        raise ValueError(
            f'decisions must have shape ({steps}, {n_branches}), got {tuple(decisions.shape)}')
    if decisions.is_floating_point() or decisions.is_complex():
        raise ValueError(f'decisions must be an integer tensor, got {decisions.dtype}')
    if decisions.numel() and (int(decisions.min()) < 0 or int(decisions.max()) >= N_DECISIONS):
        raise ValueError(
            f'decision codes must be in [0, {N_DECISIONS - 1}] ({[d.name for d in Decision]}), '
            f'got range [{int(decisions.min())}, {int(decisions.max())}]')


def make_executable(decisions: torch.Tensor,
                    rollout_available: 'bool | np.ndarray | torch.Tensor' = True) -> torch.Tensor:
    """
    Apply the execution rules; returns a new CPU int8 tensor that the sampler can run.

    Step 0 becomes all COMPUTE; REUSE_BLOCK without an earlier computed branch of the same
    kind in that step becomes REUSE_STEP; REUSE_ROLLOUT of an entry the rollout cache does
    not hold becomes COMPUTE. ``rollout_available``: True (every entry held), False (none:
    the first call after a reset) or a ``[K, n_branches]`` bool mask of the entries held
    (``RolloutCache.filled``). Only the entries a call reads from earlier calls need them:
    a schedule without REUSE_ROLLOUT runs at its own sparsity on the first call too.
    """
    out = decisions.detach().to('cpu', DECISION_DTYPE).clone()
    out[0] = int(Decision.COMPUTE)
    if rollout_available is not True:
        held = torch.as_tensor(np.broadcast_to(np.asarray(rollout_available, dtype=bool),
                                               tuple(out.shape)).copy())
        out[(out == Decision.REUSE_ROLLOUT) & ~held] = int(Decision.COMPUTE)
    computed = out == Decision.COMPUTE  # (K, nb)
    k, nb = out.shape
    by_kind = computed.view(k, nb // BRANCHES_PER_LAYER, BRANCHES_PER_LAYER)
    # A computed branch of the same kind in an earlier layer of the same step.
    earlier = (by_kind.int().cumsum(dim=1) - by_kind.int()) > 0
    orphan = (out == Decision.REUSE_BLOCK) & ~earlier.view(k, nb)
    out[orphan] = int(Decision.REUSE_STEP)
    return out


def to_rows(decisions: torch.Tensor) -> list[str]:
    """[K, nb] codes -> K strings of nb space-separated lower-case names ('compute ...')."""
    names = [d.name.lower() for d in Decision]
    return [' '.join(names[int(code)] for code in row) for row in decisions.tolist()]


def from_rows(rows: list[str], allowed: tuple[str, ...] | None = None) -> torch.Tensor:
    """
    Parse :func:`to_rows` text back into a [K, nb] int8 tensor.

    ``allowed``: the decision names that may occur (all four when None). Raises ValueError
    naming the first bad row or entry.
    """
    codes = {d.name.lower(): int(d) for d in Decision}
    allowed = tuple(codes) if allowed is None else tuple(allowed)
    if not isinstance(rows, list) or not rows:
        raise ValueError(f'decision rows must be a non-empty list of strings, got {rows!r}')
    table = []
    for step, row in enumerate(rows):
        if not isinstance(row, str):
            raise ValueError(f'decision row {step} must be a string, got {row!r}')
        names = row.split()
        if table and len(names) != len(table[0]):
            raise ValueError(f'decision row {step} has {len(names)} entries, expected '
                             f'{len(table[0])} like row 0')
        for branch, name in enumerate(names):
            if name not in allowed:
                raise ValueError(f'decision row {step}, branch {branch}: {name!r} is not one '
                                 f'of {list(allowed)}')
        table.append([codes[name] for name in names])
    return torch.tensor(table, dtype=DECISION_DTYPE)
