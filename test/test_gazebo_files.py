"""
The demo arm's URDF, ros2_control controllers, Gazebo world and gz launch, checked structurally.

Gazebo does not install on these machines: these tests check that the files agree with the MJCF
(``sim/assets/arm_push.xml``), with ``config/policy.yaml`` and with each other. The launch file
is imported only where ``launch_ros`` is installed.
"""

import ast
import importlib.util
import json
from pathlib import Path
import xml.etree.ElementTree as ElementTree

from launch_files import launch_arguments
import mujoco
import numpy as np
import pytest
from sparse_policy_ros.ros.robot_description import load_robot_description, parse_urdf
from sparse_policy_ros.ros.robot_description import resolve_joint_limits, resolve_joint_names
from sparse_policy_ros.sim import env as arm_env
from sparse_policy_ros.sim import urdf_export
import yaml

REPO = Path(__file__).resolve().parents[1]
URDF = REPO / 'urdf' / 'arm_push.urdf'
WORLD = REPO / 'worlds' / 'arm_push.sdf'
CONTROLLERS = REPO / 'config' / 'controllers.yaml'
GAZEBO_LAUNCH = REPO / 'launch' / 'gazebo.launch.py'


@pytest.fixture(scope='module')
def model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(arm_env.ASSET_PATH))


@pytest.fixture(scope='module')
def policy_params() -> dict:
    config = yaml.safe_load((REPO / 'config' / 'policy.yaml').read_text())
    return config['/**/policy_node']['ros__parameters']


def _launch_constants(path: Path) -> dict:
    """Module-level constant assignments of a launch file (read without importing it)."""
    constants = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, AttributeError):
                pass
    return constants


def test_generated_files_are_up_to_date():
    for path, text in urdf_export.generated_files().items():
        assert path.read_text() == text, (
            f'{path} differs from the MJCF: run python -m sparse_policy_ros.sim.urdf_export')
    assert urdf_export.main(['--check']) == 0


def test_urdf_joints_axes_and_limits_equal_the_mjcf(model):
    description = parse_urdf(URDF.read_text(), str(URDF))
    assert description.commandable_joint_names() == list(arm_env.JOINT_NAMES)
    for name, velocity in zip(arm_env.JOINT_NAMES, arm_env.MAX_VELOCITY):
        joint = description.joint(name)
        joint_id = model.joint(name).id
        assert joint.kind == 'revolute'
        np.testing.assert_allclose(joint.axis, model.jnt_axis[joint_id], atol=1e-9)
        np.testing.assert_allclose((joint.lower, joint.upper), model.jnt_range[joint_id],
                                   atol=1e-6)
        assert joint.velocity == pytest.approx(velocity)
        actuator = model.actuator(name).id
        assert joint.effort == pytest.approx(np.abs(model.actuator_forcerange[actuator]).max())
    # The chain: each arm joint's child is the next one's parent, from the world down.
    chain = [description.joint(name) for name in arm_env.JOINT_NAMES]
    assert [j.child for j in chain[:-1]] == [j.parent for j in chain[1:]]


def test_urdf_joint_origins_reproduce_the_mjcf_tool_tip(model):
    """Forward kinematics through the URDF's origins lands on MuJoCo's 'tip' site."""
    root = ElementTree.fromstring(URDF.read_text())
    joints = {j.find('child').get('link'): j for j in root.findall('joint')}
    data = mujoco.MjData(model)
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.uniform(model.jnt_range[:4, 0], model.jnt_range[:4, 1])
        data.qpos[:4] = q
        mujoco.mj_forward(model, data)
        angles = dict(zip(arm_env.JOINT_NAMES, q))
        transform, link = np.eye(4), 'tip'
        while link != 'world':
            joint = joints[link]
            origin = joint.find('origin')
            local = np.eye(4)
            local[:3, 3] = [float(v) for v in origin.get('xyz').split()]
            rpy = [float(v) for v in origin.get('rpy', '0 0 0').split()]
            local[:3, :3] = _rpy_matrix(rpy)
            if joint.get('type') == 'revolute':
                axis = np.array([float(v) for v in joint.find('axis').get('xyz').split()])
                rotation = np.eye(4)
                rotation[:3, :3] = _axis_angle(axis, angles[joint.get('name')])
                local = local @ rotation
            transform = local @ transform
            link = joint.find('parent').get('link')
        np.testing.assert_allclose(transform[:3, 3], data.site('tip').xpos, atol=1e-5)


