"""
Write a replay-buffer store as the rosbag2 a teleoperated arm would leave (issue 22's bag run).

    python scripts/zarr_to_bag.py STORE BAG [--episodes N] [--storage mcap|sqlite3]

Each episode becomes what a ROS 2 arm stack publishes while a teleoperator drives it at the
store's rate (10 Hz): per step ``k`` at ``t_k``, the camera frame as ``sensor_msgs/Image`` (rgb8,
header stamp ``t_k``, received 30 ms later), the joint positions as ``sensor_msgs/JointState``
(stamp ``t_k``, received 2 ms later) and the teleop command as ``std_msgs/Float64MultiArray``
on a forward-position controller's topic (received 2 ms before ``t_k``: the command in force at
the tick). A ``std_msgs/Header`` on ``/episode_start``, 50 ms before an episode's first step,
marks each episode; episodes are 0.5 s apart (under bag-to-dataset's 1 s gap rule).
``bag-to-dataset`` ends an episode at the last message of its shortest stream (here the
command, 2 ms before the last tick), so each episode comes back one step shorter. Topics and
joint names are those of config/policy.yaml, so ``bag-to-dataset`` reads the bag as it would
read one recorded on a real arm (``scripts/bag_roundtrip.sh``).
"""

import argparse
from pathlib import Path
import sys

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores

from sparse_policy_ros.training.replay_buffer import ReplayBuffer

NS = 1_000_000_000
CAMERA_TOPIC = '/camera/front/image_raw'
JOINT_TOPIC = '/joint_states'
COMMAND_TOPIC = '/forward_position_controller/commands'
EPISODE_TOPIC = '/episode_start'
JOINTS = ('base_yaw', 'shoulder', 'elbow', 'wrist_pitch')
TYPES = get_typestore(Stores.ROS2_JAZZY)
T = TYPES.types


def stamp(time_ns: int):
    """Header of a message stamped ``time_ns``."""
    sec, nanosec = divmod(time_ns, NS)
    return T['std_msgs/msg/Header'](
        stamp=T['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id='')


def messages(store: ReplayBuffer, episodes: int, rate: float):
    """Yield (receive ns, topic, message) of every episode, in no particular order."""
    period = int(round(NS / rate))
    start = NS  # the first episode starts 1 s into the bag
    empty = np.zeros(0, np.float64)
    for index in range(episodes):
        episode = store.get_episode(index)
        frames, states, actions = episode['img'], episode['state'], episode['action']
        marker = start - 50_000_000  # announced before the first command of the episode
        yield marker, EPISODE_TOPIC, stamp(marker)
        for k in range(len(states)):
            t = start + k * period
            height, width = frames[k].shape[:2]
            yield t + 30_000_000, CAMERA_TOPIC, T['sensor_msgs/msg/Image'](
                header=stamp(t), height=height, width=width, encoding='rgb8', is_bigendian=0,
                step=width * 3, data=np.ascontiguousarray(frames[k]).reshape(-1))
            yield t + 2_000_000, JOINT_TOPIC, T['sensor_msgs/msg/JointState'](
                header=stamp(t), name=list(JOINTS), position=states[k].astype(np.float64),
                velocity=empty, effort=empty)
            yield t - 2_000_000, COMMAND_TOPIC, T['std_msgs/msg/Float64MultiArray'](
                layout=T['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0),
                data=actions[k].astype(np.float64))
        start += len(states) * period + NS // 2


def main(argv: list[str] | None = None) -> int:
    """Write the bag; exit 2 with a message on bad input."""
    parser = argparse.ArgumentParser(prog='zarr_to_bag.py', description=__doc__.split('\n')[1])
    parser.add_argument('store', type=Path, help='replay-buffer zarr store (record-demos)')
    parser.add_argument('bag', type=Path, help='rosbag2 folder to create')
    parser.add_argument('--episodes', type=int, default=None, help='first N episodes')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--rate', type=float, default=10.0, help='the store step rate, Hz')
    args = parser.parse_args(argv)
    store = ReplayBuffer.open(args.store, mode='r')
    episodes = store.n_episodes if args.episodes is None else args.episodes
    if not 1 <= episodes <= store.n_episodes:
        print(f'zarr_to_bag.py: --episodes must be in [1, {store.n_episodes}], got {episodes}',
              file=sys.stderr)
        return 2
    missing = [k for k in ('img', 'state', 'action') if k not in store.keys]
    if missing:
        print(f'zarr_to_bag.py: {args.store} lacks {missing}; has {store.keys}',
              file=sys.stderr)
        return 2
    plugin = StoragePlugin.MCAP if args.storage == 'mcap' else StoragePlugin.SQLITE3
    kinds = {CAMERA_TOPIC: 'sensor_msgs/msg/Image', JOINT_TOPIC: 'sensor_msgs/msg/JointState',
             COMMAND_TOPIC: 'std_msgs/msg/Float64MultiArray',
             EPISODE_TOPIC: 'std_msgs/msg/Header'}
    with Writer(args.bag, version=9, storage_plugin=plugin) as writer:
        connections = {topic: writer.add_connection(topic, kind, typestore=TYPES)
                       for topic, kind in kinds.items()}
        count = 0
        for receive, topic, msg in sorted(messages(store, episodes, args.rate),
                                          key=lambda m: m[0]):
            writer.write(connections[topic], receive, TYPES.serialize_cdr(msg, kinds[topic]))
            count += 1
    print(f'wrote {count} messages of {episodes} episodes to {args.bag}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
