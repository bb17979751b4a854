"""
The pruner: decisions for every (denoising step, branch) from the conditioning memory.

It runs in one batched forward over all steps, concurrently with denoising step 0.

Architecture: one learned query per branch; one pre-norm transformer layer in which the
queries attend to each other and to that step's memory tokens (time token + observation
tokens, i.e. the output of the policy's conditioning encoder, shared, never recomputed); a
linear head gives 4 logits (one per Decision) per (step, branch).

A *static* pruner (a step prior and an exactly zero head) decides the same for every
observation. Its decisions are recorded in pruner.json as a table and that table is what runs,
not the argmax of its logits: the shipped default pruner's logits tie exactly (the compute
bias cancels the prior in float32), and one ulp less bias would have left only step 0
computed. ``load_pruner`` refuses a table that the weights contradict by more than
DECISION_TOLERANCE, and warns when a static pruner without a table wins by less than it.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
import logging
import math
from pathlib import Path
import time

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file
import torch
from torch import nn

from .decisions import Decision, from_rows, make_executable, N_DECISIONS, to_rows
from ..policy.checkpoint import (CONFIG_FILE, load_config, load_state_strict, read_json,
                                 write_json, write_safetensors)
from ..policy.config import PolicyConfig
from ..policy.transformer import Attention

logger = logging.getLogger(__name__)

PRUNER_CONFIG_FILE = 'pruner.json'
PRUNER_WEIGHTS_FILE = 'pruner.safetensors'
# pruner.json section of a static pruner: {'rows': decisions.to_rows(table), 'min_margin': m}.
STATIC_DECISIONS_KEY = 'static_decisions'
# Logit gap below which a decision counts as a near-tie. A recorded decision is accepted when
# its logit is within this of the winner's; a static pruner without a table warns when one of
# its decisions wins by less. One float32 ulp of a logit below 16 is under 2e-6, and another
# device's or thread count's float32 rounding of this small network should stay orders of
# magnitude below 1e-3 (estimated, not measured), while a prior's preference is 2 logits.
DECISION_TOLERANCE = 1e-3


@dataclass
class PrunerConfig:
    """Shape of a pruner; stored in pruner.json next to the policy."""

    n_branches: int = 24  # prunable branches of the policy (3 per decoder layer)
    cond_dim: int = 256  # width of the policy's conditioning memory
    # Narrow on purpose: it runs over K * n_branches query tokens per call, so at width 256 it
    # would cost more FLOPs than a 95%-sparse denoiser (see README, FLOP accounting).
    d_model: int = 64  # pruner width
    n_head: int = 2  # attention heads
    mlp_ratio: int = 2  # MLP hidden = mlp_ratio * d_model
    # > 0: a learned per-(step, branch) prior over the decisions is added to the logits (the
    # static part of the schedule; the transformer supplies the observation-dependent part).
    # It fixes the number of denoising steps the pruner can serve. 0: no prior.
    n_steps: int = 0
    # Decisions the pruner may take (Decision names, lower case); the others are masked out of
    # its logits. All four by default; e.g. ('compute', 'reuse_step') keeps it to FORA's kind.
    decisions: tuple[str, ...] = ('compute', 'reuse_block', 'reuse_step', 'reuse_rollout')

    def __post_init__(self):
        for name in ('n_branches', 'cond_dim', 'd_model', 'n_head', 'mlp_ratio'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'pruner {name} must be a positive int, got {value!r}')
        if not isinstance(self.n_steps, int) or self.n_steps < 0:
            raise ValueError(f'pruner n_steps must be an int >= 0, got {self.n_steps!r}')
        names = [d.name.lower() for d in Decision]
        self.decisions = tuple(self.decisions)
        unknown = [d for d in self.decisions if d not in names]
        if unknown or 'compute' not in self.decisions or len(self.decisions) < 2:
            raise ValueError(f'pruner decisions must be names from {names} including compute '
                             f'and at least one reuse, got {list(self.decisions)}')
        if self.d_model % self.n_head:
            raise ValueError(
                f'pruner d_model ({self.d_model}) must be divisible by n_head ({self.n_head})')


class Pruner(nn.Module):
    """Memory (K, B, L, E) -> logits (K, B, n_branches, N_DECISIONS)."""

    def __init__(self, config: PrunerConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.queries = nn.Parameter(torch.randn(config.n_branches, d) * 0.02)
        self.memory_proj = nn.Linear(config.cond_dim, d)
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = Attention(d, config.n_head, 0.0)
        self.norm_cross = nn.LayerNorm(d)
        self.cross_attn = Attention(d, config.n_head, 0.0)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, config.mlp_ratio * d), nn.GELU(),
                                 nn.Linear(config.mlp_ratio * d, d))
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, N_DECISIONS)
        # Added to the COMPUTE logit; set after training so argmax decisions hit the target.
        self.register_buffer('compute_bias', torch.zeros(()))
        self.step_prior = (nn.Parameter(torch.zeros(config.n_steps, config.n_branches,
                                                    N_DECISIONS))
                           if config.n_steps else None)
        # Added to the logits: 0 for allowed decisions, a large negative number for the others.
        masked = [d.name.lower() not in config.decisions for d in Decision]
        self.register_buffer('decision_mask', torch.tensor(masked, dtype=torch.float32) * -1e4,
                             persistent=False)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            # Start out preferring COMPUTE: an untrained pruner is (nearly) dense.
            self.head.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))
        # (n_steps, n_branches) int8: the recorded decisions of a static pruner, which
        # ``decisions`` returns instead of its logits' argmax; None: use the logits. Set by
        # load_pruner / set_static_table; not in the safetensors (pruner.json holds it), and not
        # cleared by later training or load_state_dict.
        self.register_buffer('static_table', None, persistent=False)
        self._static_computed = 0  # COMPUTE entries of static_table

    @property
    def is_static(self) -> bool:
        """Whether the decisions cannot depend on the memory: a prior and a zero head."""
        return self.step_prior is not None and not bool(self.head.weight.any())

    def static_logits(self) -> torch.Tensor:
        """Logits (n_steps, n_branches, N_DECISIONS) of a static pruner, from a zero memory."""
        if not self.is_static:
            raise ValueError('pruner is not static (no step prior or a non-zero head): its '
                             'logits depend on the memory')
        memory = torch.zeros(self.config.n_steps, 1, 1, self.config.cond_dim,
                             device=self.queries.device, dtype=self.queries.dtype)
        with torch.no_grad():
            return self(memory)[:, 0].float()

    def set_static_table(self, table: torch.Tensor | None, source: str = 'pruner') -> float:
        """
        Record ``table`` (n_steps, nb) as this static pruner's decisions; None clears it.

        Checked by :meth:`check_static_table` first. Returns the argmax's smallest winning
        margin over steps 1..K-1 (nan when cleared).
        """
        if table is None:
            self.static_table = None
            return math.nan
        margin = self.check_static_table(table, source)
        self.static_table = table.to(self.queries.device, torch.int8)
        self._static_computed = int((table == int(Decision.COMPUTE)).sum())
        return margin

    def check_static_table(self, table: torch.Tensor, source: str = 'pruner') -> float:
        """
        Raise ValueError naming ``source`` unless ``table`` may stand for this pruner.

        The pruner must be static, the table (n_steps, nb) with step 0 computed, and every
        recorded decision's logit within DECISION_TOLERANCE of the best one, so a table only
        settles near-ties. Returns the argmax's smallest winning margin over steps 1..K-1.
        """
        if not self.is_static:
            raise ValueError(f'{source}: records static decisions, but its head is not zero '
                             f'(or it has no step prior): its decisions depend on the '
                             f'observation, so no table can stand for them')
        shape = (self.config.n_steps, self.config.n_branches)
        if tuple(table.shape) != shape:
            raise ValueError(f'{source}: static decisions must have shape (n_steps, n_branches) '
                             f'= {shape}, got {tuple(table.shape)}')
        table = table.to('cpu', torch.int8)
        if (table[0] != int(Decision.COMPUTE)).any():
            branch = int((table[0] != int(Decision.COMPUTE)).nonzero()[0])
            raise ValueError(f'{source}: static decisions at (step 0, branch {branch}) must be '
                             f'compute (step 0 is always computed), got '
                             f'{Decision(int(table[0, branch])).name.lower()}')
        logits = self.static_logits().cpu()  # (K, nb, 4)
        computed = decide(logits[:, None])
        # How far the recorded decision's logit falls short of the computed (winning) one.
        short = (logits.gather(-1, computed.long()[..., None])
                 - logits.gather(-1, table.long()[..., None]))[..., 0]  # (K, nb)
        short[0] = 0.0  # step 0 is computed whatever its logits say
        wrong = (table != computed) & (short > DECISION_TOLERANCE)
        if wrong.any():
            step, branch = (int(i) for i in wrong.nonzero()[0])
            raise ValueError(
                f'{source}: recorded static decision at (step {step}, branch {branch}) is '
                f'{Decision(int(table[step, branch])).name.lower()}, but the weights choose '
                f'{Decision(int(computed[step, branch])).name.lower()} by a logit margin of '
                f'{float(short[step, branch]):.6g} (tolerance {DECISION_TOLERANCE}): the table '
                f'does not match {PRUNER_WEIGHTS_FILE}')
        return min_margin(logits[:, None])

    def decisions(self, memory: torch.Tensor,
                  target_sparsity: float | None = None) -> torch.Tensor:
        """
        Memory (K, B, L, E) -> int8 (K, nb): the decisions the policy executes.

        A recorded static table when there is one, with no target sparsity (the argmax path)
        or one whose budget is the table's computed count (the argmax decisions are then the
        budget's, up to near-ties); else :func:`decide` on the logits. The table is returned
        without running the pruner, so its decisions cannot move with the logits' rounding.
        """
        if self.static_table is None or (
                target_sparsity is not None
                and compute_budget(self.config.n_steps, self.config.n_branches,
                                   target_sparsity) != self._static_computed):
            return decide(self(memory), target_sparsity)
        k, _, _, e = memory.shape
        if k != self.config.n_steps:
            raise ValueError(f'pruner memory has {k} denoising steps, expected n_steps = '
                             f'{self.config.n_steps} (the steps its prior was trained for)')
        if e != self.config.cond_dim:
            raise ValueError(f'pruner memory has width {e}, expected cond_dim = '
                             f'{self.config.cond_dim}')
        return self.static_table.clone()

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        k, b, length, e = memory.shape
        if self.step_prior is not None and k != self.config.n_steps:
            raise ValueError(f'pruner memory has {k} denoising steps, expected n_steps = '
                             f'{self.config.n_steps} (the steps its prior was trained for)')
        ctx = self.memory_proj(memory.reshape(k * b, length, e))  # (K*B, L, d)
        # The queries' self-attention and their cross-attention projection depend on the
        # weights alone, not on the memory: computed once per call for one batch entry and
        # broadcast, instead of K * B times (the pruner's cost fell by ~40% on a CPU).
        q = self.queries[None]  # (1, nb, d)
        y = self.norm_self(q)
        q = q + self.self_attn(y, y, None)
        cross_q = self.cross_attn.project_query(self.norm_cross(q))  # (1, nb, d)
        q = q + self.cross_attn.attend(cross_q.expand(k * b, -1, -1), ctx, None)
        q = q + self.mlp(self.norm_mlp(q))
        logits = self.head(self.norm_out(q))  # (K*B, nb, 4)
        bias = self.decision_mask.to(logits.dtype).clone()
        bias[int(Decision.COMPUTE)] = self.compute_bias
        logits = (logits + bias).view(k, b, self.config.n_branches, N_DECISIONS)
        if self.step_prior is not None:
            logits = logits + self.step_prior.to(logits.dtype)[:, None]
        return logits

    def init_prior_from(self, schedule: torch.Tensor, strength: float = 4.0) -> None:
        """
        Start from a static schedule (K, nb): the prior favours its decision by ``strength``.

        The head is zeroed, so the untrained pruner's argmax reproduces ``schedule`` exactly;
        distillation then learns where the observation should change it.
        """
        if self.step_prior is None:
            raise ValueError('pruner n_steps is 0: it has no prior to initialise')
        if tuple(schedule.shape) != tuple(self.step_prior.shape[:2]):
            raise ValueError(f'schedule must have shape {tuple(self.step_prior.shape[:2])}, '
                             f'got {tuple(schedule.shape)}')
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.step_prior.copy_(strength * nn.functional.one_hot(
                schedule.long(), N_DECISIONS).to(self.step_prior.dtype))


def compute_budget(steps: int, n_branches: int, target_sparsity: float) -> int:
    """Entries :func:`decide` computes at ``target_sparsity``: round((1 - s) * K * nb), >= nb."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f'target_sparsity must be in [0, 1), got {target_sparsity}')
    total = steps * n_branches
    return max(n_branches, min(total, round((1.0 - target_sparsity) * total)))


