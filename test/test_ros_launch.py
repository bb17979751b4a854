"""policy.launch.py with sim:=true on a real ROS 2 install (launch_pytest; skipped without it)."""

from pathlib import Path

from conftest import isolate_dds
import pytest

launch_pytest = pytest.importorskip('launch_pytest')

LAUNCH_FILE = Path(__file__).resolve().parents[1] / 'launch' / 'policy.launch.py'

# The launched processes inherit the environment: loopback discovery, our own domain.
isolate_dds()


@launch_pytest.fixture
def launch_description():
    """Include policy.launch.py with the simulated arm and random weights."""
    from launch import LaunchDescription
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    return LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
            launch_arguments={'sim': 'true', 'model_path': 'random', 'device': 'cpu',
                              'log_level': 'warn'}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.ros
@pytest.mark.launch(fixture=launch_description)
def test_launch_with_sim_publishes_trajectories(ros_harness):
    from trajectory_msgs.msg import JointTrajectory
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    ros_harness.wait_for(lambda: len(trajectories) >= 2, 120.0, 'trajectories from the launch')
    assert trajectories.snapshot()[0].joint_names == ['base_yaw', 'shoulder', 'elbow',
                                                      'wrist_pitch']
