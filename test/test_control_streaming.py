"""ChunkStream: the plan on the control grid and the consistency between chunks."""

import numpy as np
import pytest
from sparse_policy_ros.control.streaming import ChunkStream, delay_steps, StreamSettings


def chunk(obs_step: int, horizon: int = 6, offset: float = 0.0) -> np.ndarray:
    """Return a 1-dof chunk whose row for step ``s`` holds ``s + offset``."""
    origin = obs_step - 1  # n_obs_steps 2
    return (np.arange(origin, origin + horizon, dtype=np.float64) + offset)[:, None]


def test_rows_map_to_steps_and_a_late_chunk_takes_over_at_its_first_step():
    stream = ChunkStream(2, 4)
    assert stream.add(chunk(0), 0) == 4  # steps 0..3
    assert [stream.commit(s)[0] for s in range(2)] == [0.0, 1.0]
    # The call at step 2 misses one step: step 2 stays the old plan's.
    assert stream.add(chunk(2, offset=10.0), 2, 3) == 3
    assert stream.commit(2)[0] == 2.0 and stream.commit(3)[0] == 13.0
    assert stream.last_splice == 10.0  # replaced the running plan's step 3
    assert stream.planned(5) and not stream.planned(6) and stream.commit(6) is None


def test_a_chunk_ends_the_plan_at_its_last_action():
    stream = ChunkStream(2, 4)
    stream.add(chunk(0), 0)
    stream.add(chunk(1, offset=5.0)[:5], 1, 1)
    assert not stream.planned(5) and stream.planned(4)


def test_prefix_rows_are_the_executed_history_then_the_committed_plan():
    stream = ChunkStream(2, 4, StreamSettings('prefix', prefix_steps=1))
    assert stream.prefix_rows(0, 1) is None  # nothing known at the start
    stream.add(chunk(0), 0)
    stream.commit(0)
    stream.commit(1)
    # A call at step 2 that takes 1 step: executed step 1, step 2 (runs meanwhile), step 3.
    rows = stream.prefix_rows(2, 1)
    assert rows.tolist() == [[1.0], [2.0], [3.0]]
    # Known only up to step 3: the rows stop there.
    assert len(stream.prefix_rows(2, 5)) == 3
    assert ChunkStream(2, 4).prefix_rows(2, 1) is None  # method none: no prefix
    # A held step (no plan yet, realtime start) is history like an executed one.
    held = ChunkStream(2, 4, StreamSettings('prefix', prefix_steps=1))
    held.record_hold(0, np.array([7.0]))
    held.add(chunk(0), 0, 1)
    assert held.prefix_rows(1, 1).tolist() == [[7.0], [1.0], [2.0]]


def test_ensemble_averages_the_chunks_with_older_ones_weighted_more():
    stream = ChunkStream(2, 4, StreamSettings('ensemble', ensemble_decay=np.log(2)))
    stream.add(chunk(0), 0)
    stream.add(chunk(1, offset=3.0), 1)
    assert stream.commit(0)[0] == 0.0  # one prediction
    # Step 1: 1.0 (weight 1) and 4.0 (weight 1/2).
    assert stream.commit(1)[0] == pytest.approx((1.0 + 0.5 * 4.0) / 1.5)
    # A chunk arriving at step 3 does not vote for step 2, which ran before it arrived.
    stream.add(chunk(2, offset=9.0), 2, 3)
    assert stream.commit(2)[0] == pytest.approx((2.0 + 0.5 * 5.0) / 1.5)


def test_delay_steps_counts_the_steps_a_chunk_misses():
    assert delay_steps(0.0, 0.1) == 0
    assert delay_steps(0.012, 0.1) == 1
    assert delay_steps(0.1, 0.1) == 1
    assert delay_steps(0.15, 0.1) == 2
    with pytest.raises(ValueError, match='latency must be a finite number'):
        delay_steps(float('nan'), 0.1)
    with pytest.raises(ValueError, match='control_period must be > 0'):
        delay_steps(0.1, 0.0)


@pytest.mark.parametrize('kwargs, message', [
    ({'method': 'rtc'},
     "consistency method must be one of ['none', 'prefix', 'ensemble', 'warm']"),
    ({'prefix_steps': -1}, 'prefix_steps must be an int >= 0, got -1'),
    ({'prefix_until': 1.5}, r'prefix_until must be in \(0, 1\], got 1.5'),
    ({'ensemble_decay': -0.1}, 'ensemble_decay must be a finite number >= 0'),
])
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]')
                       if 'one of' in message else message):
        StreamSettings(**kwargs)


def test_bad_chunks_are_refused():
    stream = ChunkStream(2, 4)
    with pytest.raises(ValueError, match=r'chunk must have shape \(>= 5, dof\)'):
        stream.add(np.zeros((3, 1)), 0)
    with pytest.raises(ValueError, match='first_step 0 is before the observation step 1'):
        stream.add(chunk(1), 1, 0)
