"""
Mid-episode disturbances of the push task: the puck is shoved or the goal jumps.

A :class:`DisturbanceSpec` says what may happen and when; :func:`draw_disturbance` draws one
episode's :class:`Disturbance` from the episode seed with its own generator
(``np.random.default_rng([seed, DISTURBANCE_SEED_TAG])``), so the undisturbed layout of a seed is
unchanged and the same seed always plans the same event, whatever policy runs.

What is drawn at reset: the control step, the kind, a distance, a heading and (shove only) a
kick speed. Where the puck is at that step depends on the policy, so the environment turns the
plan into a displacement only when the step comes: it takes the drawn heading and distance if
the result is valid (puck or goal in its layout range, the push still reachable, the puck clear
of the goal and of the pusher) and otherwise the valid candidate nearest the plan, in the fixed
order of :func:`candidate_displacements`; the same seed and the same actions give the same
event. If no candidate is valid the event is skipped (status ``'skipped'``), never forced.
"""

from dataclasses import dataclass, replace
import math
from typing import Any, Iterator

import numpy as np

SHOVE = 'shove'
GOAL_JUMP = 'goal_jump'
EITHER = 'either'
KINDS = (SHOVE, GOAL_JUMP, EITHER)
# Status of an episode's event.
PENDING = 'pending'
APPLIED = 'applied'
SKIPPED = 'skipped'
# Second word of the disturbance generator's seed: keeps its stream apart from the layout's.
DISTURBANCE_SEED_TAG = 0xD15
# A goal jump shorter than this would hardly be a change of the world (m).
MIN_GOAL_JUMP = 0.02
# Search grid when the drawn displacement is not valid: headings every 10 degrees, nearest the
# drawn one first, then the same headings at other distances of the range, nearest first.
SEARCH_HEADINGS = 36
SEARCH_DISTANCES = 5

Pair = tuple[float, float]


def _check_range(name: str, value: Any, low: float, strict: bool, unit: str) -> Pair:
    """Return ``value`` as a float pair (lo, hi) with ``low`` <= (or <) lo <= hi, else raise."""
    expected = (f'a pair (lo, hi) of finite numbers with {low:g} {"<" if strict else "<="} lo '
                f'<= hi ({unit})')
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f'{name} must be {expected}, got {value!r}') from error
    if (isinstance(value, (str, bytes)) or len(pair) != 2 or not all(map(math.isfinite, pair))
            or not (pair[0] > low if strict else pair[0] >= low) or pair[0] > pair[1]):
        raise ValueError(f'{name} must be {expected}, got {value!r}')
    return pair