def _rpy_matrix(rpy) -> np.ndarray:
    roll, pitch, yaw = rpy
    rx = _axis_angle(np.array([1.0, 0, 0]), roll)
    ry = _axis_angle(np.array([0, 1.0, 0]), pitch)
    rz = _axis_angle(np.array([0, 0, 1.0]), yaw)
    return rz @ ry @ rx


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_policy_yaml_takes_joints_and_limits_from_the_urdf(model, policy_params):
    description = load_robot_description(policy_params.get('robot_description', ''),
                                         policy_params['robot_description_file'])
    assert description is not None and Path(description.source).resolve() == URDF
    names = resolve_joint_names(policy_params.get('joint_names', []), description)
    assert names == tuple(arm_env.JOINT_NAMES)
    settings = {param: policy_params.get(param, [])
                for param in ('joint_position_lower', 'joint_position_upper',
                              'max_joint_velocity', 'max_joint_acceleration')}
    limits, origins, warnings = resolve_joint_limits(settings, names, description)
    assert warnings == []
    assert origins['joint_position_lower'] == description.source
    np.testing.assert_allclose(np.column_stack([limits.lower, limits.upper]),
                               model.jnt_range[:4], atol=1e-6)
    np.testing.assert_allclose(limits.max_velocity, arm_env.MAX_VELOCITY)
    shipped = json.loads((REPO / 'models' / 'default' / 'config.json').read_text())
    assert shipped['policy']['extra']['joint_names'] == list(names)


def test_controllers_file_commands_exactly_the_urdf_joints(policy_params):
    controllers = yaml.safe_load(CONTROLLERS.read_text())
    manager = controllers['controller_manager']['ros__parameters']
    assert manager['joint_state_broadcaster']['type'] == (
        'joint_state_broadcaster/JointStateBroadcaster')
    assert manager['arm_controller']['type'] == (
        'joint_trajectory_controller/JointTrajectoryController')
    arm = controllers['arm_controller']['ros__parameters']
    urdf_joints = parse_urdf(URDF.read_text()).commandable_joint_names()
    assert arm['joints'] == urdf_joints
    assert arm['command_interfaces'] == ['position']
    assert set(arm['state_interfaces']) == {'position', 'velocity'}
    assert arm['allow_nonzero_velocity_at_trajectory_end'] is False  # what the node's chunks meet
    assert policy_params['controller_topic'] == '/arm_controller/joint_trajectory'
    # The URDF's ros2_control block offers those interfaces for the same joints.
    block = ElementTree.fromstring(URDF.read_text()).find('ros2_control')
    assert block.find('hardware/plugin').text == 'gz_ros2_control/GazeboSimSystem'
    interfaces = {joint.get('name'): ([c.get('name') for c in joint.findall('command_interface')],
                                      {s.get('name') for s in joint.findall('state_interface')})
                  for joint in block.findall('joint')}
    assert list(interfaces) == urdf_joints
    for commands, states in interfaces.values():
        assert commands == arm['command_interfaces']
        assert set(arm['state_interfaces']) <= states
    # The launch spawns exactly these controllers, and fills in this file's path.
    constants = _launch_constants(GAZEBO_LAUNCH)
    assert set(constants['CONTROLLERS']) == {'joint_state_broadcaster', 'arm_controller'}
    assert constants['CONTROLLERS_PLACEHOLDER'] == urdf_export.CONTROLLERS_PLACEHOLDER
    gazebo_plugin = ElementTree.fromstring(URDF.read_text()).find('gazebo/plugin')
    assert gazebo_plugin.find('parameters').text == urdf_export.CONTROLLERS_PLACEHOLDER


