"""
Dense policy training CLI: ``train-policy --dataset D --config C --out DIR [--resume]``.

``--dataset`` is a replay-buffer zarr store (a directory or Diffusion Policy's ``.zarr.zip``)
or a LeRobotDataset v3 folder (``--format lerobot``, detected by its ``meta/info.json``), which
is first converted into a cache store (``--cache``, default ``<out>.dataset.zarr``) and reused
while the source and mapping are unchanged. ``--select state=state:0:2`` trains on a column
selection of a store's array (read-only, see :mod:`.column_selection`).

AdamW with linear warm-up and cosine decay, EMA weights (saved as the inference weights),
validation loss on held-out episodes, tqdm progress, atomic periodic checkpoints, bf16 autocast
(on CUDA by default, on the CPU with ``--precision bf16``), and DistributedDataParallel when
started by ``torchrun`` (gloo on CPU, NCCL on CUDA). A non-finite training or validation loss
stops the run (exit status 1) before it reaches the EMA weights, a checkpoint or the log.
"""

import argparse
import copy
import json
import logging
import math
import os
from pathlib import Path
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from .checkpointing import (latest_checkpoint, load_training_state, remove_stale_temporaries,
                            save_training_state)
from .column_selection import ColumnSelection, parse_column_selections
from .lerobot_dataset import (conversion_record, convert_lerobot, default_key_map,
                              INFO_PATH, is_converted, LeRobotReader, parse_key_map)
from .replay_buffer import ReplayBuffer
from .sequence_dataset import compute_stats, SequenceDataset, split_episodes
from .train_config import load_run_config, train_config_dict, TrainConfig
from ..policy.checkpoint import load_policy, save_policy
from ..policy.config import PolicyConfig
from ..policy.model import ACTION, DiffusionPolicy
from ..policy.observation import OBS_IMAGES, OBS_STATE

logger = logging.getLogger(__name__)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int,
               config: TrainConfig) -> None:
    """EMA of parameters with a warm-up decay; buffers are copied."""
    decay = min(config.ema_max, max(0.0, 1.0 - (1.0 + step) ** -config.ema_power))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


PRECISIONS = ('auto', 'fp32', 'bf16')


