"""
Parameter declarations of the nodes: one table per node, declared with ParameterDescriptor.

Each :class:`ParamSpec` carries a description, an optional numeric range and when the value may
change: ``read_only`` (shape- and wiring-defining: joints, cameras, topics, model),
``configure`` (read in ``on_configure``; changes are refused unless the node is unconfigured) or
``runtime`` (read on every use). The same tables are the single source for ``config/*.yaml``
checks in the tests.
"""

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rcl_interfaces.msg import ParameterType
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from ..control.replanning import NODE_CONSISTENCY, NOISE_MODES, REPLAN_MODES

READ_ONLY = 'read_only'
CONFIGURE = 'configure'
RUNTIME = 'runtime'

SPARSITY_MODES = ('dense', 'pruner', 'fora', 'fixed', 'ddim', 'ddim_searched', 'ddim_rollout')
DEVICES = ('auto', 'cpu', 'cuda')
OUTPUT_TYPES = ('joint_trajectory', 'forward_position', 'both', 'preview')
RANDOM_MODEL = 'random'

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}
_ARRAY_TYPES = {str: ParameterType.PARAMETER_STRING_ARRAY,
                float: ParameterType.PARAMETER_DOUBLE_ARRAY,
                int: ParameterType.PARAMETER_INTEGER_ARRAY}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter."""

    name: str
    default: Any  # its type decides the parameter type; lists need ``item_type``
    description: str
    when: str = RUNTIME  # READ_ONLY, CONFIGURE or RUNTIME
    value_range: tuple[float, float] | None = None  # inclusive, for int and float parameters
    choices: tuple[str, ...] | None = None  # allowed string values
    item_type: type | None = None  # element type of list parameters

    def descriptor(self) -> ParameterDescriptor:
        """Build the ParameterDescriptor for ``declare_parameter``."""
        if isinstance(self.default, list):
            parameter_type = _ARRAY_TYPES[self.item_type]
        else:
            parameter_type = _TYPES[type(self.default)]
        constraints = []
        if self.choices:
            constraints.append(f'one of {list(self.choices)}')
        if self.when == CONFIGURE:
            constraints.append('takes effect at the next configure transition')
        descriptor = ParameterDescriptor(
            name=self.name, type=parameter_type, description=self.description,
            additional_constraints='; '.join(constraints), read_only=self.when == READ_ONLY)
        if self.value_range is not None:
            low, high = self.value_range
            if isinstance(self.default, int) and not isinstance(self.default, bool):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high),
                                                         step=1)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(low), to_value=float(high), step=0.0)]
        return descriptor

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not allowed (beyond the descriptor's range), else None."""
        if self.choices is not None and value not in self.choices:
            return f'{self.name} must be one of {list(self.choices)}, got {value!r}'
        return None