def decide(logits: torch.Tensor, target_sparsity: float | None = None) -> torch.Tensor:
    """
    Logits (K, B, nb, 4) -> decisions (K, nb) int8 on the logits' device.

    Without a target, each entry takes its argmax (the first of tied logits). With a target
    sparsity s, exactly round((1 - s) * K * nb) entries are computed (step 0 always): those
    whose COMPUTE logit beats their best reuse logit by the largest margin, ties going to the
    earlier (step, branch) on every device; the rest take their best reuse option. The batch
    is pooled by averaging logits (one schedule per batch).
    """
    pooled = logits.float().mean(dim=1)  # (K, nb, 4)
    if target_sparsity is None:
        decisions = pooled.argmax(dim=-1)
    else:
        k, nb, _ = pooled.shape
        n_compute = compute_budget(k, nb, target_sparsity)
        best_reuse = pooled[..., 1:].argmax(dim=-1) + 1
        margin = pooled[..., 0] - pooled[..., 1:].max(dim=-1).values
        margin[0] = math.inf  # step 0 always computed
        # A stable sort, not topk: topk's order among equal margins is unspecified and
        # differs between CPU and CUDA.
        chosen = torch.sort(margin.flatten(), descending=True, stable=True).indices[:n_compute]
        compute = torch.zeros(k * nb, dtype=torch.bool, device=pooled.device)
        compute[chosen] = True
        decisions = torch.where(compute.view(k, nb), torch.zeros_like(best_reuse), best_reuse)
    decisions = decisions.to(torch.int8)
    decisions[0] = int(Decision.COMPUTE)
    return decisions


