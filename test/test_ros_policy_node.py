"""policy_node over loopback DDS: trajectories, safety, bad input, services, lifecycle."""

import json
import os
import subprocess
import sys
import threading

from conftest import isolate_dds
import cv2
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from sparse_policy_ros.control.safety import JointLimits
from sparse_policy_ros.ros.diagnostics import status_values
from sparse_policy_ros.ros.image_conversion import rgb_to_image_fields
from sparse_policy_ros.ros.jtc_validation import CommandedMotionChecker
from sparse_policy_ros.ros.policy_node import PolicyNode
from sparse_policy_ros.ros.trajectory import stamp_to_seconds
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
import torch
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.ros

JOINTS = ['base_yaw', 'shoulder', 'elbow', 'wrist_pitch']
LOWER = [-1.0, -0.5, -0.2, -1.0]
UPPER = [1.0, 1.5, 2.5, 2.0]
MAX_VELOCITY = [1.5, 1.5, 2.0, 2.5]
MAX_ACCELERATION = [8.0, 8.0, 10.0, 12.0]
CONTROL_HZ = 10.0
EXECUTED = 4
# A tiny random policy: fast enough for many chunks per second on 2 cores.
TINY_POLICY = {'encoder': 'small_cnn', 'image_feature_dim': 16, 'n_layer': 2, 'n_head': 2,
               'n_emb': 32, 'num_inference_steps': 8, 'horizon': 12, 'n_action_steps': 6,
               'control_hz': CONTROL_HZ}
HOME = np.array([0.1, 0.5, 1.0, 0.2])
SHIFT = 0.05


def policy_overrides(**changes) -> list[Parameter]:
    values = {
        'model_path': 'random', 'random_policy': json.dumps(TINY_POLICY), 'device': 'cpu',
        'sparsity_mode': 'fixed', 'target_sparsity': 0.75, 'joint_names': JOINTS,
        'camera_names': ['front'], 'image_topics': ['camera/front/image_raw'],
        'compressed_image_topics': [''], 'executed_actions': EXECUTED, 'replan_threshold': 1,
        # Generous: a loaded 2-core machine can stall the executors for a few hundred ms.
        'observation_timeout': 1.5, 'joint_position_lower': LOWER,
        'joint_position_upper': UPPER, 'max_joint_velocity': MAX_VELOCITY,
        'max_joint_acceleration': MAX_ACCELERATION, 'diagnostics_period': 0.2,
        'output_type': 'both',
        # Random weights' sparse output is far from their dense output, so the online fidelity
        # check would (rightly) fall back and WARN; the fidelity tests turn it on themselves.
        'fidelity_check_period': 0.0,
    }
    values.update(changes)
    return [Parameter(name, value=value) for name, value in values.items()]


