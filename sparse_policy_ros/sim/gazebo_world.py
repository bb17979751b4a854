"""
Write the Gazebo (gz sim) world of the push task from its MuJoCo model: ``worlds/arm_push.sdf``.

Like the URDF (``urdf_export``), the world is generated from the compiled MJCF so the two agree:
the table (pose, size, colour), the puck (size, mass, friction), the goal disc and the fixed
'front' camera (pose, vertical field of view, the policy's 96x96 image) come from the model. The
arm is not in the world: ``launch/gazebo.launch.py`` spawns it from the URDF with
``ros_gz_sim create``.

What differs from the MuJoCo task, by necessity:

- the puck is a free body resting on the table (MuJoCo slides it on two joints with Coulomb
  friction), so it can tip if pushed high; push at mid-height as the policy does;
- there are no episodes: the world holds one layout (``PUCK_XY``, ``GOAL_XY``, a feasible draw
  of the simulator's ranges); move the puck with Gazebo's set_pose service or the GUI;
- the camera's image is lit by Gazebo's renderer, not MuJoCo's, so the policy sees a domain
  shift (its 96x96 size and pose are the same).
"""

import math
from pathlib import Path
import xml.etree.ElementTree as ElementTree

import mujoco
import numpy as np

from .env import ASSET_PATH, CAMERA_NAMES
from .urdf_export import matrix_to_rpy, number, quat_to_matrix, vector

REPO_WORLD = Path(__file__).resolve().parents[2] / 'worlds' / 'arm_push.sdf'
SDF_VERSION = '1.9'
IMAGE_SIZE = 96
CAMERA_RATE = 20.0  # images per simulated second, as config/sim.yaml's camera_rate
# One feasible layout of the simulator's ranges (env.OBJECT_*_RANGE, env.GOAL_*_RANGE).
PUCK_XY = (0.38, -0.08)
GOAL_XY = (0.38, 0.10)
SYSTEM_PLUGINS = (
    ('gz-sim-physics-system', 'gz::sim::systems::Physics'),
    ('gz-sim-user-commands-system', 'gz::sim::systems::UserCommands'),
    ('gz-sim-scene-broadcaster-system', 'gz::sim::systems::SceneBroadcaster'),
    ('gz-sim-sensors-system', 'gz::sim::systems::Sensors'),
)


def camera_topic(name: str) -> str:
    """Gazebo (and, through ros_gz_bridge, ROS) topic of camera ``name``."""
    return f'/camera/{name}/image_raw'


def _text(parent: ElementTree.Element, tag: str, text: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag)
    element.text = text
    return element


def _pose(parent: ElementTree.Element, position, rotation: np.ndarray | None = None) -> None:
    rpy = (0.0, 0.0, 0.0) if rotation is None else matrix_to_rpy(rotation)
    _text(parent, 'pose', vector((*position, *rpy)))


def _material(parent: ElementTree.Element, rgba) -> None:
    material = ElementTree.SubElement(parent, 'material')
    for tag in ('ambient', 'diffuse'):
        _text(material, tag, vector(rgba))
    _text(material, 'specular', '0.1 0.1 0.1 1')


def _geom_rgba(model: mujoco.MjModel, geom_id: int) -> np.ndarray:
    material = model.geom_matid[geom_id]
    return model.mat_rgba[material] if material >= 0 else model.geom_rgba[geom_id]


def _shape(parent: ElementTree.Element, model: mujoco.MjModel, geom_id: int) -> None:
    geometry = ElementTree.SubElement(parent, 'geometry')
    size = model.geom_size[geom_id]
    kind = int(model.geom_type[geom_id])
    if kind == int(mujoco.mjtGeom.mjGEOM_BOX):
        _text(ElementTree.SubElement(geometry, 'box'), 'size', vector(2.0 * size))
    elif kind == int(mujoco.mjtGeom.mjGEOM_CYLINDER):
        cylinder = ElementTree.SubElement(geometry, 'cylinder')
        _text(cylinder, 'radius', number(size[0]))
        _text(cylinder, 'length', number(2.0 * size[1]))
    else:
        raise ValueError(f'geom {model.geom(geom_id).name!r}: type {kind} is not exported')


def _friction(parent: ElementTree.Element, mu: float) -> None:
    friction = ElementTree.SubElement(ElementTree.SubElement(parent, 'surface'), 'friction')
    ode = ElementTree.SubElement(friction, 'ode')
    _text(ode, 'mu', number(mu))
    _text(ode, 'mu2', number(mu))


def _geometry_and_looks(link: ElementTree.Element, model: mujoco.MjModel, geom_id: int,
                        collide: bool) -> None:
    """Add the geom's collision (with its friction) if ``collide``, and its visual."""
    if collide:
        collision = ElementTree.SubElement(link, 'collision', {'name': 'collision'})
        _shape(collision, model, geom_id)
        _friction(collision, float(model.geom_friction[geom_id, 0]))
    visual = ElementTree.SubElement(link, 'visual', {'name': 'visual'})
    _shape(visual, model, geom_id)
    _material(visual, _geom_rgba(model, geom_id))


