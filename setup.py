"""Build script for the sparse_policy_ros ament_python package."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE_NAME = 'sparse_policy_ros'


def tree_data_files(root: str) -> list[tuple[str, list[str]]]:
    """Install every file under ``root`` into share/<pkg>/<root>, keeping sub-folders."""
    entries = []
    for folder, _, files in os.walk(root):
        paths = [os.path.join(folder, name) for name in files]
        if paths:
            entries.append((os.path.join('share', PACKAGE_NAME, folder), paths))
    return entries


setup(
    name=PACKAGE_NAME,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={PACKAGE_NAME: ['sim/assets/*.xml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE_NAME]),
        ('share/' + PACKAGE_NAME, ['package.xml']),
        (os.path.join('share', PACKAGE_NAME, 'launch'), glob('launch/*.launch.py')),
        (os.path.join('share', PACKAGE_NAME, 'config'), glob('config/*.yaml')),
        *tree_data_files('models'),
        *tree_data_files('urdf'),
        *tree_data_files('worlds'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='sparse_policy_ros maintainers',
    maintainer_email='maintainers@sparse-policy-ros.dev',
    description='Diffusion policy with test-time sparsity served over ROS 2.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'policy_node = sparse_policy_ros.ros.policy_node:main',
            'sim_node = sparse_policy_ros.ros.sim_node:main',
            'recorder_node = sparse_policy_ros.ros.recorder_node:main',
            'demo = sparse_policy_ros.ros.demo:main',
            'policy-ctl = sparse_policy_ros.ros.policy_ctl:main',
            'bench = sparse_policy_ros.bench:main',
            'train-policy = sparse_policy_ros.training.train_policy:main',
            'lerobot-to-dataset = sparse_policy_ros.training.lerobot_dataset:main',
            'bag-to-dataset = sparse_policy_ros.training.bag_dataset:main',
            'import-dp-checkpoint = sparse_policy_ros.policy.dp_import:main',
            'train-pruner = sparse_policy_ros.training.train_pruner:main',
            'search-schedule = sparse_policy_ros.training.schedule_search:main',
            'record-demos = sparse_policy_ros.sim.record:main',
            'eval-policy = sparse_policy_ros.sim.evaluate:main',
        ],
    },
)
