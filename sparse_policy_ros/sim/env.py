"""
ArmPushEnv: a 4-joint table-top arm pushes a puck onto a goal disc (MuJoCo, camera observations).

The policy sees one fixed RGB camera and the arm's joint positions; the puck and goal poses are
not in the state, so the task needs the image. Actions are joint position targets held by the
arm's position servos for one control period. Per episode (``reset(seed)``) the puck, the goal
and the arm's base yaw are drawn from a seeded generator, and the same seed replays bit for bit.

Timeline of one control step at ``control_hz``::

    obs_t = reset() / step()  ->  action_t (joint targets)  ->  physics for 1 / control_hz s
                              ->  obs_{t+1}, success test, termination on success

Lower-level use (the ROS sim node): ``set_joint_targets(q)`` then ``advance(dt)`` as often as the
node likes; ``render_images()`` and ``state()`` read the current state.

Disturbance variant (``ArmPushEnv(disturbance=DisturbanceSpec(...))``, see :mod:`.disturbance`):
at a control step drawn per episode the puck is shoved to another place on the table or the goal
jumps, so that a policy has to react mid-episode. ``reset(seed)`` plans the event from the seed
with a generator of its own (the layout of a seed stays what it is without the option);
``step()`` applies it at the start of the drawn step, before that step's physics, and from then
on puts ``info['disturbance']`` (the event as a dict); ``env.disturbance`` holds the event and
``env.disturbance_happened`` says whether it has been applied. A shoved puck stays in the layout's
puck range, clear of the pusher, with the push still reachable; a jumped goal stays in the goal
range; either way the puck ends at least ``min_separation`` from the goal, so the disturbance
never finishes the task, and the success test uses the goal where it is now. Only ``step()``
applies it (not ``advance()``). The default, ``disturbance=None``, leaves everything as without
the option, bit for bit.
"""

from dataclasses import dataclass
import logging
import os
from pathlib import Path
from typing import Any

# The renderer picks its GL backend when mujoco is first imported: headless EGL unless the user
# chose one (MUJOCO_GL=osmesa is the software fallback where EGL is missing).
os.environ.setdefault('MUJOCO_GL', 'egl')

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from .disturbance import (  # noqa: E402
    candidate_displacements, Disturbance, DisturbanceSpec, draw_disturbance, PENDING, SHOVE)
from ..policy.observation import OBS_IMAGES, OBS_STATE  # noqa: E402

logger = logging.getLogger(__name__)

ASSET_PATH = Path(__file__).resolve().parent / 'assets' / 'arm_push.xml'
JOINT_NAMES = ('base_yaw', 'shoulder', 'elbow', 'wrist_pitch')
CAMERA_NAMES = ('front',)
# Rated joint speeds (rad/s) of the arm, reported to controllers; the expert stays below them.
MAX_VELOCITY = (1.5, 1.5, 2.0, 2.5)
# Home pose: tool vertical, pusher tip at (0.22, 0, 0.025) m.
HOME_QPOS = (0.0, 0.5407, 2.3645, 0.2364)
# Episode cap at control_hz = 10: the expert needs 30 to 105 steps, a policy gets some slack.
DEFAULT_MAX_STEPS = 150
# Height of the tool tip (the 'tip' site) above the table while pushing: mid-height of the puck.
PUSH_HEIGHT = 0.025

# Per-episode randomisation (metres and radians, world frame, table plane).
OBJECT_X_RANGE = (0.32, 0.46)
OBJECT_Y_RANGE = (-0.17, 0.17)
GOAL_X_RANGE = (0.28, 0.46)
GOAL_Y_RANGE = (-0.18, 0.18)
HOME_YAW_NOISE = 0.15
MIN_PUSH_DISTANCE = 0.12
# The pusher must be able to stand this far behind the puck (seen from the goal) within reach.
APPROACH_CLEARANCE = 0.075
REACH_RANGE = (0.2, 0.53)
MIN_START_GAP = 0.09
# A shoved puck is put down at least this far (edge to edge) from the pusher, so the two never
# overlap and the contact solver never has to throw them apart.
SHOVE_PUSHER_CLEARANCE = 0.01


@dataclass(frozen=True)
class TaskState:
    """Privileged task state for scripted experts and evaluation, never shown to the policy."""

    object_xy: np.ndarray  # (2,) puck centre on the table, m
    goal_xy: np.ndarray  # (2,) goal centre, m
    tip_pos: np.ndarray  # (3,) pusher tip (the 'tip' site), m
    joint_positions: np.ndarray  # (n,) arm joint positions, rad


