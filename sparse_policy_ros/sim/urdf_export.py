"""
Write the demo arm's URDF (and, with ``gazebo_world``, its Gazebo world) from the MuJoCo model.

The MJCF is the one description of the arm; ``urdf/arm_push.urdf`` is generated from the compiled
MuJoCo model so the two cannot drift apart (a test regenerates it and compares). What the URDF
takes from where:

- links, joint origins and axes, position limits, inertials and geometry: the compiled model
  (capsules become cylinders: URDF has no capsule);
- joint velocity limits: ``env.MAX_VELOCITY``, the rated speeds the simulator reports;
- joint effort limits: the position actuators' ``forcerange``;
- a ``<ros2_control>`` block for ``gz_ros2_control`` (position command interface, position and
  velocity state interfaces, the home pose as initial value) and the ``<gazebo>`` plugin tag
  that loads ``config/controllers.yaml``.

The plugin's ``<parameters>`` needs an absolute path, which a plain URDF cannot know: the file
carries ``CONTROLLERS_PLACEHOLDER`` and ``launch/gazebo.launch.py`` replaces it with the
installed path.

Usage: ``python -m sparse_policy_ros.sim.urdf_export [--check]`` writes (or compares)
``urdf/arm_push.urdf`` and ``worlds/arm_push.sdf``.
"""

import argparse
from pathlib import Path
import sys
import xml.etree.ElementTree as ElementTree

import mujoco
import numpy as np

from .env import ASSET_PATH, HOME_QPOS, JOINT_NAMES, MAX_VELOCITY

REPO_URDF = Path(__file__).resolve().parents[2] / 'urdf' / 'arm_push.urdf'
CONTROLLERS_PLACEHOLDER = '@CONTROLLERS_YAML@'
HARDWARE_PLUGIN = 'gz_ros2_control/GazeboSimSystem'
GAZEBO_PLUGIN = ('gz_ros2_control-system', 'gz_ros2_control::GazeboSimROS2ControlPlugin')
ARM_ROOT_BODY = 'base'


def number(value: float) -> str:
    """Format a float compactly and reproducibly (6 significant digits; rounding noise is 0)."""
    if abs(float(value)) < 1e-12:
        return '0'
    return f'{float(value):.6g}'


def vector(values) -> str:
    """Format a sequence of floats as URDF / SDF write them (space separated)."""
    return ' '.join(number(v) for v in values)


