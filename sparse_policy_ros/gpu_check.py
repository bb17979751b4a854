"""
Checks of the CUDA path that the CPU test suite cannot make (there is no GPU in CI).

Usage (on a machine with CUDA)::

    python -m sparse_policy_ros.gpu_check --model models/default --out results/gpu

Each check prints PASS/FAIL; the exit status is 1 when any check fails, 2 without CUDA.
Results go to ``--out`` as JSON and markdown, with the date and the GPU's name.

What is checked, on the CUDA device:

* ``dense_bit_identical``: the sparse sampler with all-COMPUTE decisions gives bit-identical
  actions to the dense sampler (the CPU tests make the same check on the CPU);
* ``async_equals_sync``: the pruner on its side stream (events, pinned copy) gives the same
  decisions and bit-identical actions as the pruner run inline, over consecutive calls that
  use the rollout cache, while the main stream is kept busy;
* ``cpu_cuda_agreement``: every mode's actions on CUDA against the same calls on the CPU
  (cuDNN/cuBLAS kernels differ from the CPU's, so this is a tolerance, reported as measured);
* ``cuda_graphs``: calls replayed from CUDA graphs give bit-identical actions to eager calls,
  over consecutive calls with rollout reuse and a reset;
* ``residency``: weights, buffers, conditioning memory and rollout cache live on the GPU, and
  the number of host-device synchronisations one sparse call makes (torch's sync debug mode);
* ``latency``: predict p50/p99 per mode, measured side by side in interleaved rounds.
"""

import argparse
from datetime import datetime, timezone
import json
from pathlib import Path
import platform
import sys
import time
from typing import Any
import warnings

import numpy as np
import torch

from .policy.checkpoint import load_policy
from .policy.config import PolicyConfig
from .policy.model import DiffusionPolicy
from .policy.observation import OBS_IMAGES, OBS_STATE, validate_observation
from .policy.sampler import condition_all_steps, sample_dense, SamplingNoise, time_memory_for
from .policy.scheduler import NoiseScheduler
from .sparsity.cache import RolloutCache
from .sparsity.decisions import dense_decisions
from .sparsity.pruner import load_pruner, Pruner
from .sparsity.sampler import sample_sparse
from .sparsity.sparse_policy import SparsePolicy

# CPU and CUDA kernels (cuDNN convolutions with TF32, reduction orders) differ: actions in
# normalized units may drift by this much over 100 denoising steps. Measured values are
# reported; this bound only decides PASS/FAIL.
CPU_CUDA_ATOL = 2e-2


def load_model(path: Path | None, seed: int) -> tuple[DiffusionPolicy, Pruner, str]:
    """Load a model folder with its pruner, or build the reference config with random weights."""
    if path is not None:
        return load_policy(path), load_pruner(path)[0], str(path)
    # bench's random pruner: its head is re-drawn, so its logits have no ties (an untrained
    # head gives every entry the same margin, and CPU and CUDA then break ties differently).
    from .bench import random_pruner
    policy = SparsePolicy.random_init(PolicyConfig(), device='cpu', mode='dense',
                                      target_sparsity=None, seed=seed, warmup=False)
    return (policy.model, random_pruner(policy.config, seed),
            'reference config, random weights, random pruner')


