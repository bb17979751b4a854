"""The policy node's command output and statistics, without a node (no rclpy started)."""

from types import SimpleNamespace

import numpy as np
import pytest

from sparse_policy_ros.control.message_errors import MessageError
from sparse_policy_ros.control.replanning import Replanner
from sparse_policy_ros.control.safety import JointLimits, SafetyFilter
from sparse_policy_ros.ros.command_output import CommandOutput
from sparse_policy_ros.ros.policy_statistics import PolicyStatistics, REJECTION_KINDS

JOINTS = ('a', 'b')
PERIOD = 0.1


class Recorder:
    """Stands in for a publisher: keeps what was published."""

    def __init__(self):
        self.messages = []

    def publish(self, msg):
        self.messages.append(msg)


def make_output(output_type: str = 'joint_trajectory') -> CommandOutput:
    output = CommandOutput(JOINTS, output_type)
    limits = JointLimits(lower=np.full(2, -3.0), upper=np.full(2, 3.0),
                         max_velocity=np.full(2, 2.0), max_acceleration=np.full(2, 20.0))
    output.configure(SafetyFilter(limits, PERIOD), Replanner(PERIOD, 2, 16))
    output.trajectory_pub = Recorder()
    return output


def ramp(start: float, n: int = 8) -> np.ndarray:
    return np.stack([np.linspace(start, start + 0.1 * n, n)] * 2, axis=1)


def test_before_anything_is_commanded_the_measured_state_at_rest_is_the_start():
    output = make_output()
    assert output.current(1.0, None) is None
    position, velocity = output.current(1.0, (0.9, np.array([0.5, -0.5], np.float32)))
    np.testing.assert_array_equal(position, [0.5, -0.5])
    np.testing.assert_array_equal(velocity, [0.0, 0.0])
    assert not output.commanding and output.plan_end is None
    assert output.brake(1.0) is None  # nothing to stop: nothing published
    assert output.trajectory_pub.messages == []


def test_published_plan_is_followed_and_the_next_one_spliced_onto_it():
    output = make_output()
    start = output.current(1.0, (1.0, np.zeros(2)))
    plan, splice = output.plan(ramp(0.0), 1.0, 1.0, PERIOD, start)
    assert splice is None  # nothing was running
    output.publish(plan, 1.0, start[0])
    assert output.commanding
    assert len(output.trajectory_pub.messages) == 1
    assert output.plan_end == pytest.approx(1.0 + 7 * PERIOD)
    # The command now comes from the plan, not from the (stale) joint state.
    now = 1.3
    position, velocity = output.current(now, (1.0, np.full(2, 9.0)))
    assert np.all(position > 0.0) and np.all(velocity > 0.0)
    # A chunk continuing the same motion joins with small jumps; a jump away shows.
    plan, splice = output.plan(ramp(0.3), now, now, PERIOD, (position, velocity))
    assert splice is not None and splice.position_jump < 0.05
    _, far = output.plan(ramp(-1.0), now, now, PERIOD, (position, velocity))
    assert far.velocity_jump > splice.velocity_jump + 1.0


def test_brake_stops_within_limits_and_no_splice_is_measured_against_a_stop():
    output = make_output()
    start = output.current(1.0, (1.0, np.zeros(2)))
    plan, _ = output.plan(ramp(0.0), 1.0, 1.0, PERIOD, start)
    output.publish(plan, 1.0, start[0])
    stop = output.brake(1.2)
    assert stop is not None and len(stop) == 1
    np.testing.assert_array_equal(stop.velocities, np.zeros((1, 2)))
    assert stop.times_from_start[0] >= PERIOD
    assert output.holding and not output.commanding
    assert len(output.trajectory_pub.messages) == 2
    current = output.current(1.25, None)
    _, splice = output.plan(ramp(0.2), 1.25, 1.25, PERIOD, current)
    assert splice is None
    output.clear()
    assert output.plan_end is None and not output.follower.active


def test_preview_plans_always_start_from_the_measured_arm():
    output = make_output('preview')
    start = output.current(1.0, (1.0, np.zeros(2)))
    plan, _ = output.plan(ramp(0.0), 1.0, 1.0, PERIOD, start)
    output.publish(plan, 1.0, start[0])
    position, velocity = output.current(1.4, (1.39, np.array([0.25, 0.25])))
    np.testing.assert_array_equal(position, [0.25, 0.25])
    np.testing.assert_array_equal(velocity, [0.0, 0.0])


def test_forward_stream_samples_the_plan_and_ends_after_it():
    output = make_output('forward_position')
    assert output.forward_command(1.0, PERIOD) is None
    start = output.current(1.0, (1.0, np.zeros(2)))
    plan, _ = output.plan(ramp(0.0), 1.0, 1.0, PERIOD, start)
    output.publish(plan, 1.0, start[0])
    middle = output.forward_command(1.35, PERIOD)
    assert middle is not None and np.all(middle > 0.0)
    assert output.forward_command(output.follower.end_time + 2 * PERIOD, PERIOD) is None


def test_statistics_report_counts_and_marks_rejections_reported():
    stats = PolicyStatistics()
    assert not stats.new_rejections()
    text = stats.reject(MessageError('joint_missing', 'name', "['a', 'b']", "['a']"),
                        'joint_states')
    assert text.startswith('rejected joint_states: ') and 'joint_missing' in REJECTION_KINDS
    assert stats.new_rejections()
    stats.record_call(SimpleNamespace(total_ms=12.0, sparsity=0.9, cache_bytes=64,
                                      dense_call=False, cold_call=True), 0.02, 0.001)
    output = make_output()
    start = output.current(1.0, (1.0, np.zeros(2)))
    plan, splice = output.plan(ramp(0.0), 1.0, 1.0, PERIOD, start)
    stats.record_published(plan, splice, 3, 1.0)
    stats.reset_by('episode')
    values = stats.values(1.0)
    assert values['rejected_joint_missing'] == 1
    assert values['last_error'].startswith('joint_states: ')
    assert values['chunks_published'] == 1 and values['cold_calls'] == 1
    assert values['resets_episode'] == 1 and values['prefix_rows_mean'] == 3.0
    assert values['predict_latency_p50_ms'] == 12.0
    assert values['end_to_end_latency_p50_ms'] == pytest.approx(20.0)
    assert values['splice_position_jump_max'] is None  # the first plan has no seam
    assert not stats.new_rejections()  # reported once
    with pytest.raises(KeyError, match='unknown counter'):
        stats.count('chunks_publishd')


def test_tracking_error_compares_a_measurement_with_the_command_at_its_stamp():
    output = make_output()
    assert output.tracking_error(1.0, np.zeros(2)) is None  # nothing commanded yet
    start = output.current(1.0, (1.0, np.zeros(2)))
    plan, _ = output.plan(ramp(0.0), 1.0, 1.0, PERIOD, start)
    output.publish(plan, 1.0, start[0])
    t = float(plan.absolute_times[2])
    commanded = output.follower.sample(t)
    np.testing.assert_allclose(output.tracking_error(t, commanded), [0.0, 0.0])
    np.testing.assert_allclose(output.tracking_error(t, commanded + [0.05, -0.2]), [0.05, 0.2])
    output.clear()
    assert output.tracking_error(t, commanded) is None
    preview = make_output('preview')  # a dry run: no controller follows the plan
    plan, _ = preview.plan(ramp(0.0), 1.0, 1.0, PERIOD, start)
    preview.publish(plan, 1.0, start[0])
    assert preview.tracking_error(t, np.full(2, 5.0)) is None
