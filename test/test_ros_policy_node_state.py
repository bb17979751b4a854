"""policy_node state hygiene over loopback DDS: resets, future stamps, lifecycle, shutdown stop."""

import json
import os
import signal
import subprocess
import sys
import threading

from builtin_interfaces.msg import Time
from conftest import isolate_dds
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from sparse_policy_ros.ros.diagnostics import status_values
from sparse_policy_ros.ros.image_conversion import rgb_to_image_fields
from sparse_policy_ros.ros.jtc_validation import CommandedMotionChecker
from sparse_policy_ros.ros.trajectory import seconds_to_stamp
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import SetBool
from test_ros_policy_node import (change_state, check_commanded_motion, chunks, get_state,
                                  holds, HOME, JOINTS, latest_status, LOWER, make_policy_node,
                                  MAX_ACCELERATION, MAX_VELOCITY, node_limits, SensorFeed,
                                  TINY_POLICY, UPPER)
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.ros

__all__ = ['make_policy_node']  # the fixture, imported for this module's tests


def status_when(diagnostics, predicate, harness, timeout: float, what: str) -> dict:
    """Wait for a policy_node status whose values satisfy ``predicate``; return the values."""
    status = harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None
        and predicate(status_values(s)) and s, timeout, what)
    return status_values(status)


def test_activate_clears_history_and_rollout_cache(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    node = make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'chunks')
    assert change_state(ros_harness, Transition.TRANSITION_DEACTIVATE)
    # The rollout cache (where the policy keeps one) survived deactivation...
    assert (node._policy.cache_bytes > 0) == node._policy.reads_rollout_cache
    assert change_state(ros_harness, Transition.TRANSITION_ACTIVATE)
    n_chunks = len(chunks(trajectories))
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= n_chunks + 2, 20.0,
                         'chunks after re-activation')
    # ...but the first call after activation found it empty again: two cold calls in all.
    values = status_when(diagnostics, lambda v: int(v['resets_activate']) >= 2, ros_harness,
                         5.0, 'resets on activate')
    assert values['cold_calls'] == '2', values


def test_episode_start_clears_history_and_rollout_cache(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SensorFeed(ros_harness)
    make_policy_node(episode_start_topic='/sim_node/episode_start')
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'chunks')
    values = status_when(diagnostics, lambda v: int(v['chunks_published']) >= 3, ros_harness,
                         5.0, 'statistics')
    assert values['cold_calls'] == '1'
    publisher = ros_harness.node.create_publisher(
        Header, '/sim_node/episode_start', QoSProfile(depth=10,
                                                      reliability=ReliabilityPolicy.RELIABLE))
    ros_harness.wait_for(lambda: publisher.get_subscription_count() > 0, 5.0, 'a subscriber')
    publisher.publish(Header(stamp=feed.clock.now().to_msg(), frame_id='2'))
    values = status_when(diagnostics, lambda v: v['resets_episode'] == '1'
                         and v['cold_calls'] == '2', ros_harness, 10.0,
                         'a cold call after the episode start')
    assert values['resets_service'] == '0'


def test_joint_jump_clears_history_and_drops_the_plan(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SensorFeed(ros_harness)
    make_policy_node(joint_jump_threshold=0.3)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'chunks')
    feed.positions = HOME + np.array([0.0, 0.0, 0.4, 0.0])  # elbow teleported 0.4 rad
    values = status_when(diagnostics, lambda v: v['resets_joint_jump'] == '1'
                         and v['cold_calls'] == '2', ros_harness, 10.0,
                         'a cold call after the jump')
    assert values['resets_service'] == '0'
    # A jump below the threshold is motion, not a reset.
    n = len(chunks(trajectories))
    feed.positions = feed.positions + 0.1
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= n + 3, 10.0, 'more chunks')
    assert status_values(latest_status(diagnostics))['resets_joint_jump'] == '1'