POLICY_PARAMS = (
    ParamSpec('autostart', True, 'Configure and activate the node at start-up.', READ_ONLY),
    ParamSpec('model_path', '', "Model folder (config, weights, pruner). '' = the package's "
              f"models/default; '{RANDOM_MODEL}' = random weights (demos and tests only).",
              READ_ONLY),
    ParamSpec('random_policy', '{}', 'JSON dict of PolicyConfig fields for model_path '
              f"'{RANDOM_MODEL}'; cameras and joint counts come from this node's parameters.",
              READ_ONLY),
    ParamSpec('device', 'auto', "Torch device: 'auto' picks CUDA when available.", CONFIGURE,
              choices=DEVICES),
    ParamSpec('torch_threads', 0, 'Intra-op threads for inference; 0 = torch default (one per '
              'core). Set it below the core count when other processes share the cores: spinning '
              'OpenMP threads on a busy core slow every call down.', CONFIGURE,
              value_range=(0, 256)),
    ParamSpec('cuda_graphs', True, 'On CUDA, replay repeated calls from CUDA graphs (one '
              'launch per call, bit-identical actions); false = eager kernels.', CONFIGURE),
    ParamSpec('int8_linears', False, "On the CPU, run the transformer branches' matmuls as "
              'dynamic int8 (wide models: ~1.5x per sparse call; not bit-identical). On a '
              'CUDA device it does not apply: float32 kernels, and a warning in the log.',
              CONFIGURE),
    ParamSpec('sparsity_mode', 'pruner', 'How branches are skipped: dense, the learned pruner, '
              'a static baseline schedule, or fewer DDIM steps (ddim: evenly strided; '
              "ddim_searched: the model folder's searched timesteps, "
              'ddim_timesteps.json; ddim_rollout: streaming, the searched 6-step set with '
              'only (1 - target_sparsity) x 100 steps computed per call and the rest reused '
              'from the previous calls, needs sampling_noise shifted).', CONFIGURE,
              choices=SPARSITY_MODES),
    ParamSpec('target_sparsity', -1.0, 'Fraction of the dense (step, branch) work skipped, in '
              "[0, 1), against the model's dense steps (also for a pruner on a coarser grid of "
              'its own); -1 = the checkpoint default (pruner) / required for fora, fixed, ddim.',
              CONFIGURE, value_range=(-1.0, 0.999)),
    ParamSpec('num_inference_steps', 0, 'Denoising steps per call; 0 = the model config.',
              CONFIGURE, value_range=(0, 1000)),
    ParamSpec('seed', 0, 'Seed of the sampling noise (and of random weights).', CONFIGURE,
              value_range=(0, 2 ** 31 - 1)),
    ParamSpec('joint_names', [], "Joints in the policy's state and action order; not set = "
              "the robot description's commandable joints in document order. Each must be a "
              'joint of the robot description when there is one.', READ_ONLY, item_type=str),
    ParamSpec('robot_description', '', "The robot's URDF (XML text, as launch files pass it "
              "to robot_state_publisher): joint names and position / velocity limits. '' = "
              'none.', READ_ONLY),
    ParamSpec('robot_description_file', '', 'Path of a URDF file instead of '
              "robot_description (relative = inside the package's share folder, e.g. "
              "urdf/arm_push.urdf). '' = none.", READ_ONLY),
    ParamSpec('robot_description_topic', '', 'Topic (std_msgs/String, transient local) a '
              'robot stack latches its URDF on, usually /robot_description (from '
              "robot_state_publisher), instead of robot_description(_file). '' = none.",
              READ_ONLY),
    ParamSpec('robot_description_timeout', 10.0, 'Seconds to wait at start-up for the URDF '
              'on robot_description_topic.', READ_ONLY, value_range=(0.1, 600.0)),
    ParamSpec('camera_names', ['front'], "Cameras in the policy's order.", READ_ONLY,
              item_type=str),
    ParamSpec('image_topics', ['camera/front/image_raw'], 'sensor_msgs/Image topic per camera '
              "(same order as camera_names; '' = none).", READ_ONLY, item_type=str),
    ParamSpec('compressed_image_topics', [''], 'sensor_msgs/CompressedImage topic per camera '
              "(same order as camera_names; '' = none).", READ_ONLY, item_type=str),
    ParamSpec('resize_images', False, "Resize images to the model's size instead of rejecting "
              'other sizes.', CONFIGURE),
    ParamSpec('joint_state_topic', 'joint_states', 'sensor_msgs/JointState topic.', READ_ONLY),
    ParamSpec('executed_actions', 0, 'Actions executed per chunk (receding horizon): 0 = the '
              "model's n_action_steps, else 2 to n_action_steps (action 0 is always already "
              'due when a chunk is published).', RUNTIME, value_range=(0, 1000)),
    ParamSpec('replan_threshold', 2, "Start the next inference when this many of the policy's "
              'published actions are still ahead.', RUNTIME, value_range=(0, 1000)),
    ParamSpec('replan_mode', 'chunked', 'chunked: infer when replan_threshold actions remain; '
              'streaming: infer again as soon as a new observation and the worker are ready '
              '(replan_rate 0) or at replan_rate, each chunk spliced onto the one executing.',
              CONFIGURE, choices=REPLAN_MODES),
    ParamSpec('replan_rate', 0.0, 'streaming: chunks per second to aim for; 0 = as fast as '
              'new observations and inference allow.', RUNTIME, value_range=(0.0, 1000.0)),
    ParamSpec('consistency', 'prefix', 'streaming: prefix = each call keeps the committed '
              'actions (executed, running during the call, prefix_steps more) and inpaints '
              'the rest; none = independent chunks.', RUNTIME, choices=NODE_CONSISTENCY),
    ParamSpec('prefix_steps', 5, 'streaming prefix: planned actions beyond the expected '
              'inference delay kept in each new chunk.', RUNTIME, value_range=(0, 1000)),
    ParamSpec('prefix_until', 1.0, 'streaming prefix: fraction of the denoising steps the '
              'committed actions are imposed on.', RUNTIME, value_range=(0.01, 1.0)),
    ParamSpec('rollout_refresh', 0.0, 'ddim_rollout: a call whose observation tokens moved '
              'more than this relative change from the last call computes every step (0 = '
              'never; 0.29 in the disturbance evaluation).', CONFIGURE,
              value_range=(0.0, 100.0)),
    ParamSpec('sampling_noise', 'fresh', 'streaming: fresh = new initial noise per call; '
              "shifted = the last call's noise moved by the control steps since, new rows at "
              'the end (what ddim_rollout needs: its reused steps came from that noise).',
              RUNTIME, choices=NOISE_MODES),
    ParamSpec('episode_start_topic', '', 'std_msgs/Header topic announcing a new episode '
              "(header.stamp = its start): clears the history and the rollout cache. '' = "
              'none (a real robot calls ~/reset).', READ_ONLY),
    ParamSpec('future_stamp_tolerance', 0.1, 'Seconds an observation stamp may lie ahead of '
              "the node's clock; later stamps are rejected (stamp_future).", RUNTIME,
              value_range=(0.0, 10.0)),
    ParamSpec('joint_jump_threshold', 0.5, 'A joint state this far (rad or m, any joint) from '
              'the previous one clears the history and the rollout cache and drops the plan; '
              '0 = never.', RUNTIME, value_range=(0.0, 100.0)),
    ParamSpec('start_tolerance', 0.0, 'A new chunk starts from the current command; when the '
              'newest joint state lies farther than this (rad or m, any joint) from what was '
              'commanded at its stamp, the arm is not following the plan (blocked, moved by '
              'hand, another controller, a simulator reset heard late): the plan is dropped and '
              'the chunk starts from the measured position at rest. 0 = never.', RUNTIME,
              value_range=(0.0, 100.0)),
    ParamSpec('controller_topic', '/arm_controller/joint_trajectory',
              'trajectory_msgs/JointTrajectory output (joint_trajectory_controller).', READ_ONLY),
    ParamSpec('forward_position_topic', '/forward_position_controller/commands',
              'std_msgs/Float64MultiArray output streamed at the control rate.', READ_ONLY),
    ParamSpec('output_type', 'joint_trajectory', 'Which outputs to publish; preview = dry run: '
              'the planned trajectories go to preview_topic only, nothing to a controller, '
              'and each chunk is planned from the measured joint state.', READ_ONLY,
              choices=OUTPUT_TYPES),
    ParamSpec('preview_topic', '~/preview',
              'trajectory_msgs/JointTrajectory output of output_type preview.', READ_ONLY),
    ParamSpec('require_arming', False, 'Start disabled: no motion until ~/enable is called with '
              'true (after each activate). For a real arm.', READ_ONLY),
    ParamSpec('observation_timeout', 0.5, 'Seconds after which observations are stale: no new '
              'chunks, one hold command, ERROR on /diagnostics.', RUNTIME,
              value_range=(0.01, 60.0)),
    ParamSpec('joint_position_lower', [], 'Lowest allowed position per joint (rad or m); not '
              'set = from the robot description.',
              CONFIGURE, item_type=float),
    ParamSpec('joint_position_upper', [], 'Highest allowed position per joint (rad or m); not '
              'set = from the robot description.',
              CONFIGURE, item_type=float),
    ParamSpec('max_joint_velocity', [], 'Largest allowed speed per joint (per second); not '
              'set = from the robot description.',
              CONFIGURE, item_type=float),
    ParamSpec('max_joint_acceleration', [], 'Largest allowed acceleration per joint (per '
              'second squared); every commanded segment, seams included, stays within it.',
              CONFIGURE, item_type=float),
    ParamSpec('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.', READ_ONLY,
              value_range=(0.01, 60.0)),
    ParamSpec('fidelity_check_period', 2.0, 'Seconds between online fidelity checks: on a '
              'spare cycle the reference policy answers the observation and noise of the chunk '
              'just published, the action deviation goes to /diagnostics; 0 = off. Ignored in '
              'dense mode.', RUNTIME, value_range=(0.0, 3600.0)),
    ParamSpec('fidelity_reference', 'dense', 'Reference of the fidelity check: dense, or a '
              'static budget (fixed, fora, ddim at fidelity_reference_sparsity) on hardware too '
              'slow for dense.', CONFIGURE, choices=('dense', 'fixed', 'fora', 'ddim')),
    ParamSpec('fidelity_reference_sparsity', 0.5, 'Target sparsity of a static reference, '
              'below the primary one.', CONFIGURE, value_range=(0.0, 0.999)),
    ParamSpec('fidelity_warn_threshold', 0.05, 'Largest action deviation from the reference '
              '(rad or m, any executed step and joint) before /diagnostics warns.', CONFIGURE,
              value_range=(1e-6, 100.0)),
    ParamSpec('fidelity_fallback_threshold', 0.15, 'Deviation above which the node serves the '
              'reference until recovered.', CONFIGURE, value_range=(1e-6, 100.0)),
    ParamSpec('fidelity_recover_threshold', 0.03, 'The primary is served again after '
              'fidelity_recover_checks checks in a row below this deviation.', CONFIGURE,
              value_range=(1e-6, 100.0)),
    ParamSpec('fidelity_recover_checks', 3, 'Consecutive calm checks that end a fallback.',
              CONFIGURE, value_range=(1, 1000)),
)