class SensorFeed:
    """Publishes a camera image and a joint state at 20 Hz from the harness node."""

    def __init__(self, harness, rate: float = 20.0, compressed: bool = False):
        node = harness.node
        self.clock = node.get_clock()
        self.compressed = compressed
        self.image_pub = node.create_publisher(Image, 'camera/front/image_raw',
                                               qos_profile_sensor_data)
        self.compressed_pub = node.create_publisher(
            CompressedImage, 'camera/front/image_raw/compressed', qos_profile_sensor_data)
        self.joint_pub = node.create_publisher(JointState, 'joint_states',
                                               qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.running = True
        self.joints_running = True  # False: the robot's joint states are lost, camera runs
        self.positions = HOME.copy()
        # Extra joint and a shuffled order: the node must pick its joints by name.
        self.names = ['gripper', 'elbow', 'base_yaw', 'wrist_pitch', 'shoulder']
        self.image_stamps = []
        rng = np.random.default_rng(0)
        self.rgb = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        self.timer = node.create_timer(1.0 / rate, self.tick_callback)

    def joint_msg(self, stamp) -> JointState:
        by_name = dict(zip(JOINTS, self.positions.tolist()))
        by_name['gripper'] = 0.04
        msg = JointState(name=list(self.names), position=[by_name[n] for n in self.names])
        msg.header.stamp = stamp
        return msg

    def tick_callback(self) -> None:
        with self.lock:
            if not self.running:
                return
            stamp = self.clock.now().to_msg()
            self.image_stamps.append(stamp_to_seconds(stamp))
            if self.compressed:
                png = cv2.imencode('.png', self.rgb[:, :, ::-1])[1].tobytes()
                image = CompressedImage(format='png', data=png)
                image.header.stamp = stamp
                self.compressed_pub.publish(image)
            else:
                image = Image(**rgb_to_image_fields(self.rgb))
                image.header.stamp = stamp
                self.image_pub.publish(image)
            if self.joints_running:
                self.joint_pub.publish(self.joint_msg(stamp))

    def set_running(self, running: bool) -> None:
        with self.lock:
            self.running = running

    def set_joints_running(self, running: bool) -> None:
        with self.lock:
            self.joints_running = running


def close_node(node) -> None:
    """Stop the node's threads and destroy it (after the executor stopped)."""
    node.close()
    node.destroy_node()


@pytest.fixture
def make_policy_node(ros_harness):
    def make(**changes) -> PolicyNode:
        node = PolicyNode(context=ros_harness.context,
                          parameter_overrides=policy_overrides(**changes))
        return ros_harness.add_node(node, cleanup=close_node)

    return make


def latest_status(diagnostics):
    """Return the newest policy_node status, or None."""
    for array in reversed(diagnostics.snapshot()):
        for status in array.status:
            if status.name.startswith('policy_node'):
                return status
    return None


def is_hold(msg: JointTrajectory) -> bool:
    """Hold: a single braking point at rest (a chunk has its targets and then the stop)."""
    return len(msg.points) == 1 and not any(msg.points[0].velocities)


def chunks(trajectories) -> list:
    """Policy chunks published so far."""
    return [msg for msg in trajectories.snapshot() if not is_hold(msg)]


def holds(trajectories) -> list:
    """Hold commands published so far."""
    return [msg for msg in trajectories.snapshot() if is_hold(msg)]


def node_limits() -> JointLimits:
    return JointLimits(lower=np.array(LOWER), upper=np.array(UPPER),
                       max_velocity=np.array(MAX_VELOCITY),
                       max_acceleration=np.array(MAX_ACCELERATION))


def check_commanded_motion(messages: list) -> CommandedMotionChecker:
    """Apply the stock Jazzy JTC rules and the limits to every message, seams included."""
    checker = CommandedMotionChecker(tuple(JOINTS), node_limits())
    for msg in messages:
        checker.add(msg, start_position=HOME)
    checker.finish()
    assert checker.ok, (checker.rejections[:5], [str(v) for v in checker.violations[:5]])
    return checker


def test_publishes_valid_trajectories(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    forward = ros_harness.collect(Float64MultiArray, '/forward_position_controller/commands')
    feed = SensorFeed(ros_harness)
    make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 5, 20.0, '5 trajectory chunks')
    ros_harness.wait_for(lambda: len(forward) >= 3, 5.0, 'forward position commands')
    dt = 1.0 / CONTROL_HZ
    first_image = feed.image_stamps[0]
    for msg in chunks(trajectories):
        assert msg.joint_names == JOINTS
        stamp = stamp_to_seconds(msg.header.stamp)
        assert stamp > first_image
        times = np.array([stamp_to_seconds(p.time_from_start) for p in msg.points])
        assert times[0] >= 0.5 * dt  # nothing due within half a period of publishing
        # The policy's targets one control period apart, then the braking stop.
        np.testing.assert_allclose(np.diff(times[:-1]), dt, atol=1e-6)
        assert len(msg.points) <= EXECUTED + 1
        assert list(msg.points[-1].velocities) == [0.0] * 4
    # Every message passes a stock Jazzy joint_trajectory_controller, and the motion it
    # commands (seams included) stays within the position, speed and acceleration limits.
    checker = check_commanded_motion(trajectories.snapshot())
    assert checker.seams_checked >= 4
    for msg in forward.snapshot():
        command = np.array(msg.data)
        assert command.shape == (4,)
        assert np.all(command >= np.array(LOWER) - 1e-9)
        assert np.all(command <= np.array(UPPER) + 1e-9)


def test_compressed_images_drive_the_policy(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    SensorFeed(ros_harness, compressed=True)
    make_policy_node(image_topics=[''],
                     compressed_image_topics=['camera/front/image_raw/compressed'])
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'chunks')


def test_stale_observations_hold_once_and_report_error(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SensorFeed(ros_harness)
    make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 2, 20.0, 'trajectory chunks')
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 4, 10.0, 'more chunks')
    n_holds = len(holds(trajectories))  # normally 0; a badly stalled machine may add one
    feed.set_running(False)
    hold = ros_harness.wait_for(lambda: holds(trajectories)[n_holds:], 10.0,
                                'a hold command')[0]
    assert list(hold.points[0].velocities) == [0.0] * 4
    # The hold brakes from the current command within the limits (no jump to a measurement).
    check_commanded_motion(trajectories.snapshot())
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None
        and s.level == DiagnosticStatus.ERROR and s, 5.0, 'an ERROR diagnostic')
    assert 'stale' in status.message
    # Several more diagnostics periods while stale: still exactly one hold, no chunk.
    seen = len(diagnostics)
    ros_harness.wait_for(lambda: len(diagnostics) >= seen + 5, 10.0, 'more diagnostics')
    n_chunks = len(chunks(trajectories))
    assert len(holds(trajectories)) == n_holds + 1
    assert status_values(latest_status(diagnostics))['holds_published'] == str(n_holds + 1)
    feed.set_running(True)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) > n_chunks, 10.0, 'resumed chunks')
    ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None and s.level == DiagnosticStatus.OK,
        5.0, 'an OK diagnostic after resuming')