@dataclass(frozen=True)
class DisturbanceSpec:
    """
    What may disturb an episode, and when (distances in metres, speeds in m/s).

    ``kind``: ``'shove'`` (the puck is displaced on the table), ``'goal_jump'`` (the goal moves)
    or ``'either'`` (one of the two, evenly drawn per episode). ``step_range``: the control steps
    (inclusive, counted like ``info['steps']``, from 1) in which the event may happen; it is
    applied at the start of that ``step()`` call, before its physics, so the observation that
    this call returns is the first one to show it. ``shove_distance``: range of the puck's
    displacement. ``shove_speed``: range of the velocity kick given to the puck along the
    displacement (default none: the puck is put down at rest). ``goal_jump_distance``: range of
    the goal's displacement. ``min_separation``: the least puck-to-goal distance after the event
    (it must exceed the env's success radius, so a disturbance never finishes the task).
    """

    kind: str = EITHER
    step_range: tuple[int, int] = (10, 40)
    shove_distance: Pair = (0.06, 0.12)
    shove_speed: Pair = (0.0, 0.0)
    goal_jump_distance: Pair = (0.08, 0.16)
    min_separation: float = 0.06

    def __post_init__(self) -> None:
        """Check every field; raise ValueError naming the field, its value and what is valid."""
        if not isinstance(self.kind, str) or self.kind not in KINDS:
            raise ValueError(f'kind must be one of {list(KINDS)}, got {self.kind!r}')
        steps = self.step_range
        if (isinstance(steps, (str, bytes)) or not hasattr(steps, '__len__') or len(steps) != 2
                or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                           for s in steps)
                or not 1 <= steps[0] <= steps[1]):
            raise ValueError('step_range must be a pair (first, last) of ints with '
                             f'1 <= first <= last (control steps), got {steps!r}')
        object.__setattr__(self, 'step_range', (int(steps[0]), int(steps[1])))
        for name, low, strict, unit in (('shove_distance', 0.0, True, 'm'),
                                        ('shove_speed', 0.0, False, 'm/s'),
                                        ('goal_jump_distance', MIN_GOAL_JUMP, False, 'm')):
            object.__setattr__(self, name,
                               _check_range(name, getattr(self, name), low, strict, unit))
        separation = self.min_separation
        if (isinstance(separation, bool) or not isinstance(separation, (int, float, np.floating))
                or not math.isfinite(separation) or separation <= 0.0):
            raise ValueError('min_separation must be a positive finite number of metres, '
                             f'got {separation!r}')
        object.__setattr__(self, 'min_separation', float(separation))

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a JSON-serialisable dict."""
        return {'kind': self.kind, 'step_range': list(self.step_range),
                'shove_distance': list(self.shove_distance),
                'shove_speed': list(self.shove_speed),
                'goal_jump_distance': list(self.goal_jump_distance),
                'min_separation': self.min_separation}


@dataclass(frozen=True)
class Disturbance:
    """
    The disturbance of one episode: planned at reset, realised (or skipped) at its step.

    ``step``: the control step it happens in (``info['steps']`` of that ``step()`` call).
    ``kind``: ``'shove'`` or ``'goal_jump'``. ``distance``, ``heading`` (rad, world frame) and
    ``speed`` (m/s, shove only) are the drawn plan. Once applied, ``displacement`` is the (x, y)
    vector actually added to the puck (shove) or the goal (goal jump), ``velocity`` the puck's
    velocity right after it (zero for a goal jump, which leaves the puck alone), and
    ``object_before`` / ``object_after`` / ``goal_before`` / ``goal_after`` the puck and goal
    centres just before and after; until then (and when skipped) they are None.
    """

    step: int
    kind: str
    distance: float
    heading: float
    speed: float = 0.0
    status: str = PENDING
    displacement: Pair | None = None
    velocity: Pair | None = None
    object_before: Pair | None = None
    object_after: Pair | None = None
    goal_before: Pair | None = None
    goal_after: Pair | None = None
    reason: str = ''

    @property
    def happened(self) -> bool:
        """Whether the event has been applied to the world."""
        return self.status == APPLIED

    def applied(self, displacement: np.ndarray, velocity: np.ndarray,
                object_before: np.ndarray, object_after: np.ndarray,
                goal_before: np.ndarray, goal_after: np.ndarray) -> 'Disturbance':
        """Return a copy marked applied, holding what was done (each argument an (x, y))."""
        return replace(self, status=APPLIED, displacement=_pair(displacement),
                       velocity=_pair(velocity), object_before=_pair(object_before),
                       object_after=_pair(object_after), goal_before=_pair(goal_before),
                       goal_after=_pair(goal_after))

    def skipped(self, reason: str) -> 'Disturbance':
        """Return a copy marked skipped, with the reason."""
        return replace(self, status=SKIPPED, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-serialisable dict (pairs as lists, missing ones None)."""
        out: dict[str, Any] = {'step': self.step, 'kind': self.kind, 'status': self.status,
                               'distance': self.distance, 'heading': self.heading,
                               'speed': self.speed}
        for name in ('displacement', 'velocity', 'object_before', 'object_after',
                     'goal_before', 'goal_after'):
            value = getattr(self, name)
            out[name] = None if value is None else list(value)
        out['reason'] = self.reason
        return out


def _pair(value: np.ndarray) -> Pair:
    array = np.asarray(value, dtype=np.float64).reshape(2)
    return float(array[0]), float(array[1])


def draw_disturbance(spec: DisturbanceSpec, seed: int) -> Disturbance:
    """
    Draw the planned event of episode ``seed`` with its own generator; the same seed, same plan.

    Every number is drawn in a fixed order whatever the spec's kind, so a 'shove' spec and an
    'either' spec plan the same step and heading for a seed.
    """
    rng = np.random.default_rng([int(seed), DISTURBANCE_SEED_TAG])
    pick = float(rng.random())
    step = int(rng.integers(spec.step_range[0], spec.step_range[1], endpoint=True))
    fraction = float(rng.random())
    heading = float(rng.uniform(-np.pi, np.pi))
    speed = float(rng.uniform(*spec.shove_speed))
    if spec.kind == EITHER:
        kind = SHOVE if pick < 0.5 else GOAL_JUMP
    else:
        kind = spec.kind
    low, high = spec.shove_distance if kind == SHOVE else spec.goal_jump_distance
    return Disturbance(step=step, kind=kind, distance=low + fraction * (high - low),
                       heading=heading, speed=speed if kind == SHOVE else 0.0)


def candidate_displacements(event: Disturbance, spec: DisturbanceSpec) -> Iterator[np.ndarray]:
    """
    Yield (x, y) displacements to try, the drawn one first, then those nearest to it.

    Headings step by 360 / :data:`SEARCH_HEADINGS` degrees away from the drawn one, alternately
    to either side; all of them at the drawn distance first, then at each of
    :data:`SEARCH_DISTANCES` distances spread over the kind's range, nearest the drawn first.
    """
    low, high = spec.shove_distance if event.kind == SHOVE else spec.goal_jump_distance
    others = sorted(np.linspace(low, high, SEARCH_DISTANCES).tolist(),
                    key=lambda d: abs(d - event.distance))
    offsets = [0]
    for k in range(1, SEARCH_HEADINGS // 2 + 1):
        offsets.extend((k, -k) if k < SEARCH_HEADINGS - k else (k,))
    for distance in [event.distance] + others:
        for k in offsets:
            angle = event.heading + 2.0 * np.pi * k / SEARCH_HEADINGS
            yield distance * np.array([np.cos(angle), np.sin(angle)])