def test_world_has_table_puck_goal_and_the_policy_camera(model, policy_params):
    world = ElementTree.fromstring(WORLD.read_text()).find('world')
    models = {element.get('name'): element for element in world.findall('model')}
    assert {'table', 'puck', 'goal', 'front_camera'} <= set(models)
    puck = [float(v) for v in models['puck'].find('pose').text.split()]
    goal = [float(v) for v in models['goal'].find('pose').text.split()]
    assert arm_env.OBJECT_X_RANGE[0] <= puck[0] <= arm_env.OBJECT_X_RANGE[1]
    assert arm_env.OBJECT_Y_RANGE[0] <= puck[1] <= arm_env.OBJECT_Y_RANGE[1]
    assert arm_env.GOAL_X_RANGE[0] <= goal[0] <= arm_env.GOAL_X_RANGE[1]
    assert arm_env.GOAL_Y_RANGE[0] <= goal[1] <= arm_env.GOAL_Y_RANGE[1]
    assert np.hypot(puck[0] - goal[0], puck[1] - goal[1]) >= arm_env.MIN_PUSH_DISTANCE
    assert models['goal'].find('link/collision') is None  # a visual marker, as in MuJoCo
    sensor = models['front_camera'].find('link/sensor')
    assert sensor.get('type') == 'camera'
    topic = sensor.find('topic').text
    assert topic == '/' + policy_params['image_topics'][0]
    bridged = _launch_constants(GAZEBO_LAUNCH)['BRIDGED_TOPICS']
    assert f'{topic}@sensor_msgs/msg/Image[gz.msgs.Image' in bridged
    assert '/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock' in bridged
    image = sensor.find('camera/image')
    assert (int(image.find('width').text), int(image.find('height').text)) == (96, 96)
    camera_id = model.camera('front').id
    assert float(sensor.find('camera/horizontal_fov').text) == pytest.approx(
        np.radians(model.cam_fovy[camera_id]), abs=1e-5)
    # Gazebo's camera looks along its link's +x with +z up; MuJoCo's along -z with +y up.
    pose = [float(v) for v in models['front_camera'].find('pose').text.split()]
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    np.testing.assert_allclose(pose[:3], data.cam_xpos[camera_id], atol=1e-6)
    mj_axes = data.cam_xmat[camera_id].reshape(3, 3)
    gz_axes = _rpy_matrix(pose[3:])
    np.testing.assert_allclose(gz_axes[:, 0], -mj_axes[:, 2], atol=1e-5)
    np.testing.assert_allclose(gz_axes[:, 2], mj_axes[:, 1], atol=1e-5)
    table = models['table']
    assert table.find('static').text == 'true'
    size = [float(v) for v in table.find('link/collision/geometry/box/size').text.split()]
    np.testing.assert_allclose(size, 2 * model.geom_size[model.geom('table').id])
    assert float(world.find('physics/max_step_size').text) == pytest.approx(model.opt.timestep)


def test_gazebo_launch_arguments_are_described_and_used():
    declared, used = launch_arguments(GAZEBO_LAUNCH)
    assert {'world', 'gui', 'params_file', 'model_path', 'device', 'output_type',
            'require_arming', 'log_level'} <= set(declared)
    assert all(len(text) > 10 for text in declared.values()), declared
    assert used == set(declared)
    text = GAZEBO_LAUNCH.read_text()
    for package in ('ros_gz_sim', 'ros_gz_bridge', 'controller_manager', 'robot_state_publisher'):
        assert f"'{package}'" in text, package


def test_gazebo_launch_imports_where_launch_is_installed():
    if importlib.util.find_spec('launch_ros') is None:
        pytest.skip('launch_ros is not installed here (ROS 2 launch comes with a full Jazzy '
                    'install); the file is checked with ast above')
    spec = importlib.util.spec_from_file_location('gazebo_launch', GAZEBO_LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    urdf = module.robot_description_text(str(REPO))
    assert urdf_export.CONTROLLERS_PLACEHOLDER not in urdf
    plugin = ElementTree.fromstring(urdf).find('gazebo/plugin/parameters').text
    assert Path(plugin) == CONTROLLERS
    assert parse_urdf(urdf).commandable_joint_names() == list(arm_env.JOINT_NAMES)
