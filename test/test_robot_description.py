"""The robot's URDF as the source of joint names and limits: parser, resolution, policy_node."""

import json
import time

import numpy as np
import pytest
from rclpy.parameter import Parameter
from sparse_policy_ros.control.safety import JointLimits
from sparse_policy_ros.ros.description_topic import DESCRIPTION_QOS
from sparse_policy_ros.ros.jtc_validation import CommandedMotionChecker
from sparse_policy_ros.ros.params import POLICY_PARAMS
from sparse_policy_ros.ros.paths import default_model_dir
from sparse_policy_ros.ros.policy_loader import load_sparse_policy
from sparse_policy_ros.ros.policy_node import PolicyNode
from sparse_policy_ros.ros.robot_description import load_robot_description, parse_urdf
from sparse_policy_ros.ros.robot_description import resolve_joint_limits, resolve_joint_names
from std_msgs.msg import String
from test_ros_policy_node import (chunks, HOME, JOINTS, MAX_ACCELERATION, policy_overrides,
                                  SensorFeed)
from trajectory_msgs.msg import JointTrajectory

# Limits of a made-up arm, unlike the node tests' parameters so the source is visible.
URDF_LOWER = [-2.0, -0.4, -0.1, -0.9]
URDF_UPPER = [2.0, 1.4, 2.2, 1.9]
URDF_VELOCITY = [1.0, 1.1, 1.2, 1.3]
AXES = ['0 0 1', '0 1 0', '0 1 0', '0 1 0']


def arm_urdf(names=JOINTS, *, extra_joints: str = '', ros2_control: bool = True) -> str:
    """Write a URDF of a serial arm with ``names`` as revolute joints (written by the test)."""
    links = ''.join(f'<link name="link{i}"/>' for i in range(len(names) + 1))
    joints = ''.join(
        f'<joint name="{name}" type="revolute"><parent link="link{i}"/>'
        f'<child link="link{i + 1}"/><origin xyz="0 0 0.1" rpy="0 0 0"/>'
        f'<axis xyz="{AXES[i % 4]}"/><limit lower="{URDF_LOWER[i % 4]}" '
        f'upper="{URDF_UPPER[i % 4]}" velocity="{URDF_VELOCITY[i % 4]}" effort="10"/></joint>'
        for i, name in enumerate(names))
    # ros2_control's <joint> entries are interfaces, not kinematics: they must be ignored.
    control = ('<ros2_control name="arm" type="system"><joint name="not_a_joint">'
               '<command_interface name="position"/></joint></ros2_control>'
               if ros2_control else '')
    return (f'<?xml version="1.0"?><robot name="test_arm">{links}{joints}{extra_joints}'
            f'{control}</robot>')


GRIPPER = ('<link name="finger_a"/><link name="finger_b"/>'
           '<joint name="finger_a_joint" type="prismatic"><parent link="link4"/>'
           '<child link="finger_a"/><limit lower="0" upper="0.04" velocity="0.2" effort="20"/>'
           '</joint><joint name="finger_b_joint" type="prismatic"><parent link="link4"/>'
           '<child link="finger_b"/><limit lower="0" upper="0.04" velocity="0.2" effort="20"/>'
           '<mimic joint="finger_a_joint"/></joint>'
           '<link name="tool"/><joint name="tool_fixed" type="fixed"><parent link="link4"/>'
           '<child link="tool"/></joint>'
           '<link name="wheel"/><joint name="spin" type="continuous"><parent link="link4"/>'
           '<child link="wheel"/><limit velocity="3.0" effort="1"/></joint>')


def limit_settings(**changes) -> dict:
    settings = {'joint_position_lower': [], 'joint_position_upper': [],
                'max_joint_velocity': [], 'max_joint_acceleration': MAX_ACCELERATION}
    settings.update(changes)
    return settings


