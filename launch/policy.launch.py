"""
Launch policy_node, and with ``sim:=true`` the simulated arm, from the package's parameter files.

Examples::

    ros2 launch sparse_policy_ros policy.launch.py sim:=true
    ros2 launch sparse_policy_ros policy.launch.py device:=cuda \
        image_topic:=/camera/color/image_raw joint_states_topic:=/joint_states \
        command_topic:=/arm_controller/joint_trajectory
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = 'sparse_policy_ros'


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the nodes."""
    config = os.path.join(get_package_share_directory(PACKAGE), 'config')
    arguments = [
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(config, 'policy.yaml'),
            description='policy_node parameter file'),
        DeclareLaunchArgument(
            'sim_params_file', default_value=os.path.join(config, 'sim.yaml'),
            description='sim_node parameter file (used with sim:=true)'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description="model folder; '' = the package's models/default, 'random' = random "
                        'weights (plumbing tests only)'),
        DeclareLaunchArgument(
            'device', default_value='auto', description='torch device: auto, cpu or cuda'),
        DeclareLaunchArgument(
            'sim', default_value='false',
            description='also start the simulated arm (MuJoCo) that publishes /clock'),
        DeclareLaunchArgument(
            'use_sim_time', default_value=LaunchConfiguration('sim'),
            description='follow /clock (defaults to the value of sim)'),
        DeclareLaunchArgument(
            'namespace', default_value='', description='namespace of the nodes'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='log level: debug, info, warn, error or fatal'),
        DeclareLaunchArgument(
            'image_topic', default_value='camera/front/image_raw',
            description="camera topic of the policy's 'front' camera (remapping)"),
        DeclareLaunchArgument(
            'joint_states_topic', default_value='joint_states',
            description='sensor_msgs/JointState topic (remapping)'),
        DeclareLaunchArgument(
            'command_topic', default_value='/arm_controller/joint_trajectory',
            description='trajectory_msgs/JointTrajectory command topic (remapping)'),
    ]
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    remappings = [
        ('camera/front/image_raw', LaunchConfiguration('image_topic')),
        ('joint_states', LaunchConfiguration('joint_states_topic')),
        ('/arm_controller/joint_trajectory', LaunchConfiguration('command_topic')),
    ]
    policy_node = Node(
        package=PACKAGE, executable='policy_node', name='policy_node',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[
            LaunchConfiguration('params_file'),
            {'model_path': ParameterValue(LaunchConfiguration('model_path'), value_type=str),
             'device': ParameterValue(LaunchConfiguration('device'), value_type=str),
             'use_sim_time': use_sim_time},
        ],
        remappings=remappings,
        ros_arguments=['--log-level', LaunchConfiguration('log_level')])
    sim_node = Node(
        package=PACKAGE, executable='sim_node', name='sim_node',
        namespace=LaunchConfiguration('namespace'), output='screen', emulate_tty=True,
        parameters=[LaunchConfiguration('sim_params_file')],
        remappings=remappings,
        ros_arguments=['--log-level', LaunchConfiguration('log_level')],
        condition=IfCondition(LaunchConfiguration('sim')))
    return LaunchDescription([*arguments, sim_node, policy_node])