def matrix_to_rpy(r: np.ndarray) -> tuple[float, float, float]:
    """Return roll-pitch-yaw (fixed X, then Y, then Z; URDF and SDF) of a 3x3 rotation matrix."""
    r = np.asarray(r, dtype=np.float64).reshape(3, 3)
    pitch = float(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    if abs(r[2, 0]) < 1.0 - 1e-9:
        roll = float(np.arctan2(r[2, 1], r[2, 2]))
        yaw = float(np.arctan2(r[1, 0], r[0, 0]))
    else:  # gimbal lock: put the whole rotation into yaw
        roll = 0.0
        yaw = float(np.arctan2(-r[0, 1], r[1, 1]))
    return roll, pitch, yaw


def quat_to_matrix(quat: np.ndarray) -> np.ndarray:
    """Return the 3x3 rotation matrix of a MuJoCo (w, x, y, z) quaternion."""
    matrix = np.zeros(9)
    mujoco.mju_quat2Mat(matrix, np.asarray(quat, dtype=np.float64))
    return matrix.reshape(3, 3)


def quat_to_rpy(quat: np.ndarray) -> tuple[float, float, float]:
    """Return URDF roll-pitch-yaw of a MuJoCo (w, x, y, z) quaternion."""
    return matrix_to_rpy(quat_to_matrix(quat))


def _origin(parent: ElementTree.Element, pos, quat) -> None:
    attributes = {'xyz': vector(pos)}
    rpy = quat_to_rpy(quat)
    if any(abs(a) > 1e-9 for a in rpy):
        attributes['rpy'] = vector(rpy)
    ElementTree.SubElement(parent, 'origin', attributes)


def _geometry(parent: ElementTree.Element, model: mujoco.MjModel, geom_id: int) -> None:
    kind = int(model.geom_type[geom_id])
    size = model.geom_size[geom_id]
    geometry = ElementTree.SubElement(parent, 'geometry')
    if kind == int(mujoco.mjtGeom.mjGEOM_BOX):
        ElementTree.SubElement(geometry, 'box', {'size': vector(2.0 * size)})
    elif kind in (int(mujoco.mjtGeom.mjGEOM_CYLINDER), int(mujoco.mjtGeom.mjGEOM_CAPSULE)):
        capsule = kind == int(mujoco.mjtGeom.mjGEOM_CAPSULE)
        length = 2.0 * size[1] + (2.0 * size[0] if capsule else 0.0)  # the caps included
        ElementTree.SubElement(geometry, 'cylinder',
                               {'radius': number(size[0]), 'length': number(length)})
    elif kind == int(mujoco.mjtGeom.mjGEOM_SPHERE):
        ElementTree.SubElement(geometry, 'sphere', {'radius': number(size[0])})
    else:
        raise ValueError(f'geom {model.geom(geom_id).name!r}: type {int(kind)} has no URDF shape')


def _link(robot: ElementTree.Element, model: mujoco.MjModel, body_id: int) -> None:
    link = ElementTree.SubElement(robot, 'link', {'name': model.body(body_id).name})
    if model.body_mass[body_id] > 0.0:
        inertial = ElementTree.SubElement(link, 'inertial')
        _origin(inertial, model.body_ipos[body_id], model.body_iquat[body_id])
        ElementTree.SubElement(inertial, 'mass', {'value': number(model.body_mass[body_id])})
        ixx, iyy, izz = model.body_inertia[body_id]
        ElementTree.SubElement(inertial, 'inertia', {
            'ixx': number(ixx), 'ixy': '0', 'ixz': '0', 'iyy': number(iyy), 'iyz': '0',
            'izz': number(izz)})
    for geom_id in np.flatnonzero(model.geom_bodyid == body_id):
        name = model.geom(geom_id).name
        colliding = model.geom_contype[geom_id] != 0 or model.geom_conaffinity[geom_id] != 0
        for tag in ('visual', 'collision') if colliding else ('visual',):
            element = ElementTree.SubElement(link, tag, {'name': name})
            _origin(element, model.geom_pos[geom_id], model.geom_quat[geom_id])
            _geometry(element, model, int(geom_id))
            if tag == 'visual':
                material = model.geom_matid[geom_id]
                rgba = model.mat_rgba[material] if material >= 0 else model.geom_rgba[geom_id]
                material_name = (model.material(material).name if material >= 0
                                 else f'{name}_color')
                element_material = ElementTree.SubElement(element, 'material',
                                                          {'name': material_name})
                ElementTree.SubElement(element_material, 'color', {'rgba': vector(rgba)})


def _site_frames(robot: ElementTree.Element, model: mujoco.MjModel, body_id: int) -> None:
    """Add each site of the body (the tool tip) as a massless link on a fixed joint."""
    for site_id in np.flatnonzero(model.site_bodyid == body_id):
        name = model.site(site_id).name
        ElementTree.SubElement(robot, 'link', {'name': name})
        joint = ElementTree.SubElement(robot, 'joint', {
            'name': f'{model.body(body_id).name}_to_{name}', 'type': 'fixed'})
        ElementTree.SubElement(joint, 'parent', {'link': model.body(body_id).name})
        ElementTree.SubElement(joint, 'child', {'link': name})
        _origin(joint, model.site_pos[site_id], model.site_quat[site_id])


def _arm_bodies(model: mujoco.MjModel) -> list[int]:
    """Body ids of the arm (the root body and its descendants), in tree order."""
    root = model.body(ARM_ROOT_BODY).id
    bodies = []
    for body_id in range(model.nbody):
        ancestor = body_id
        while ancestor not in (0, root):
            ancestor = model.body_parentid[ancestor]
        if ancestor == root:
            bodies.append(body_id)
    return bodies


def _actuator_force_limits(model: mujoco.MjModel) -> dict[str, float]:
    limits = {}
    for actuator_id in range(model.nu):
        joint_id = model.actuator_trnid[actuator_id, 0]
        low, high = model.actuator_forcerange[actuator_id]
        limits[model.joint(joint_id).name] = float(max(abs(low), abs(high)))
    return limits


def _ros2_control(robot: ElementTree.Element, lower_upper: dict[str, tuple[float, float]]) -> None:
    block = ElementTree.SubElement(robot, 'ros2_control', {'name': 'GazeboSimSystem',
                                                           'type': 'system'})
    hardware = ElementTree.SubElement(block, 'hardware')
    ElementTree.SubElement(hardware, 'plugin').text = HARDWARE_PLUGIN
    for name, home in zip(JOINT_NAMES, HOME_QPOS):
        joint = ElementTree.SubElement(block, 'joint', {'name': name})
        command = ElementTree.SubElement(joint, 'command_interface', {'name': 'position'})
        for key, value in zip(('min', 'max'), lower_upper[name]):
            ElementTree.SubElement(command, 'param', {'name': key}).text = number(value)
        state = ElementTree.SubElement(joint, 'state_interface', {'name': 'position'})
        ElementTree.SubElement(state, 'param', {'name': 'initial_value'}).text = number(home)
        ElementTree.SubElement(joint, 'state_interface', {'name': 'velocity'})
    gazebo = ElementTree.SubElement(robot, 'gazebo')
    plugin = ElementTree.SubElement(gazebo, 'plugin', {'filename': GAZEBO_PLUGIN[0],
                                                       'name': GAZEBO_PLUGIN[1]})
    ElementTree.SubElement(plugin, 'parameters').text = CONTROLLERS_PLACEHOLDER


def urdf_from_mjcf(mjcf_path: Path = ASSET_PATH) -> str:
    """Return the URDF text of the arm in ``mjcf_path``."""
    model = mujoco.MjModel.from_xml_path(str(mjcf_path))
    if model.body(ARM_ROOT_BODY).id < 0:
        raise ValueError(f'{mjcf_path}: no body named {ARM_ROOT_BODY!r}')
    robot = ElementTree.Element('robot', {'name': model.names[:model.names.index(b'\0')].decode()
                                          or 'arm'})
    robot.insert(0, ElementTree.Comment(
        f' Generated by python -m sparse_policy_ros.sim.urdf_export from '
        f'{mjcf_path.name}; do not edit by hand. '))
    ElementTree.SubElement(robot, 'link', {'name': 'world'})
    efforts = _actuator_force_limits(model)
    velocities = dict(zip(JOINT_NAMES, MAX_VELOCITY))
    lower_upper = {}
    root = model.body(ARM_ROOT_BODY).id
    for body_id in _arm_bodies(model):
        _link(robot, model, body_id)
        parent_id = model.body_parentid[body_id]
        parent = 'world' if body_id == root else model.body(parent_id).name
        if model.body_jntnum[body_id] == 0:
            joint = ElementTree.SubElement(robot, 'joint', {
                'name': f'{parent}_to_{model.body(body_id).name}', 'type': 'fixed'})
        elif model.body_jntnum[body_id] == 1:
            joint_id = model.body_jntadr[body_id]
            name = model.joint(joint_id).name
            if int(model.jnt_type[joint_id]) != int(mujoco.mjtJoint.mjJNT_HINGE):
                raise ValueError(f'joint {name!r}: only hinge joints are exported')
            if name not in velocities:
                raise ValueError(f'joint {name!r} is not one of the arm joints {JOINT_NAMES}')
            limited = bool(model.jnt_limited[joint_id])
            joint = ElementTree.SubElement(robot, 'joint', {
                'name': name, 'type': 'revolute' if limited else 'continuous'})
        else:
            raise ValueError(f'body {model.body(body_id).name!r} has more than one joint')
        ElementTree.SubElement(joint, 'parent', {'link': parent})
        ElementTree.SubElement(joint, 'child', {'link': model.body(body_id).name})
        _origin(joint, model.body_pos[body_id], model.body_quat[body_id])
        if model.body_jntnum[body_id] == 1:
            if np.any(model.jnt_pos[joint_id] != 0.0):
                raise ValueError(f'joint {name!r}: an anchor off the body origin is not exported')
            ElementTree.SubElement(joint, 'axis', {'xyz': vector(model.jnt_axis[joint_id])})
            limit = {'effort': number(efforts[name]), 'velocity': number(velocities[name])}
            if limited:
                lower, upper = model.jnt_range[joint_id]
                lower_upper[name] = (float(lower), float(upper))
                limit.update(lower=number(lower), upper=number(upper))
            ElementTree.SubElement(joint, 'limit', limit)
        _site_frames(robot, model, body_id)
    missing = [name for name in JOINT_NAMES if name not in lower_upper]
    if missing:
        raise ValueError(f'{mjcf_path}: arm joints {missing} are missing or unlimited')
    _ros2_control(robot, lower_upper)
    ElementTree.indent(robot, space='  ')
    return '<?xml version="1.0"?>\n' + ElementTree.tostring(robot, encoding='unicode') + '\n'


def generated_files() -> dict[Path, str]:
    """Return {repo path: text} of every file generated from the MJCF (URDF and Gazebo world)."""
    from .gazebo_world import REPO_WORLD, world_from_mjcf
    return {REPO_URDF: urdf_from_mjcf(), REPO_WORLD: world_from_mjcf()}


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the URDF and the Gazebo world."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--check', action='store_true',
                        help='exit 1 if a file differs from what would be written')
    args = parser.parse_args(argv)
    stale = 0
    for path, text in generated_files().items():
        if args.check:
            current = path.read_text() if path.exists() else ''
            if current != text:
                print(f'{path} is out of date: run python -m sparse_policy_ros.sim.urdf_export',
                      file=sys.stderr)
                stale += 1
            else:
                print(f'{path} is up to date')
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f'wrote {path}')
    return 1 if stale else 0


if __name__ == '__main__':
    sys.exit(main())
