"""
A Diffusion Policy checkpoint, converted by import-dp-checkpoint, served by the policy node.

The checkpoint is written by the test in DP's layout (test_dp_import.py); the imported model is
state-only (DP's low-dim transformer), so the node subscribes to joint states alone while the
camera keeps publishing. Real rclpy nodes over loopback DDS.
"""

from diagnostic_msgs.msg import DiagnosticArray
import pytest
from rclpy.parameter import Parameter
from sparse_policy_ros.policy.dp_import import main as import_dp_checkpoint
from sparse_policy_ros.ros.diagnostics import status_values
from sparse_policy_ros.ros.policy_node import PolicyNode
from test_dp_import import dp_cfg, write_ckpt
from test_ros_policy_node import (check_commanded_motion, chunks, JOINTS, latest_status,
                                  policy_overrides, SensorFeed)
from trajectory_msgs.msg import JointTrajectory


@pytest.fixture(scope='module')
def dp_model(tmp_path_factory):
    """Import a DDIM-10 DP checkpoint whose state and actions are the test arm's 4 joints."""
    folder = tmp_path_factory.mktemp('dp')
    ckpt = folder / 'latest.ckpt'
    dof = len(JOINTS)
    # Actions the normalizer maps into the joints' range around HOME.
    write_ckpt(ckpt, cfg=dp_cfg('DDIMScheduler', 10, obs_dim=dof, action_dim=dof),
               obs_dim=dof, action_dim=dof, action_low=-0.2, action_span=1.2)
    assert import_dp_checkpoint([str(ckpt), '--out', str(folder / 'model')]) == 0
    return folder / 'model'


@pytest.mark.ros
@pytest.mark.parametrize('mode,target', [('dense', -1.0), ('fora', 0.5), ('ddim', 0.5)])
def test_imported_dp_checkpoint_drives_the_arm_through_the_node(
        ros_harness, dp_model, mode, target):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SensorFeed(ros_harness)  # camera and joint states; the model reads only the joints
    overrides = [p for p in policy_overrides(sparsity_mode=mode, target_sparsity=target)
                 if p.name not in ('model_path', 'random_policy')]
    overrides.append(Parameter('model_path', value=str(dp_model)))
    node = PolicyNode(context=ros_harness.context, parameter_overrides=overrides)
    ros_harness.add_node(node, cleanup=lambda n: (n.close(), n.destroy_node()))
    assert node.autostart_ok
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 30.0, 'chunks')
    ros_harness.wait_for(lambda: (s := latest_status(diagnostics)) is not None
                         and status_values(s)['chunks_published'] != '0', 10.0, 'diagnostics')
    values = status_values(latest_status(diagnostics))
    assert values['sparsity_mode'] == mode
    assert values['model'] == str(dp_model)
    if mode != 'dense':
        assert float(values['sparsity_mean']) == pytest.approx(0.5, abs=0.05)
    assert values['rejected_observation_invalid'] == '0'
    # Only the joint state subscription: the camera topic has no subscriber of the node's.
    assert ros_harness.node.count_subscribers('camera/front/image_raw') == 0
    assert ros_harness.node.count_subscribers('joint_states') >= 1
    messages = trajectories.snapshot()
    assert all(list(msg.joint_names) == JOINTS for msg in messages)
    check_commanded_motion(messages)  # stock-JTC rules and the node's limits, seams included
    feed.running = False