def decision_margins(logits: torch.Tensor) -> torch.Tensor:
    """
    Logits (K, B, nb, 4) -> (K, nb): winning minus runner-up logit of the argmax decisions.

    Batch pooled as in :func:`decide`; step 0 is inf (computed whatever the logits say).
    Masked decisions (-1e4) never come second while two decisions are allowed.
    """
    top = logits.float().mean(dim=1).topk(2, dim=-1).values  # (K, nb, 2)
    margins = top[..., 0] - top[..., 1]
    margins[0] = math.inf
    return margins


def min_margin(logits: torch.Tensor) -> float:
    """Smallest :func:`decision_margins` entry; inf with a single step."""
    return float(decision_margins(logits).min())


def check_pruner_matches(pruner_config: PrunerConfig, model_config: PolicyConfig,
                         num_inference_steps: int | None = None,
                         source: str = 'pruner') -> None:
    """
    Raise ValueError naming ``source`` unless the pruner fits the policy.

    n_branches must be the policy's 3 * n_layer branches, cond_dim its n_emb, and n_steps
    (when the pruner has a prior) the denoising steps per call when ``num_inference_steps``
    fixes them. Without it a pruner's n_steps is its own step grid (it may be coarser than the
    config's dense sampler: ``SparsePolicy`` then runs pruner calls on it), which must fit the
    model's ``num_train_timesteps``.
    """
    expected = [('n_branches', model_config.n_branches, "the policy's prunable branches"),
                ('cond_dim', model_config.n_emb, "the policy's n_emb")]
    if pruner_config.n_steps and num_inference_steps:
        expected.append(('n_steps', num_inference_steps, 'denoising steps per call'))
    if pruner_config.n_steps > model_config.num_train_timesteps:
        raise ValueError(f'{source}: pruner n_steps is {pruner_config.n_steps}, expected at '
                         f"most {model_config.num_train_timesteps} (the model's "
                         f'num_train_timesteps): this pruner was trained for another policy')
    for name, want, meaning in expected:
        got = getattr(pruner_config, name)
        if got != want:
            raise ValueError(f'{source}: pruner {name} is {got}, expected {want} ({meaning}): '
                             f'this pruner was trained for another policy')