def observations(config: PolicyConfig, count: int, seed: int) -> list[dict]:
    """Random frames and a smooth joint-state walk (consecutive calls, as in closed loop)."""
    rng = np.random.default_rng(seed)
    _, h, w = config.image_shape
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    state = rng.uniform(-0.5, 0.5, config.state_dim)
    out = []
    for _ in range(count):
        state = state + rng.normal(0.0, 0.02, config.state_dim)
        frames = np.stack([np.clip(base.astype(np.int16)
                                   + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
                           for _ in range(config.n_obs_steps)])
        out.append({OBS_IMAGES: {c: frames for c in config.camera_names},
                    OBS_STATE: np.stack([state] * config.n_obs_steps).astype(np.float32)})
    return out


def check_dense_bit_identical(model: DiffusionPolicy, device: torch.device,
                              obs: dict) -> dict[str, Any]:
    """All-COMPUTE sparse sampling equals dense sampling bit for bit on the GPU."""
    model = model.to(device).eval()
    scheduler = NoiseScheduler(model.config)
    images, state = validate_observation(obs, model.config)
    with torch.inference_mode():
        image_t, state_t = model.observation_to_tensors(images, state, device)
        memory = condition_all_steps(model, model.encode_observation(image_t, state_t),
                                     scheduler, time_memory_for(model, scheduler, device))
        shape = (1, model.config.horizon, model.config.action_dim)
        noise = SamplingNoise.draw(scheduler, shape, device, torch.Generator().manual_seed(3))
        dense = sample_dense(model, memory, scheduler, noise)
        decisions = dense_decisions(scheduler.num_inference_steps, model.config.n_branches)
        cache = RolloutCache()
        cache.prepare(scheduler.num_inference_steps, model.config.n_branches,
                      (1, model.config.horizon, model.config.n_emb), memory.dtype, device)
        sparse = sample_sparse(model, memory, scheduler, noise, cache, lambda: decisions)
    diff = float((dense - sparse).abs().max())
    return {'passed': bool(torch.equal(dense, sparse)), 'max_abs_diff': diff}


def _busy(device: torch.device) -> None:
    # Queue a few ms of matrix work on the main stream so a side stream that is not properly
    # ordered after it would read unfinished data.
    a = torch.randn(2048, 2048, device=device)
    for _ in range(8):
        a = a @ a
        a = a / a.norm()


def check_async_equals_sync(model: DiffusionPolicy, pruner: Pruner, device: torch.device,
                            obs: list[dict], target: float) -> dict[str, Any]:
    """Side-stream pruner vs inline pruner: same decisions, identical actions, every call."""
    runs = {}
    waits = []
    for overlap in (True, False):
        policy = SparsePolicy(model, pruner, mode='pruner', target_sparsity=target,
                              device=device, warmup=True, seed=0, async_pruner=overlap,
                              cuda_graphs=False)
        decisions, actions = [], []
        for i, observation in enumerate(obs):
            _busy(device)
            chunk = policy.predict(observation, generator=torch.Generator().manual_seed(i))
            decisions.append(chunk.stats.decisions.clone())
            actions.append(chunk.actions.copy())
            if overlap:
                waits.append(chunk.stats.pruner_ms)
        policy.close()
        runs[overlap] = (decisions, actions)
    same_decisions = all(torch.equal(a, b) for a, b in zip(runs[True][0], runs[False][0]))
    same_actions = all(np.array_equal(a, b) for a, b in zip(runs[True][1], runs[False][1]))
    return {'passed': same_decisions and same_actions, 'calls': len(obs),
            'decisions_equal': same_decisions, 'actions_bit_identical': same_actions,
            'overlapped_wait_ms_p50': float(np.median(waits))}


def check_cuda_graphs(model: DiffusionPolicy, pruner: Pruner, device: torch.device,
                      obs: list[dict], target: float) -> dict[str, Any]:
    """Graph replays give bit-identical actions to eager calls, across calls and resets."""
    rows = {}
    for mode in ('dense', 'fora', 'pruner'):
        target_ = None if mode == 'dense' else target
        outputs = {}
        for graphs in (True, False):
            policy = SparsePolicy(model, pruner if mode == 'pruner' else None, mode=mode,
                                  target_sparsity=target_, device=device, warmup=True, seed=0,
                                  cuda_graphs=graphs)
            warmup_captures = policy._graphed.captures if graphs else 0
            actions = []
            for i, observation in enumerate(obs):
                if i == len(obs) // 2:
                    policy.reset()  # a first call again, then rollout reuse again
                chunk = policy.predict(observation, generator=torch.Generator().manual_seed(i))
                actions.append(chunk.actions)
            outputs[graphs] = (actions, policy._graphed, warmup_captures)
            policy.close()
        graphed = outputs[True][1]
        rows[mode] = {
            'bit_identical': all(np.array_equal(a, b)
                                 for a, b in zip(outputs[True][0], outputs[False][0])),
            'replays': graphed.replays, 'captures': graphed.captures,
            'captured_in_warmup': outputs[True][2],
            'eager_calls': graphed.eager_calls}
    passed = all(r['bit_identical'] and r['replays'] > 0 for r in rows.values())
    return {'passed': passed, 'calls': len(obs), 'modes': rows}


def check_cpu_cuda_agreement(model: DiffusionPolicy, pruner: Pruner, device: torch.device,
                             obs: list[dict], target: float) -> dict[str, Any]:
    """Each mode, the same calls on CPU and CUDA: max action difference (normalized units)."""
    rows = {}
    scale = None
    for mode in ('dense', 'fora', 'fixed', 'pruner'):
        target_ = None if mode == 'dense' else target
        outputs = {}
        for dev in (torch.device('cpu'), device):
            policy = SparsePolicy(model, pruner if mode == 'pruner' else None, mode=mode,
                                  target_sparsity=target_, device=dev, warmup=True, seed=0)
            if scale is None:  # raw action units -> normalized [-1, 1] units
                scale = policy.model.normalizer.action_scale.cpu().numpy()
            chunks = [policy.predict(o, generator=torch.Generator().manual_seed(i))
                      for i, o in enumerate(obs)]
            outputs[dev.type] = ([c.actions for c in chunks],
                                 [c.stats.decisions for c in chunks])
            policy.close()
        diffs = [float(np.max(np.abs(a - b) * scale))
                 for a, b in zip(outputs['cpu'][0], outputs['cuda'][0])]
        differing = sum(int((a != b).sum())
                        for a, b in zip(outputs['cpu'][1], outputs['cuda'][1]))
        rows[mode] = {'max_abs_diff_normalized': max(diffs),
                      'mean_abs_diff_normalized': float(np.mean(diffs)),
                      'decision_entries_differing': differing}
    model.to('cpu')
    passed = all(r['max_abs_diff_normalized'] <= CPU_CUDA_ATOL for r in rows.values())
    return {'passed': passed, 'atol_normalized': CPU_CUDA_ATOL, 'calls': len(obs),
            'modes': rows}


def check_residency(model: DiffusionPolicy, pruner: Pruner, device: torch.device,
                    obs: list[dict], target: float) -> dict[str, Any]:
    """Where tensors live, and how often one sparse call waits for the GPU."""
    policy = SparsePolicy(model, pruner, mode='pruner', target_sparsity=target, device=device,
                          warmup=True, seed=0)
    for observation in obs[:2]:  # past the first call, rollout cache filled
        policy.predict(observation)
    off_device = [name for name, t in list(policy.model.named_parameters())
                  + list(policy.model.named_buffers()) + list(policy.pruner.named_parameters())
                  + list(policy.pruner.named_buffers()) if t.device.type != device.type]
    cache_device = policy.cache._store.device.type if policy.cache._store is not None else None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            chunk = policy.predict(obs[2])
        finally:
            torch.cuda.set_sync_debug_mode('default')
    messages = sorted({str(w.message).splitlines()[0] for w in caught})
    policy.close()
    passed = not off_device and cache_device == 'cuda'
    return {'passed': passed, 'off_device_tensors': off_device, 'cache_device': cache_device,
            'cache_bytes': chunk.stats.cache_bytes, 'syncs_in_one_call': len(caught),
            'sync_kinds': messages}


def measure_latency(model: DiffusionPolicy, pruner: Pruner, device: torch.device,
                    obs: list[dict], target: float, calls: int) -> dict[str, Any]:
    """p50/p99 of predict per mode, interleaved rounds (one call of every row per round)."""
    # (mode, target, async pruner, CUDA graphs)
    plan = [('dense', None, None, False), ('dense', None, None, True),
            ('fora', target, None, False), ('fora', target, None, True),
            ('fixed', target, None, True), ('ddim', target, None, True),
            ('pruner', target, True, False), ('pruner', target, False, False),
            ('pruner', target, None, True)]
    policies = []
    for mode, target_, overlap, graphs in plan:
        policies.append(SparsePolicy(model, pruner if mode == 'pruner' else None, mode=mode,
                                     target_sparsity=target_, device=device, warmup=True,
                                     seed=0, async_pruner=overlap, cuda_graphs=graphs))
    times: list[list[float]] = [[] for _ in plan]
    for i in range(calls + 3):
        observation = obs[i % len(obs)]
        for j, policy in enumerate(policies):
            start = time.perf_counter()
            policy.predict(observation)
            if i >= 3:  # the first call reuses nothing across calls; then graphs are captured
                times[j].append((time.perf_counter() - start) * 1e3)
    rows = []
    dense_p50 = float(np.median(times[0]))
    for (mode, target_, overlap, graphs), wall, policy in zip(plan, times, policies):
        label = mode if target_ is None else f'{mode} @ {target_:g}'
        if overlap is not None:
            label += ', pruner on side stream' if overlap else ', pruner inline'
        label += ', CUDA graphs' if graphs else ', eager'
        p50 = float(np.median(wall))
        rows.append({'label': label, 'p50_ms': p50, 'p99_ms': float(np.percentile(wall, 99)),
                     'speedup_p50': dense_p50 / p50})
        policy.close()
    return {'passed': True, 'calls': calls, 'rows': rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every check; returns the record."""
    device = torch.device(args.device)
    model, pruner, source = load_model(args.model, args.seed)
    obs = observations(model.config, max(args.calls, 12), args.seed)
    target = args.target_sparsity
    checks = {}
    steps = [('dense_bit_identical', lambda: check_dense_bit_identical(model, device, obs[0])),
             ('async_equals_sync',
              lambda: check_async_equals_sync(model, pruner, device, obs[:12], target)),
             ('cuda_graphs',
              lambda: check_cuda_graphs(model, pruner, device, obs[:12], target)),
             ('cpu_cuda_agreement',
              lambda: check_cpu_cuda_agreement(model, pruner, device, obs[:6], target)),
             ('residency', lambda: check_residency(model, pruner, device, obs, target)),
             ('latency',
              lambda: measure_latency(model, pruner, device, obs, target, args.calls))]
    for name, fn in steps:
        start = time.perf_counter()
        checks[name] = fn()
        checks[name]['seconds'] = round(time.perf_counter() - start, 1)
        print(f"{'PASS' if checks[name]['passed'] else 'FAIL'} {name}: "
              f"{json.dumps({k: v for k, v in checks[name].items() if k != 'passed'})}",
              flush=True)
    return {'date': datetime.now(timezone.utc).isoformat(timespec='seconds'),
            'machine': {'gpu': torch.cuda.get_device_name(device), 'cuda': torch.version.cuda,
                        'torch': torch.__version__, 'python': platform.python_version(),
                        'platform': platform.platform()},
            'model': source, 'target_sparsity': target, 'checks': checks,
            'passed': all(c['passed'] for c in checks.values())}


def markdown(record: dict[str, Any]) -> str:
    """Summary table of a record."""
    machine = record['machine']
    lines = [f"# GPU check {record['date']}", '',
             f"- {machine['gpu']}, CUDA {machine['cuda']}, torch {machine['torch']}",
             f"- model: {record['model']}; target sparsity {record['target_sparsity']}", '',
             '| check | result |', '| --- | --- |']
    for name, check in record['checks'].items():
        lines.append(f"| {name} | {'pass' if check['passed'] else 'FAIL'} |")
    lines += ['', '| mode | p50 ms | p99 ms | speedup vs dense, eager |', '|---|---:|---:|---:|']
    for row in record['checks']['latency']['rows']:
        lines.append(f"| {row['label']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                     f"| {row['speedup_p50']:.2f}x |")
    lines += ['', '| mode | max action diff CPU vs CUDA (normalized) | decision entries '
              'differing |', '|---|---:|---:|']
    for mode, row in record['checks']['cpu_cuda_agreement']['modes'].items():
        lines.append(f"| {mode} | {row['max_abs_diff_normalized']:.2e} "
                     f"| {row['decision_entries_differing']} |")
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m sparse_policy_ros.gpu_check``."""
    parser = argparse.ArgumentParser(description='Checks of the CUDA path.')
    parser.add_argument('--model', type=Path, default=None,
                        help='trained model folder; default: reference config, random weights')
    parser.add_argument('--device', default='cuda', help='CUDA device, e.g. cuda:0')
    parser.add_argument('--target-sparsity', type=float, default=0.9)
    parser.add_argument('--calls', type=int, default=50, help='timed calls per latency row')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=Path('results/gpu'))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print('gpu_check: CUDA is not available on this machine', file=sys.stderr)
        return 2
    record = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    name = 'default' if args.model is not None else 'reference'
    (args.out / f'gpu-check-{name}-{stamp}.json').write_text(json.dumps(record, indent=1))
    (args.out / f'gpu-check-{name}-{stamp}.md').write_text(markdown(record))
    print(markdown(record))
    return 0 if record['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
