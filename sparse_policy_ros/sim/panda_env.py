"""
PandaPushEnv: the ArmPushEnv push task done by the Franka Panda model that ``gym-hil`` ships.

The robot is ``gym_hil/assets/panda.xml`` from the installed ``gym-hil`` wheel (a Franka Emika
Panda with a Robotiq 2F-85 gripper, derived from MuJoCo Menagerie), loaded in place with
``mujoco.MjSpec``; nothing of it is copied into this repository. Install it without its
gymnasium/pygame dependencies, which this module does not need::

    pip install --no-deps gym-hil==0.1.14

License: gym-hil is Apache-2.0 (the wheel's only license file). Its robot files come from MuJoCo
Menagerie, where the Panda is Apache-2.0 and the Robotiq 2F-85 BSD-2-Clause; both permit this use,
and since the files are read from the user's own install, nothing is redistributed.

The scene is ArmPushEnv's ``arm_push.xml`` (table, puck, goal disc, light, 'front' camera, physics
and render settings) with its 4-joint arm removed and the Panda attached in its place, mounted at
the table's back edge (``PANDA_BASE_POS``) so that the whole task area lies in its comfortable
top-down workspace. Puck and goal are drawn from the same ranges and feasibility rules as in
ArmPushEnv (world frame), in the same order from the seed, so a seed gives the same layout in both
environments unless the start-gap rule differs. Success is the same: puck centre within
``success_radius`` (3 cm) of the goal centre.

Actuation. The XML's seven arm actuators are torque motors (ctrlrange +-87 N m on joints 1-4, +-12
N m on 5-7), meant for gym-hil's operational-space controller. This environment keeps ArmPushEnv's
interface (joint position targets at ``control_hz``), so each motor becomes a joint position servo
(PD with Menagerie's Panda gains) whose total torque, gravity compensation included, is limited to
that motor's range at the joint (``actfrcrange``). That is what a Franka in joint-impedance mode
does: a PD law plus model-based gravity compensation inside the robot, within its torque limits.
The gripper is held closed (its servo's command fixed at the XML's 255) so the closed fingers make
a 27 x 62 mm paddle to push with; the episode starts with the fingers already closed.

Contacts: the puck collides with every Panda collision geom (so any link can hit it), Panda geoms
do not collide with each other, and the table is visual, as in ArmPushEnv.

Everything else (``step``, ``success``, ``privileged_state``, ``kinematics``, the observation
layout and its errors) is ArmPushEnv's, inherited; ``reset`` is ArmPushEnv's plus closing the
fingers. The tool tip is the gripper's ``pinch`` site between the fingertips, whose z axis points
from the wrist to the fingertips.
"""

import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

# As in env.py: the GL backend is fixed when mujoco is first imported.
os.environ.setdefault('MUJOCO_GL', 'egl')

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from .env import (  # noqa: E402
    APPROACH_CLEARANCE, ArmPushEnv, ASSET_PATH, DEFAULT_MAX_STEPS, GOAL_X_RANGE, GOAL_Y_RANGE,
    HOME_YAW_NOISE, MIN_PUSH_DISTANCE, MIN_START_GAP, OBJECT_X_RANGE, OBJECT_Y_RANGE, REACH_RANGE)

logger = logging.getLogger(__name__)

