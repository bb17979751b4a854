"""
CUDA graphs of whole sparse calls: one launch replays every denoising step of a decisions tensor.

Why: a 90%-sparse call of the default model is ~1,500 small kernels. On an H100 they are
launch-bound (the GPU idles between them; ``python -m sparse_policy_ros.gpu_check`` measured
eager fora @ 0.90 at 73 ms p50, slower than the 2-core CPU). A CUDA graph records the kernel
sequence once and replays it with one launch.

A graph is specific to everything that steers the Python control flow of ``sample_sparse`` or
fixes an address: the decisions tensor, whether rollout reuse is allowed, the rollout cache's
storage, the shapes, the model and the scheduler. Those form the key. Decisions of static
schedules repeat on every call (and the first dense call after each reset repeats too), so they
hit; a pruner whose decisions change per call would capture a new graph per call, so a key is
only captured once it has been seen ``min_sightings`` times, and at most ``capacity`` graphs are
kept (least recently used dropped). Calls that do not replay a graph run eagerly, unchanged.

Replays write the rollout cache on the device like an eager call; the host-side bookkeeping of
which entries hold values is updated here (a replay runs no Python).
"""

from collections import OrderedDict
from dataclasses import dataclass
import logging

import torch

from .cache import RolloutCache
from .decisions import Decision
from .sampler import sample_sparse
from ..policy.model import DiffusionPolicy
from ..policy.sampler import SamplingNoise
from ..policy.scheduler import NoiseScheduler

logger = logging.getLogger(__name__)

# Distinct decisions tensors remembered while waiting for their second sighting.
MAX_PENDING_KEYS = 256


@dataclass
class _Captured:
    """One recorded call and the static tensors it reads and writes."""

    graph: 'torch.cuda.CUDAGraph'
    memory: torch.Tensor  # (K, B, L, E) input, copied in before each replay
    noise: SamplingNoise  # inputs, copied in before each replay
    actions: torch.Tensor  # (B, T, Da) output, overwritten by each replay


class GraphedSampler:
    """Runs ``sample_sparse`` through cached CUDA graphs, eagerly where none applies."""

    def __init__(self, capacity: int = 8, min_sightings: int = 2):
        if capacity < 1 or min_sightings < 1:
            raise ValueError(f'capacity and min_sightings must be >= 1, got {capacity} and '
                             f'{min_sightings}')
        self.capacity = capacity
        self.min_sightings = min_sightings
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        # Keys seen but not captured yet, least recently seen first; bounded, because a pruner
        # whose decisions vary per call would otherwise add a key per call forever.
        self._sightings: OrderedDict[tuple, int] = OrderedDict()
        self.replays = 0  # calls served by a graph
        self.captures = 0  # graphs recorded
        self.eager_calls = 0  # calls run without a graph

    def clear(self) -> None:
        """Drop every graph (and its memory)."""
        self._graphs.clear()
        self._sightings.clear()

    def sample(self, model: DiffusionPolicy, memory: torch.Tensor, scheduler: NoiseScheduler,
               noise: SamplingNoise, cache: RolloutCache, decisions: torch.Tensor,
               rollout_ok: bool) -> torch.Tensor:
        """
        Return what ``sample_sparse(..., lambda: decisions)`` returns: unnormalized actions.

        ``decisions`` must be executable (``make_executable``). The returned tensor may be a
        graph's static output: read it (e.g. ``.cpu()``) before the next call.
        """
        key = self._key(model, memory, scheduler, noise, cache, decisions, rollout_ok)
        entry = self._graphs.get(key)
        if entry is None:
            self._sightings[key] = self._sightings.get(key, 0) + 1
            self._sightings.move_to_end(key)
            while len(self._sightings) > MAX_PENDING_KEYS:
                self._sightings.popitem(last=False)
            if self._sightings[key] < self.min_sightings:
                self.eager_calls += 1
                return sample_sparse(model, memory, scheduler, noise, cache, lambda: decisions)
            entry = self._capture(model, memory, scheduler, noise, cache, decisions)
            del self._sightings[key]
            self._graphs[key] = entry
            while len(self._graphs) > self.capacity:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        entry.memory.copy_(memory)
        entry.noise.initial.copy_(noise.initial)
        if noise.per_step is not None:
            entry.noise.per_step.copy_(noise.per_step)
        entry.graph.replay()
        cache.mark_computed(decisions == Decision.COMPUTE)
        self.replays += 1
        return entry.actions

    @staticmethod
    def _key(model: DiffusionPolicy, memory: torch.Tensor, scheduler: NoiseScheduler,
             noise: SamplingNoise, cache: RolloutCache, decisions: torch.Tensor,
             rollout_ok: bool) -> tuple:
        return (decisions.numpy().tobytes(), tuple(decisions.shape), rollout_ok,
                cache.storage_key, tuple(memory.shape), memory.dtype, memory.device,
                tuple(noise.initial.shape), noise.per_step is not None, id(model),
                id(scheduler))

    def _capture(self, model: DiffusionPolicy, memory: torch.Tensor,
                 scheduler: NoiseScheduler, noise: SamplingNoise, cache: RolloutCache,
                 decisions: torch.Tensor) -> _Captured:
        static_memory = memory.clone()
        static_noise = SamplingNoise(noise.initial.clone(),
                                     None if noise.per_step is None else noise.per_step.clone())

        def run() -> torch.Tensor:
            return sample_sparse(model, static_memory, scheduler, static_noise, cache,
                                 lambda: decisions)

        # Warm-up on a side stream before capture (cuBLAS/cuDNN lazily create handles and
        # workspaces, which must not happen during capture). It computes this call's values,
        # so its writes into the rollout cache are the ones the replay writes again.
        side = torch.cuda.Stream(device=memory.device)
        side.wait_stream(torch.cuda.current_stream(memory.device))
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream(memory.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            actions = run()
        self.captures += 1
        logger.info('captured a CUDA graph for a %d-step call (%d graphs kept)',
                    decisions.shape[0], min(self.capacity, len(self._graphs) + 1))
        return _Captured(graph, static_memory, static_noise, actions)
