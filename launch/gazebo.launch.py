"""
Run the policy on the demo arm in Gazebo (gz sim Harmonic, ROS 2 Jazzy) through ros2_control.

Starts gz sim with ``worlds/arm_push.sdf`` (table, puck, goal, the fixed 'front' camera),
robot_state_publisher with ``urdf/arm_push.urdf``, spawns the arm from ``/robot_description``
(``ros_gz_sim create``), bridges ``/clock`` and the camera (``ros_gz_bridge``), spawns
joint_state_broadcaster and arm_controller (``config/controllers.yaml``, loaded by the
gz_ros2_control plugin named in the URDF) and, once both controllers are active, policy_node
with ``use_sim_time`` and the same URDF text as its robot description.

Not run in Gazebo on the project's machines (Gazebo does not install there): the tests check
the files structurally. Needs ``ros-jazzy-ros-gz``, ``ros-jazzy-gz-ros2-control``,
``ros-jazzy-ros2-controllers`` and ``ros-jazzy-robot-state-publisher``.

Examples::

    ros2 launch sparse_policy_ros gazebo.launch.py
    ros2 launch sparse_policy_ros gazebo.launch.py gui:=false output_type:=preview
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.actions import RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'sparse_policy_ros'
# Stands for config/controllers.yaml's absolute path in the URDF (sim/urdf_export.py).
CONTROLLERS_PLACEHOLDER = '@CONTROLLERS_YAML@'
# Gazebo topics bridged to ROS: gz -> ROS only ('[').
BRIDGED_TOPICS = (
    '/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
    '/camera/front/image_raw@sensor_msgs/msg/Image[gz.msgs.Image',
)
CONTROLLERS = ('joint_state_broadcaster', 'arm_controller')


def robot_description_text(share: str) -> str:
    """Return the URDF with the controllers file's installed path filled in."""
    with open(os.path.join(share, 'urdf', 'arm_push.urdf'), encoding='utf-8') as file:
        urdf = file.read()
    return urdf.replace(CONTROLLERS_PLACEHOLDER,
                        os.path.join(share, 'config', 'controllers.yaml'))


def _flag(context, name: str) -> bool:
    """Return boolean launch argument ``name``; anything but true/false is an error naming it."""
    value = LaunchConfiguration(name).perform(context)
    if value.lower() not in ('true', 'false'):
        raise ValueError(f'launch argument {name}: expected true or false, got {value!r}')
    return value.lower() == 'true'


def _nodes(context) -> list:
    """Build the nodes once the arguments are known (the URDF text is read here)."""
    share = get_package_share_directory(PACKAGE)
    urdf = robot_description_text(share)
    gui = _flag(context, 'gui')
    world = LaunchConfiguration('world').perform(context)
    log_level = ['--log-level', LaunchConfiguration('log_level')]
    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(
            get_package_share_directory('ros_gz_sim'), 'launch', 'gz_sim.launch.py')),
        launch_arguments={'gz_args': f'-r {"" if gui else "-s "}{world}',
                          'on_exit_shutdown': 'true'}.items())
    state_publisher = Node(
        package='robot_state_publisher', executable='robot_state_publisher', output='screen',
        parameters=[{'robot_description': urdf, 'use_sim_time': True}],
        ros_arguments=log_level)
    create = Node(
        package='ros_gz_sim', executable='create', output='screen',
        arguments=['-topic', 'robot_description', '-name', 'arm_push'])
    bridge = Node(
        package='ros_gz_bridge', executable='parameter_bridge', output='screen',
        arguments=list(BRIDGED_TOPICS), parameters=[{'use_sim_time': True}],
        ros_arguments=log_level)
    spawners = [
        Node(package='controller_manager', executable='spawner', output='screen',
             arguments=[name, '--controller-manager', '/controller_manager'])
        for name in CONTROLLERS]
    policy_node = Node(
        package=PACKAGE, executable='policy_node', name='policy_node', output='screen',
        emulate_tty=True,
        parameters=[
            LaunchConfiguration('params_file'),
            {'use_sim_time': True,
             'robot_description': urdf,
             'robot_description_file': '',
             'episode_start_topic': '',  # gz has no episodes: ~/reset between trials
             'model_path': LaunchConfiguration('model_path').perform(context),
             'device': LaunchConfiguration('device').perform(context),
             'output_type': LaunchConfiguration('output_type').perform(context),
             'require_arming': _flag(context, 'require_arming')},
        ],
        ros_arguments=log_level)
    # The arm exists before its controllers are spawned; the policy starts on active controllers.
    return [
        gz_sim, state_publisher, bridge, create,
        RegisterEventHandler(OnProcessExit(target_action=create, on_exit=[spawners[0]])),
        RegisterEventHandler(OnProcessExit(target_action=spawners[0], on_exit=[spawners[1]])),
        RegisterEventHandler(OnProcessExit(target_action=spawners[1], on_exit=[policy_node])),
    ]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments; the nodes follow in an OpaqueFunction."""
    share = get_package_share_directory(PACKAGE)
    arguments = [
        DeclareLaunchArgument(
            'world', default_value=os.path.join(share, 'worlds', 'arm_push.sdf'),
            description='gz sim world file (table, puck, goal and the front camera)'),
        DeclareLaunchArgument(
            'gui', default_value='true',
            description='show the Gazebo GUI; false runs the server only (-s)'),
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(share, 'config', 'policy.yaml'),
            description='policy_node parameter file'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description="model folder; '' = the package's models/default"),
        DeclareLaunchArgument(
            'device', default_value='auto', description='torch device: auto, cpu or cuda'),
        DeclareLaunchArgument(
            'output_type', default_value='joint_trajectory',
            description='joint_trajectory (arm_controller) or preview (dry run, no motion)'),
        DeclareLaunchArgument(
            'require_arming', default_value='false',
            description='true: no motion until ros2 service call /policy_node/enable '
                        'std_srvs/srv/SetBool "{data: true}"'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='log level: debug, info, warn, error or fatal'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