def autocast_context(dev: torch.device, precision: str) -> torch.autocast:
    """Return the forward pass's autocast: bf16 where asked for (or on CUDA under 'auto')."""
    bf16 = precision == 'bf16' or (precision == 'auto' and dev.type == 'cuda')
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a collated batch (nested dict of tensors) to ``device``."""
    return {OBS_IMAGES: {k: v.to(device, non_blocking=True)
                         for k, v in batch[OBS_IMAGES].items()},
            OBS_STATE: batch[OBS_STATE].to(device, non_blocking=True),
            ACTION: batch[ACTION].to(device, non_blocking=True)}


def build_datasets(dataset: Path, policy_config: PolicyConfig, train_config: TrainConfig,
                   columns: dict[str, ColumnSelection] | None = None
                   ) -> tuple[SequenceDataset, SequenceDataset | None, dict, list[int],
                              list[int]]:
    """Split episodes, compute stats on the training split, build both datasets."""
    buffer = ReplayBuffer.open(dataset, mode='r', columns=columns)
    missing = sorted(set(policy_config.camera_names) - set(train_config.image_keys))
    if missing:
        raise ValueError(f'training image_keys {train_config.image_keys} lack cameras {missing} '
                         f'named in the policy config {list(policy_config.camera_names)}')
    train_idx, val_idx = split_episodes(buffer.n_episodes, train_config.val_ratio,
                                        train_config.seed)
    raw = compute_stats(buffer, [train_config.state_key, train_config.action_key], train_idx)
    stats = {OBS_STATE: raw[train_config.state_key], ACTION: raw[train_config.action_key]}
    kwargs = {'image_keys': {c: train_config.image_keys[c] for c in policy_config.camera_names},
              'state_key': train_config.state_key, 'action_key': train_config.action_key,
              'horizon': policy_config.horizon, 'n_obs_steps': policy_config.n_obs_steps,
              'n_action_steps': policy_config.n_action_steps}
    train_set = SequenceDataset(buffer, episode_indices=train_idx, **kwargs)
    val_set = SequenceDataset(buffer, episode_indices=val_idx, **kwargs) if len(val_idx) else None
    for name, array in ((OBS_STATE, train_set._state), (ACTION, train_set._action)):
        expected = policy_config.state_dim if name == OBS_STATE else policy_config.action_dim
        if array.shape[1] != expected:
            raise ValueError(f'dataset {name} has {array.shape[1]} dims but the policy config '
                             f'expects {expected}')
    return train_set, val_set, stats, train_idx.tolist(), val_idx.tolist()


DATASET_FORMATS = ('auto', 'zarr', 'lerobot')


def dataset_format(dataset: Path, requested: str = 'auto') -> str:
    """Return 'lerobot' or 'zarr': as requested, or detected (LeRobot folders hold info.json)."""
    if requested not in DATASET_FORMATS:
        raise ValueError(f'--format must be one of {list(DATASET_FORMATS)}, got {requested!r}')
    if requested != 'auto':
        return requested
    return 'lerobot' if (Path(dataset) / INFO_PATH).is_file() else 'zarr'


def default_cache(out: Path) -> Path:
    """Return where a converted LeRobot dataset goes by default: next to the model folder."""
    out = Path(out)
    return out.with_name(f'{out.name}.dataset.zarr')


def prepare_lerobot(source: Path, cache: Path, policy_config: PolicyConfig,
                    train_config: TrainConfig, key_map: dict[str, str] | None = None) -> Path:
    """
    Convert a LeRobot v3 folder into the replay buffer ``cache`` unless it already holds it.

    Features map onto the training config's keys (``state_key``, ``action_key`` and
    ``image_keys`` per policy camera), overridden by ``key_map``; frames are resized to the
    policy's ``image_shape``. Under torchrun the cache must already be up to date.
    """
    reader = LeRobotReader(source)
    image_keys = {c: train_config.image_keys[c] for c in policy_config.camera_names
                  if c in train_config.image_keys}
    mapping = {**default_key_map(reader, image_keys, train_config.state_key,
                                 train_config.action_key), **(key_map or {})}
    image_size = tuple(policy_config.image_shape[1:])
    record = conversion_record(source, mapping, image_size)
    if is_converted(cache, record):
        logger.info('reusing %s, converted from %s', cache, source)
        return cache
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        raise ValueError(f'{cache} is not an up-to-date conversion of {source}; expected it '
                         f'converted before a distributed run: run train-policy --format '
                         f'lerobot in one process (or lerobot-to-dataset) first')
    if Path(cache).exists():
        logger.warning('%s is not a conversion of %s with these settings: converting again',
                       cache, source)
    convert_lerobot(source, cache, mapping, image_size=image_size, overwrite=True)
    return cache


def with_recorded_joint_names(policy_config: PolicyConfig, dataset: Path) -> PolicyConfig:
    """
    Record the dataset's joint names in the model (``extra.joint_names``).

    The policy node refuses a model whose recorded joints differ from the robot's, so a
    model trained on another joint order cannot silently swap action dimensions. A config
    that declares other joints than the dataset recorded is an error naming both.
    """
    recorded = ReplayBuffer.open(dataset, mode='r').attrs.get('joint_names')
    declared = policy_config.extra.get('joint_names')
    if recorded is None:
        return policy_config
    if declared is not None and list(declared) != list(recorded):
        raise ValueError(f'policy extra.joint_names {list(declared)} differ from the joints '
                         f'{list(recorded)} recorded in {dataset}')
    extra = {**policy_config.extra, 'joint_names': list(recorded)}
    return PolicyConfig.from_dict({**policy_config.to_dict(), 'extra': extra})


# --keep-stats accepts a dataset whose min/max lie within this fraction of the source model's
# range of each field: more data of the same task (a few more extreme samples), not another task.
KEEP_STATS_TOLERANCE = 0.05


@torch.no_grad()
def init_weights_from(model: DiffusionPolicy, folder: Path, keep_stats: bool = False,
                      tolerance: float = KEEP_STATS_TOLERANCE) -> None:
    """
    Start from a trained model folder's (EMA) weights: fine-tuning, or a new cosine cycle.

    The folder's normalization stats must equal the dataset's, or the weights would be fed
    differently scaled inputs than they were trained on. With ``keep_stats`` (more data of the
    same task) the folder's stats are kept instead, provided the dataset's differ by at most
    ``tolerance`` (default ``KEEP_STATS_TOLERANCE``) of the folder's range per entry; normalized
    data then lies just outside [-1, 1] where the dataset reaches further, and sampling clips to
    the kept range.
    """
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f'--stats-tolerance must be in [0, 1] (a fraction of the range), got '
                         f'{tolerance}')
    source = load_policy(folder)
    ours, theirs = model.normalizer.stats_tensors(), source.normalizer.stats_tensors()
    for key, value in ours.items():
        if key not in theirs:
            raise ValueError(f'--init-from {folder}: it has no normalization stats {key}')
        if torch.allclose(value, theirs[key], rtol=1e-5, atol=1e-6):
            continue
        if not keep_stats:
            raise ValueError(f'--init-from {folder}: its normalization stats {key} = '
                             f'{theirs[key]} differ from those of the dataset, {value}; '
                             f'train it on the dataset it was trained on, or pass '
                             f'--keep-stats for more data of the same task')
        field = key.rsplit('.', 1)[0]
        span = (theirs[f'{field}.max'] - theirs[f'{field}.min']).abs().clamp_min(1e-6)
        worst = float(((value - theirs[key]).abs() / span).max())
        if worst > tolerance:
            raise ValueError(f'--keep-stats: dataset stats {key} = {value} differ from '
                             f"{folder}'s {theirs[key]} by {worst:.1%} of its range, expected "
                             f'at most {tolerance:.0%} (--stats-tolerance): another task, not '
                             f'more data')
        logger.warning('--keep-stats: dataset %s = %s, keeping %s (%.2f%% of the range)', key,
                       value.tolist(), theirs[key].tolist(), 100 * worst)
    model.load_state_dict(source.state_dict())
    if keep_stats:
        model.normalizer.load_stats_tensors(theirs)
    logger.info('initialised weights from %s', folder)


@torch.no_grad()
def validation_loss(model: DiffusionPolicy, loader: DataLoader, batches: int,
                    device: torch.device, seed: int) -> float:
    """Mean loss over the first ``batches`` validation batches with fixed noise."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    losses = []
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        losses.append(float(model.compute_loss(to_device(batch, device), generator=generator)))
    model.train()
    return sum(losses) / max(1, len(losses))


