"""The one sparse sampler: executes any decisions tensor, skipping every reused branch."""

from dataclasses import dataclass, field
import time
from typing import Callable

import torch

from .cache import RolloutCache
from .decisions import BRANCHES_PER_LAYER, Decision
from ..policy.model import ACTION, DiffusionPolicy
from ..policy.prefix import PrefixCondition
from ..policy.sampler import SamplingNoise
from ..policy.scheduler import NoiseScheduler

COMPUTE = int(Decision.COMPUTE)
REUSE_BLOCK = int(Decision.REUSE_BLOCK)
REUSE_STEP = int(Decision.REUSE_STEP)


@dataclass
class StepTimes:
    """
    Wall time of the denoising steps of one call, split by whether a step computed a branch.

    A step that computes at least one branch counts as computed, one that only reuses as a
    reuse step. The time the loop waits for the decisions (the pruner) is not in either.
    ``sync`` runs before each clock read (``torch.cuda.synchronize`` on a GPU: kernels are
    asynchronous, so without it the split would measure launches, not work).
    """

    sync: Callable[[], None] = field(default=lambda: None, repr=False)
    computed_ms: float = 0.0
    reuse_ms: float = 0.0
    computed_steps: int = 0
    reuse_steps: int = 0

    def add(self, computed: bool, started: float) -> None:
        """Count one step that began at ``started`` (``time.perf_counter``) and just ended."""
        self.sync()
        elapsed = (time.perf_counter() - started) * 1e3
        if computed:
            self.computed_ms += elapsed
            self.computed_steps += 1
        else:
            self.reuse_ms += elapsed
            self.reuse_steps += 1

    def start(self) -> float:
        """Return the clock at the start of a step, after the work queued before it."""
        self.sync()
        return time.perf_counter()


def sample_sparse(model: DiffusionPolicy, memory: torch.Tensor, scheduler: NoiseScheduler,
                  noise: SamplingNoise, cache: RolloutCache | None,
                  get_decisions: Callable[[], torch.Tensor],
                  cross_kv: list[torch.Tensor] | None = None,
                  prefix: PrefixCondition | None = None,
                  step_times: StepTimes | None = None, start_step: int = 0) -> torch.Tensor:
    """
    Denoise with per-(step, branch) reuse; returns unnormalized actions (B, T, Da).

    ``get_decisions`` is called once, after step 0 (which is always computed), so a pruner can
    run concurrently with step 0. It must return an executable CPU tensor (see
    ``decisions.make_executable``). With all-COMPUTE decisions the arithmetic is exactly that
    of ``policy.sampler.sample_dense`` (given the same ``cross_kv``: optional precomputed
    cross-attention keys/values, ``DiffusionTransformer.cross_kv_steps``).
    ``prefix``: rows of the sample fixed to committed actions before every step and in the
    result (``policy/prefix.py``); None leaves the arithmetic untouched.
    ``cache``: where computed branch outputs are kept for later calls and read by reuse-rollout
    decisions; None for decisions that never read earlier calls (nothing is then written).
    ``step_times``: when given, each step's wall time is added to it (computed or reuse step).
    ``start_step``: skip steps ``0 .. start_step - 1`` (a warm start, ``policy/warm_start.py``:
    ``noise.initial`` is then the sample entering that step). The first step that runs
    computes every branch, and ``get_decisions`` is called after it.
    """
    net = model.transformer
    n_branches = len(net.branches)
    x = noise.initial
    if prefix is not None:
        x = x.clone()  # the call's noise stays as drawn (chunk.noise replays it)
        prefix.apply(0, x)
    step_latest: list[torch.Tensor | None] = [None] * n_branches
    # Sum of step_latest, kept while no branch is recomputed: a step that reuses every branch
    # from the previous step then costs one add instead of n_branches.
    # Held as ``net.stream_offset(sum)`` (input bias and position embedding folded in), so the
    # step's stream is one fused op.
    latest_sum: torch.Tensor | None = None
    # (stream entering, stream leaving) the last step that computed a branch, when the deltas
    # it added were exactly step_latest; None otherwise.
    last_stream: tuple[torch.Tensor, torch.Tensor] | None = None
    rows: list[list[int]] | None = None
    all_step_reuse: list[bool] = []
    if not 0 <= start_step < scheduler.num_inference_steps:
        raise ValueError(f'start_step must be in [0, {scheduler.num_inference_steps - 1}], '
                         f'got {start_step}')
    for k in range(start_step, scheduler.num_inference_steps):
        if k == start_step + 1:
            rows = get_decisions().tolist()
            all_step_reuse = [row.count(REUSE_STEP) == n_branches for row in rows]
        started = step_times.start() if step_times is not None else 0.0
        if rows is not None and all_step_reuse[k] and not net.training:
            if latest_sum is None and last_stream is not None:
                # That step added exactly step_latest to its stream: one subtraction for the
                # sum of n_branches deltas.
                latest_sum = net.stream_offset(last_stream[1] - last_stream[0])
            elif latest_sum is None:
                latest_sum = step_latest[0]
                for delta in step_latest[1:]:
                    latest_sum = latest_sum + delta
                latest_sum = net.stream_offset(latest_sum)
            x = scheduler.step(k, net.output(net.embed_actions_plus(x, latest_sum)), x,
                               noise.at(k))
            if prefix is not None:
                prefix.apply(k + 1, x)
            if step_times is not None:
                step_times.add(False, started)
            continue
        row = rows[k] if rows is not None else [COMPUTE] * n_branches
        computes = COMPUTE in row
        if computes:
            latest_sum = None
        mem_k = memory[k]
        h = net.embed_actions(x)
        stream_start = h
        latest_of_kind: list[torch.Tensor | None] = [None] * BRANCHES_PER_LAYER
        for i, decision in enumerate(row):
            if decision == COMPUTE:
                delta = net.branch(i, h, mem_k, cross_kv, k)
                step_latest[i] = delta
                latest_of_kind[i % BRANCHES_PER_LAYER] = delta
                if cache is not None:
                    cache.store(k, i, delta)
            elif decision == REUSE_STEP:
                delta = step_latest[i]
            elif decision == REUSE_BLOCK:
                delta = latest_of_kind[i % BRANCHES_PER_LAYER]
            elif cache is None:
                raise ValueError(f'decision at (step {k}, branch {i}) is reuse_rollout, but no '
                                 f'rollout cache was given')
            else:
                delta = cache.rollout(k, i)
            h = h + delta
        if computes:
            # Every delta this step added is its branch's step_latest when it only computed or
            # reused the previous step: the stream's growth is then their sum.
            pure = all(decision in (COMPUTE, REUSE_STEP) for decision in row)
            last_stream = (stream_start, h) if pure else None
        x = scheduler.step(k, net.output(h), x, noise.at(k))
        if prefix is not None:
            prefix.apply(k + 1, x)
        if step_times is not None:
            step_times.add(COMPUTE in row, started)
    if start_step == scheduler.num_inference_steps - 1:  # no step after the first one
        get_decisions()
    return model.normalizer.unnormalize(ACTION, x)