@pytest.mark.parametrize('kind, corrupt', [
    ('image_encoding', lambda image, joints: setattr(image, 'encoding', '16UC1')),
    ('image_size', lambda image, joints: image.__init__(
        **rgb_to_image_fields(np.zeros((64, 80, 3), np.uint8)))),
    ('image_data', lambda image, joints: setattr(image, 'data', bytes(image.data)[:-7])),
    ('joint_missing', lambda image, joints: (joints.name.pop(1), joints.position.pop(1))),
    ('joint_nonfinite', lambda image, joints: joints.position.__setitem__(2, float('nan'))),
    ('joint_duplicate', lambda image, joints: joints.name.__setitem__(1, joints.name[2])),
    ('stamp_future', lambda image, joints: setattr(
        joints.header.stamp, 'sec', joints.header.stamp.sec + 10)),
])
def test_bad_messages_are_reported_and_node_keeps_running(ros_harness, make_policy_node, kind,
                                                          corrupt):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    feed = SensorFeed(ros_harness)
    make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 1, 20.0, 'a first chunk')
    bad_image = Image(**rgb_to_image_fields(feed.rgb))
    bad_joints = feed.joint_msg(feed.clock.now().to_msg())
    corrupt(bad_image, bad_joints)
    bad_image.header.stamp = bad_joints.header.stamp
    for _ in range(3):
        if kind.startswith('image'):
            feed.image_pub.publish(bad_image)
        else:
            feed.joint_pub.publish(bad_joints)
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None
        and int(status_values(s)[f'rejected_{kind}']) >= 1 and s, 5.0, f'rejected_{kind}')
    values = status_values(status)
    other = [k for k in values if k.startswith('rejected_') and k != f'rejected_{kind}']
    assert all(values[k] == '0' for k in other), values
    assert kind.split('_')[0] in values['last_error']
    n_chunks = len(chunks(trajectories))
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= n_chunks + 2, 10.0,
                         'chunks after the bad messages')


