"""
Differentiable twin of ``sample_sparse`` for training the pruner.

Every branch is computed (gradients need every option), and the value added to the stream is
``sum_j gate_j * candidate_j`` over the four decisions. With one-hot gates (straight-through
in the forward pass) the arithmetic follows the same rules as the fast sampler: reuse-block
takes the latest computed branch of the same kind in this forward (the step value where none
exists, as ``make_executable`` rewrites it), reuse-step the branch's latest computed value in
this call, reuse-rollout the cached value from the previous call. The rollout state it
returns holds, per (step, branch), the computed value where the gate chose COMPUTE and the old
value elsewhere, detached, ready for the next consecutive call.
"""

import torch

from .decisions import BRANCHES_PER_LAYER, Decision
from ..policy.model import ACTION, DiffusionPolicy
from ..policy.sampler import SamplingNoise
from ..policy.scheduler import NoiseScheduler

C, B, S, R = (int(d) for d in Decision)


def straight_through(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """One-hot argmax in the forward pass, softmax gradient in the backward pass."""
    probs = (logits / temperature).softmax(dim=-1)
    hard = torch.nn.functional.one_hot(probs.argmax(dim=-1), probs.shape[-1]).to(probs.dtype)
    return hard + probs - probs.detach()


def sample_gated(model: DiffusionPolicy, memory: torch.Tensor, scheduler: NoiseScheduler,
                 noise: SamplingNoise, gates: torch.Tensor,
                 rollout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Denoise with soft decisions; returns (normalized actions (B, T, Da), new rollout state).

    gates: (K, nb, 4) with rows summing to 1 (step 0 should be one-hot COMPUTE);
    rollout: (K, nb, B, T, E) previous call's branch values (detached).
    """
    net = model.transformer
    n_branches = len(net.branches)
    x = noise.initial
    step_latest: list[torch.Tensor | None] = [None] * n_branches
    new_rollout = []
    for k in range(scheduler.num_inference_steps):
        h = net.embed_actions(x)
        latest_of_kind: list[torch.Tensor | None] = [None] * BRANCHES_PER_LAYER
        row_values = []
        for i in range(n_branches):
            g = gates[k, i]
            computed = net.branch(i, h, memory[k])
            if k == 0:
                delta = computed
                step_value = computed
            else:
                step_value = step_latest[i]
                kind_value = latest_of_kind[i % BRANCHES_PER_LAYER]
                block_value = step_value if kind_value is None else kind_value
                delta = (g[C] * computed + g[B] * block_value + g[S] * step_value
                         + g[R] * rollout[k, i])
            keep = g[C] if k else torch.ones((), device=h.device)
            step_latest[i] = computed if k == 0 else keep * computed + (1 - keep) * step_value
            prior = latest_of_kind[i % BRANCHES_PER_LAYER]
            latest_of_kind[i % BRANCHES_PER_LAYER] = (
                keep * computed if prior is None else keep * computed + (1 - keep) * prior)
            if prior is None and float(keep.detach()) == 0.0:
                latest_of_kind[i % BRANCHES_PER_LAYER] = None
            row_values.append(torch.where(keep.detach() > 0.5, computed.detach(),
                                          rollout[k, i]))
            h = h + delta
        new_rollout.append(torch.stack(row_values))
        x = scheduler.step(k, net.output(h), x, noise.at(k))
    return x, torch.stack(new_rollout)


def normalized_actions_to_raw(model: DiffusionPolicy, x: torch.Tensor) -> torch.Tensor:
    """Unnormalize sampler output."""
    return model.normalizer.unnormalize(ACTION, x)