GYM_HIL_VERSION = '0.1.14'
INSTALL_HINT = f'pip install --no-deps gym-hil=={GYM_HIL_VERSION}'
# Names inside the attached Panda get this prefix: panda_joint1 ... panda_joint7, as in
# franka_description.
PREFIX = 'panda_'
JOINT_NAMES = tuple(f'{PREFIX}joint{i}' for i in range(1, 8))
TIP_SITE = f'{PREFIX}pinch'
# World position of the Panda's base (link0). ArmPushEnv's task area, x 0.2-0.55 m, is then
# 0.4-0.75 m from the base, where a top-down gripper keeps >= 0.4 rad from every joint limit.
PANDA_BASE_POS = (-0.2, 0.0, 0.0)
# Franka's rated joint speeds (rad/s, datasheet), reported to controllers.
MAX_VELOCITY = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
# Joint acceleration limits (rad/s^2) of Franka's published Panda specification: what a policy
# node driving this arm is configured with (controller_limits).
MAX_ACCELERATION = (15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0)
# Position-servo gains (N m/rad, N m s/rad), those of MuJoCo Menagerie's Panda.
SERVO_KP = (4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0)
SERVO_KV = (450.0, 450.0, 350.0, 350.0, 200.0, 200.0, 200.0)
# Home: gripper vertical, pinch point at (0.22, 0, PUSH_HEIGHT) like ArmPushEnv's home tip
# (solved by IK from Franka's 'ready' pose, yaw kept).
HOME_QPOS = (0.0, 0.1864, 0.0, -2.655, 0.0, 2.8414, 0.7854)
# Height of the pinch site while pushing: the fingertips reach 18 mm below it, so the pads
# cover 12-50 mm above the table, the puck's whole 50 mm side.
PUSH_HEIGHT = 0.03
# Half the long side of the closed fingers' footprint at puck height (27 x 62 mm), so a planner
# that treats the pusher as a disc keeps clear of the puck whatever the gripper's yaw.
PUSHER_RADIUS = 0.031
# The XML's finger servo command for 'closed' (its ctrlrange is 0-255).
GRIPPER_CLOSED_CTRL = 255.0
# Simulated time for the closing fingers to settle when the model is built.
GRIPPER_SETTLE_S = 1.0
# The renderer switches ArmPushEnv turns off, so both envs render alike.
RENDER_FLAGS_OFF = (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                    mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG,
                    mujoco.mjtRndFlag.mjRND_HAZE)
# Collision bits: Panda geoms hit only what has bit 2 in conaffinity, which only the puck has.
PANDA_CONTYPE = 2


def gym_hil_asset_dir() -> Path:
    """
    Return the ``assets`` directory inside the installed gym-hil package.

    The package is located without importing it: ``import gym_hil`` pulls in gymnasium, which
    this project does not need.
    """
    spec = importlib.util.find_spec('gym_hil')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            'PandaPushEnv needs the Franka Panda model shipped by the gym-hil package, which is '
            f'not installed; install it with: {INSTALL_HINT}')
    assets = Path(next(iter(spec.submodule_search_locations))) / 'assets'
    if not (assets / 'panda.xml').is_file():
        raise ImportError(f'gym-hil is installed but {assets / "panda.xml"} is missing; '
                          f'reinstall it with: {INSTALL_HINT}')
    try:
        version = importlib.metadata.version('gym-hil')
    except importlib.metadata.PackageNotFoundError:
        version = 'unknown'
    if version != GYM_HIL_VERSION:
        # Other versions may ship a different XML; the constants above were fitted to this one.
        logger.warning('gym-hil %s is installed; PandaPushEnv was built against %s',
                       version, GYM_HIL_VERSION)
    return assets


def build_panda_push_spec() -> mujoco.MjSpec:
    """Return ArmPushEnv's scene with its arm replaced by gym-hil's Panda (module docstring)."""
    panda = mujoco.MjSpec.from_file(str(gym_hil_asset_dir() / 'panda.xml'))
    scene = mujoco.MjSpec.from_file(str(ASSET_PATH))
    # Deleting the 4-joint arm's root body also deletes its joints and their actuators.
    scene.delete(scene.body('base'))
    mount = scene.worldbody.add_frame(pos=list(PANDA_BASE_POS))
    mount.attach_body(panda.body('link0'), PREFIX, '')
    for index, name in enumerate(JOINT_NAMES):
        joint = scene.joint(name)
        motor = scene.actuator(f'{PREFIX}actuator{index + 1}')
        torque_range = np.array(motor.ctrlrange, dtype=np.float64)
        motor.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        motor.gainprm[0] = SERVO_KP[index]
        motor.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        motor.biasprm[:3] = [0.0, -SERVO_KP[index], -SERVO_KV[index]]
        motor.ctrllimited = True
        motor.ctrlrange = joint.range
        # The motor's torque limit bounds servo and gravity compensation together.
        joint.actgravcomp = True
        joint.actfrclimited = True
        joint.actfrcrange = torque_range
    fingers = scene.actuator(f'{PREFIX}fingers_actuator')
    # force = gain * ctrl + bias0 + ...: move the closed command into the constant bias term.
    fingers.biasprm[0] = fingers.gainprm[0] * GRIPPER_CLOSED_CTRL
    fingers.gainprm[0] = 0.0
    for body in scene.bodies:
        if body.name.startswith(PREFIX) and body.name != f'{PREFIX}link0':
            body.gravcomp = 1.0
    for geom in scene.geoms:
        if geom.name == 'puck':
            geom.conaffinity |= PANDA_CONTYPE
        elif geom.parent.name.startswith(PREFIX) and (geom.contype or geom.conaffinity):
            geom.contype, geom.conaffinity = PANDA_CONTYPE, 0
    return scene


