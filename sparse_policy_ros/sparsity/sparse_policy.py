"""
SparsePolicy: the stateful, device-resident API that the ROS node (and eval, bench) call.

One ``predict`` (DESIGN.md data flow):
  1. validate and normalize the observation, encode it once            -> obs tokens
  2. conditioning memory for all K steps in one batch                   -> memory [K]
  3. pruner launched asynchronously (thread on CPU, side stream on CUDA)
  4. step 0 computed densely meanwhile; then steps 1..K-1 follow the decisions, reading and
     writing the RolloutCache, which persists across calls
  5. unnormalize                                                         -> ActionChunk
"""

from dataclasses import dataclass, field
import logging
import os
import time

import numpy as np
import torch

from .cache import RolloutCache
from .cuda_graphs import GraphedSampler
from .decisions import Decision, dense_decisions, make_executable, sparsity_of
from .flops import count_flops
from .pruner import (AsyncPrunerRunner, check_pruner_matches, compute_budget, load_pruner, Pruner,
                     PrunerConfig, PrunerResult)
from .sampler import sample_sparse, StepTimes
from .schedules import ddim_steps_for, rollout_schedule, static_schedule
from ..policy.checkpoint import load_policy
from ..policy.config import PolicyConfig
from ..policy.ddim_timesteps import load_ddim_timesteps, searched_timesteps_for
from ..policy.frame_cache import FrameFeatureCache
from ..policy.model import ACTION, DiffusionPolicy
from ..policy.observation import OBS_IMAGES, OBS_STATE, validate_observation
from ..policy.prefix import ActionPrefix, PrefixCondition
from ..policy.sampler import condition_all_steps, SamplingNoise, time_memory_for
from ..policy.scheduler import NoiseScheduler
from ..policy.warm_start import noised_guess, WarmStart

logger = logging.getLogger(__name__)

MODES = ('dense', 'pruner', 'fora', 'fixed', 'ddim', 'ddim_searched', 'ddim_rollout')
# Modes that sample fewer denoising steps (every branch computed at each of them).
FEWER_STEP_MODES = ('ddim', 'ddim_searched', 'ddim_rollout')
# ddim_rollout: the searched DDIM set of this many steps, of which each call computes
# ddim_steps_for(K, target) and takes the others from earlier calls (schedules.rollout_schedule).
ROLLOUT_BASE_STEPS = 6


@dataclass
class PredictStats:
    """Timing and work of one predict call (milliseconds, FLOPs, bytes)."""

    encode_ms: float = 0.0  # observation encoding + conditioning for all steps
    encoder_ms: float = 0.0  # the image and state encoders alone (part of encode_ms)
    frames_encoded: int = 0  # camera frames run through the image encoder in this call
    frames_reused: int = 0  # camera frames whose features an earlier call had computed
    pruner_ms: float = 0.0  # time the denoising loop waited for the pruner (0 when overlapped)
    pruner_run_ms: float = 0.0  # the pruner's own run time (off the critical path)
    denoise_ms: float = 0.0  # all denoising steps
    # With SparsePolicy.profile_steps (eager sampling only; None otherwise): the denoising
    # steps' wall time split into steps that computed a branch and steps that only reused.
    computed_steps_ms: float | None = None
    reuse_steps_ms: float | None = None
    computed_steps: int | None = None
    reuse_steps: int | None = None
    total_ms: float = 0.0  # validate to unnormalized actions
    sparsity: float = 0.0  # fraction of (step, branch) entries reused in this call
    flops: int | None = None  # FlopCounterMode total when counting was requested
    cache_bytes: int = 0  # rollout cache memory
    dense_call: bool = True  # True when every branch was computed (dense mode, sparsity 0)
    cold_call: bool = False  # True when the rollout cache held nothing (first after a reset)
    # ddim_rollout: |tokens - last call's| / |last call's| of the observation; None: first call
    observation_change: float | None = None
    decisions: torch.Tensor | None = field(default=None, repr=False)  # executed [K, nb]


