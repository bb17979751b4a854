"""ROS 2 adapters: policy node, sim node, observation buffer, trajectory output."""
