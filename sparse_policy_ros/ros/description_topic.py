"""
The URDF from the ``robot_description`` topic, as robot_state_publisher latches it.

robot_state_publisher publishes the URDF once on ``/robot_description`` (std_msgs/String,
reliable, transient local, depth 1), so a subscriber with the same durability gets it whenever it
starts. ``wait_for_robot_description`` takes that message at start-up, spinning the node on a
private executor for at most ``timeout`` seconds; the node is not in any other executor yet.
"""

import time

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

# What robot_state_publisher offers; a volatile subscriber would miss the latched message.
DESCRIPTION_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)


def wait_for_robot_description(node: Node, topic: str, timeout: float) -> str:
    """
    Return the first URDF text published on ``topic`` within ``timeout`` seconds.

    Raises ValueError naming the topic, the timeout and the publishers seen (none, or ones
    whose QoS did not match) when nothing usable came, and for an empty message.
    """
    received: list[str] = []
    subscription = node.create_subscription(String, topic, lambda msg: received.append(msg.data),
                                            DESCRIPTION_QOS)
    name = subscription.topic_name  # resolved (namespace, remapping)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=min(0.1, max(deadline - time.monotonic(), 0.0)))
        publishers = node.count_publishers(name)
    finally:
        executor.remove_node(node)
        executor.shutdown()
        node.destroy_subscription(subscription)
    if not received:
        seen = ('no publisher' if publishers == 0 else
                f'{publishers} publisher(s) but no message (a volatile publisher that '
                'published before we subscribed? robot_state_publisher latches it)')
        raise ValueError(f'robot_description_topic: no URDF on {name!r} '
                         f'within robot_description_timeout {timeout:g} s ({seen})')
    if not received[0].strip():
        raise ValueError(f'robot_description_topic: {name!r} carried an '
                         'empty string, expected URDF XML')
    return received[0]
