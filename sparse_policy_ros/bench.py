"""
Latency and FLOPs benchmark: dense vs static sparsity schedules vs pruner-driven decisions.

Usage::

    python -m sparse_policy_ros.bench                 # reference-size model, random weights
    python -m sparse_policy_ros.bench --model DIR     # a trained model folder (and its pruner)
    python -m sparse_policy_ros.bench --quick         # tiny config, a smoke run in seconds
    python -m sparse_policy_ros.bench --module-calls  # + each sparse row without the frozen view
    python -m sparse_policy_ros.bench --int8          # + dense and each sparse row in int8 (CPU)
    python -m sparse_policy_ros.bench --frames sliding --uncached-rows
                                                      # streaming windows; + rows without the
                                                      # frame-feature cache

Every row runs the same sequence of observations through ``SparsePolicy.predict``: warm-up
calls first (the first call after a reset computes what it would reuse from earlier calls),
then ``--calls`` timed calls (wall clock around ``predict``), then one more call under
FlopCounterMode. Timed calls are interleaved in
rounds (one call of every row per round) so that background load affects all rows alike.
``--frames fresh`` gives every call new camera frames (chunked replanning: no frame repeats);
``--frames sliding`` shifts the observation window by one frame per call, as streaming replanning
at the camera rate sees it, so the frame-feature cache encodes one frame per call.

The time split of a call (CPU; on CUDA the per-step split would add a synchronization per step,
so it is left out there): image + state encoder, conditioning of all steps, the wait for the
pruner, steps that computed a branch, steps that only reused, and the rest (``other``: Python
between steps, the final copy). Each row also gets its FLOP floor: its FLOPs at the float32
matmul rate this machine reaches on one large square matmul (``gemm_gflops``, measured in the
same run with the same threads) and at the rate of the model's own branch-sized matmul
(``branch_gemm_gflops``: horizon x width times width x 4 width); ``x_floor`` is p50 over each.
Speedups and FLOP reductions are relative to the dense row of the same run. Without a trained
pruner the pruner rows use a randomly initialised one: its decisions carry no skill, but with a
target sparsity it still computes exactly round((1 - s) * K * n_branches) entries, so latency
and FLOPs are representative. Results go to ``--out`` as JSON and as a markdown table.
"""

import argparse
import copy
from datetime import datetime, timezone
import logging
import os
from pathlib import Path
import platform
import sys
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .policy.checkpoint import load_policy, write_json
from .policy.config import PolicyConfig
from .policy.ddim_timesteps import DDIM_TIMESTEPS_FILE, load_ddim_timesteps
from .policy.model import DiffusionPolicy
from .policy.observation import OBS_IMAGES, OBS_STATE
from .sparsity.decisions import Decision
from .sparsity.pruner import load_pruner, Pruner, PrunerConfig
from .sparsity.sparse_policy import resolve_async_pruner, resolve_device, SparsePolicy

logger = logging.getLogger(__name__)

SPARSE_MODES = ('fora', 'fixed', 'ddim', 'ddim_searched', 'pruner')
DEFAULT_SPARSITIES = (0.5, 0.8, 0.95)
# Targets of the project (DESIGN.md) at the highest benchmarked sparsity.
TARGET_SPARSITY = 0.95
TARGET_FLOP_REDUCTION = 0.90
TARGET_SPEEDUP = 5.0
QUICK_CONFIG = PolicyConfig(
    encoder='small_cnn', n_layer=2, n_emb=32, n_head=2, state_dim=4, action_dim=4, horizon=8,
    n_obs_steps=2, n_action_steps=4, num_train_timesteps=10, num_inference_steps=10,
    image_shape=(3, 32, 32), crop_shape=(28, 28), image_feature_dim=16)
ROW_FIELDS = ('label', 'mode', 'target_sparsity', 'async_pruner', 'frozen', 'int8_linears',
              'steps', 'calls',
              'latency_ms', 'speedup_p50', 'flops', 'flop_reduction', 'sparsity',
              'cache_bytes', 'split_ms', 'decision_mix', 'frame_cache', 'frames_encoded',
              'floor_ms', 'x_floor')