@dataclass
class ActionChunk:
    """Predicted joint position targets for the whole horizon plus how they were made."""

    actions: np.ndarray  # (horizon, action_dim) float32
    n_obs_steps: int
    n_action_steps: int
    stats: PredictStats
    # The randomness the call used: ``predict(observation, noise=chunk.noise)`` replays it.
    noise: SamplingNoise | None = field(default=None, repr=False)

    @property
    def executable(self) -> np.ndarray:
        """Actions to execute: the first answers the newest observation."""
        start = self.n_obs_steps - 1
        return self.actions[start:start + self.n_action_steps]


def pruner_grid(pruner: Pruner, num_inference_steps: int | None, nominal: int) -> int:
    """
    Return the denoising steps a pruner-mode call runs on.

    The pruner's own grid (``PrunerConfig.n_steps``: the steps its per-step prior was trained
    for, which may be coarser than the model's dense sampler) unless ``num_inference_steps``
    asks for a number of steps; ``nominal`` (the dense steps) for a pruner without a prior.
    """
    if num_inference_steps or not pruner.config.n_steps:
        return nominal
    return pruner.config.n_steps


def grid_target_sparsity(target: float, nominal: int, grid: int) -> float:
    """
    Convert a target sparsity against ``nominal`` dense steps to one on a ``grid``-step sampler.

    Both compute the same number of step-equivalents, ``(1 - target) * nominal``: 0.98 of 100
    steps (2 computed) is 0.8 on a 10-step grid. Raises ValueError naming the three numbers when
    the grid is too coarse for the target (more step-equivalents than it has steps).
    """
    converted = 1.0 - (1.0 - target) * nominal / grid
    if not 0.0 <= converted < 1.0:
        raise ValueError(
            f'target_sparsity {target} of {nominal} dense steps computes '
            f"{(1.0 - target) * nominal:g} step-equivalents, more than the pruner's {grid}-step "
            f'grid holds; expected a target of at least {1.0 - grid / nominal:g}')
    return round(converted, 12)


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    if device != 'cpu' and not device.startswith('cuda'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return torch.device(device)


def resolve_async_pruner(requested: bool | None, device: torch.device) -> bool:
    """
    Decide whether the pruner overlaps step 0 (True) or runs inline before it (False).

    Auto: always on CUDA (side stream); on a CPU only with at least 4 cores, because on 2 cores
    the worker thread and the denoising step compete for the same cores and the overlap cost
    more than it saved (``python -m sparse_policy_ros.bench`` reports both).
    """
    if requested is not None:
        return bool(requested)
    return device.type == 'cuda' or (os.cpu_count() or 1) >= 4


class SparsePolicy:
    """Stateful wrapper: model + pruner + rollout cache on one device."""

    def __init__(self, model: DiffusionPolicy, pruner: Pruner | None = None, mode: str = 'pruner',
                 target_sparsity: float | None = None, num_inference_steps: int | None = None,
                 device: str | torch.device = 'auto', warmup: bool = True, seed: int = 0,
                 async_pruner: bool | None = None, cuda_graphs: bool | None = None,
                 freeze: bool = True, int8_linears: bool = False,
                 ddim_timesteps: dict[int, list[int]] | None = None,
                 encoder_cache: bool = True, rollout_refresh: float | None = None):
        """
        Build the policy on ``device`` (see the class and module docs for the modes).

        ``ddim_timesteps``: budget -> searched DDIM timesteps (``ddim_timesteps.json`` of the
        model folder); mode 'ddim_searched' samples the set of ``ddim_steps_for(K, target)``.
        ``encoder_cache``: keep the image features of the last frames, so that a frame seen by
        the previous call is not encoded again (policy/frame_cache.py; bit-identical). False
        encodes every frame of every call the same way (the benchmark's ablation).
        ``rollout_refresh`` (ddim_rollout): a call whose observation tokens moved more than this
        relative change from the last call's (``PredictStats.observation_change``) computes
        every step instead of reusing the last calls' (None: never).
        """
        if mode not in MODES:
            raise ValueError(f'mode must be one of {list(MODES)}, got {mode!r}')
        if mode == 'pruner' and pruner is None:
            raise ValueError("mode 'pruner' needs a trained pruner (pruner.safetensors), got none")
        if mode in ('fora', 'fixed') + FEWER_STEP_MODES and target_sparsity is None:
            raise ValueError(f'mode {mode!r} needs target_sparsity, got None')
        self.config: PolicyConfig = model.config
        self.device = resolve_device(device)
        # int8_linears: the branches' matmuls in dynamic int8 (CPU; policy/frozen.py).
        if int8_linears and (self.device.type != 'cpu' or not freeze):
            raise ValueError(
                f'int8_linears needs device cpu and freeze=True, got device {self.device} and '
                f'freeze={freeze}')
        self.int8_linears = int8_linears
        self.mode = mode
        self.target_sparsity = target_sparsity
        self.model = model.to(self.device).eval().requires_grad_(False)
        # freeze: sampling calls without nn.Module overhead (bit-identical) and, on a CPU,
        # cross-attention keys/values projected once per call. False: the plain module calls
        # (the benchmark's ablation rows). The model's view is shared by policies on it.
        if freeze:
            self.model.transformer.freeze(int8_linears)
        else:
            self.model.transformer.unfreeze()
        steps = num_inference_steps or self.config.num_inference_steps
        self.nominal_steps = steps  # sparsity is measured against this many dense steps
        # The pruner's own step grid (pruner.json n_steps, e.g. 10 of the model's 100), unless
        # the caller asked for a number of steps; target_sparsity stays against nominal_steps.
        grid = pruner_grid(pruner, num_inference_steps, steps) if mode == 'pruner' else steps
        self.pruner_target = (None if mode != 'pruner' or target_sparsity is None
                              else grid_target_sparsity(target_sparsity, steps, grid))
        if mode == 'ddim':
            self.scheduler = NoiseScheduler(self.config, ddim_steps_for(steps, target_sparsity),
                                            kind='ddim')
        elif mode == 'ddim_searched':
            budget = ddim_steps_for(steps, target_sparsity)
            self.scheduler = NoiseScheduler(
                self.config, kind='ddim',
                timesteps=searched_timesteps_for(ddim_timesteps or {}, budget))
        elif mode == 'ddim_rollout':
            self.rollout_computed = ddim_steps_for(steps, target_sparsity)
            if self.rollout_computed > ROLLOUT_BASE_STEPS:
                raise ValueError(
                    f"mode 'ddim_rollout' computes at most {ROLLOUT_BASE_STEPS} steps per call "
                    f'(its searched set); target_sparsity {target_sparsity} asks for '
                    f'{self.rollout_computed} of {steps}')
            self.scheduler = NoiseScheduler(
                self.config, kind='ddim',
                timesteps=searched_timesteps_for(ddim_timesteps or {}, ROLLOUT_BASE_STEPS))
        else:
            self.scheduler = NoiseScheduler(self.config, grid)
        self.n_branches = self.config.n_branches
        self.pruner = None
        self._runner = None
        if mode == 'pruner':
            check_pruner_matches(pruner.config, self.config, self.scheduler.num_inference_steps)
            self.pruner = pruner.to(self.device).eval().requires_grad_(False)
            self._runner = AsyncPrunerRunner(self.pruner, self.device)
        self.async_pruner = resolve_async_pruner(async_pruner, self.device)
        # CUDA graphs replay repeated calls in one launch (sparsity/cuda_graphs.py); default on
        # CUDA. On a CPU there is nothing to graph.
        if cuda_graphs and self.device.type != 'cuda':
            raise ValueError(f'cuda_graphs=True needs a CUDA device, got {self.device}')
        use_graphs = self.device.type == 'cuda' if cuda_graphs is None else cuda_graphs
        self._graphed = GraphedSampler() if use_graphs else None
        self._static = None
        self._executable_of: tuple[torch.Tensor, int] | None = None  # see _executable
        self._executable_memo: torch.Tensor | None = None
        self._rollout_call = 0  # calls since the last reset: the rollout schedule's rotation
        if rollout_refresh is not None and not rollout_refresh > 0:
            raise ValueError(f'rollout_refresh must be > 0 (a relative change), got '
                             f'{rollout_refresh}')
        self.rollout_refresh = rollout_refresh
        self._last_tokens: torch.Tensor | None = None
        self._refresh = False  # this call computes every step (the observation moved)
        if mode in ('dense', 'fora', 'fixed', 'ddim', 'ddim_searched'):
            name = mode if mode in ('fora', 'fixed') else 'dense'
            self._static = static_schedule(name, self.scheduler.num_inference_steps,
                                           self.n_branches, target_sparsity)
        self.cache = RolloutCache()
        # Per camera: this call's frames plus one spare.
        self.frame_cache = FrameFeatureCache(self.config.n_obs_steps + 1)
        self.encoder_cache = encoder_cache
        # The time tokens' memory depends only on the (frozen) weights and the steps.
        with torch.inference_mode():
            self._time_memory = time_memory_for(self.model, self.scheduler, self.device)
            # On a CPU the cross-attention keys/values of the time tokens are kept too, so a
            # call projects only its observation tokens (once per layer, not per computed step:
            # ~0.4 ms of a 90%-sparse call). On CUDA the per-step projection is left inside the
            # (graphed) loop, where it costs no launch of its own.
            self._time_kv = (self.model.transformer.cross_kv_time(self._time_memory)
                             if freeze and self.device.type == 'cpu' else None)
        self._generator = torch.Generator().manual_seed(seed)
        self.calls = 0
        # Time every denoising step (PredictStats.computed_steps_ms / reuse_steps_ms): the
        # benchmark's split. On CUDA each step then synchronizes, and a call that would replay
        # a CUDA graph runs eagerly instead, so leave it off where latency matters.
        self.profile_steps = False
        if warmup:
            self.warmup()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = 'auto', mode: str = 'pruner',
                        target_sparsity: float | None = None,
                        num_inference_steps: int | None = None, warmup: bool = True,
                        seed: int = 0, async_pruner: bool | None = None,
                        cuda_graphs: bool | None = None,
                        int8_linears: bool = False,
                        rollout_refresh: float | None = None) -> 'SparsePolicy':
        """
        Load a model folder.

        With it its pruner when ``mode='pruner'``, its searched DDIM timesteps
        (``ddim_timesteps.json``) when ``mode='ddim_searched'``.
        """
        model = load_policy(path)
        pruner = load_pruner(path)[0] if mode == 'pruner' else None
        sets = None
        if mode in ('ddim_searched', 'ddim_rollout'):
            sets = load_ddim_timesteps(path, model.config)
            if target_sparsity is not None:  # name the file in the error
                steps = num_inference_steps or model.config.num_inference_steps
                budget = (ROLLOUT_BASE_STEPS if mode == 'ddim_rollout'
                          else ddim_steps_for(steps, target_sparsity))
                searched_timesteps_for(sets, budget, path)
        return cls(model, pruner, mode=mode, target_sparsity=target_sparsity,
                   num_inference_steps=num_inference_steps, device=device, warmup=warmup,
                   seed=seed, async_pruner=async_pruner, cuda_graphs=cuda_graphs,
                   int8_linears=int8_linears, ddim_timesteps=sets,
                   rollout_refresh=rollout_refresh)

    @classmethod
    def random_init(cls, config: PolicyConfig, device: str = 'cpu', mode: str = 'fixed',
                    target_sparsity: float | None = 0.8, seed: int = 0,
                    warmup: bool = True, state_range: float = np.pi,
                    async_pruner: bool | None = None,
                    cuda_graphs: bool | None = None,
                    int8_linears: bool = False) -> 'SparsePolicy':
        """Random weights (for synthetic tests and demos without a trained model)."""
        torch.manual_seed(seed)
        model = DiffusionPolicy(config)
        limits = {'min': np.full(config.state_dim, -state_range, np.float32),
                  'max': np.full(config.state_dim, state_range, np.float32)}
        model.normalizer.set_stats({
            OBS_STATE: limits,
            'action': {'min': np.full(config.action_dim, -state_range, np.float32),
                       'max': np.full(config.action_dim, state_range, np.float32)}})
        pruner = None
        if mode == 'pruner':
            pruner = Pruner(PrunerConfig(n_branches=config.n_branches, cond_dim=config.n_emb))
        return cls(model, pruner, mode=mode, target_sparsity=target_sparsity, device=device,
                   warmup=warmup, seed=seed, async_pruner=async_pruner,
                   cuda_graphs=cuda_graphs, int8_linears=int8_linears)

    def reset(self) -> None:
        """Forget the rollout cache: the next call computes what it would have reused from it."""
        self.cache.reset()
        self._rollout_call = 0
        self._last_tokens = None

    @torch.inference_mode()
    def shift_cache(self, steps: int) -> None:
        """
        Align the rollout cache with a call ``steps`` control steps after the last one.

        Moves every entry ``steps`` action tokens earlier (``RolloutCache.shift``), so that a
        reuse-rollout decision reads the value computed for the same control step. For
        streaming replanning; chunked callers that replan every ``n_action_steps`` leave the
        cache aligned by call index, as the pruner was trained. Nothing moves when this
        policy's decisions never read the cache (:attr:`reads_rollout_cache`): moving a
        100-step cache costs ~3 ms on a CPU, every call.
        """
        if self.reads_rollout_cache:
            self.cache.shift(steps)

    @property
    def reads_rollout_cache(self) -> bool:
        """Tell whether a call's decisions may read earlier calls (REUSE_ROLLOUT)."""
        if self.mode == 'ddim_rollout':
            return True
        if self.mode != 'pruner':
            # Static schedules and fewer-step DDIM reuse within a call only, unless a schedule
            # was given reuse-rollout entries.
            return self._static is not None and bool(
                (self._static == int(Decision.REUSE_ROLLOUT)).any())
        table = self._pruner_table()
        if table is None:
            return True  # decisions from the logits: any kind, possibly observation-dependent
        return bool((table == int(Decision.REUSE_ROLLOUT)).any())

    def _pruner_table(self) -> torch.Tensor | None:
        """
        Return the pruner's recorded static decisions when they are this policy's, else None.

        A static table stands for the pruner at its own budget (``Pruner.decisions`` returns it
        without running the network); another target budget is decided from the logits.
        """
        table = self.pruner.static_table if self.pruner is not None else None
        if table is None:
            return None
        if self.pruner_target is not None and compute_budget(
                table.shape[0], table.shape[1], self.pruner_target) != int(
                    (table == int(Decision.COMPUTE)).sum()):
            return None
        return table

    def _executable(self, planned: torch.Tensor, held: 'bool | np.ndarray') -> torch.Tensor:
        """
        Return the executable decisions of ``planned``, kept while it is the same tensor.

        With every entry held (or none read across calls) a static schedule executes the same
        decisions every call: made once instead of ~0.2 ms per call on a CPU.
        """
        if held is not True or planned.is_inference():
            # A tensor made in inference mode (a per-call schedule) has no version counter.
            return make_executable(planned, held)
        # Keyed by the tensor and its version counter, so an in-place edit is seen too.
        key = (planned, planned._version)
        if self._executable_of is None or self._executable_of[0] is not planned or (
                self._executable_of[1] != key[1]):
            self._executable_memo = make_executable(planned, True)
            self._executable_of = key
        return self._executable_memo

    def continued_noise(self, previous: SamplingNoise, steps: int) -> SamplingNoise:
        """
        Return noise for a call ``steps`` control steps after the one that used ``previous``.

        ``previous``'s initial noise moved ``steps`` rows earlier, new rows (and any per-step
        noise) drawn from this policy's generator (``SamplingNoise.continued``): the
        streaming counterpart of :meth:`shift_cache`.
        """
        shape = (1, self.config.horizon, self.config.action_dim)
        fresh = SamplingNoise.draw(self.scheduler, shape, torch.device('cpu'), self._generator)
        return previous.continued(steps, fresh)

    @property
    def cache_bytes(self) -> int:
        """Rollout cache memory in bytes."""
        return self.cache.nbytes

    def warmup(self) -> None:
        """
        Run a first call and a second one (cache filled) on a blank observation, then reset.

        With CUDA graphs the pair runs once more, so that the graphs of both kinds of call are
        captured here rather than during the first episode.
        """
        _, h, w = self.config.image_shape
        t = self.config.n_obs_steps
        blank = {OBS_IMAGES: {c: np.zeros((t, h, w, 3), np.uint8)
                              for c in self.config.camera_names},
                 OBS_STATE: np.zeros((t, self.config.state_dim), np.float32)}
        rounds = 1 if self._graphed is None else self._graphed.min_sightings
        for _ in range(rounds):
            for _ in range(2):
                self.predict(blank)
            self.reset()
        self.calls = 0

    def predict(self, observation: dict, generator: torch.Generator | None = None,
                count_flops_: bool = False, noise: SamplingNoise | None = None,
                prefix: ActionPrefix | None = None,
                warm: WarmStart | None = None) -> ActionChunk:
        """
        One policy call. Bad observations raise ValueError naming the field.

        ``noise``: replay a call's randomness (``chunk.noise``) instead of drawing new noise;
        the policy's own generator is then left as it was. It must fit this policy's scheduler
        (``SamplingNoise.validate``); ``sparsity.fidelity.replay_noise`` adapts a draw to a
        policy with other steps. The output also depends on the rollout cache, and a replay is
        a call like any other (it writes the cache). A replay right after the call it repeats
        gives the same actions bit for bit (reused entries are never overwritten), unless that
        call found entries it would reuse from earlier calls missing (the first after a reset
        computes those; the replay may reuse them); a replay after a reset gives a first call's
        actions, the same as the original for decisions that reuse nothing across calls.

        ``prefix``: chunk rows fixed to actions already committed (``policy/prefix.py``),
        imposed by replacement at every denoising step; such a call runs eagerly (no CUDA
        graph: the rows change every call).

        ``warm``: start from a guess of the chunk noised to the level of step ``warm.start``
        and run only the steps from there (``policy/warm_start.py``); the skipped steps count
        as not computed. Eager, like a prefix; not combined with one.
        """
        images, state = validate_observation(observation, self.config)
        if prefix is not None:
            if not isinstance(prefix, ActionPrefix):
                raise TypeError(f'prefix must be an ActionPrefix, got {type(prefix).__name__}')
            prefix = prefix.checked(self.config.horizon, self.config.action_dim)
        if warm is not None:
            if not isinstance(warm, WarmStart):
                raise TypeError(f'warm must be a WarmStart, got {type(warm).__name__}')
            if prefix is not None:
                raise ValueError('pass prefix or warm, not both')
            warm = warm.checked(self.config.horizon, self.config.action_dim,
                                self.scheduler.num_inference_steps)
        if noise is not None:
            if generator is not None:
                raise ValueError('pass noise or generator, not both: replayed noise draws '
                                 'nothing from a generator')
            if not isinstance(noise, SamplingNoise):
                raise TypeError(f'noise must be a SamplingNoise, got {type(noise).__name__}')
            noise.validate(self.scheduler, (1, self.config.horizon, self.config.action_dim))
            noise = SamplingNoise(noise.initial.to(self.device),
                                  None if noise.per_step is None
                                  else noise.per_step.to(self.device))
        if count_flops_:
            chunk, flops = count_flops(self._predict, images, state, generator, True, noise,
                                       prefix, warm)
            chunk.stats.flops = flops
            return chunk
        return self._predict(images, state, generator, False, noise, prefix, warm)

    @torch.inference_mode()
    def _predict(self, images: dict, state: np.ndarray, generator: torch.Generator | None,
                 synchronous_pruner: bool, noise: SamplingNoise | None = None,
                 prefix: ActionPrefix | None = None,
                 warm: WarmStart | None = None) -> ActionChunk:
        stats = PredictStats()
        start = time.perf_counter()
        obs_tokens = self.encode(images, state, stats)
        stats.encoder_ms = (time.perf_counter() - start) * 1e3
        if self.mode == 'ddim_rollout':  # what rollout_refresh reads; no other mode needs it
            if self._last_tokens is not None and self._last_tokens.shape == obs_tokens.shape:
                stats.observation_change = float(
                    torch.linalg.vector_norm(obs_tokens - self._last_tokens)
                    / torch.linalg.vector_norm(self._last_tokens).clamp_min(1e-12))
            self._last_tokens = obs_tokens
        self._refresh = (self.rollout_refresh is not None and stats.observation_change is not None
                         and stats.observation_change > self.rollout_refresh)
        memory = condition_all_steps(self.model, obs_tokens, self.scheduler,
                                     self._time_memory)  # (K, 1, L, E)
        self._sync()
        encoded = time.perf_counter()
        stats.encode_ms = (encoded - start) * 1e3
        steps = self.scheduler.num_inference_steps
        # Decisions that never read earlier calls leave the rollout cache unwritten (48 copies
        # per 4-step call, ~0.4 ms on a CPU); a CUDA graph replay writes it in any case.
        use_cache = self.reads_rollout_cache or self._graphed is not None
        rollout_ok = True
        if use_cache:
            rollout_ok = self.cache.prepare(steps, self.n_branches,
                                            (1, self.config.horizon, self.config.n_emb),
                                            memory.dtype, self.device)
        # The entries earlier calls left: only reuse-rollout decisions read them.
        held = True if rollout_ok else self.cache.filled
        pending: PrunerResult | None = None
        table = self._pruner_table() if self._runner is not None else None
        if self._runner is not None and table is None:
            synchronous = synchronous_pruner or not self.async_pruner
            launch = self._runner.run_sync if synchronous else self._runner.launch
            pending = launch(memory, self.pruner_target, held)
        executed: list[torch.Tensor] = []

        def get_decisions() -> torch.Tensor:
            if pending is not None:
                decisions = pending.result()
            elif table is not None:  # a static pruner's decisions: no network to run
                decisions = self._executable(table, held)
            else:
                decisions = self._executable(self._planned_static(), held)
            executed.append(decisions)
            return decisions

        if noise is None:
            noise = SamplingNoise.draw(self.scheduler, (1, self.config.horizon,
                                                        self.config.action_dim),
                                       self.device, generator or self._generator)
        condition = None
        if prefix is not None:
            rows = torch.from_numpy(prefix.actions).to(self.device)[None]
            condition = PrefixCondition.build(
                self.model.normalizer.normalize(ACTION, rows), prefix.start, prefix.until,
                self.scheduler, noise.initial)
        start_step = 0
        sampled = noise
        if warm is not None:
            start_step = warm.start
            guess = torch.from_numpy(warm.actions).to(self.device)[None]
            sampled = SamplingNoise(
                noised_guess(self.model.normalizer.normalize(ACTION, guess), noise.initial,
                             self.scheduler, start_step), noise.per_step)
        step_times = StepTimes(self._sync) if self.profile_steps else None
        if (self._graphed is not None and not synchronous_pruner and condition is None
                and step_times is None and warm is None):
            # A graph needs the decisions before launch: the pruner's overlap with step 0 is
            # given up for a single-launch call.
            actions = self._graphed.sample(self.model, memory, self.scheduler, noise,
                                           self.cache, get_decisions(), rollout_ok)
        else:
            cross_kv = (None if self._time_kv is None else
                        self.model.transformer.cross_kv_steps(memory, self._time_kv))
            actions = sample_sparse(self.model, memory, self.scheduler, sampled,
                                    self.cache if use_cache else None, get_decisions, cross_kv,
                                    condition, step_times, start_step)
        actions_np = actions[0].float().cpu().numpy()
        end = time.perf_counter()
        # A copy: the executed tensor may be the policy's kept one (see _executable).
        decisions = (executed[0].clone() if executed
                     else make_executable(self._planned_static(), False))
        if start_step > 0:  # skipped steps computed nothing (reported as reusing everything)
            decisions[:start_step] = int(Decision.REUSE_STEP)
        if pending is not None:
            stats.pruner_ms = pending.wait_ms
            stats.pruner_run_ms = pending.run_ms
        stats.denoise_ms = (end - encoded) * 1e3
        if step_times is not None:
            stats.computed_steps_ms = step_times.computed_ms
            stats.reuse_steps_ms = step_times.reuse_ms
            stats.computed_steps = step_times.computed_steps
            stats.reuse_steps = step_times.reuse_steps
        stats.total_ms = (end - start) * 1e3
        stats.dense_call = sparsity_of(decisions) == 0.0
        # The first call after a reset; where a cache is kept, one that found it empty.
        stats.cold_call = (not rollout_ok and not np.any(held)) if use_cache else (
            self._rollout_call == 0)
        # Against the nominal dense work, so fewer-step DDIM reports the work it skips too.
        computed = (1.0 - sparsity_of(decisions)) * decisions.shape[0]
        stats.sparsity = 1.0 - computed / self.nominal_steps
        stats.cache_bytes = self.cache.nbytes
        stats.decisions = decisions
        self.calls += 1
        self._rollout_call += 1
        if not np.all(np.isfinite(actions_np)):
            raise FloatingPointError(
                f'policy produced non-finite actions at call {self.calls}; refusing to return')
        return ActionChunk(actions_np, self.config.n_obs_steps, self.config.n_action_steps,
                           stats, noise)

    def encode(self, images: dict, state: np.ndarray,
               stats: PredictStats | None = None) -> torch.Tensor:
        """
        Observation tokens (1, T, F) of validated numpy images and state, as ``predict`` makes.

        Each camera frame is encoded on its own (batch 1), through the frame cache when it is
        on; ``stats`` (when given) counts the frames encoded and reused.
        """
        stats = stats if stats is not None else PredictStats()
        if not self.encoder_cache:
            self.frame_cache.clear()
        encoder = self.model.obs_encoder
        features = []
        for name in self.config.camera_names:
            feature, encoded = self.frame_cache.encode(encoder, name, images[name], self.device)
            features.append(feature[None])
            stats.frames_encoded += encoded
            stats.frames_reused += len(feature) - encoded
        state_t = torch.from_numpy(state).to(self.device)[None]
        return encoder.tokens(features, self.model.normalizer.normalize(OBS_STATE, state_t))

    def _planned_static(self) -> torch.Tensor:
        if self._static is not None:
            return self._static
        if self.mode == 'ddim_rollout' and self._refresh:
            return dense_decisions(self.scheduler.num_inference_steps, self.n_branches)
        if self.mode == 'ddim_rollout':
            return rollout_schedule(self.scheduler.num_inference_steps, self.n_branches,
                                    self.rollout_computed, self._rollout_call)
        return dense_decisions(self.scheduler.num_inference_steps, self.n_branches)

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Release the pruner thread, the cache and device memory."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self.cache.reset()
        self.frame_cache.clear()
        if self._graphed is not None:
            self._graphed.clear()
        self.model = None
        self.pruner = None
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