def train(dataset: Path, policy_config: PolicyConfig, train_config: TrainConfig, out: Path,
          resume: bool = False, device: str = 'auto', stop_after: int | None = None,
          init_from: Path | None = None, keep_stats: bool = False,
          stats_tolerance: float = KEEP_STATS_TOLERANCE, precision: str = 'auto',
          columns: dict[str, ColumnSelection] | None = None,
          source: Path | None = None) -> dict:
    """
    Train (or resume) a dense policy; returns the final summary.

    ``precision``: 'auto' (bf16 autocast on CUDA, float32 on the CPU), 'fp32' or 'bf16'
    (autocast on either device; weights, optimizer state and EMA stay float32).
    ``columns``: column selections of the store (``ReplayBuffer.open``); ``source``: the
    foreign dataset ``dataset`` was converted from (recorded in the model).
    """
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    distributed = int(os.environ.get('WORLD_SIZE', '1')) > 1
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    rank = 0
    if distributed:
        backend = 'nccl' if device.startswith('cuda') else 'gloo'
        dist.init_process_group(backend=backend)
        rank = dist.get_rank()
        if device.startswith('cuda'):
            device = f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}'
            torch.cuda.set_device(device)
    dev = torch.device(device)
    torch.manual_seed(train_config.seed + rank)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        remove_stale_temporaries(out)
    train_set, val_set, stats, train_idx, val_idx = build_datasets(dataset, policy_config,
                                                                   train_config, columns)
    policy_config = with_recorded_joint_names(policy_config, dataset)
    model = DiffusionPolicy(policy_config)
    model.normalizer.set_stats(stats)
    if init_from is not None:
        init_weights_from(model, Path(init_from), keep_stats, stats_tolerance)
    model.to(dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr,
                                  weight_decay=train_config.weight_decay)
    step = 0
    history: list[dict] = []
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        logger.warning('--resume given but %s has no checkpoint: starting from step 0', out)
    if checkpoint is not None:
        meta = load_training_state(checkpoint, model, ema, optimizer)
        step = meta['step']
        history = meta.get('history', [])
        logger.info('resumed from %s at step %d', checkpoint, step)
    net = DistributedDataParallel(model) if distributed else model
    sampler = (DistributedSampler(train_set, seed=train_config.seed + step) if distributed
               else RandomSampler(train_set, generator=torch.Generator().manual_seed(
                   train_config.seed + step)))
    loader = DataLoader(train_set, batch_size=train_config.batch_size, sampler=sampler,
                        drop_last=len(train_set) >= train_config.batch_size)
    val_loader = (DataLoader(val_set, batch_size=train_config.batch_size, shuffle=False)
                  if val_set is not None else None)
    autocast = autocast_context(dev, precision)
    extra = {'dataset': str(dataset), 'train_episodes': train_idx, 'val_episodes': val_idx,
             'training': train_config_dict(train_config),
             'init_from': None if init_from is None else str(init_from),
             'keep_stats': keep_stats, 'precision': precision}
    if keep_stats:
        extra['stats_tolerance'] = stats_tolerance
    if columns:
        extra['dataset_columns'] = {name: str(selection) for name, selection in columns.items()}
    if source is not None:
        extra['dataset_source'] = str(source)
    total = train_config.steps
    progress = tqdm(total=total, initial=step, desc='train-policy', disable=rank != 0,
                    dynamic_ncols=True, mininterval=5.0)
    started = time.time()
    epoch = 0
    last_loss = float('nan')
    while step < total:
        if distributed:
            sampler.set_epoch(epoch)
        for batch in loader:
            if step >= total or (stop_after is not None and step >= stop_after):
                break
            for group in optimizer.param_groups:
                group['lr'] = train_config.lr * lr_factor(step, train_config.warmup_steps, total)
            with autocast:
                loss = net(to_device(batch, dev))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            last_loss = float(loss.detach())
            if not math.isfinite(last_loss):
                raise FloatingPointError(
                    f'training loss is {last_loss} at step {step + 1}: stopping before the EMA '
                    f'weights or a checkpoint take it in (checkpoints already in {out} are '
                    f'intact); expected a finite loss: try a lower lr ({train_config.lr}) or '
                    f'--precision fp32')
            ema_update(ema, model, step, train_config)
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f'{last_loss:.4f}')
            if rank == 0 and (step % train_config.val_every == 0 or step == total):
                record = {'step': step, 'train_loss': last_loss,
                          'elapsed_s': round(time.time() - started, 1)}
                if val_loader is not None:
                    record['val_loss'] = validation_loss(ema, val_loader,
                                                         train_config.val_batches, dev,
                                                         train_config.seed)
                    if not math.isfinite(record['val_loss']):
                        raise FloatingPointError(
                            f'validation loss (val_loss) is {record["val_loss"]} at step {step} '
                            f'on validation episodes {val_idx}: stopping; expected a finite '
                            f'loss (did the EMA weights diverge?)')
                history.append(record)
                with open(out / 'train_log.jsonl', 'a') as handle:
                    # allow_nan=False: a NaN would make the line invalid JSON.
                    handle.write(json.dumps(record, allow_nan=False) + '\n')
            if rank == 0 and (step % train_config.checkpoint_every == 0 or step == total):
                save_training_state(out, model, ema, optimizer, step,
                                    {**extra, 'history': history})
                save_policy(ema.cpu(), out, extra={'training': {**extra, 'step': step,
                                                                'history': history}})
                ema.to(dev)
        epoch += 1
        if stop_after is not None and step >= stop_after:
            break
    progress.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    summary = {'step': step, 'train_loss': last_loss, 'history': history,
               'elapsed_s': round(time.time() - started, 1), 'out': str(out)}
    if rank == 0:
        print('\n| step | train loss | val loss |\n|---:|---:|---:|')
        for record in history[-5:]:
            print(f"| {record['step']} | {record['train_loss']:.4f} | "
                  f"{record.get('val_loss', float('nan')):.4f} |")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--dataset', required=True, type=Path,
                        help='replay-buffer zarr store (directory or .zarr.zip) or LeRobot v3 '
                             'folder')
    parser.add_argument('--format', choices=DATASET_FORMATS, default='auto',
                        help='dataset format; auto: lerobot if DATASET/meta/info.json exists')
    parser.add_argument('--cache', type=Path, default=None,
                        help='with --format lerobot: the converted store (default '
                             '<out>.dataset.zarr, reused while the source is unchanged)')
    parser.add_argument('--map', action='append', default=None, metavar='SRC=DST',
                        help='with --format lerobot: feature -> store key, overriding the '
                             'defaults from the training config (repeatable)')
    parser.add_argument('--select', action='append', default=None,
                        metavar='DST=SRC[:START:STOP][@DTYPE]',
                        help='train on a column selection, e.g. state=state:0:2 (PushT '
                             'agent_pos) or img=img@uint8 (repeatable)')
    parser.add_argument('--config', required=True, type=Path,
                        help='YAML/JSON with policy: and training: sections')
    parser.add_argument('--out', required=True, type=Path, help='output model folder')
    parser.add_argument('--resume', action='store_true',
                        help='continue from <out>/checkpoints/latest')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda[:N]')
    parser.add_argument('--steps', type=int, default=None, help='override training.steps')
    parser.add_argument('--lr', type=float, default=None, help='override training.lr')
    parser.add_argument('--warmup-steps', type=int, default=None,
                        help='override training.warmup_steps')
    parser.add_argument('--seed', type=int, default=None,
                        help='override training.seed (initial weights, batch order, '
                             'validation split)')
    parser.add_argument('--init-from', type=Path, default=None,
                        help='start from the weights of this model folder (ignored on '
                             '--resume when a checkpoint exists)')
    parser.add_argument('--keep-stats', action='store_true',
                        help="with --init-from: keep that model's normalization stats when the "
                             "dataset's differ slightly (more data of the same task)")
    parser.add_argument('--stats-tolerance', type=float, default=KEEP_STATS_TOLERANCE,
                        help='with --keep-stats: how far (a fraction of the kept range) the '
                             "dataset's min/max may lie outside it (default %(default)s)")
    parser.add_argument('--precision', choices=PRECISIONS, default='auto',
                        help='autocast of the forward pass: auto = bf16 on CUDA and float32 on '
                             'the CPU; bf16 also on the CPU (fast where it has AVX512-BF16 or '
                             'AMX)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        policy_config, train_config = load_run_config(args.config)
        overrides = {name: value for name, value in (
            ('steps', args.steps), ('lr', args.lr), ('warmup_steps', args.warmup_steps),
            ('seed', args.seed))
            if value is not None}
        train_config = TrainConfig(**{**train_config_dict(train_config), **overrides})
        columns = parse_column_selections(args.select)
        dataset, source = args.dataset, None
        if dataset_format(args.dataset, args.format) == 'lerobot':
            cache = args.cache if args.cache is not None else default_cache(args.out)
            dataset, source = prepare_lerobot(args.dataset, cache, policy_config, train_config,
                                              parse_key_map(args.map)), args.dataset
        elif args.map or args.cache:
            raise ValueError('--map and --cache apply to --format lerobot only; '
                             f'{args.dataset} is a zarr store')
        train(dataset, policy_config, train_config, args.out, resume=args.resume,
              device=args.device, init_from=args.init_from, keep_stats=args.keep_stats,
              stats_tolerance=args.stats_tolerance, precision=args.precision,
              columns=columns or None, source=source)
    except (ValueError, FileNotFoundError) as error:
        print(f'train-policy: error: {error}', file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f'train-policy: error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