FRAME_MODES = ('fresh', 'sliding')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line of the benchmark."""
    parser = argparse.ArgumentParser(
        prog='bench', description='Latency / FLOPs of dense vs sparse diffusion policy calls.')
    parser.add_argument('--model', type=Path, default=None,
                        help='trained model folder; default: reference-size random weights')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda[:N]'")
    parser.add_argument('--calls', type=int, default=None,
                        help='timed calls per row (default 20, 5 with --quick)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed calls per row after construction; the first is dense '
                             '(default 3, 1 with --quick)')
    parser.add_argument('--sparsity', type=float, nargs='+', default=list(DEFAULT_SPARSITIES),
                        help='target sparsities to benchmark')
    parser.add_argument('--modes', nargs='+', choices=SPARSE_MODES, default=None,
                        help='sparse modes to compare with dense (default: all; ddim_searched '
                             'only with a --model folder that has a ddim_timesteps.json)')
    parser.add_argument('--pruner-overlap', choices=('auto', 'both'), default='both',
                        help="'both' also runs the pruner with the opposite overlap setting")
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch default)')
    parser.add_argument('--module-calls', action='store_true',
                        help='add an ablation row per sparse row: the same policy without the '
                             'frozen transformer view (plain nn.Module calls, keys/values '
                             'projected per step), timed side by side')
    parser.add_argument('--int8', action='store_true',
                        help='add a row per dense and sparse row: the same policy with its '
                             'branch matmuls in dynamic int8 (CPU only), timed side by side')
    parser.add_argument('--frames', choices=FRAME_MODES, default='fresh',
                        help='fresh: new frames every call (chunked replanning); sliding: the '
                             'window moves one frame per call (streaming at the camera rate)')
    parser.add_argument('--uncached-rows', action='store_true',
                        help='add a row per row without the frame-feature cache (every frame '
                             'of every call encoded); with --frames sliding this is what the '
                             'cache saves')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=Path('results/bench'),
                        help='folder for the JSON and markdown results')
    parser.add_argument('--quick', action='store_true',
                        help='tiny config, few calls: a smoke run')
    args = parser.parse_args(argv)
    if args.calls is None:
        args.calls = 5 if args.quick else 20
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    if args.calls < 1 or args.warmup < 1:
        parser.error(f'--calls and --warmup must be >= 1, got {args.calls} and {args.warmup}')
    for s in args.sparsity:
        if not 0.0 < s < 1.0:
            parser.error(f'--sparsity values must be in (0, 1), got {s}')
    if args.quick and args.model is not None:
        parser.error('--quick builds a tiny random model; it cannot be combined with --model')
    if args.modes is None:
        searched = args.model is not None and (args.model / DDIM_TIMESTEPS_FILE).is_file()
        args.modes = [m for m in SPARSE_MODES if m != 'ddim_searched' or searched]
    if 'ddim_searched' in args.modes and args.model is None:
        parser.error('--modes ddim_searched reads the searched timesteps of a model folder '
                     '(ddim_timesteps.json): pass --model')
    return args


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    info = {'platform': platform.platform(), 'python': platform.python_version(),
            'cpu': cpu, 'cpu_count': os.cpu_count(), 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads(), 'device': str(device),
            'device_name': cpu}
    if device.type == 'cuda':
        info['device_name'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    return info


def matmul_gflops(m: int, k: int, n: int, seconds: float = 0.3) -> float:
    """Float32 GFLOP/s of repeated (m, k) @ (k, n) products with torch's current threads."""
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    out = torch.empty(m, n)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    reps = 0
    start = time.perf_counter()
    while True:
        for _ in range(10):
            torch.matmul(a, b, out=out)
        reps += 10
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * m * k * n * reps / elapsed / 1e9


def random_pruner(config: PolicyConfig, seed: int) -> Pruner:
    """Untrained pruner whose head is re-drawn so its decisions vary with the observation."""
    torch.manual_seed(seed)
    pruner = Pruner(PrunerConfig(n_branches=config.n_branches, cond_dim=config.n_emb))
    with torch.no_grad():
        torch.nn.init.normal_(pruner.head.weight, std=0.5)
    return pruner.eval()