@dataclass(frozen=True)
class Kinematics:
    """Forward kinematics of the tool at one joint configuration (world frame)."""

    tip_pos: np.ndarray  # (3,) tip site position, m
    tool_axis: np.ndarray  # (3,) unit vector from the wrist towards the tip
    jac_pos: np.ndarray  # (3, n) d tip_pos / d q
    jac_rot: np.ndarray  # (3, n) angular velocity of the tool per unit joint velocity


class ArmPushEnv:
    """Push a puck onto a goal with a 4-joint arm, observed through one fixed 96x96 camera."""

    def __init__(self, image_size: int = 96, max_steps: int = DEFAULT_MAX_STEPS,
                 render: bool = True, control_hz: float = 10.0,
                 success_radius: float = 0.03,
                 disturbance: DisturbanceSpec | None = None) -> None:
        """
        Load the model; ``render=False`` makes no renderer and observations hold no images.

        ``disturbance``: a :class:`~.disturbance.DisturbanceSpec` to shove the puck or move the
        goal once per episode (see the module docstring); None (default) for the plain task.
        """
        if not isinstance(image_size, int) or not 16 <= image_size <= 1024:
            raise ValueError(f'image_size must be an int in [16, 1024], got {image_size!r}')
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f'max_steps must be a positive int, got {max_steps!r}')
        if not np.isfinite(control_hz) or control_hz <= 0:
            raise ValueError(f'control_hz must be a positive number, got {control_hz!r}')
        if not np.isfinite(success_radius) or success_radius <= 0:
            raise ValueError(f'success_radius must be a positive number, got {success_radius!r}')
        if disturbance is not None:
            if not isinstance(disturbance, DisturbanceSpec):
                raise ValueError('disturbance must be a DisturbanceSpec or None, '
                                 f'got {disturbance!r}')
            if disturbance.min_separation <= success_radius:
                raise ValueError(
                    f'disturbance.min_separation must exceed success_radius ({success_radius}) '
                    'so that a disturbance never finishes the task, got '
                    f'{disturbance.min_separation}')
            if disturbance.step_range[1] > max_steps:
                raise ValueError(
                    f'disturbance.step_range must end at most at max_steps ({max_steps}), '
                    f'got {disturbance.step_range}')
        self.disturbance_spec = disturbance
        self._disturbance: Disturbance | None = None
        self.image_size = image_size
        self.max_steps = max_steps
        self.control_hz = float(control_hz)
        self.success_radius = float(success_radius)
        self.joint_names = list(JOINT_NAMES)
        self.camera_names = list(CAMERA_NAMES)
        self.max_velocity = np.array(MAX_VELOCITY, dtype=np.float64)

        self.model = mujoco.MjModel.from_xml_path(str(ASSET_PATH))
        self._data = mujoco.MjData(self.model)
        # Scratch data for kinematic queries, so they never disturb the simulation.
        self._kin_data = mujoco.MjData(self.model)
        joints = [self.model.joint(name) for name in JOINT_NAMES]
        self._qpos_adr = np.array([j.qposadr[0] for j in joints])
        self._dof_adr = np.array([j.dofadr[0] for j in joints])
        self.joint_limits = (np.array([j.range[0] for j in joints], dtype=np.float64),
                             np.array([j.range[1] for j in joints], dtype=np.float64))
        self._actuator_ids = np.array([self.model.actuator(name).id for name in JOINT_NAMES])
        self._object_qpos_adr = np.array([self.model.joint(name).qposadr[0]
                                          for name in ('puck_x', 'puck_y')])
        self._object_body = self.model.body('puck').id
        self._goal_mocap = self.model.body('goal').mocapid[0]
        self._tip_site = self.model.site('tip').id
        self.object_radius = float(self.model.geom('puck').size[0])
        self.pusher_radius = float(self.model.geom('pusher').size[0])
        self.push_height = PUSH_HEIGHT

        self._renderer = None
        if render:
            # The offscreen buffer must hold the requested image.
            self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, image_size)
            self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, image_size)
            self._renderer = mujoco.Renderer(self.model, height=image_size, width=image_size)
            flags = self._renderer.scene.flags
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG,
                         mujoco.mjtRndFlag.mjRND_HAZE):
                flags[flag] = 0
            self._scene_option = mujoco.MjvOption()
        self._steps = 0
        self._physics_steps = 0
        self._target_steps = 0
        self._seed: int | None = None
        self._needs_reset = True

    # ------------------------------------------------------------------ episode API
    def reset(self, seed: int) -> dict[str, Any]:
        """Start an episode with the puck, goal and base yaw drawn from ``seed``; return obs."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative int, got {seed!r}')
        rng = np.random.default_rng(int(seed))
        object_xy, goal_xy, home = self._sample_layout(rng)
        mujoco.mj_resetData(self.model, self._data)
        self._data.qpos[self._qpos_adr] = home
        self._data.ctrl[self._actuator_ids] = home
        self._data.qpos[self._object_qpos_adr] = object_xy
        self._data.mocap_pos[self._goal_mocap, :2] = goal_xy
        mujoco.mj_forward(self.model, self._data)
        self._steps = 0
        self._physics_steps = 0
        self._target_steps = 0
        self._seed = int(seed)
        self._needs_reset = False
        self._disturbance = None
        if self.disturbance_spec is not None:
            self._disturbance = draw_disturbance(self.disturbance_spec, int(seed))
        return self._observation()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict]:
        """
        Hold joint targets ``action`` (n,) for one control period; gymnasium-style 5-tuple.

        The reward is 1.0 on success and 0.0 otherwise; the episode terminates on success and
        is truncated after ``max_steps`` steps. With a disturbance, the step it is drawn for
        applies it before its physics, and ``info['disturbance']`` holds it from then on.
        """
        if self._needs_reset:
            raise RuntimeError('call reset(seed) before step()')
        action = self._check_joint_vector(action, 'action')
        self.disturb_if_due(self._steps)
        self.set_joint_targets(action)
        self.advance(1.0 / self.control_hz)
        self._steps += 1
        success = self.success
        terminated = success
        truncated = not terminated and self._steps >= self.max_steps
        if terminated or truncated:
            self._needs_reset = True
        info = {
            'success': success,
            'is_success': success,
            'object_to_goal': self.object_to_goal(),
            'steps': self._steps,
            'seed': self._seed,
        }
        if self._disturbance is not None and self._disturbance.status != PENDING:
            info['disturbance'] = self._disturbance.to_dict()
        return self._observation(), float(success), terminated, truncated, info

    def close(self) -> None:
        """Free the renderer (safe to call twice)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ------------------------------------------------------------------ lower-level API
    def disturb_if_due(self, steps_done: int) -> bool:
        """
        Apply the episode's disturbance if it is drawn for control step ``steps_done + 1``.

        ``step`` does this itself; a caller that drives the physics with ``advance`` (the node
        executor) calls it at each control period. Returns whether it was applied now.
        """
        event = self._disturbance
        if event is None or event.status != PENDING or steps_done + 1 != event.step:
            return False
        self._apply_disturbance()
        return True

    def set_joint_targets(self, q: np.ndarray) -> None:
        """Set the servo position targets (n,) in rad, clipped to the joint limits."""
        q = self._check_joint_vector(q, 'q')
        self._data.ctrl[self._actuator_ids] = np.clip(q, *self.joint_limits)

    def advance(self, dt: float) -> None:
        """
        Integrate physics for ``dt`` seconds with the current targets.

        Time is kept in whole physics steps against the running sum of requested time, so many
        small ``dt`` add up to the same trajectory length as one large one, without drift.
        """
        if not np.isfinite(dt) or dt < 0:
            raise ValueError(f'dt must be a finite non-negative number of seconds, got {dt!r}')
        self._target_steps += dt / self.model.opt.timestep
        n = int(np.floor(self._target_steps + 1e-9)) - self._physics_steps
        if n > 0:
            mujoco.mj_step(self.model, self._data, nstep=n)
            self._physics_steps += n

    def render_images(self) -> dict[str, np.ndarray]:
        """Render every camera for the current state: {name: uint8 (H, W, 3)}."""
        if self._renderer is None:
            raise RuntimeError('this ArmPushEnv was made with render=False (or is closed)')
        images = {}
        for camera in self.camera_names:
            self._renderer.update_scene(self._data, camera=camera,
                                        scene_option=self._scene_option)
            images[camera] = self._renderer.render().copy()
        return images

    def state(self) -> np.ndarray:
        """Return the arm joint positions (n,) float32, the policy's state observation."""
        return self._data.qpos[self._qpos_adr].astype(np.float32)

    @property
    def sim_time(self) -> float:
        """Return the simulated seconds since the last reset."""
        return self._physics_steps * float(self.model.opt.timestep)

    @property
    def joint_targets(self) -> np.ndarray:
        """Return the current servo targets (n,) float64."""
        return self._data.ctrl[self._actuator_ids].copy()

    @property
    def success(self) -> bool:
        """Whether the puck centre lies within ``success_radius`` of the goal centre."""
        return bool(self.object_to_goal() < self.success_radius)

    def object_to_goal(self) -> float:
        """Distance in metres between the puck centre and the goal centre."""
        return float(np.linalg.norm(self._object_xy() - self._goal_xy()))

    @property
    def disturbance(self) -> Disturbance | None:
        """Return the event of this episode: planned, then applied or skipped; None if off."""
        return self._disturbance

    @property
    def disturbance_happened(self) -> bool:
        """Whether this episode's disturbance has been applied to the world yet."""
        return self._disturbance is not None and self._disturbance.happened

    # ------------------------------------------------------------------ privileged access
    def privileged_state(self) -> TaskState:
        """Return the full task state (puck and goal poses included) for experts and metrics."""
        return TaskState(object_xy=self._object_xy(), goal_xy=self._goal_xy(),
                         tip_pos=self._data.site_xpos[self._tip_site].copy(),
                         joint_positions=self._data.qpos[self._qpos_adr].copy())

    def kinematics(self, q: np.ndarray) -> Kinematics:
        """Forward kinematics and Jacobians of the tool tip at joint positions ``q`` (n,)."""
        q = self._check_joint_vector(q, 'q')
        data = self._kin_data
        data.qpos[self._qpos_adr] = q
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_comPos(self.model, data)
        jac_pos = np.zeros((3, self.model.nv))
        jac_rot = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, data, jac_pos, jac_rot, self._tip_site)
        # The site's z axis is the tool axis (wrist -> tip); xmat is row-major 3x3.
        tool_axis = data.site_xmat[self._tip_site].reshape(3, 3)[:, 2].copy()
        return Kinematics(tip_pos=data.site_xpos[self._tip_site].copy(), tool_axis=tool_axis,
                          jac_pos=jac_pos[:, self._dof_adr], jac_rot=jac_rot[:, self._dof_adr])

    # ------------------------------------------------------------------ internals
    def _observation(self) -> dict[str, Any]:
        images = self.render_images() if self._renderer is not None else {}
        return {OBS_IMAGES: images, OBS_STATE: self.state()}

    def _object_xy(self) -> np.ndarray:
        return self._data.xpos[self._object_body, :2].copy()

    def _goal_xy(self) -> np.ndarray:
        return self._data.mocap_pos[self._goal_mocap, :2].copy()

    def _apply_disturbance(self) -> None:
        """Shove the puck or move the goal as planned (or as near the plan as valid)."""
        event, spec = self._disturbance, self.disturbance_spec
        model, data = self.model, self._data
        mujoco.mj_forward(model, data)
        object_xy, goal_xy = self._object_xy(), self._goal_xy()
        tip_xy = data.site_xpos[self._tip_site, :2].copy()
        puck_dofs = model.jnt_dofadr[[model.joint(name).id for name in ('puck_x', 'puck_y')]]
        # Farthest a kicked puck can slide: its velocity decays at least as fast as under the
        # slide joints' viscous damping alone (friction only shortens the slide).
        slide_per_speed = float(model.body_mass[self._object_body]
                                / max(float(np.min(model.dof_damping[puck_dofs])), 1e-9))
        for displacement in candidate_displacements(event, spec):
            if event.kind == SHOVE:
                new_object, new_goal = object_xy + displacement, goal_xy
                direction = displacement / np.linalg.norm(displacement)
                slide_end = new_object + event.speed * slide_per_speed * direction
                valid = (self._valid_object_xy(new_object, goal_xy, tip_xy, spec.min_separation)
                         and _in_range(slide_end, OBJECT_X_RANGE, OBJECT_Y_RANGE)
                         and _segment_point_distance(new_object, slide_end, goal_xy)
                         >= spec.min_separation)
            else:
                new_object, new_goal = object_xy, goal_xy + displacement
                valid = (_in_range(new_goal, GOAL_X_RANGE, GOAL_Y_RANGE)
                         and _push_reachable(object_xy, new_goal, spec.min_separation))
            if valid:
                break
        else:
            self._disturbance = event.skipped(
                f'no valid {event.kind} of {event.distance:.3f} m (or of another distance in '
                f'range) from puck {object_xy.round(3).tolist()}, goal '
                f'{goal_xy.round(3).tolist()}')
            logger.warning('seed %s, step %d: disturbance skipped: %s', self._seed, event.step,
                           self._disturbance.reason)
            return
        velocity = np.zeros(2)
        if event.kind == SHOVE:
            velocity = event.speed * displacement / np.linalg.norm(displacement)
            # The slide joints move the puck along the world x and y axes.
            data.qpos[self._object_qpos_adr] += displacement
            data.qvel[puck_dofs] = velocity
        else:
            data.mocap_pos[self._goal_mocap, :2] = new_goal
        mujoco.mj_forward(model, data)
        self._disturbance = event.applied(
            displacement=displacement, velocity=velocity, object_before=object_xy,
            object_after=self._object_xy(), goal_before=goal_xy, goal_after=self._goal_xy())

    def _valid_object_xy(self, object_xy: np.ndarray, goal_xy: np.ndarray, tip_xy: np.ndarray,
                         min_separation: float) -> bool:
        """Check a shoved puck: in the layout range, clear of the pusher, push reachable."""
        clearance = self.object_radius + self.pusher_radius + SHOVE_PUSHER_CLEARANCE
        return bool(_in_range(object_xy, OBJECT_X_RANGE, OBJECT_Y_RANGE)
                    and np.linalg.norm(object_xy - tip_xy) >= clearance
                    and _push_reachable(object_xy, goal_xy, min_separation))

    def _check_joint_vector(self, value: Any, field_name: str) -> np.ndarray:
        n = len(self.joint_names)
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f'{field_name} must be a float array of shape ({n},) (joint position targets '
                f'for {self.joint_names}), got {value!r}') from error
        if array.shape != (n,):
            raise ValueError(
                f'{field_name} must have shape ({n},) (joints {self.joint_names}), '
                f'got shape {array.shape}')
        if not np.all(np.isfinite(array)):
            raise ValueError(f'{field_name} must be finite, got {array.tolist()}')
        return array

    def _sample_layout(self, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw (puck xy, goal xy, home joints) so that the push is long enough and reachable."""
        home = np.array(HOME_QPOS, dtype=np.float64)
        home[0] += rng.uniform(-HOME_YAW_NOISE, HOME_YAW_NOISE)
        start_tip = self.kinematics(home).tip_pos[:2]
        for _ in range(1000):
            object_xy = rng.uniform((OBJECT_X_RANGE[0], OBJECT_Y_RANGE[0]),
                                    (OBJECT_X_RANGE[1], OBJECT_Y_RANGE[1]))
            goal_xy = rng.uniform((GOAL_X_RANGE[0], GOAL_Y_RANGE[0]),
                                  (GOAL_X_RANGE[1], GOAL_Y_RANGE[1]))
            push = goal_xy - object_xy
            distance = float(np.linalg.norm(push))
            if distance < MIN_PUSH_DISTANCE:
                continue
            approach_reach = np.linalg.norm(object_xy - APPROACH_CLEARANCE * push / distance)
            if not REACH_RANGE[0] <= approach_reach <= REACH_RANGE[1]:
                continue
            if np.linalg.norm(object_xy - start_tip) < MIN_START_GAP:
                continue
            return object_xy, goal_xy, home
        raise RuntimeError('could not sample a feasible layout in 1000 draws')  # pragma: no cover


def _in_range(xy: np.ndarray, x_range: tuple[float, float], y_range: tuple[float, float]) -> bool:
    return bool(x_range[0] <= xy[0] <= x_range[1] and y_range[0] <= xy[1] <= y_range[1])


def _push_reachable(object_xy: np.ndarray, goal_xy: np.ndarray, min_distance: float) -> bool:
    """Apply the layout's reach rule: the point behind the puck (seen from the goal) in reach."""
    push = goal_xy - object_xy
    distance = float(np.linalg.norm(push))
    if distance < min_distance:
        return False
    approach_reach = np.linalg.norm(object_xy - APPROACH_CLEARANCE * push / distance)
    return bool(REACH_RANGE[0] <= approach_reach <= REACH_RANGE[1])


def _segment_point_distance(start: np.ndarray, end: np.ndarray, point: np.ndarray) -> float:
    segment = end - start
    length2 = float(segment @ segment)
    t = 0.0 if length2 < 1e-18 else float(np.clip((point - start) @ segment / length2, 0.0, 1.0))
    return float(np.linalg.norm(start + t * segment - point))