SIM_PARAMS = (
    ParamSpec('image_size', 96, 'Camera image height and width in pixels.', READ_ONLY,
              value_range=(16, 1024)),
    ParamSpec('physics_rate', 100.0, 'Simulation ticks per simulated second (trajectory '
              'sampling, /clock).', READ_ONLY, value_range=(1.0, 2000.0)),
    ParamSpec('camera_rate', 20.0, 'Camera images per simulated second.', READ_ONLY,
              value_range=(0.1, 500.0)),
    ParamSpec('joint_state_rate', 50.0, 'Joint states per simulated second.', READ_ONLY,
              value_range=(0.1, 2000.0)),
    ParamSpec('real_time_factor', 1.0, 'Simulated seconds per wall second; 0 = as fast as '
              'possible (use use_sim_time in the other nodes).', RUNTIME,
              value_range=(0.0, 100.0)),
    ParamSpec('publish_clock', True, 'Publish /clock with the simulated time.', READ_ONLY),
    ParamSpec('command_delay', 0.15, 'Simulated seconds after a reset during which the arm '
              'rests and commands are ignored: the reset moves the arm at once (no real arm '
              'does), and a command planned before the policy learned of it would pull the '
              'arm back. The episode start is announced with its end as the stamp.', RUNTIME,
              value_range=(0.0, 10.0)),
    ParamSpec('max_episode_time', 12.0, 'Simulated seconds before an episode times out.',
              RUNTIME, value_range=(0.1, 3600.0)),
    ParamSpec('seed', 0, 'Seed of the next episode; incremented after each episode.', RUNTIME,
              value_range=(0, 2 ** 31 - 1)),
    ParamSpec('autoreset', True, 'Start the next episode when one ends.', RUNTIME),
    ParamSpec('task', 'arm_push', 'Simulated task: arm_push (the 4-joint table-top arm) or '
              'panda_push (the Franka Panda of gym-hil 0.1.14: pip install --no-deps '
              'gym-hil==0.1.14); the joint names, state and commands follow the task.',
              READ_ONLY, choices=('arm_push', 'panda_push')),  # sim.envs.ENV_NAMES
    ParamSpec('teleop', 'none', 'Who commands the arm: none = whatever arrives on '
              'trajectory_topic (a policy); expert = the scripted PushExpert, which publishes '
              'its targets on trajectory_topic as a teleop device would (for recorder_node '
              'demonstrations); other commands are then not taken.', READ_ONLY,
              choices=('none', 'expert')),
    ParamSpec('trajectory_topic', '/arm_controller/joint_trajectory',
              'trajectory_msgs/JointTrajectory input.', READ_ONLY),
    ParamSpec('joint_state_topic', 'joint_states', 'sensor_msgs/JointState output.', READ_ONLY),
    ParamSpec('image_topic_prefix', 'camera', 'Images go to <prefix>/<camera>/image_raw.',
              READ_ONLY),
    ParamSpec('diagnostics_period', 1.0, 'Seconds (wall) between /diagnostics messages.',
              READ_ONLY, value_range=(0.01, 60.0)),
)