def build_model(args: argparse.Namespace) -> tuple[DiffusionPolicy, Pruner, dict[str, str]]:
    """Model and pruner to benchmark, and where they came from."""
    if args.model is not None:
        model = load_policy(args.model)
        try:
            pruner = load_pruner(args.model)[0]
            source = {'model': str(args.model), 'pruner': str(args.model)}
        except FileNotFoundError:
            logger.warning('%s has no trained pruner; pruner rows use a random one', args.model)
            pruner = random_pruner(model.config, args.seed)
            source = {'model': str(args.model), 'pruner': 'random (untrained)'}
        return model, pruner, source
    config = QUICK_CONFIG if args.quick else PolicyConfig()
    model = SparsePolicy.random_init(config, device='cpu', mode='dense', target_sparsity=None,
                                     seed=args.seed, warmup=False).model
    pruner = random_pruner(config, args.seed)
    name = 'quick config' if args.quick else 'reference config'
    return model, pruner, {'model': f'random init ({name})', 'pruner': 'random (untrained)'}


def make_observations(config: PolicyConfig, count: int, seed: int,
                      frames: str = 'fresh') -> list[dict]:
    """
    Random camera frames and a joint-state random walk, the same for every row.

    ``frames='sliding'``: call i sees frames i .. i + n_obs_steps - 1 of one stream (each call
    shares all but its newest frame with the one before); 'fresh': new frames every call.
    """
    if frames not in FRAME_MODES:
        raise ValueError(f'frames must be one of {list(FRAME_MODES)}, got {frames!r}')
    rng = np.random.default_rng(seed)
    _, h, w = config.image_shape
    n_obs = config.n_obs_steps
    state = rng.uniform(-1.0, 1.0, config.state_dim)
    stream = {c: rng.integers(0, 256, (count + n_obs - 1, h, w, 3), dtype=np.uint8)
              for c in config.camera_names} if frames == 'sliding' else None
    out = []
    for i in range(count):
        state = np.clip(state + rng.normal(0.0, 0.05, config.state_dim), -3.0, 3.0)
        history = np.stack([state] * n_obs).astype(np.float32)
        if stream is not None:
            images = {c: stream[c][i:i + n_obs] for c in config.camera_names}
        else:
            images = {c: rng.integers(0, 256, (n_obs, h, w, 3), dtype=np.uint8)
                      for c in config.camera_names}
        out.append({OBS_IMAGES: images,
                    OBS_STATE: history})
    return out