def controller_limits() -> dict[str, list]:
    """
    Return the policy node's joint parameters for this arm (what a URDF would give it).

    Names, the position ranges of the XML's joints (read from the installed gym-hil scene),
    and Franka's speed and acceleration limits (MAX_VELOCITY, MAX_ACCELERATION). Raises
    ImportError (with the install line) when gym-hil is missing.
    """
    model = build_panda_push_spec().compile()
    ids = [model.joint(name).id for name in JOINT_NAMES]
    return {'joint_names': list(JOINT_NAMES),
            'joint_position_lower': [float(v) for v in model.jnt_range[ids, 0]],
            'joint_position_upper': [float(v) for v in model.jnt_range[ids, 1]],
            'max_joint_velocity': list(MAX_VELOCITY),
            'max_joint_acceleration': list(MAX_ACCELERATION)}


class PandaPushEnv(ArmPushEnv):
    """
    Push a puck onto a goal with gym-hil's Franka Panda, observed through one 96x96 camera.

    State: the 7 arm joint positions (rad). Action: 7 joint position targets (rad) for the
    servos, held for one control period (see the module docstring for the actuation).
    """

    def __init__(self, image_size: int = 96, max_steps: int = DEFAULT_MAX_STEPS,
                 render: bool = True, control_hz: float = 10.0,
                 success_radius: float = 0.03) -> None:
        """
        Build the Panda scene; ``render=False`` makes no renderer and no images.

        ArmPushEnv's ``__init__`` checks the arguments and sets the episode bookkeeping; it also
        loads the small arm's model (about 2 ms), which is then replaced here: every
        model-dependent attribute that ArmPushEnv's methods read is bound to the Panda scene.
        Raises ImportError (with the install line) when gym-hil is missing.
        """
        super().__init__(image_size=image_size, max_steps=max_steps, render=False,
                         control_hz=control_hz, success_radius=success_radius)
        self.joint_names = list(JOINT_NAMES)
        self.max_velocity = np.array(MAX_VELOCITY, dtype=np.float64)
        self.home_qpos = np.array(HOME_QPOS, dtype=np.float64)
        self.pusher_radius = PUSHER_RADIUS
        self.push_height = PUSH_HEIGHT

        spec = build_panda_push_spec()
        spec.visual.global_.offwidth = max(spec.visual.global_.offwidth, image_size)
        spec.visual.global_.offheight = max(spec.visual.global_.offheight, image_size)
        model = self.model = spec.compile()
        joint_ids = [model.joint(name).id for name in JOINT_NAMES]
        self._qpos_adr = model.jnt_qposadr[joint_ids].copy()
        self._dof_adr = model.jnt_dofadr[joint_ids].copy()
        self.joint_limits = (model.jnt_range[joint_ids, 0].copy(),
                             model.jnt_range[joint_ids, 1].copy())
        self._actuator_ids = np.array([model.actuator(f'{PREFIX}actuator{i}').id
                                       for i in range(1, 8)])
        self._object_qpos_adr = model.jnt_qposadr[[model.joint('puck_x').id,
                                                   model.joint('puck_y').id]].copy()
        self._object_body = model.body('puck').id
        self._goal_mocap = model.body('goal').mocapid[0]
        self._tip_site = model.site(TIP_SITE).id
        self.object_radius = float(model.geom('puck').size[0])
        self._data = mujoco.MjData(model)
        # Scratch data for kinematic queries, so they never disturb the simulation.
        self._kin_data = mujoco.MjData(model)
        self._finger_qpos_adr, self._closed_finger_qpos = self._closed_gripper_pose()
        if render:
            self._renderer = mujoco.Renderer(model, height=image_size, width=image_size)
            for flag in RENDER_FLAGS_OFF:
                self._renderer.scene.flags[flag] = 0
            self._scene_option = mujoco.MjvOption()

    def reset(self, seed: int) -> dict[str, Any]:
        """
        Start an episode like ArmPushEnv.reset, with the gripper already closed; return obs.

        MuJoCo resets to the model's zero pose, where the fingers are open; the closed finger
        joints are put back afterwards. (``qpos0`` cannot hold them: hinge angles are measured
        from it.) With rendering on, the first frame is therefore rendered twice.
        """
        super().reset(seed)
        self._data.qpos[self._finger_qpos_adr] = self._closed_finger_qpos
        mujoco.mj_forward(self.model, self._data)
        return self._observation()

    def _closed_gripper_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Let the fingers close with the arm held at home; return (qpos addresses, values)."""
        data = mujoco.MjData(self.model)
        data.qpos[self._qpos_adr] = self.home_qpos
        data.ctrl[self._actuator_ids] = self.home_qpos
        # Park the puck away from the robot so nothing touches the fingers while they close.
        data.qpos[self._object_qpos_adr] = (OBJECT_X_RANGE[1], OBJECT_Y_RANGE[1])
        mujoco.mj_step(self.model, data, nstep=int(round(GRIPPER_SETTLE_S
                                                         / self.model.opt.timestep)))
        # Every joint that is neither the arm's nor the puck's belongs to the gripper.
        is_finger = np.ones(self.model.nq, dtype=bool)
        is_finger[self._qpos_adr] = False
        is_finger[self._object_qpos_adr] = False
        adr = np.flatnonzero(is_finger)
        return adr, data.qpos[adr].copy()

    def _sample_layout(self, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw (puck xy, goal xy, home joints) with ArmPushEnv's ranges, rules and draw order."""
        home = self.home_qpos.copy()
        # Joint 1 is the Panda's base yaw, like ArmPushEnv's first joint.
        home[0] += rng.uniform(-HOME_YAW_NOISE, HOME_YAW_NOISE)
        start_tip = self.kinematics(home).tip_pos[:2]
        object_low, object_high = zip(OBJECT_X_RANGE, OBJECT_Y_RANGE)
        goal_low, goal_high = zip(GOAL_X_RANGE, GOAL_Y_RANGE)
        for _ in range(1000):
            object_xy = rng.uniform(object_low, object_high)
            goal_xy = rng.uniform(goal_low, goal_high)
            if _feasible(object_xy, goal_xy, start_tip):
                return object_xy, goal_xy, home
        raise RuntimeError('could not sample a feasible layout in 1000 draws')  # pragma: no cover


def _feasible(object_xy: np.ndarray, goal_xy: np.ndarray, start_tip: np.ndarray) -> bool:
    """Apply ArmPushEnv's layout rules: a long enough push, a reachable approach, a clear start."""
    push = goal_xy - object_xy
    distance = float(np.linalg.norm(push))
    if distance < MIN_PUSH_DISTANCE:
        return False
    # Measured from the world origin as in ArmPushEnv, so both envs draw the same layouts.
    approach_reach = np.linalg.norm(object_xy - APPROACH_CLEARANCE * push / distance)
    return bool(REACH_RANGE[0] <= approach_reach <= REACH_RANGE[1]
                and np.linalg.norm(object_xy - start_tip) >= MIN_START_GAP)