def test_arm_not_following_the_plan_makes_the_next_chunk_start_where_it_is(
        ros_harness, make_policy_node):
    # The feed's arm never moves (joint states stay at HOME) while the plans move the command:
    # beyond start_tolerance the node drops its plan, so every chunk starts from HOME at rest,
    # which is what a controller starting from the measured state then executes.
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    make_policy_node(start_tolerance=1e-4)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 4, 20.0, 'chunks')
    values = status_when(diagnostics, lambda v: int(v['plans_dropped_tracking']) >= 2,
                         ros_harness, 10.0, 'plans dropped for tracking')
    assert float(values['tracking_error_max']) > 1e-4
    assert values['resets_joint_jump'] == '0'
    checker = CommandedMotionChecker(tuple(JOINTS), node_limits())
    for msg in chunks(trajectories)[:4]:
        checker.restart()  # each chunk from the measured arm at rest
        checker.add(msg, start_position=HOME)
    checker.finish()
    assert checker.ok, (checker.rejections[:5], [str(v) for v in checker.violations[:5]])


def test_start_tolerance_zero_keeps_the_plan_and_still_reports_tracking(
        ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 4, 20.0, 'chunks')
    values = status_when(diagnostics, lambda v: int(v['chunks_published']) >= 4
                         and v['tracking_error_max'] != 'none', ros_harness, 10.0,
                         'tracking statistics')
    assert values['plans_dropped_tracking'] == '0'
    assert float(values['tracking_error_max']) > 0.0


class SimClockFeed:
    """Publishes /clock and sensors stamped with it; the clock can be stopped or set back."""

    def __init__(self, harness, start: float = 1000.0, step: float = 0.05):
        node = harness.node
        self.clock_pub = node.create_publisher(Clock, '/clock', 10)
        self.image_pub = node.create_publisher(Image, 'camera/front/image_raw',
                                               qos_profile_sensor_data)
        self.joint_pub = node.create_publisher(JointState, 'joint_states',
                                               qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.time = start
        self.step = step
        self.running = True
        self.rgb = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
        self.timer = node.create_timer(step, self.tick_callback)

    def tick_callback(self) -> None:
        with self.lock:
            if not self.running:
                return
            self.time += self.step
            sec, nanosec = seconds_to_stamp(self.time)
        stamp = Time(sec=sec, nanosec=nanosec)
        self.clock_pub.publish(Clock(clock=stamp))
        image = Image(**rgb_to_image_fields(self.rgb))
        image.header.stamp = stamp
        self.image_pub.publish(image)
        joints = JointState(name=list(JOINTS), position=HOME.tolist())
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)

    def jump_to(self, seconds: float) -> None:
        with self.lock:
            self.time = seconds

    def set_running(self, running: bool) -> None:
        with self.lock:
            self.running = running


def test_clock_jump_back_resets_and_diagnostics_survive_a_stopped_clock(
        ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SimClockFeed(ros_harness)
    make_policy_node(use_sim_time=True)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 30.0, 'chunks on sim time')
    # (Before the node's first /clock message its clock reads 0: data may be rejected then.)
    future_before = status_when(diagnostics, lambda v: True, ros_harness, 5.0,
                                'a status')['rejected_stamp_future']
    feed.jump_to(100.0)  # the simulator restarted: its clock went back 900 s
    values = status_when(diagnostics, lambda v: v['resets_clock_jump'] == '1'
                         and v['cold_calls'] == '2', ros_harness, 15.0,
                         'a cold call after the clock jump')
    n = len(chunks(trajectories))
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= n + 2, 15.0,
                         'chunks after the jump')
    assert values['rejected_stamp_future'] == future_before
    # /clock stops: diagnostics run on the steady clock and keep coming.
    feed.set_running(False)
    seen = len(diagnostics)
    ros_harness.wait_for(lambda: len(diagnostics) >= seen + 5, 5.0,
                         'diagnostics while /clock is stopped')


def test_future_stamps_are_rejected_and_the_hold_ignores_them(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SensorFeed(ros_harness)
    make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'chunks')
    # One joint state 10 s in the future, far outside the position limits, then silence.
    wild = feed.joint_msg(feed.clock.now().to_msg())
    wild.header.stamp.sec += 10
    wild.position = [5.0] * len(wild.position)
    feed.set_running(False)
    feed.joint_pub.publish(wild)
    values = status_when(diagnostics, lambda v: v['rejected_stamp_future'] == '1', ros_harness,
                         5.0, 'the future stamp rejected')
    assert 'header.stamp' in values['last_error']
    hold = ros_harness.wait_for(lambda: holds(trajectories), 10.0, 'a hold when stale')[0]
    position = np.array(hold.points[0].positions)
    assert np.all(position >= np.array(LOWER)) and np.all(position <= np.array(UPPER))
    check_commanded_motion(trajectories.snapshot())