class RowRunner:
    """One configuration under test: its SparsePolicy and the measurements of its calls."""

    def __init__(self, model: DiffusionPolicy, pruner: Pruner, mode: str,
                 target: float | None, async_pruner: bool | None, args: argparse.Namespace,
                 view: str = 'frozen', frame_cache: bool = True):
        self.mode = mode
        self.target = target
        self.frozen = view != 'modules'
        self.int8 = view == 'int8'
        self.label = mode if target is None else f'{mode} @ {target:g}'
        if view != 'frozen':
            # The frozen view lives on the model, which the other rows share: a copy of its own.
            model = copy.deepcopy(model)
            self.label += ', module calls' if view == 'modules' else ', int8'
        if not frame_cache:
            self.label += ', no frame cache'
        self.frame_cache = frame_cache
        sets = (load_ddim_timesteps(args.model, model.config)
                if mode == 'ddim_searched' else None)
        self.policy = SparsePolicy(model, pruner if mode == 'pruner' else None, mode=mode,
                                   target_sparsity=target, device=args.device, warmup=True,
                                   seed=args.seed, async_pruner=async_pruner,
                                   freeze=self.frozen, int8_linears=self.int8,
                                   ddim_timesteps=sets, encoder_cache=frame_cache)
        # The per-step split costs two clock reads per step on a CPU; on CUDA it would
        # synchronize every step (and bypass CUDA graphs), changing what is measured.
        self.policy.profile_steps = self.policy.device.type == 'cpu'
        self.wall: list[float] = []
        self.stats = []

    def call(self, observation: dict, timed: bool = True) -> None:
        """One predict call, timed by wall clock around it."""
        start = time.perf_counter()
        chunk = self.policy.predict(observation)
        if timed:
            self.wall.append((time.perf_counter() - start) * 1e3)
            self.stats.append(chunk.stats)

    def finish(self, observation: dict) -> dict[str, Any]:
        """Count FLOPs of one more call, release the policy, return the row (no speedups)."""
        policy = self.policy
        try:
            counted = policy.predict(observation, count_flops_=True).stats
        finally:
            policy.close()
        stats, wall = self.stats, self.wall
        decisions = torch.stack([s.decisions for s in stats]).long()  # (N, K, nb)
        mix = {d.name.lower(): float((decisions == int(d)).float().mean()) for d in Decision}

        def median(name: str) -> float:
            return float(np.median([getattr(s, name) for s in stats]))

        split = {'encode': median('encode_ms'), 'pruner_wait': median('pruner_ms'),
                 'pruner_run': median('pruner_run_ms'), 'denoise': median('denoise_ms')}
        split['other'] = float(np.median(wall)) - split['encode'] - split['denoise']
        split.update(step_split(stats, wall, inline_pruner=(
            self.mode == 'pruner' and not policy.async_pruner)))
        return {
            'label': self.label, 'mode': self.mode, 'target_sparsity': self.target,
            'async_pruner': policy.async_pruner if self.mode == 'pruner' else None,
            'frozen': self.frozen, 'int8_linears': self.int8,
            'steps': policy.scheduler.num_inference_steps, 'calls': len(wall),
            'latency_ms': {'p50': float(np.percentile(wall, 50)),
                           'p99': float(np.percentile(wall, 99)),
                           'mean': float(np.mean(wall)), 'min': float(np.min(wall)),
                           'max': float(np.max(wall))},
            'speedup_p50': None, 'flops': int(counted.flops), 'flop_reduction': None,
            'sparsity': float(np.mean([s.sparsity for s in stats])),
            'cache_bytes': int(counted.cache_bytes), 'split_ms': split, 'decision_mix': mix,
            'frame_cache': self.frame_cache,
            'frames_encoded': float(np.mean([s.frames_encoded for s in stats])),
            'floor_ms': None, 'x_floor': None,
        }


def step_split(stats: list, wall: list[float], inline_pruner: bool = False) -> dict[str, Any]:
    """
    Per-call means of the split of a call (ms): encoder, condition, pruner, steps, rest.

    Means, not medians, so that the parts add up to the mean call. ``pruner``: the time the
    call spent on the pruner, its wait inside the loop plus, when it runs inline (before the
    loop), its run. Empty when the calls were not profiled (CUDA).
    """
    if not stats or stats[0].computed_steps_ms is None:
        return {}

    def mean(name: str) -> float:
        return float(np.mean([getattr(s, name) for s in stats]))

    split = {'mean_call': float(np.mean(wall)), 'encoder': mean('encoder_ms'),
             'condition': mean('encode_ms') - mean('encoder_ms'),
             'computed_steps': mean('computed_steps_ms'), 'reuse_steps': mean('reuse_steps_ms'),
             'n_computed_steps': mean('computed_steps'), 'n_reuse_steps': mean('reuse_steps'),
             'pruner': mean('pruner_ms') + (mean('pruner_run_ms') if inline_pruner else 0.0)}
    split['rest'] = (split['mean_call'] - mean('encode_ms') - split['pruner']
                     - split['computed_steps'] - split['reuse_steps'])
    split['per_computed_step'] = (split['computed_steps'] / split['n_computed_steps']
                                  if split['n_computed_steps'] else None)
    split['per_reuse_step'] = (split['reuse_steps'] / split['n_reuse_steps']
                               if split['n_reuse_steps'] else None)
    return split


def plan_rows(args: argparse.Namespace, device: torch.device) -> list[tuple]:
    """
    (mode, target, async_pruner, view, frame_cache) for every row, dense first.

    view: frozen / modules / int8; with ``--uncached-rows`` each row is followed by its copy
    without the frame-feature cache.
    """
    rows = [('dense', None, None, 'frozen')]
    if args.int8:
        rows.append(('dense', None, None, 'int8'))
    auto_async = resolve_async_pruner(None, device)
    for target in args.sparsity:
        for mode in args.modes:
            if mode != 'pruner':
                rows.append((mode, target, None, 'frozen'))
            else:
                rows.append((mode, target, auto_async, 'frozen'))
                if args.pruner_overlap == 'both':
                    rows.append((mode, target, not auto_async, 'frozen'))
            overlap = auto_async if mode == 'pruner' else None
            if args.module_calls:
                rows.append((mode, target, overlap, 'modules'))
            if args.int8:
                rows.append((mode, target, overlap, 'int8'))
    planned = []
    for row in rows:
        planned.append(row + (True,))
        if args.uncached_rows:
            planned.append(row + (False,))
    return planned


