"""
Searched DDIM timesteps carried by a model folder: ``ddim_timesteps.json``.

DDIM with k steps placed where the policy needs them is the strongest equal-cost alternative to
sparse sampling, so a model folder can carry one searched set per budget::

    {"format_version": 1,
     "schedules": {"6": {"timesteps": [99, 82, 60, 37, 17, 2], "record": {...}}, ...}}

``search-schedule --kind ddim --budget k --policy DIR --save`` writes an entry; the policy's
``ddim_searched`` mode reads the entry of its budget (``ddim_steps_for(K, target_sparsity)``).
"""

import os
from pathlib import Path

from .checkpoint import read_json, write_json
from .config import PolicyConfig
from .scheduler import check_timesteps

DDIM_TIMESTEPS_FILE = 'ddim_timesteps.json'
FORMAT_VERSION = 1


def load_ddim_timesteps(folder: str | os.PathLike,
                        config: PolicyConfig | None = None) -> dict[int, list[int]]:
    """
    Budget -> timesteps of every searched set in ``folder``; {} when the file is absent.

    A malformed file is a ValueError naming the file, the budget and what was expected; with
    ``config`` each set is also checked against the policy's training timesteps.
    """
    path = Path(folder) / DDIM_TIMESTEPS_FILE
    if not path.is_file():
        return {}
    data = read_json(path)
    schedules = data.get('schedules') if isinstance(data, dict) else None
    if not isinstance(schedules, dict):
        raise ValueError(f'{path}: expected an object with "schedules" (budget -> entry), '
                         f'got {type(data).__name__}')
    sets: dict[int, list[int]] = {}
    for key, entry in schedules.items():
        if not key.isdigit() or int(key) < 1:
            raise ValueError(f'{path}: schedule key {key!r} must be a budget (steps >= 1)')
        timesteps = entry.get('timesteps') if isinstance(entry, dict) else None
        if not isinstance(timesteps, list) or len(timesteps) != int(key):
            raise ValueError(f'{path}: schedules[{key!r}].timesteps must be a list of {key} '
                             f'timesteps, got {timesteps!r}')
        if config is not None:
            try:
                check_timesteps(timesteps, config.num_train_timesteps)
            except ValueError as error:
                raise ValueError(f'{path}: schedules[{key!r}]: {error}') from None
        sets[int(key)] = [int(t) for t in timesteps]
    return sets


def save_ddim_timesteps(folder: str | os.PathLike, timesteps: list[int],
                        record: dict | None = None) -> Path:
    """Add (or replace) the entry of ``len(timesteps)`` steps; other budgets are kept."""
    path = Path(folder) / DDIM_TIMESTEPS_FILE
    data = read_json(path) if path.is_file() else {}
    schedules = dict(data.get('schedules', {})) if isinstance(data, dict) else {}
    schedules[str(len(timesteps))] = {'timesteps': [int(t) for t in timesteps],
                                      'record': record or {}}
    write_json(path, {'format_version': FORMAT_VERSION,
                      'schedules': dict(sorted(schedules.items(), key=lambda kv: int(kv[0])))})
    return path


def searched_timesteps_for(sets: dict[int, list[int]], budget: int,
                           folder: str | os.PathLike | None = None) -> list[int]:
    """Return the set of ``budget`` steps; ValueError naming the budgets found and the fix."""
    if budget in sets:
        return sets[budget]
    where = f' in {Path(folder) / DDIM_TIMESTEPS_FILE}' if folder is not None else ''
    raise ValueError(
        f"mode 'ddim_searched' needs searched DDIM timesteps for {budget} steps{where}; "
        f'found budgets {sorted(sets)}. Run search-schedule --kind ddim --budget {budget} '
        f'--policy MODEL_DIR --dataset DATA --save')
