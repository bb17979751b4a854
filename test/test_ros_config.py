"""config/*.yaml match the nodes' declared parameters; the launch file is well formed."""

import ast
from pathlib import Path

import pytest
from rclpy.parameter import Parameter
from sparse_policy_ros.ros.params import POLICY_PARAMS, SIM_PARAMS
from sparse_policy_ros.ros.policy_node import PolicyNode
from sparse_policy_ros.ros.sim_node import SimNode
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / 'launch' / 'policy.launch.py'


@pytest.mark.parametrize('file_name, node_name, specs', [
    ('policy.yaml', 'policy_node', POLICY_PARAMS),
    ('sim.yaml', 'sim_node', SIM_PARAMS),
])
def test_yaml_lists_exactly_the_declared_parameters(file_name, node_name, specs):
    document = yaml.safe_load((REPO / 'config' / file_name).read_text())
    assert list(document) == [f'/**/{node_name}']
    parameters = document[f'/**/{node_name}']['ros__parameters']
    assert sorted(parameters) == sorted(spec.name for spec in specs)
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
])
def test_nodes_load_the_yaml_files(ros_env, file_name, node_class, specs, overrides):
    path = REPO / 'config' / file_name
    parameters = next(iter(yaml.safe_load(path.read_text()).values()))['ros__parameters']
    node = node_class(context=ros_env, cli_args=['--ros-args', '--params-file', str(path)],
                      parameter_overrides=overrides)
    try:
        overridden = {p.name for p in overrides}
        for spec in specs:
            if spec.name not in overridden:
                assert node.get_parameter(spec.name).value == parameters[spec.name], spec.name
    finally:
        node.close()
        node.destroy_node()


def test_launch_file_is_python_with_described_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    compile(tree, str(LAUNCH_FILE), 'exec')
    declared = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, 'id', '') == 'DeclareLaunchArgument':
            keywords = {k.arg: k.value for k in call.keywords}
            description = keywords.get('description')
            text = ''.join(part.value for part in ast.walk(description)
                           if isinstance(part, ast.Constant) and isinstance(part.value, str))
            declared[call.args[0].value] = text
    required = {'params_file', 'model_path', 'device', 'use_sim_time', 'namespace', 'log_level',
                'sim', 'image_topic', 'joint_states_topic', 'command_topic'}
    assert required <= set(declared)
    assert all(len(text) > 10 for text in declared.values()), declared
    used = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, 'id', '') == 'LaunchConfiguration'}
    assert used == set(declared)  # every argument is used, nothing undeclared is read