def check_targets(rows: list[dict]) -> dict[str, Any]:
    """Which sparse rows at the target sparsity meet the FLOP and latency targets."""
    checked = []
    for row in rows:
        if row['target_sparsity'] is None or abs(row['target_sparsity'] - TARGET_SPARSITY) > 1e-9:
            continue
        met = (row['flop_reduction'] >= TARGET_FLOP_REDUCTION
               and row['speedup_p50'] >= TARGET_SPEEDUP)
        checked.append({'label': _row_name(row), 'flop_reduction': row['flop_reduction'],
                        'speedup_p50': row['speedup_p50'], 'met': met})
    return {'sparsity': TARGET_SPARSITY, 'min_flop_reduction': TARGET_FLOP_REDUCTION,
            'min_speedup_p50': TARGET_SPEEDUP, 'rows': checked}


def _row_name(row: dict) -> str:
    if row['async_pruner'] is None:
        return row['label']
    return f"{row['label']} ({'overlapped' if row['async_pruner'] else 'inline'})"


def markdown_table(rows: list[dict]) -> str:
    """Results as a markdown table, one line per row."""
    head = ('| mode | steps | sparsity | p50 ms | p99 ms | speedup | GFLOPs | FLOPs saved '
            '| cache MiB | encode ms | pruner wait / run ms | denoise ms |')
    lines = [head, '|' + ' --- |' * 12]
    for row in rows:
        lat = row['latency_ms']
        split = row['split_ms']
        pruner = '-' if row['mode'] != 'pruner' else (
            f"{split['pruner_wait']:.2f} / {split['pruner_run']:.2f}")
        lines.append(
            f"| {_row_name(row)} | {row['steps']} | {row['sparsity']:.3f} | {lat['p50']:.1f} "
            f"| {lat['p99']:.1f} | {row['speedup_p50']:.2f}x | {row['flops'] / 1e9:.3f} "
            f"| {100 * row['flop_reduction']:.1f}% | {row['cache_bytes'] / 2 ** 20:.2f} "
            f"| {split['encode']:.1f} | {pruner} | {split['denoise']:.1f} |")
    return '\n'.join(lines)