def test_parser_reads_kinematic_joints_only():
    description = parse_urdf(arm_urdf(extra_joints=GRIPPER), 'test.urdf')
    assert description.name == 'test_arm'
    names = [joint.name for joint in description.joints]
    assert names == JOINTS + ['finger_a_joint', 'finger_b_joint', 'tool_fixed', 'spin']
    # Fixed and mimic joints are not commanded; the continuous joint is.
    assert description.commandable_joint_names() == JOINTS + ['finger_a_joint', 'spin']
    elbow = description.joint('elbow')
    assert (elbow.kind, elbow.axis, elbow.lower, elbow.upper, elbow.velocity) == (
        'revolute', (0.0, 1.0, 0.0), URDF_LOWER[2], URDF_UPPER[2], URDF_VELOCITY[2])
    assert description.joint('spin').lower is None
    assert description.joint('finger_b_joint').mimic == 'finger_a_joint'


@pytest.mark.parametrize('text, expected', [
    ('<robot name="x"><joint name="a" type="revolute">', 'not well-formed XML'),
    ('<sdf version="1.9"/>', 'root element is <sdf>, expected <robot>'),
    ('<robot><joint name="a" type="hinge"><parent link="p"/><child link="c"/></joint></robot>',
     "joint 'a': type='hinge', expected one of"),
    ('<robot><joint name="a" type="revolute"><parent link="p"/><child link="c"/></joint>'
     '</robot>', "joint 'a': a revolute joint needs <limit"),
    ('<robot><joint name="a" type="revolute"><parent link="p"/><child link="c"/>'
     '<limit lower="x" upper="1" velocity="1" effort="1"/></joint></robot>',
     "joint 'a': lower='x' is not a number"),
    ('<robot><joint name="a" type="revolute"><parent link="p"/><child link="c"/>'
     '<limit lower="1" upper="-1" velocity="1" effort="1"/></joint></robot>',
     "joint 'a': limit lower 1.0 > upper -1.0"),
    ('<robot><joint name="a" type="fixed"><parent link="p"/></joint></robot>',
     "joint 'a': expected <child link=\"...\"/>"),
    ('<robot><joint name="a" type="fixed"><parent link="p"/><child link="c"/></joint>'
     '<joint name="a" type="fixed"><parent link="c"/><child link="d"/></joint></robot>',
     "joint names appear more than once: ['a']"),
])
def test_bad_urdf_is_an_error_naming_the_source_and_element(text, expected):
    with pytest.raises(ValueError, match='^arm.urdf: ') as error:
        parse_urdf(text, 'arm.urdf')
    assert expected in str(error.value)


def test_loading_from_text_or_file(tmp_path):
    path = tmp_path / 'arm.urdf'
    path.write_text(arm_urdf())
    assert load_robot_description('', '') is None
    from_file = load_robot_description('', str(path))
    from_text = load_robot_description(arm_urdf(), '')
    assert from_file.joints == from_text.joints and from_file.source == str(path)
    with pytest.raises(ValueError, match='both set'):
        load_robot_description(arm_urdf(), str(path))
    with pytest.raises(ValueError, match="robot_description_file: cannot read '.*missing.urdf'"):
        load_robot_description('', str(tmp_path / 'missing.urdf'))


def test_joint_names_come_from_the_description_unless_set():
    description = parse_urdf(arm_urdf(extra_joints=GRIPPER))
    assert resolve_joint_names([], description) == (*JOINTS, 'finger_a_joint', 'spin')
    assert resolve_joint_names(['elbow', 'shoulder'], description) == ('elbow', 'shoulder')
    assert resolve_joint_names(JOINTS, None) == tuple(JOINTS)
    # A joint the URDF lacks, or one it does not command: both lists in the message.
    for wrong in (['base_yaw', 'wrist_roll'], ['base_yaw', 'finger_b_joint']):
        with pytest.raises(ValueError) as error:
            resolve_joint_names(wrong, description)
        message = str(error.value)
        assert str(wrong) in message and str(description.commandable_joint_names()) in message
    with pytest.raises(ValueError, match='joint_names: empty and no robot description'):
        resolve_joint_names([], None)


