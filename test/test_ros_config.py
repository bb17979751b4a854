"""config/*.yaml match the nodes' declared parameters; the launch file is well formed."""

from pathlib import Path

from launch_files import launch_arguments
import pytest
from rclpy.parameter import Parameter
from sparse_policy_ros.ros.params import (POLICY_PARAMS, RECORDER_PARAMS, SIM_PARAMS,
                                          spec_by_name, values)
from sparse_policy_ros.ros.policy_node import PolicyNode
from sparse_policy_ros.ros.recorder_node import RecorderNode
from sparse_policy_ros.ros.sim_node import SimNode
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / 'launch' / 'policy.launch.py'
FROM_ROBOT_DESCRIPTION = {'joint_names', 'joint_position_lower', 'joint_position_upper',
                          'max_joint_velocity'}
# Parameters a file shows commented out: not set = taken from elsewhere (an empty list has no
# type in a parameter file).
COMMENTED = {'policy_node': FROM_ROBOT_DESCRIPTION, 'sim_node': set(),
             'recorder_node': {'image_size', 'joint_names'}}


@pytest.mark.parametrize('file_name, node_name, specs', [
    ('policy.yaml', 'policy_node', POLICY_PARAMS),
    ('sim.yaml', 'sim_node', SIM_PARAMS),
    ('recorder.yaml', 'recorder_node', RECORDER_PARAMS),
])
def test_yaml_lists_exactly_the_declared_parameters(file_name, node_name, specs):
    document = yaml.safe_load((REPO / 'config' / file_name).read_text())
    assert list(document) == [f'/**/{node_name}']
    parameters = document[f'/**/{node_name}']['ros__parameters']
    # The robot description (or the store) supplies these; the file shows them commented out.
    from_urdf = COMMENTED[node_name]
    assert sorted(parameters) == sorted(spec.name for spec in specs
                                        if spec.name not in from_urdf)
    text = (REPO / 'config' / file_name).read_text()
    for name in from_urdf:
        assert f'    # {name}: [' in text, name
        assert spec_by_name(specs)[name].default == [], name  # not set = from the URDF
    for spec in specs:
        if spec.choices is not None:
            assert parameters[spec.name] in spec.choices, spec.name
        if spec.value_range is not None:
            low, high = spec.value_range
            assert low <= parameters[spec.name] <= high, spec.name


@pytest.mark.ros
@pytest.mark.parametrize('file_name, node_class, specs, overrides', [
    ('policy.yaml', PolicyNode, POLICY_PARAMS, [Parameter('autostart', value=False)]),
    ('sim.yaml', SimNode, SIM_PARAMS, [Parameter('real_time_factor', value=0.5)]),
    ('recorder.yaml', RecorderNode, RECORDER_PARAMS, 'output_path'),
])
def test_nodes_load_the_yaml_files(ros_env, tmp_path, file_name, node_class, specs,
                                   overrides):
    if overrides == 'output_path':  # required: the file leaves it empty
        overrides = [Parameter('output_path', value=str(tmp_path / 'demos.zarr'))]
    path = REPO / 'config' / file_name
    parameters = next(iter(yaml.safe_load(path.read_text()).values()))['ros__parameters']
    node = node_class(context=ros_env, cli_args=['--ros-args', '--params-file', str(path)],
                      parameter_overrides=overrides)
    try:
        overridden = {p.name for p in overrides}
        loaded = values(node, specs)  # an unset list parameter reads as its default []
        for spec in specs:
            if spec.name not in overridden:
                expected = parameters.get(spec.name, spec.default)  # absent: the default
                assert loaded[spec.name] == expected, spec.name
    finally:
        node.close()
        node.destroy_node()


def test_launch_file_is_python_with_described_arguments():
    declared, used = launch_arguments(LAUNCH_FILE)
    required = {'params_file', 'model_path', 'device', 'use_sim_time', 'namespace', 'log_level',
                'sim', 'image_topic', 'joint_states_topic', 'command_topic'}
    assert required <= set(declared)
    assert all(len(text) > 10 for text in declared.values()), declared
    assert used == set(declared)  # every argument is used, nothing undeclared is read


def test_recorder_launch_file_is_python_with_described_arguments():
    declared, used = launch_arguments(REPO / 'launch' / 'recorder.launch.py')
    assert {'params_file', 'output_path', 'use_sim_time', 'namespace', 'log_level',
            'image_topic', 'joint_states_topic', 'command_topic'} == set(declared)
    assert all(len(text) > 10 for text in declared.values()), declared
    assert used == set(declared)