def test_invalid_lifecycle_transitions_are_refused_and_the_node_keeps_running(
        ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    SensorFeed(ros_harness)
    node = make_policy_node(autostart=False)
    assert not change_state(ros_harness, Transition.TRANSITION_ACTIVATE)  # unconfigured
    assert get_state(ros_harness) == 'unconfigured'
    assert change_state(ros_harness, Transition.TRANSITION_CONFIGURE)
    assert change_state(ros_harness, Transition.TRANSITION_ACTIVATE)
    assert not change_state(ros_harness, Transition.TRANSITION_CONFIGURE)  # active
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert get_state(ros_harness) == 'active'
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 2, 20.0, 'chunks while active')


def test_executed_actions_outside_two_to_n_action_steps_are_refused(
        ros_harness, make_policy_node):
    node = make_policy_node(executed_actions=1)
    assert not node.autostart_ok
    node = make_policy_node()
    n_action_steps = node._policy.config.n_action_steps
    for value in (1, n_action_steps + 1):
        result = node.set_parameters([Parameter('executed_actions', value=value)])[0]
        assert not result.successful
        assert 'executed_actions must be' in result.reason and str(value) in result.reason
    for value in (0, 2, n_action_steps):
        assert node.set_parameters([Parameter('executed_actions', value=value)])[0].successful


def test_ctrl_c_while_moving_publishes_a_stop_before_exiting(ros_harness):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    SensorFeed(ros_harness)
    isolate_dds_env = dict(os.environ)  # the harness's loopback domain, inherited by the child
    child = subprocess.Popen(
        [sys.executable, '-m', 'sparse_policy_ros.ros.policy_node', '--ros-args',
         '-p', 'model_path:=random', '-p', f"random_policy:='{json.dumps(TINY_POLICY)}'",
         '-p', 'device:=cpu', '-p', 'sparsity_mode:=dense',
         '-p', f'joint_names:={JOINTS}',
         '-p', f'joint_position_lower:={LOWER}', '-p', f'joint_position_upper:={UPPER}',
         '-p', f'max_joint_velocity:={MAX_VELOCITY}',
         '-p', f'max_joint_acceleration:={MAX_ACCELERATION}', '-p', 'observation_timeout:=1.5'],
        env=isolate_dds_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 2, 60.0,
                                 'chunks from child')
        except AssertionError:
            child.kill()
            raise AssertionError(child.communicate()[0]) from None
        assert not holds(trajectories)
        child.send_signal(signal.SIGINT)
        output, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, output
    ros_harness.wait_for(lambda: holds(trajectories), 5.0, 'a stop on Ctrl-C')
    assert 'shutting down (KeyboardInterrupt)' in output
    check_commanded_motion(trajectories.snapshot())


def test_isolate_dds_in_the_demo_honours_a_given_domain(monkeypatch):
    from sparse_policy_ros.ros import demo
    monkeypatch.setenv('ROS_DOMAIN_ID', '42')
    assert demo.isolate_dds() == '42'
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    monkeypatch.delenv('ROS_DOMAIN_ID')
    assert demo.isolate_dds() == str(os.getpid() % 100 + 110)
    isolate_dds()  # leave this process's unique test domain behind


def test_fidelity_check_reports_deviation_and_falls_back_to_the_reference(
        ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    # Thresholds far below any sparse-vs-dense deviation: the first check must fall back.
    # replan_threshold 2: the tiny dense reference fits the 0.15 s budget with room.
    make_policy_node(fidelity_check_period=0.1, fidelity_warn_threshold=2e-6,
                     fidelity_fallback_threshold=3e-6, fidelity_recover_threshold=1e-6,
                     replan_threshold=2)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'chunks')
    values = status_when(diagnostics, lambda v: v.get('fidelity_state') == 'fallback'
                         and v.get('fidelity_serving') == 'reference',
                         ros_harness, 15.0, 'a fallback to the reference')
    assert values['fidelity_fallback_withheld'] == '0'
    assert values['fidelity_reference'] == 'dense'
    assert float(values['fidelity_last_deviation']) > 3e-6
    assert int(values['fidelity_fallbacks']) == 1
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None and 'fidelity' in s.message
        and s, 5.0, 'a fidelity warning')
    assert status.level == DiagnosticStatus.WARN
    # Served by the dense reference now: the chunks keep coming and stay safe.
    n = len(chunks(trajectories))
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= n + 2, 10.0, 'reference chunks')
    check_commanded_motion(trajectories.snapshot())


