"""The policy node's control loop and statistics, without a node (no rclpy started)."""

from types import SimpleNamespace

import numpy as np
import pytest

from sparse_policy_ros.control.control_loop import CallInputs, ControlLoop
from sparse_policy_ros.control.message_errors import MessageError
from sparse_policy_ros.control.observation_buffer import ObservationBuffer
from sparse_policy_ros.control.replanning import Replanner, ReplanSettings
from sparse_policy_ros.control.safety import JointLimits, SafetyFilter
from sparse_policy_ros.ros.policy_statistics import PolicyStatistics, REJECTION_KINDS

JOINTS = ('a', 'b')
PERIOD = 0.1


def make_output(output_type: str = 'joint_trajectory') -> ControlLoop:
    sent = []
    output = ControlLoop(JOINTS, output_type, send=sent.append)
    output.sent = sent  # every plan handed to send
    limits = JointLimits(lower=np.full(2, -3.0), upper=np.full(2, 3.0),
                         max_velocity=np.full(2, 2.0), max_acceleration=np.full(2, 20.0))
    output.configure(SafetyFilter(limits, PERIOD), Replanner(PERIOD, 2, 16),
                     ObservationBuffer((), 2, 2, PERIOD))
    return output


def measured(output: ControlLoop, stamp: float, positions) -> None:
    """Give the loop a joint state (its newest measurement)."""
    output.buffer.add_joint_state(stamp, np.asarray(positions, np.float32))


def ramp(start: float, n: int = 8) -> np.ndarray:
    return np.stack([np.linspace(start, start + 0.1 * n, n)] * 2, axis=1)


def test_before_anything_is_commanded_the_measured_state_at_rest_is_the_start():
    output = make_output()
    assert output.current(1.0) is None
    assert output.plan(ramp(0.0), 1.0, 1.0) is None
    assert output.commit_chunk(ramp(0.0), 1.0, 1.0).status == 'no_state'
    measured(output, 0.9, [0.5, -0.5])
    position, velocity = output.current(1.0)
    np.testing.assert_array_equal(position, [0.5, -0.5])
    np.testing.assert_array_equal(velocity, [0.0, 0.0])
    assert not output.commanding and output.plan_end is None
    assert output.brake(1.0) is None  # nothing to stop: nothing published
    assert output.sent == []


def test_published_plan_is_followed_and_the_next_one_spliced_onto_it():
    output = make_output()
    measured(output, 1.0, np.zeros(2))
    outcome = output.commit_chunk(ramp(0.0), 1.0, 1.0)
    assert outcome.status == 'published' and outcome.splice is None  # nothing was running
    assert output.commanding
    assert output.sent == [outcome.plan]
    assert output.plan_end == pytest.approx(1.0 + 7 * PERIOD)
    # The command now comes from the plan, not from the (stale) joint state.
    now = 1.3
    measured(output, 1.01, np.full(2, 9.0))
    position, velocity = output.current(now)
    assert np.all(position > 0.0) and np.all(velocity > 0.0)
    # A chunk continuing the same motion joins with small jumps; a jump away shows.
    plan, splice, start = output.plan(ramp(0.3), now, now)
    np.testing.assert_array_equal(start, position)
    assert splice is not None and splice.position_jump < 0.05
    _, far, _ = output.plan(ramp(-1.0), now, now)
    assert far.velocity_jump > splice.velocity_jump + 1.0


def test_a_chunk_that_comes_too_late_is_not_published():
    output = make_output()
    measured(output, 1.0, np.zeros(2))
    late = output.commit_chunk(ramp(0.0), 1.0, 1.0 + 8 * PERIOD)  # every action past
    assert late.status == 'late' and late.plan.dropped == 8
    assert output.sent == [] and not output.follower.active


def test_brake_stops_within_limits_and_no_splice_is_measured_against_a_stop():
    output = make_output()
    measured(output, 1.0, np.zeros(2))
    output.commit_chunk(ramp(0.0), 1.0, 1.0)
    stop = output.brake(1.2)
    assert stop is not None and len(stop) == 1
    np.testing.assert_array_equal(stop.velocities, np.zeros((1, 2)))
    assert stop.times_from_start[0] >= PERIOD
    assert output.holding and not output.commanding
    assert len(output.sent) == 2
    _, splice, _ = output.plan(ramp(0.2), 1.25, 1.25)
    assert splice is None
    output.clear()
    assert output.plan_end is None and not output.follower.active


def test_preview_plans_always_start_from_the_measured_arm():
    output = make_output('preview')
    measured(output, 1.0, np.zeros(2))
    output.commit_chunk(ramp(0.0), 1.0, 1.0)
    measured(output, 1.39, [0.25, 0.25])
    position, velocity = output.current(1.4)
    np.testing.assert_array_equal(position, [0.25, 0.25])
    np.testing.assert_array_equal(velocity, [0.0, 0.0])


def test_forward_stream_samples_the_plan_and_ends_after_it():
    output = make_output('forward_position')
    assert output.forward_command(1.0) is None
    measured(output, 1.0, np.zeros(2))
    output.commit_chunk(ramp(0.0), 1.0, 1.0)
    middle = output.forward_command(1.35)
    assert middle is not None and np.all(middle > 0.0)
    assert output.forward_command(output.follower.end_time + 2 * PERIOD) is None


def test_call_inputs_place_streaming_rows_on_the_grid_and_keep_the_committed_ones():
    output = make_output()
    chunked = ReplanSettings()
    streaming = ReplanSettings(mode='streaming', consistency='prefix', prefix_steps=2)
    measured(output, 1.0, np.zeros(2))
    first = output.call_inputs(chunked, 1.0, 1.0, 0.02)
    assert first == CallInputs(1.0, None, None)  # chunked: the stamp, no shift, no prefix
    output.clear()
    inputs = output.call_inputs(streaming, 1.0, 1.0, 0.02)
    assert inputs.time_base == 1.0 and inputs.shift is None and inputs.prefix_rows is None
    output.commit_chunk(ramp(0.0), inputs.time_base, 1.0)
    # The next call's observation is 0.13 s later: on the grid that is 1.1, one step on.
    later = output.call_inputs(streaming, 1.13, 1.15, 0.02)
    assert later.time_base == pytest.approx(1.1) and later.shift == 1
    # Rows up to the expected publication plus prefix_steps come from the running plan.
    assert later.prefix_rows is not None and len(later.prefix_rows) >= 2
    np.testing.assert_allclose(later.prefix_rows[1], output.follower.sample(1.1), atol=1e-6)


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
    measured(output, 1.0, np.zeros(2))
    plan, splice, _ = output.plan(ramp(0.0), 1.0, 1.0)
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
    measured(output, 1.0, np.zeros(2))
    plan = output.commit_chunk(ramp(0.0), 1.0, 1.0).plan
    t = float(plan.absolute_times[2])
    commanded = output.follower.sample(t)
    np.testing.assert_allclose(output.tracking_error(t, commanded), [0.0, 0.0])
    np.testing.assert_allclose(output.tracking_error(t, commanded + [0.05, -0.2]), [0.05, 0.2])
    output.clear()
    assert output.tracking_error(t, commanded) is None
    preview = make_output('preview')  # a dry run: no controller follows the plan
    measured(preview, 1.0, np.zeros(2))
    preview.commit_chunk(ramp(0.0), 1.0, 1.0)
    assert preview.tracking_error(t, np.full(2, 5.0)) is None