def calibrate_compute_bias(logits: list[torch.Tensor], target_sparsity: float,
                           iterations: int = 40) -> float:
    """
    Find the COMPUTE-logit offset whose argmax decisions have the target mean sparsity.

    ``logits``: per-call (K, B, nb, 4) pruner outputs without bias. Step 0 counts as computed,
    as it is executed. Bisection: sparsity falls monotonically as the offset grows.
    """
    def sparsity_at(offset: float) -> float:
        reused, total = 0, 0
        for item in logits:
            shifted = item.float().mean(dim=1).clone()  # (K, nb, 4)
            shifted[..., int(Decision.COMPUTE)] += offset
            decisions = shifted.argmax(dim=-1)
            decisions[0] = int(Decision.COMPUTE)
            reused += int((decisions != Decision.COMPUTE).sum())
            total += decisions.numel()
        return reused / max(1, total)

    low, high = -50.0, 50.0
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if sparsity_at(mid) > target_sparsity:
            low = mid
        else:
            high = mid
    return high if abs(sparsity_at(high) - target_sparsity) <= abs(
        sparsity_at(low) - target_sparsity) else low


class PrunerResult:
    """Handle on a (possibly still running) pruner call; ``result()`` gives CPU decisions."""

    def __init__(self, future: Future | None = None, event: 'torch.cuda.Event | None' = None,
                 host: torch.Tensor | None = None, rollout_available: 'bool | np.ndarray' = True):
        self._future = future
        self._event = event
        self._host = host
        self._rollout_available = rollout_available
        self.run_ms = 0.0  # pruner's own time (CPU thread) or launch time (CUDA)
        self.wait_ms = 0.0  # time the denoising loop waited for it
        self._decisions: torch.Tensor | None = None

    def result(self) -> torch.Tensor:
        """Block until the decisions exist; returns an executable CPU int8 tensor."""
        if self._decisions is None:
            start = time.perf_counter()
            if self._future is not None:
                raw, self.run_ms = self._future.result()
            else:
                self._event.synchronize()
                raw = self._host
            self.wait_ms = (time.perf_counter() - start) * 1e3
            self._decisions = make_executable(raw, self._rollout_available)
        return self._decisions