def _static_model(world: ElementTree.Element, model: mujoco.MjModel, geom: str, position,
                  collide: bool) -> None:
    element = ElementTree.SubElement(world, 'model', {'name': geom})
    _text(element, 'static', 'true')
    _pose(element, position)
    link = ElementTree.SubElement(element, 'link', {'name': 'link'})
    _geometry_and_looks(link, model, model.geom(geom).id, collide)


def _puck(world: ElementTree.Element, model: mujoco.MjModel) -> None:
    body_id = model.body('puck').id
    element = ElementTree.SubElement(world, 'model', {'name': 'puck'})
    _pose(element, (*PUCK_XY, float(model.body_pos[body_id, 2])))
    link = ElementTree.SubElement(element, 'link', {'name': 'link'})
    inertial = ElementTree.SubElement(link, 'inertial')
    _text(inertial, 'mass', number(model.body_mass[body_id]))
    inertia = ElementTree.SubElement(inertial, 'inertia')
    ixx, iyy, izz = model.body_inertia[body_id]
    for tag, value in (('ixx', ixx), ('ixy', 0.0), ('ixz', 0.0), ('iyy', iyy), ('iyz', 0.0),
                       ('izz', izz)):
        _text(inertia, tag, number(value))
    _geometry_and_looks(link, model, model.geom('puck').id, collide=True)


def camera_rotation(model: mujoco.MjModel, camera: str) -> np.ndarray:
    """
    Return the world rotation of a Gazebo camera link that sees what MuJoCo camera ``camera`` sees.

    A MuJoCo camera looks along its -z with image right = +x, image up = +y; a Gazebo camera
    looks along its link's +x with image left = +y, image up = +z.
    """
    mj = quat_to_matrix(model.cam_quat[model.camera(camera).id])
    if model.cam_bodyid[model.camera(camera).id] != 0:
        raise ValueError(f'camera {camera!r} is not fixed in the world')
    return np.column_stack([-mj[:, 2], -mj[:, 0], mj[:, 1]])


def _camera(world: ElementTree.Element, model: mujoco.MjModel, name: str) -> None:
    camera_id = model.camera(name).id
    element = ElementTree.SubElement(world, 'model', {'name': f'{name}_camera'})
    _text(element, 'static', 'true')
    _pose(element, model.cam_pos[camera_id], camera_rotation(model, name))
    link = ElementTree.SubElement(element, 'link', {'name': 'link'})
    sensor = ElementTree.SubElement(link, 'sensor', {'name': name, 'type': 'camera'})
    _text(sensor, 'always_on', 'true')
    _text(sensor, 'update_rate', number(CAMERA_RATE))
    _text(sensor, 'topic', camera_topic(name))
    camera = ElementTree.SubElement(sensor, 'camera')
    fovy = math.radians(float(model.cam_fovy[camera_id]))
    # Square image: the horizontal field of view equals MuJoCo's vertical fovy.
    _text(camera, 'horizontal_fov', number(fovy))
    image = ElementTree.SubElement(camera, 'image')
    _text(image, 'width', str(IMAGE_SIZE))
    _text(image, 'height', str(IMAGE_SIZE))
    _text(image, 'format', 'R8G8B8')
    clip = ElementTree.SubElement(camera, 'clip')
    _text(clip, 'near', '0.01')
    _text(clip, 'far', '5')


def world_from_mjcf(mjcf_path: Path = ASSET_PATH) -> str:
    """Return the SDF text of the push task's world (without the arm)."""
    model = mujoco.MjModel.from_xml_path(str(mjcf_path))
    sdf = ElementTree.Element('sdf', {'version': SDF_VERSION})
    sdf.append(ElementTree.Comment(
        f' Generated by python -m sparse_policy_ros.sim.urdf_export from {mjcf_path.name}; '
        'do not edit by hand. '))
    world = ElementTree.SubElement(sdf, 'world', {'name': 'arm_push'})
    physics = ElementTree.SubElement(world, 'physics', {'name': 'mjcf_step', 'type': 'ignored'})
    _text(physics, 'max_step_size', number(model.opt.timestep))
    _text(physics, 'real_time_factor', '1')
    for filename, name in SYSTEM_PLUGINS:
        plugin = ElementTree.SubElement(world, 'plugin', {'filename': filename, 'name': name})
        if name.endswith('Sensors'):
            _text(plugin, 'render_engine', 'ogre2')
    _text(world, 'gravity', vector(model.opt.gravity))
    light_id = model.light('sun').id
    light = ElementTree.SubElement(world, 'light', {'name': 'sun', 'type': 'directional'})
    _text(light, 'cast_shadows', 'false')
    _pose(light, model.light_pos[light_id])
    _text(light, 'diffuse', vector((*model.light_diffuse[light_id], 1.0)))
    _text(light, 'specular', '0 0 0 1')
    _text(light, 'direction', vector(model.light_dir[light_id]))
    _static_model(world, model, 'table', model.geom_pos[model.geom('table').id], collide=True)
    _puck(world, model)
    goal_geom = model.geom('goal').id
    _static_model(world, model, 'goal', (*GOAL_XY, float(model.geom_pos[goal_geom, 2])),
                  collide=False)
    for name in CAMERA_NAMES:
        _camera(world, model, name)
    ElementTree.indent(sdf, space='  ')
    return '<?xml version="1.0"?>\n' + ElementTree.tostring(sdf, encoding='unicode') + '\n'
