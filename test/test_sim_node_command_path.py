"""record-demos --command-path node: the expert's targets through the policy node's loop."""

import numpy as np
import pytest
from sparse_policy_ros.sim.env import ArmPushEnv
from sparse_policy_ros.sim.expert import PushExpert
from sparse_policy_ros.sim.node_command_path import NodeCommandPath
from sparse_policy_ros.sim.record import ACTION_KEY, main, record_demos, record_episode, STATE_KEY
from sparse_policy_ros.training.replay_buffer import ReplayBuffer


class CommandLog(ArmPushEnv):
    """The demo arm, keeping every servo target it was given and when."""

    def reset(self, seed):
        """Start a new log with the episode."""
        self.commands = []
        return super().reset(seed)

    def set_joint_targets(self, q):
        """Log the target at the simulation time it is set."""
        self.commands.append((self.sim_time, np.array(q, dtype=np.float64)))
        super().set_joint_targets(q)


@pytest.fixture
def env():
    """Make a rendering demo-arm env that logs its servo targets."""
    environment = CommandLog(image_size=96, max_steps=40)
    yield environment
    environment.close()


def test_node_path_labels_are_the_targets_due_and_motion_stays_within_the_limits(env):
    path = NodeCommandPath('arm_push')
    expert = PushExpert(env, lift=0.06)
    _, episode = path.record_episode(env, expert, seed=0)
    states, actions = episode[STATE_KEY], episode[ACTION_KEY]
    steps = len(actions)
    assert episode['img'].shape == (steps, 96, 96, 3) and states.shape == (steps, 4)
    # The first label is the reset pose at rest; the next ones are the expert's own targets,
    # one step late: the same expert replayed on the grid path starts with the same target.
    np.testing.assert_array_equal(actions[0], states[0])
    grid_env = ArmPushEnv(image_size=96, max_steps=40)
    try:
        _, grid = record_episode(grid_env, PushExpert(grid_env, lift=0.06), seed=0)
    finally:
        grid_env.close()
    np.testing.assert_array_equal(actions[1], grid[ACTION_KEY][0])
    assert not np.array_equal(states[1:5], grid[STATE_KEY][1:5])  # other dynamics
    assert path.published == steps and path.refused == 0
    # The servo targets move within the node's speed limit, tick to tick.
    times = np.array([t for t, _ in env.commands])
    targets = np.stack([q for _, q in env.commands])
    speed = np.abs(np.diff(targets, axis=0)) / np.diff(times)[:, None]
    assert np.all(speed <= path.limits.max_velocity * (1 + 1e-6))
    assert np.max(speed) > 0.2 * np.max(path.limits.max_velocity)  # it does move


def test_node_path_store_records_its_command_path_and_refuses_mixing(tmp_path):
    path = tmp_path / 'node.zarr'
    summary = record_demos(path, episodes=1, seed_start=0, progress=False, command_path='node')
    assert summary.node_targets[1] == 0 and summary.node_targets[0] > 0
    assert 'node loop: targets planned / refused' in summary.table()
    buffer = ReplayBuffer.open(path)
    assert buffer.attrs['command_path'] == 'node'
    with pytest.raises(ValueError, match="command_path='node'; this run records "
                                         "command_path='grid'"):
        record_demos(path, episodes=1, seed_start=5, progress=False)
    with pytest.raises(ValueError, match="command_path must be one of \\['grid', 'node'\\], "
                                         "got 'ros'"):
        record_demos(tmp_path / 'x.zarr', episodes=1, command_path='ros', progress=False)
    assert not (tmp_path / 'x.zarr').exists()


def test_cli_command_path(tmp_path, capsys):
    out = tmp_path / 'cli.zarr'
    code = main(['--episodes', '1', '--out', str(out), '--command-path', 'node'])
    assert code == 0
    assert ReplayBuffer.open(out).attrs['command_path'] == 'node'
    assert 'targets planned / refused' in capsys.readouterr().out