def _single_intra_op_thread() -> None:
    # torch initialises each thread's count lazily from the process default on first use;
    # do that first, or it would later undo the setting below.
    torch.get_num_threads()
    torch.set_num_threads(1)


class AsyncPrunerRunner:
    """
    Runs the pruner off the critical path: a worker thread on CPU, a side stream on CUDA.

    CUDA ordering: the side stream waits for an event recorded on the main stream after the
    memory was produced; the memory tensor is marked as used by the side stream so the caching
    allocator cannot hand its storage out before the pruner is done; decisions are copied to
    pinned host memory on the side stream and an event recorded after the copy is what
    ``result()`` waits on.
    """

    def __init__(self, pruner: Pruner, device: torch.device):
        self.pruner = pruner
        self.device = torch.device(device)
        self._executor: ThreadPoolExecutor | None = None
        self._stream = None
        if self.device.type == 'cuda':
            self._stream = torch.cuda.Stream(device=self.device)
        else:
            # One intra-op thread in the worker: a second OpenMP pool spinning beside the main
            # one made every call ~3x slower on a 2-core CPU (measured, see the issue notes).
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix='pruner',
                                                initializer=_single_intra_op_thread)
            # torch.set_num_threads also sets the count that threads started later inherit
            # (e.g. an inference worker): start the worker now, then restore that default.
            own_threads = torch.get_num_threads()
            self._executor.submit(int).result()
            torch.set_num_threads(own_threads)

    def _run_sync(self, memory: torch.Tensor,
                  target_sparsity: float | None) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        with torch.inference_mode():  # inference mode is thread-local: enter it here too
            decisions = self.pruner.decisions(memory, target_sparsity).cpu()
        return decisions, (time.perf_counter() - start) * 1e3

    def run_sync(self, memory: torch.Tensor, target_sparsity: float | None,
                 rollout_available: 'bool | np.ndarray' = True) -> PrunerResult:
        """Run the pruner on this thread: the reference path, also used when counting FLOPs."""
        done: Future = Future()
        done.set_result(self._run_sync(memory, target_sparsity))
        return PrunerResult(future=done, rollout_available=rollout_available)

    def launch(self, memory: torch.Tensor, target_sparsity: float | None,
               rollout_available: 'bool | np.ndarray' = True) -> PrunerResult:
        """Start the pruner and return at once."""
        if self._stream is None:
            future = self._executor.submit(self._run_sync, memory, target_sparsity)
            return PrunerResult(future=future, rollout_available=rollout_available)
        start = time.perf_counter()
        main = torch.cuda.current_stream(self.device)
        ready = torch.cuda.Event()
        ready.record(main)
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            memory.record_stream(self._stream)
            decisions = self.pruner.decisions(memory, target_sparsity)
            host = torch.empty(decisions.shape, dtype=decisions.dtype, pin_memory=True)
            host.copy_(decisions, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        result = PrunerResult(event=done, host=host, rollout_available=rollout_available)
        result.run_ms = (time.perf_counter() - start) * 1e3
        return result

    def close(self) -> None:
        """Stop the worker thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def save_pruner(pruner: Pruner, folder: str | Path, record: dict | None = None) -> None:
    """
    Write pruner.json (config + training record) and pruner.safetensors into ``folder``.

    A static pruner also gets its decision table: the one it holds, else its argmax decisions
    now (checked as load_pruner will check them).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {'pruner': asdict(pruner.config), 'training': record or {}}
    if pruner.is_static:
        table = pruner.static_table
        if table is None:
            table = decide(pruner.static_logits()[:, None])
        margin = pruner.check_static_table(table, str(folder / PRUNER_CONFIG_FILE))
        if margin < DECISION_TOLERANCE:
            logger.info('%s: static decisions win by as little as %.3g: the recorded table, '
                        'not the argmax, fixes them', folder / PRUNER_CONFIG_FILE, margin)
        data[STATIC_DECISIONS_KEY] = {'rows': to_rows(table),
                                      'min_margin': margin if math.isfinite(margin) else None}
    write_safetensors(folder / PRUNER_WEIGHTS_FILE, pruner.state_dict())
    write_json(folder / PRUNER_CONFIG_FILE, data)


def _read_pruner_json(path: Path) -> dict:
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f'{path}: not valid JSON ({error})') from error
    if not isinstance(data, dict) or not isinstance(data.get('pruner'), dict):
        raise ValueError(f'{path}: expected an object with a "pruner" section (the '
                         f'PrunerConfig), got {str(data)[:80]!r}')
    if not isinstance(data.get('training', {}), dict):
        raise ValueError(f'{path}: "training" must be an object, got {data["training"]!r}')
    return data


