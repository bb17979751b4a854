"""
Launch recorder_node from the package's parameter file, with the store and topics as arguments.

Examples::

    ros2 launch sparse_policy_ros recorder.launch.py output_path:=data/teleop.zarr
    ros2 launch sparse_policy_ros recorder.launch.py output_path:=data/arm.zarr \
        image_topic:=/camera/color/image_raw joint_states_topic:=/joint_states \
        command_topic:=/teleop/joint_trajectory

Then ``ros2 service call /recorder_node/start std_srvs/srv/Trigger`` (and ``stop`` /
``discard``) around each demonstration.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'sparse_policy_ros'


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the recorder node."""
    config = os.path.join(get_package_share_directory(PACKAGE), 'config')
    arguments = [
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(config, 'recorder.yaml'),
            description='recorder_node parameter file'),
        DeclareLaunchArgument(
            'output_path', description='replay-buffer store (zarr folder) the episodes go to'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='follow /clock (true when recording from the simulator)'),
        DeclareLaunchArgument(
            'namespace', default_value='', description='namespace of the node'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='log level: debug, info, warn, error or fatal'),
        DeclareLaunchArgument(
            'image_topic', default_value='camera/front/image_raw',
            description="topic of the 'front' camera (remapping)"),
        DeclareLaunchArgument(
            'joint_states_topic', default_value='joint_states',
            description='sensor_msgs/JointState topic (remapping)'),
        DeclareLaunchArgument(
            'command_topic', default_value='/arm_controller/joint_trajectory',
            description='teleop command topic recorded as the action (remapping)'),
    ]
    recorder = Node(
        package=PACKAGE, executable='recorder_node', name='recorder_node',
        namespace=LaunchConfiguration('namespace'), output='screen',
        parameters=[LaunchConfiguration('params_file'), {
            'output_path': LaunchConfiguration('output_path'),
            'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
        }],
        remappings=[('camera/front/image_raw', LaunchConfiguration('image_topic')),
                    ('joint_states', LaunchConfiguration('joint_states_topic')),
                    ('/arm_controller/joint_trajectory', LaunchConfiguration('command_topic'))],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')])
    return LaunchDescription(arguments + [recorder])