def test_reset_clears_history_and_rollout_cache(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    node = make_policy_node()
    # The shipped table pruner reads no earlier call, so it keeps no cache (0 bytes).
    keeps = node._policy.reads_rollout_cache
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 3, 20.0, 'trajectory chunks')
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None
        and int(status_values(s)['chunks_published']) >= 3 and s, 5.0, 'chunk statistics')
    values = status_values(status)
    # Only the first call after activation found the rollout cache empty; it is in use.
    assert values['cold_calls'] == '1'
    assert (int(values['cache_bytes']) > 0) == keeps
    response = ros_harness.call(Trigger, '/policy_node/reset', Trigger.Request())
    assert response.success, response.message
    assert 'rollout cache' in response.message
    assert (int(response.message.split('(')[1].split()[0]) > 0) == keeps  # bytes freed
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None
        and status_values(s)['resets_service'] == '1'
        and int(status_values(s)['cold_calls']) == 2 and s, 10.0,
        'a cold call after the reset')
    assert (int(status_values(status)['cache_bytes']) > 0) == keeps


def test_enable_service_stops_and_resumes_output(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    SensorFeed(ros_harness)
    make_policy_node()
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 2, 20.0, 'trajectory chunks')
    response = ros_harness.call(SetBool, '/policy_node/enable', SetBool.Request(data=False))
    assert response.success
    ros_harness.wait_for(lambda: holds(trajectories), 5.0, 'a hold on disable')
    n_chunks, n_total = len(chunks(trajectories)), len(trajectories)
    response = ros_harness.call(SetBool, '/policy_node/enable', SetBool.Request(data=True))
    assert response.success
    ros_harness.wait_for(lambda: len(chunks(trajectories)) > n_chunks, 10.0, 'resumed chunks')
    # Nothing but the one hold while disabled (at most one in-flight chunk was discarded).
    assert len(holds(trajectories)) == 1
    assert n_total == n_chunks + 1


def get_state(harness) -> str:
    return harness.call(GetState, '/policy_node/get_state', GetState.Request()).current_state.label


def change_state(harness, transition: int) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition
    return harness.call(ChangeState, '/policy_node/change_state', request).success


def test_lifecycle_transitions(ros_harness, make_policy_node):
    trajectories = ros_harness.collect(JointTrajectory, '/arm_controller/joint_trajectory')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    SensorFeed(ros_harness)
    node = make_policy_node(autostart=False)
    assert get_state(ros_harness) == 'unconfigured'
    assert node._policy is None
    assert change_state(ros_harness, Transition.TRANSITION_CONFIGURE)
    assert get_state(ros_harness) == 'inactive'
    status = ros_harness.wait_for(
        lambda: (s := latest_status(diagnostics)) is not None
        and status_values(s)['state'] == 'inactive' and s, 5.0, 'inactive diagnostics')
    assert status_values(status)['device'] == 'cpu'
    assert len(trajectories) == 0  # configured but inactive: no output
    # Configure-time parameters are refused while configured, runtime ones accepted.
    result = node.set_parameters([Parameter('sparsity_mode', value='dense')])[0]
    assert not result.successful and 'configure' in result.reason
    assert node.set_parameters([Parameter('replan_threshold', value=2)])[0].successful
    assert change_state(ros_harness, Transition.TRANSITION_ACTIVATE)
    ros_harness.wait_for(lambda: len(chunks(trajectories)) >= 2, 20.0, 'chunks when active')
    assert change_state(ros_harness, Transition.TRANSITION_DEACTIVATE)
    assert get_state(ros_harness) == 'inactive'
    ros_harness.wait_for(lambda: holds(trajectories), 5.0, 'a hold on deactivate')
    n_total = len(trajectories)
    seen = len(diagnostics)
    ros_harness.wait_for(lambda: len(diagnostics) >= seen + 3, 5.0, 'diagnostics while inactive')
    assert len(trajectories) == n_total
    assert change_state(ros_harness, Transition.TRANSITION_CLEANUP)
    assert get_state(ros_harness) == 'unconfigured'
    assert node._policy is None
    assert node.set_parameters([Parameter('sparsity_mode', value='dense')])[0].successful
    assert change_state(ros_harness, Transition.TRANSITION_CONFIGURE)
    assert node._policy.mode == 'dense'


