"""policy_node in ``replan_mode: streaming`` over loopback DDS (issue 21)."""

import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sparse_policy_ros.ros.diagnostics import status_values
from sparse_policy_ros.ros.paths import default_model_dir
from sparse_policy_ros.ros.trajectory import stamp_to_seconds
from std_msgs.msg import Float64MultiArray
from test_ros_policy_node import check_commanded_motion, chunks, latest_status, MAX_VELOCITY
from test_ros_policy_node import make_policy_node, SensorFeed
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.ros
__all__ = ['make_policy_node']  # the fixture, imported for this module's tests

STREAMING = {'replan_mode': 'streaming', 'executed_actions': 0}


def run_for(harness, seconds: float) -> None:
    """Let the nodes work for ``seconds`` of wall time."""
    deadline = time.monotonic() + seconds
    harness.wait_for(lambda: time.monotonic() > deadline, seconds + 5.0, 'the run')


def status_after(harness, diagnostics, key: str) -> dict:
    """Wait for a policy status that reports ``key``; return its values."""
    harness.wait_for(lambda: latest_status(diagnostics) is not None
                     and key in status_values(latest_status(diagnostics)), 10.0, key)
    return status_values(latest_status(diagnostics))


def test_streaming_answers_every_new_observation_with_a_valid_spliced_chunk(
        ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    forward = ros_harness.collect(Float64MultiArray, '/forward_position_controller/commands')
    diagnostics = ros_harness.collect(DiagnosticArray,
                                      '/diagnostics')
    feed = SensorFeed(ros_harness, rate=20.0)
    make_policy_node(**STREAMING)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'the first chunks')
    first = len(feed.image_stamps)
    before = len(chunks(trajectories))
    run_for(ros_harness, 3.0)
    images = len(feed.image_stamps) - first
    published = len(chunks(trajectories)) - before
    # A chunk per new observation (chunked mode: one per 4 executed actions, 2.5 per s); a
    # loaded machine may merge a few observations into one call.
    assert published >= 0.6 * images, (published, images)
    assert published <= images + 2
    stamps = [stamp_to_seconds(m.header.stamp) for m in chunks(trajectories)]
    assert np.all(np.diff(stamps) > 0)
    # Every message passes a stock joint_trajectory_controller and the motion, spliced at
    # every seam, stays within the joint limits.
    checker = check_commanded_motion(trajectories.snapshot())
    assert checker.seams_checked >= published - 1
    # The sampled stream for forward_position_controller has no jump at any splice.
    commands = np.array([m.data for m in forward.snapshot()])
    assert len(commands) > 10
    step = np.abs(np.diff(commands, axis=0)).max(axis=0)
    # Within the speed limit over one period (the stream's timer may run late on a loaded
    # machine: allow two periods).
    assert np.all(step <= np.array(MAX_VELOCITY) * 0.1 * 2.0), step
    status = status_after(ros_harness, diagnostics, 'prefix_rows_mean')
    assert status['replan_mode'] == 'streaming'
    assert status['consistency'] == 'prefix'
    assert float(status['prefix_rows_mean']) > 1.0
    assert float(status['chunk_rate_hz']) > 8.0


def splice_jump_p50(harness, make_policy_node, consistency: str) -> float:
    """Median splice position jump of a streaming node with ``consistency``."""
    diagnostics = harness.collect(DiagnosticArray,
                                  '/diagnostics')
    trajectories = harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    SensorFeed(harness, rate=20.0)
    # Sampling noise differs per call; the prefix alone keeps consecutive chunks together.
    make_policy_node(consistency=consistency, **STREAMING)
    harness.wait_for(lambda: len(chunks(trajectories)) >= 20, 30.0, '20 chunks')
    run_for(harness, 0.5)
    return float(status_after(harness, diagnostics, 'splice_position_jump_p50')
                 ['splice_position_jump_p50'])


@pytest.mark.parametrize('consistency', ['prefix', 'none'])
def test_prefix_keeps_consecutive_chunks_together(ros_harness, make_policy_node, consistency):
    jump = splice_jump_p50(ros_harness, make_policy_node, consistency)
    if consistency == 'prefix':
        assert jump < 1e-3  # the first new target is the committed one
    else:
        assert jump > 5e-3  # independent samples of random weights disagree


def test_replan_rate_caps_the_chunk_rate_and_changes_at_runtime(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    SensorFeed(ros_harness, rate=20.0)
    node = make_policy_node(replan_rate=4.0, **STREAMING)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 2, 20.0, 'the first chunks')
    before = len(chunks(trajectories))
    run_for(ros_harness, 2.5)
    capped = len(chunks(trajectories)) - before
    assert 4 <= capped <= 12, capped  # ~10 at 4 Hz; 50 uncapped
    assert node.set_parameters([Parameter('replan_rate', value=0.0)])[0].successful
    before = len(chunks(trajectories))
    run_for(ros_harness, 2.5)
    assert len(chunks(trajectories)) - before > capped + 5


def test_streaming_settings_are_checked(ros_harness, make_policy_node):
    node = make_policy_node(**STREAMING)
    for name, value, words in (('consistency', 'ensemble', 'consistency must be one of'),
                               ('replan_mode', 'chunked', 'takes effect at configure')):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful
        assert words in result.reason, result.reason


def test_ddim_rollout_streams_reusing_the_last_calls_steps(ros_harness, make_policy_node):
    # models/default carries the searched 6-step DDIM set: each streaming call computes 3 of
    # its steps and reuses the other 3 from the shifted rollout cache, noise continued.
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness, rate=20.0)
    node = make_policy_node(model_path=str(default_model_dir()), sparsity_mode='ddim_rollout',
                            target_sparsity=0.97, sampling_noise='shifted',
                            rollout_refresh=0.29, **STREAMING)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 15, 30.0, '15 chunks')
    status = status_after(ros_harness, diagnostics, 'sparsity_mean')
    assert status['sparsity_mode'] == 'ddim_rollout'
    # 3 of 100 step-equivalents per call; the first call after the start computes all 6.
    assert 0.955 < float(status['sparsity_mean']) <= 0.970 + 1e-6
    assert status['rejected_observation_invalid'] == '0'
    assert node._last_noise is not None  # the next call continues it
    assert node._policy.rollout_refresh == 0.29
    check_commanded_motion(trajectories.snapshot())