def load_pruner(folder: str | Path, map_location: str = 'cpu',
                model_config: PolicyConfig | None = None) -> tuple[Pruner, dict]:
    """
    Read a pruner saved by :func:`save_pruner`; returns (pruner, training record).

    Every bad file is a ValueError naming it. The pruner is checked against ``model_config``,
    by default the folder's config.json when there is one (:func:`check_pruner_matches`).
    A recorded static table is checked against the weights and then executed
    (:meth:`Pruner.set_static_table`).
    """
    folder = Path(folder)
    for name in (PRUNER_CONFIG_FILE, PRUNER_WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f'{folder} has no {name}: no pruner was trained for it')
    config_path, weights_path = folder / PRUNER_CONFIG_FILE, folder / PRUNER_WEIGHTS_FILE
    data = _read_pruner_json(config_path)
    try:
        config = PrunerConfig(**data['pruner'])
    except (TypeError, ValueError) as error:
        raise ValueError(f'{config_path}: bad "pruner" section ({error})') from error
    if model_config is None and (folder / CONFIG_FILE).is_file():
        model_config = load_config(folder)
    if model_config is not None:
        check_pruner_matches(config, model_config, source=str(config_path))
    try:
        tensors = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError) as error:
        raise ValueError(f'{weights_path}: not a readable safetensors file ({error})') from error
    pruner = Pruner(config)
    load_state_strict(pruner, tensors, str(weights_path))
    pruner.eval()
    static = data.get(STATIC_DECISIONS_KEY)
    if static is not None:
        if not isinstance(static, dict) or 'rows' not in static:
            raise ValueError(f'{config_path}: "{STATIC_DECISIONS_KEY}" must be an object with '
                             f'"rows", got {str(static)[:80]!r}')
        try:
            table = from_rows(static['rows'], config.decisions)
        except ValueError as error:
            raise ValueError(f'{config_path}: bad "{STATIC_DECISIONS_KEY}" ({error})') from error
        margin = pruner.set_static_table(table, str(config_path))
        logger.info('%s: static decision table loaded (argmax margin %.3g)', config_path, margin)
    elif pruner.is_static:
        margin = min_margin(pruner.static_logits()[:, None])
        if margin < DECISION_TOLERANCE:
            logger.warning('%s: static pruner without a decision table whose decisions win by '
                           'only %.3g (< %g): one ulp of rounding can flip them; save it again '
                           'with save_pruner to record its table', config_path, margin,
                           DECISION_TOLERANCE)
    return pruner, data.get('training', {})