def split_table(rows: list[dict]) -> str:
    """Where each row's mean call goes, and how far its p50 is from its FLOP floor."""
    head = ('| mode | mean ms | encoder | condition | pruner | computed steps (n x ms) '
            '| reuse steps (n x ms) | rest | frames encoded | floor ms (large / branch matmul) '
            '| p50 / floor |')
    lines = [head, '|' + ' --- |' * 11]
    for row in rows:
        split = row['split_ms']
        if 'mean_call' not in split:
            continue

        def steps(kind: str) -> str:
            n, per = split[f'n_{kind}_steps'], split[f'per_{kind}_step']
            return f"{split[f'{kind}_steps']:.1f} ({n:.0f} x {per:.3f})" if n else '0'

        floor, ratio = row['floor_ms'], row['x_floor']
        lines.append(
            f"| {_row_name(row)} | {split['mean_call']:.1f} | {split['encoder']:.1f} "
            f"| {split['condition']:.2f} | {split['pruner']:.2f} "
            f"| {steps('computed')} | {steps('reuse')} | {split['rest']:.2f} "
            f"| {row['frames_encoded']:.1f} "
            f"| {floor['gemm_gflops']:.2f} / {floor['branch_gemm_gflops']:.2f} "
            f"| {ratio['gemm_gflops']:.1f}x / {ratio['branch_gemm_gflops']:.1f}x |")
    return '\n'.join(lines) if len(lines) > 2 else ''


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every row; returns the full result record."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = str(device)
    model, pruner, source = build_model(args)
    config = model.config
    observations = make_observations(config, args.warmup + args.calls + 1, args.seed,
                                     args.frames)
    runners = [RowRunner(model, pruner, mode, target, overlap, args, view, cached)
               for mode, target, overlap, view, cached in tqdm(plan_rows(args, device),
                                                               desc='build', unit='row')]
    for i in range(args.warmup):
        for runner in runners:
            runner.call(observations[i], timed=False)
    # Interleaved rounds: every row makes one call per round, so background load on the
    # machine hits all rows alike instead of whichever row happened to run at that time.
    for i in tqdm(range(args.calls), desc='timed rounds', unit='round'):
        for runner in runners:
            runner.call(observations[args.warmup + i])
    rows = [runner.finish(observations[-1]) for runner in runners]
    dense = rows[0]
    rates = {'gemm_gflops': matmul_gflops(1024, 1024, 1024),
             'branch_gemm_gflops': matmul_gflops(config.horizon, config.n_emb,
                                                 4 * config.n_emb)}
    for row in rows:
        row['speedup_p50'] = dense['latency_ms']['p50'] / row['latency_ms']['p50']
        row['flop_reduction'] = 1.0 - row['flops'] / dense['flops']
        row['floor_ms'] = {name: row['flops'] / (rate * 1e9) * 1e3
                           for name, rate in rates.items()}
        row['x_floor'] = {name: row['latency_ms']['p50'] / floor
                          for name, floor in row['floor_ms'].items()}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        'date': datetime.now(timezone.utc).isoformat(timespec='seconds'),
        'machine': {**machine_info(device), **rates}, 'source': source,
        'settings': settings,
        'policy_config': config.to_dict(), 'n_branches': config.n_branches,
        'rows': rows, 'targets': check_targets(rows),
    }


def write_results(record: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Save ``bench-<stamp>.json`` and ``.md`` into ``out``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S')
    json_path = out / f'bench-{stamp}.json'
    md_path = out / f'bench-{stamp}.md'
    write_json(json_path, record)
    machine = record['machine']
    lines = [f"# Benchmark {record['date']}", '',
             f"- machine: {machine['device_name']} ({machine['device']}), "
             f"{machine['cpu_count']} CPUs, torch {machine['torch']} "
             f"({machine['torch_threads']} threads), {machine['platform']}",
             f"- model: {record['source']['model']}; pruner: {record['source']['pruner']}",
             f"- {record['settings']['calls']} timed calls per row after "
             f"{record['settings']['warmup']} warm-up calls; latency is wall clock around "
             f'predict(); speedup and FLOPs saved are relative to dense in this run', '',
             markdown_table(record['rows']), '', _targets_text(record['targets']), '']
    split = split_table(record['rows'])
    if split:
        lines += [f"Time split (per-call means, ms; {record['settings']['frames']} frames) and "
                  f"FLOP floor: float32 matmul at {machine['gemm_gflops']:.1f} GFLOP/s "
                  f"(1024^3) and {machine['branch_gemm_gflops']:.1f} GFLOP/s (the branch's "
                  'shape), measured in this run', '', split, '']
    md_path.write_text('\n'.join(lines))
    return json_path, md_path


def _targets_text(targets: dict[str, Any]) -> str:
    lines = [f"Targets at sparsity {targets['sparsity']:g} (reference model): >= "
             f"{100 * targets['min_flop_reduction']:.0f}% fewer FLOPs and >= "
             f"{targets['min_speedup_p50']:g}x lower p50 latency than dense."]
    for row in targets['rows']:
        lines.append(f"- {row['label']}: {100 * row['flop_reduction']:.1f}% fewer FLOPs, "
                     f"{row['speedup_p50']:.2f}x -> {'met' if row['met'] else 'MISSED'}")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bench`` / ``python -m sparse_policy_ros.bench``."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    args = parse_args(argv)
    record = run(args)
    json_path, md_path = write_results(record, args.out)
    print(markdown_table(record['rows']))
    print()
    print(_targets_text(record['targets']))
    split = split_table(record['rows'])
    if split:
        print()
        print(split)
    print(f'\nwrote {json_path} and {md_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