def test_limits_come_from_the_description_and_parameters_override():
    description = parse_urdf(arm_urdf(), 'arm.urdf')
    limits, origins, warnings = resolve_joint_limits(limit_settings(), tuple(JOINTS),
                                                     description)
    assert limits.lower.tolist() == URDF_LOWER and limits.upper.tolist() == URDF_UPPER
    assert limits.max_velocity.tolist() == URDF_VELOCITY
    assert limits.max_acceleration.tolist() == MAX_ACCELERATION
    assert origins == {'joint_position_lower': 'arm.urdf', 'joint_position_upper': 'arm.urdf',
                       'max_joint_velocity': 'arm.urdf', 'max_joint_acceleration': 'parameter'}
    assert warnings == []
    # The node's order, not the URDF's, picks the values.
    reordered = ('wrist_pitch', 'base_yaw')
    limits = resolve_joint_limits(limit_settings(max_joint_acceleration=[5.0, 6.0]), reordered,
                                  description)[0]
    assert limits.max_velocity.tolist() == [URDF_VELOCITY[3], URDF_VELOCITY[0]]
    # An explicit, narrower limit wins silently; a looser one wins with a warning.
    narrower = [0.5, 0.5, 0.5, 0.5]
    limits, origins, warnings = resolve_joint_limits(
        limit_settings(max_joint_velocity=narrower), tuple(JOINTS), description)
    assert limits.max_velocity.tolist() == narrower and warnings == []
    assert origins['max_joint_velocity'] == 'parameter'
    looser = [1.0, 5.0, 1.0, 1.0]
    warnings = resolve_joint_limits(limit_settings(max_joint_velocity=looser), tuple(JOINTS),
                                    description)[2]
    assert len(warnings) == 1 and "joint 'shoulder'" in warnings[0] and '1.1' in warnings[0]


def test_limits_the_description_cannot_give_are_errors():
    description = parse_urdf(arm_urdf(extra_joints=GRIPPER), 'arm.urdf')
    with pytest.raises(ValueError, match='max_joint_acceleration: .*no acceleration limits'):
        resolve_joint_limits(limit_settings(max_joint_acceleration=[]), tuple(JOINTS),
                             description)
    with pytest.raises(ValueError, match="joint_position_lower: joint 'spin' of arm.urdf is "
                                         'continuous'):
        resolve_joint_limits(limit_settings(max_joint_acceleration=[1.0]), ('spin',),
                             description)
    with pytest.raises(ValueError, match='got \\[\\] and no robot description'):
        resolve_joint_limits(limit_settings(), tuple(JOINTS), None)
    with pytest.raises(ValueError, match='max_joint_velocity: expected one value per joint'):
        resolve_joint_limits(limit_settings(max_joint_velocity=[1.0]), tuple(JOINTS),
                             description)


def urdf_node_overrides(**changes) -> list[Parameter]:
    """Return the node tests' parameters with joints and limits left to the robot description."""
    from_urdf = ('joint_names', 'joint_position_lower', 'joint_position_upper',
                 'max_joint_velocity')
    return [p for p in policy_overrides(**changes) if p.name not in from_urdf]


@pytest.mark.ros
def test_policy_node_takes_joints_and_limits_from_robot_description(ros_harness, tmp_path):
    path = tmp_path / 'arm.urdf'
    path.write_text(arm_urdf(extra_joints=GRIPPER.split('<link name="wheel"/>')[0]))
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    SensorFeed(ros_harness)
    # The gripper finger is commandable in the URDF but not a policy joint: joint_names picks.
    overrides = urdf_node_overrides(robot_description_file=str(path)) + [
        Parameter('joint_names', value=JOINTS)]
    node = PolicyNode(context=ros_harness.context, parameter_overrides=overrides)
    ros_harness.add_node(node, cleanup=lambda n: (n.close(), n.destroy_node()))
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'chunks')
    limits = JointLimits(lower=np.array(URDF_LOWER), upper=np.array(URDF_UPPER),
                         max_velocity=np.array(URDF_VELOCITY),
                         max_acceleration=np.array(MAX_ACCELERATION))
    checker = CommandedMotionChecker(tuple(JOINTS), limits)
    for msg in trajectories.snapshot():
        assert list(msg.joint_names) == JOINTS
        checker.add(msg, start_position=HOME)
    checker.finish()
    assert checker.ok, (checker.rejections[:3], [str(v) for v in checker.violations[:3]])


