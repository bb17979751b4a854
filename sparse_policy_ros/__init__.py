"""Diffusion policy with test-time sparsity, served to a robot arm over ROS 2."""

__version__ = '0.1.0'