def test_configure_fails_cleanly_on_bad_settings(ros_harness, make_policy_node, tmp_path):
    node = make_policy_node(autostart=False, model_path=str(tmp_path / 'missing'))
    assert not change_state(ros_harness, Transition.TRANSITION_CONFIGURE)
    assert get_state(ros_harness) == 'unconfigured'
    node = make_policy_node(joint_position_lower=[0.0])
    assert not node.autostart_ok
    assert node._policy is None


def test_wrong_wiring_is_a_startup_error(ros_env):
    with pytest.raises(ValueError, match='image_topics: expected one entry per camera'):
        PolicyNode(context=ros_env, parameter_overrides=policy_overrides(
            image_topics=['a', 'b']))


def test_main_exits_non_zero_when_start_up_fails(tmp_path):
    isolate_dds()  # the child inherits loopback discovery and this process's domain
    missing = tmp_path / 'no_model_here'
    result = subprocess.run(
        [sys.executable, '-m', 'sparse_policy_ros.ros.policy_node', '--ros-args',
         '-p', f'model_path:={missing}', '-p', f'joint_names:={JOINTS}',
         '-p', 'joint_position_lower:=[0.0, 0.0, 0.0, 0.0]',
         '-p', 'joint_position_upper:=[1.0, 1.0, 1.0, 1.0]',
         '-p', 'max_joint_velocity:=[1.0, 1.0, 1.0, 1.0]',
         '-p', 'max_joint_acceleration:=[5.0, 5.0, 5.0, 5.0]'],
        capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f'model_path: expected a model folder, got {str(missing)!r}' in result.stderr
    assert 'autostart failed' in result.stderr


def test_torch_threads_parameter_sets_the_intra_op_threads(ros_harness, make_policy_node):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2  # a value that differs, so the check can fail
    try:
        node = make_policy_node(torch_threads=wanted)
        assert node.autostart_ok
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_int8_linears_parameter_builds_an_int8_policy(ros_harness, make_policy_node):
    node = make_policy_node(int8_linears=True)
    assert node.autostart_ok
    assert node._policy.int8_linears is True
    assert make_policy_node()._policy.int8_linears is False


def test_int8_linears_applies_to_the_cpu_and_is_a_logged_no_op_on_cuda(monkeypatch):
    # No GPU here: the loader's device resolution is mocked to CUDA, the policy stays on the CPU.
    from sparse_policy_ros.ros import policy_loader
    from sparse_policy_ros.ros.params import POLICY_PARAMS
    assert policy_loader.int8_for_device(True, torch.device('cpu')) == (True, None)
    assert policy_loader.int8_for_device(False, torch.device('cuda')) == (False, None)
    settings = {spec.name: spec.default for spec in POLICY_PARAMS}
    settings.update(int8_linears=True, device='cpu', model_path='random', joint_names=JOINTS)
    policy, _, warnings = policy_loader.load_sparse_policy(settings)
    assert (policy.int8_linears, warnings) == (True, [])
    policy.close()
    monkeypatch.setattr(policy_loader, 'resolve_device', lambda device: torch.device('cuda'))
    policy, _, warnings = policy_loader.load_sparse_policy(settings)
    assert policy.int8_linears is False
    assert warnings == ['int8_linears: true applies to the CPU only; device cuda runs the '
                        'float32 kernels']
    policy.close()
