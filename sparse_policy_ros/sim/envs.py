"""
The simulated push tasks by name, for the CLIs: ``make_env('panda_push', image_size=96)``.

=============  ===========================================================  ===========
name           environment                                                  needs
=============  ===========================================================  ===========
``arm_push``   :class:`~.env.ArmPushEnv`, the 4-joint table-top arm          -
``panda_push`` :class:`~.panda_env.PandaPushEnv`, gym-hil's Franka Panda     gym-hil
=============  ===========================================================  ===========

The names are the ``task`` that a training config writes into ``policy.extra``, so a model
folder says which environment it was trained on (:func:`env_name_for_task`). The Panda module
is imported only when asked for, so a missing gym-hil matters only to ``panda_push``.

``make_env(..., disturbance=DisturbanceSpec(...))`` builds the disturbance variant (the puck is
shoved or the goal jumps mid-episode, :mod:`.disturbance`); it exists for ``arm_push`` only.
"""

from typing import Any

from .disturbance import DisturbanceSpec
from .env import ArmPushEnv, DEFAULT_MAX_STEPS

ARM_PUSH = 'arm_push'
PANDA_PUSH = 'panda_push'
ENV_NAMES = (ARM_PUSH, PANDA_PUSH)
DEFAULT_ENV = ARM_PUSH


def make_env(name: str, image_size: int = 96, max_steps: int = DEFAULT_MAX_STEPS,
             render: bool = True, disturbance: DisturbanceSpec | None = None) -> ArmPushEnv:
    """
    Build the environment called ``name`` (one of :data:`ENV_NAMES`).

    Both share ArmPushEnv's interface (PandaPushEnv subclasses it). Raises ValueError for an
    unknown name and ImportError, with the install line, for ``panda_push`` without gym-hil.
    ``disturbance`` (see :class:`~.env.ArmPushEnv`) is for ``arm_push`` only: ValueError else.
    """
    if name == ARM_PUSH:
        return ArmPushEnv(image_size=image_size, max_steps=max_steps, render=render,
                          disturbance=disturbance)
    if name == PANDA_PUSH:
        if disturbance is not None:
            raise ValueError(f'the disturbance variant exists for {ARM_PUSH!r} only, '
                             f'got env {name!r} with disturbance={disturbance!r}')
        from .panda_env import PandaPushEnv
        return PandaPushEnv(image_size=image_size, max_steps=max_steps, render=render)
    raise ValueError(f'env must be one of {list(ENV_NAMES)}, got {name!r}')


def env_name_for_task(extra: dict[str, Any]) -> str:
    """Return the env a model was trained on from its ``policy.extra`` (default: arm_push)."""
    task = extra.get('task', DEFAULT_ENV)
    if task not in ENV_NAMES:
        raise ValueError(f'policy.extra.task must be one of {list(ENV_NAMES)}, got {task!r}; '
                         'pass --env to choose the environment')
    return task