RECORDER_PARAMS = (
    ParamSpec('output_path', '', 'Replay-buffer store (zarr folder) the episodes are appended '
              'to; created, with its metadata, when the first episode is written. An existing '
              'store must hold the same cameras, joints, image size and rate.', READ_ONLY),
    ParamSpec('camera_names', ['front'], 'Cameras in the store: one camera stores data/img, '
              'several data/img_<camera>.', READ_ONLY, item_type=str),
    ParamSpec('image_topics', ['camera/front/image_raw'], 'sensor_msgs/Image topic per camera '
              "(same order as camera_names; '' = none).", READ_ONLY, item_type=str),
    ParamSpec('compressed_image_topics', [''], 'sensor_msgs/CompressedImage topic per camera '
              "(same order as camera_names; '' = none).", READ_ONLY, item_type=str),
    ParamSpec('image_size', [], 'Frame height and width stored, [H, W]: frames are resized to '
              "it. Not set = the cameras' own size (every frame must have the first frame's, "
              "or the store's, size).", READ_ONLY, item_type=int),
    ParamSpec('joint_state_topic', 'joint_states', 'sensor_msgs/JointState topic: data/state.',
              READ_ONLY),
    ParamSpec('joint_names', [], "Joints in the store's state and action order; not set = the "
              "store's joint_names, else the names of the first JointState received.",
              READ_ONLY, item_type=str),
    ParamSpec('command_topic', '/arm_controller/joint_trajectory', 'Teleop command topic: '
              'data/action, the commanded joint positions.', READ_ONLY),
    ParamSpec('command_type', 'joint_trajectory', 'Message type of command_topic: '
              'trajectory_msgs/JointTrajectory, sensor_msgs/JointState (position by name) or '
              'std_msgs/Float64MultiArray (data in joint_names order).', READ_ONLY,
              choices=('joint_trajectory', 'joint_state', 'float64_multi_array')),
    ParamSpec('rate', 10.0, 'Policy rate (Hz): the streams are resampled to one stored step '
              'every 1 / rate s.', READ_ONLY, value_range=(0.1, 1000.0)),
    ParamSpec('max_age', 0.5, 'Seconds after which a stream counts as stale at a step (frame '
              'or command older, joint states further apart): an episode with a stale step is '
              'not written.', READ_ONLY, value_range=(0.001, 60.0)),
    ParamSpec('min_steps', 2, 'Fewest steps an episode must have to be written.', READ_ONLY,
              value_range=(1, 1000000)),
    ParamSpec('use_receive_time', False, 'Time messages by when they arrive instead of their '
              'header.stamp (always for messages without a header or with a zero stamp).',
              READ_ONLY),
    ParamSpec('max_episode_duration', 300.0, 'Seconds after ~/start at which the episode is '
              'stopped and written on its own (episodes are buffered in memory, decoded: a '
              '96x96 camera at 30 Hz takes ~50 MB a minute); a WARN says so.', READ_ONLY,
              value_range=(1.0, 3600.0)),
    ParamSpec('episode_start_topic', '', 'std_msgs/Header topic: each message ends the '
              'episode being recorded (written as by ~/stop) and starts the next (the sim '
              "node's /sim_node/episode_start). '' = episodes start by ~/start only.",
              READ_ONLY),
    ParamSpec('episode_end_topic', '', 'std_msgs/String topic: each message ends the episode '
              "being recorded and writes it (the sim node's /sim_node/episode). '' = none.",
              READ_ONLY),
    ParamSpec('discard_failed', False, 'An episode_end_topic message whose data is JSON with '
              '"success": false discards the episode instead of writing it.', READ_ONLY),
    ParamSpec('diagnostics_period', 1.0, 'Seconds (wall) between /diagnostics messages.',
              READ_ONLY, value_range=(0.01, 60.0)),
)


def declare(node, specs: tuple[ParamSpec, ...]) -> None:
    """Declare every parameter of ``specs`` on ``node``."""
    for spec in specs:
        descriptor = spec.descriptor()
        # An empty list says nothing about its element type: declare by type (no default).
        default = (Parameter.Type(descriptor.type) if spec.default == [] else spec.default)
        node.declare_parameter(spec.name, default, descriptor)


def values(node, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Return the current values of ``specs`` as a plain dict (lists for arrays)."""
    out = {}
    for spec in specs:
        try:
            value = node.get_parameter(spec.name).value
        except ParameterUninitializedException:
            value = spec.default
        out[spec.name] = list(value) if isinstance(spec.default, list) else value
    return out


def spec_by_name(specs: tuple[ParamSpec, ...]) -> dict[str, ParamSpec]:
    """Index a table by parameter name."""
    return {spec.name: spec for spec in specs}