@pytest.mark.ros
def test_policy_node_refuses_to_start_when_joints_disagree(ros_harness):
    # Explicit joint_names the URDF lacks: a start-up error naming both lists.
    with pytest.raises(ValueError) as error:
        PolicyNode(context=ros_harness.context,
                   parameter_overrides=policy_overrides(robot_description=arm_urdf(JOINTS[:3])))
    assert str(JOINTS) in str(error.value) and str(JOINTS[:3]) in str(error.value)
    # No joint_names: the URDF's commandable joints, in its order (a random-weights policy
    # takes their count; a trained model checks its recorded joints, test below).
    names = ['base_yaw', 'shoulder', 'elbow', 'wrist_pitch', 'wrist_roll']
    node = PolicyNode(context=ros_harness.context,
                      parameter_overrides=urdf_node_overrides(
                          robot_description=arm_urdf(names),
                          max_joint_acceleration=MAX_ACCELERATION + [5.0]))
    try:
        assert node.joint_names == tuple(names) and node.autostart_ok
    finally:
        node.close()
        node.destroy_node()


def test_a_model_that_records_its_joints_refuses_another_order():
    # models/default records the joints it was trained on; the same four joints in the
    # URDF's (here: another) order would swap the policy's action dimensions.
    assert 'joint_names' in json.loads((default_model_dir() / 'config.json').read_text())[
        'policy']['extra']
    settings = {spec.name: spec.default for spec in POLICY_PARAMS}
    settings.update(device='cpu', int8_linears=False, fidelity_check_period=0.0)
    swapped = ['shoulder', 'base_yaw', 'elbow', 'wrist_pitch']
    with pytest.raises(ValueError) as error:
        load_sparse_policy({**settings, 'joint_names': swapped})
    assert str(swapped) in str(error.value)
    assert "trained on joints ['base_yaw', 'shoulder', 'elbow', 'wrist_pitch']" in str(
        error.value)
    policy, _, _ = load_sparse_policy({**settings, 'joint_names': JOINTS})
    policy.close()


@pytest.mark.ros
def test_policy_node_takes_the_urdf_latched_on_the_robot_description_topic(ros_harness):
    # As robot_state_publisher does: publish once, transient local, before the node exists.
    names = ['base_yaw', 'shoulder', 'elbow', 'wrist_pitch', 'wrist_roll']
    publisher = ros_harness.node.create_publisher(String, '/robot_description', DESCRIPTION_QOS)
    publisher.publish(String(data=arm_urdf(names)))
    node = PolicyNode(context=ros_harness.context, parameter_overrides=urdf_node_overrides(
        robot_description_topic='/robot_description', robot_description_timeout=10.0,
        max_joint_acceleration=MAX_ACCELERATION + [5.0]))
    try:
        assert node.joint_names == tuple(names) and node.autostart_ok
        assert node._description.source == 'robot_description_topic /robot_description'
    finally:
        node.close()
        node.destroy_node()


@pytest.mark.ros
def test_robot_description_topic_without_a_urdf_is_a_start_up_error(ros_harness):
    started = time.monotonic()
    with pytest.raises(ValueError) as error:
        PolicyNode(context=ros_harness.context, parameter_overrides=urdf_node_overrides(
            robot_description_topic='/no_robot_here', robot_description_timeout=0.5))
    assert "no URDF on '/no_robot_here' within robot_description_timeout 0.5 s" in str(
        error.value)
    assert 'no publisher' in str(error.value)
    assert time.monotonic() - started < 5.0  # waited about the timeout, not forever
    with pytest.raises(ValueError, match='both set; set one'):
        PolicyNode(context=ros_harness.context, parameter_overrides=urdf_node_overrides(
            robot_description_topic='/robot_description', robot_description=arm_urdf()))