def test_fidelity_check_period_zero_runs_no_checks(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    make_policy_node(fidelity_check_period=0.0)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 4, 20.0, 'chunks')
    values = status_when(diagnostics, lambda v: int(v['chunks_published']) >= 4, ros_harness,
                         5.0, 'statistics')
    assert values['fidelity_checks'] == '0' and values['fidelity_state'] == 'ok'


def test_preview_is_a_dry_run_planned_from_the_measured_state(ros_harness, make_policy_node):
    controller = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    forward = ros_harness.collect(Float64MultiArray, '/forward_position_controller/commands')
    preview = ros_harness.collect(JointTrajectory, '/policy_node/preview')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)  # the arm rests at HOME: nothing follows the previews
    make_policy_node(output_type='preview')
    ros_harness.wait_for(lambda: len(chunks(preview)) >= 4, 20.0, 'preview chunks')
    values = status_when(diagnostics, lambda v: int(v['chunks_published']) >= 4, ros_harness,
                         5.0, 'statistics')
    assert values['output_type'] == 'preview'
    assert len(controller) == 0 and len(forward) == 0
    # Every preview starts from the measured rest pose (no controller moved the arm), and a
    # stock controller would accept it within the limits from there.
    for msg in chunks(preview):
        checker = CommandedMotionChecker(tuple(JOINTS), node_limits())
        checker.add(msg, start_position=HOME)
        checker.finish()
        assert checker.ok, (checker.rejections, [str(v) for v in checker.violations])


def test_require_arming_keeps_the_arm_still_until_enabled(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    node = make_policy_node(require_arming=True)
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None and 'disarmed' in s.message
        and s, 10.0, 'a disarmed status')
    assert status_values(status)['enabled'] == 'false'
    seen = len(diagnostics)
    ros_harness.wait_for(lambda: len(diagnostics) >= seen + 5, 10.0, 'more diagnostics')
    assert len(trajectories) == 0  # sensors fresh, policy ready: still nothing commanded
    response = ros_harness.call(SetBool, '/policy_node/enable', SetBool.Request(data=True))
    assert response.success
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 2, 20.0, 'chunks once armed')
    # Deactivate and activate again: disarmed again (a stop was published on deactivate).
    assert change_state(ros_harness, Transition.TRANSITION_DEACTIVATE)
    assert change_state(ros_harness, Transition.TRANSITION_ACTIVATE)
    n = len(trajectories)
    ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None and 'disarmed' in s.message
        and s, 10.0, 'disarmed after activate')
    seen = len(diagnostics)
    ros_harness.wait_for(lambda: len(diagnostics) >= seen + 5, 10.0, 'more diagnostics')
    assert len(trajectories) == n
    assert node.get_parameter('require_arming').value is True


def test_lost_joint_states_brake_once_then_stop_commanding(ros_harness, make_policy_node):
    # The robot's joint_states stop while the camera keeps streaming: the node must not plan
    # on a stale arm state. It brakes once from its current command, names the stale source,
    # commands nothing more until joint states return, then resumes.
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SensorFeed(ros_harness)
    make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'trajectory chunks')
    n_holds = len(holds(trajectories))
    feed.set_joints_running(False)
    hold = ros_harness.wait_for(lambda: holds(trajectories)[n_holds:], 10.0,
                                'a braking stop')[0]
    assert list(hold.points[-1].velocities) == [0.0] * len(JOINTS)
    check_commanded_motion(trajectories.snapshot())
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None
        and s.level == DiagnosticStatus.ERROR and s, 5.0, 'an ERROR diagnostic')
    assert 'stale' in status.message and 'joint_states' in status.message
    n_sent = len(trajectories)
    seen = len(diagnostics)
    ros_harness.wait_for(lambda: len(diagnostics) >= seen + 5, 10.0, 'more diagnostics')
    assert len(trajectories) == n_sent  # camera still fresh: nothing more is commanded
    feed.set_joints_running(True)
    ros_harness.wait_for(lambda: len(trajectories) > n_sent, 10.0, 'commands once they return')
    ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None and s.level == DiagnosticStatus.OK,
        5.0, 'an OK diagnostic after joint states return')
