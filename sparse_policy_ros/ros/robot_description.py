"""
The robot's URDF as the source of joint names and limits (no rclpy).

A robot stack describes its arm in a URDF: the ``robot_description`` string parameter that
launch files hand to robot_state_publisher and ros2_control, or a file. The policy node takes
its joint names and position / velocity limits from it; an explicitly set parameter still
overrides (narrower limits are the usual reason), and a joint the description does not have is
a start-up error naming both lists. URDF has no acceleration limits (ros2_control keeps those
in a separate YAML), so ``max_joint_acceleration`` stays a parameter.

Parsed with the standard library's ElementTree: only ``<joint>`` elements that are direct
children of ``<robot>`` are joints (the ``<joint>`` entries inside ``<ros2_control>`` are
interface declarations, not kinematics).
"""

from dataclasses import dataclass
from pathlib import Path
import xml.etree.ElementTree as ElementTree

import numpy as np
import yaml

from .paths import package_path
from ..control.safety import JointLimits

JOINT_TYPES = ('revolute', 'continuous', 'prismatic', 'fixed', 'floating', 'planar')
LIMITED_TYPES = ('revolute', 'prismatic')  # URDF requires <limit> on these
COMMANDABLE_TYPES = ('revolute', 'continuous', 'prismatic')  # one position per joint


@dataclass(frozen=True)
class UrdfJoint:
    """One ``<joint>`` of a URDF (limits None where the URDF gives none)."""

    name: str
    kind: str  # the URDF type attribute
    parent: str
    child: str
    axis: tuple[float, float, float]
    lower: float | None
    upper: float | None
    velocity: float | None
    effort: float | None
    mimic: str | None  # the joint this one follows; a mimic joint is not commanded

    @property
    def commandable(self) -> bool:
        """Say whether a position controller commands it: 1-DOF and not a mimic."""
        return self.kind in COMMANDABLE_TYPES and self.mimic is None


@dataclass(frozen=True)
class RobotDescription:
    """The joints of a URDF in document order, and where the text came from."""

    name: str
    joints: tuple[UrdfJoint, ...]
    source: str

    def commandable_joint_names(self) -> list[str]:
        """Names of the joints a controller commands, in document order."""
        return [joint.name for joint in self.joints if joint.commandable]

    def joint(self, name: str) -> UrdfJoint:
        """Return the joint called ``name``; KeyError names the joints there are."""
        for joint in self.joints:
            if joint.name == name:
                return joint
        raise KeyError(f'{self.source}: no joint {name!r}; joints: '
                       f'{[joint.name for joint in self.joints]}')


def _float(element: ElementTree.Element | None, attribute: str, where: str,
           default: float | None = None) -> float | None:
    if element is None or element.get(attribute) is None:
        return default
    text = element.get(attribute)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'{where}: {attribute}={text!r} is not a number') from None
    if not np.isfinite(value):
        raise ValueError(f'{where}: {attribute}={text!r} is not finite')
    return value


def _parse_joint(element: ElementTree.Element, source: str) -> UrdfJoint:
    name = element.get('name')
    if not name:
        raise ValueError(f'{source}: a <joint> has no name attribute')
    where = f'{source}: joint {name!r}'
    kind = element.get('type')
    if kind not in JOINT_TYPES:
        raise ValueError(f'{where}: type={kind!r}, expected one of {list(JOINT_TYPES)}')
    links = {}
    for tag in ('parent', 'child'):
        child = element.find(tag)
        if child is None or not child.get('link'):
            raise ValueError(f'{where}: expected <{tag} link="..."/>')
        links[tag] = child.get('link')
    axis_element = element.find('axis')
    axis_text = '1 0 0' if axis_element is None else axis_element.get('xyz', '1 0 0')
    try:
        axis = tuple(float(value) for value in axis_text.split())
    except ValueError:
        raise ValueError(f'{where}: axis xyz={axis_text!r} is not three numbers') from None
    if len(axis) != 3:
        raise ValueError(f'{where}: axis xyz={axis_text!r} is not three numbers')
    limit = element.find('limit')
    if kind in LIMITED_TYPES and limit is None:
        raise ValueError(f'{where}: a {kind} joint needs <limit lower upper velocity effort>')
    lower = upper = None
    if kind in LIMITED_TYPES:  # URDF: lower and upper default to 0
        lower = _float(limit, 'lower', where, 0.0)
        upper = _float(limit, 'upper', where, 0.0)
        if lower > upper:
            raise ValueError(f'{where}: limit lower {lower} > upper {upper}')
    mimic = element.find('mimic')
    if mimic is not None and not mimic.get('joint'):
        raise ValueError(f'{where}: <mimic> has no joint attribute')
    return UrdfJoint(name=name, kind=kind, parent=links['parent'], child=links['child'],
                     axis=axis, lower=lower, upper=upper,
                     velocity=_float(limit, 'velocity', where),
                     effort=_float(limit, 'effort', where),
                     mimic=None if mimic is None else mimic.get('joint'))


def parse_urdf(text: str, source: str = 'robot_description') -> RobotDescription:
    """Parse URDF text; ValueError names ``source``, the element and what was expected."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise ValueError(f'{source}: not well-formed XML ({error})') from None
    if root.tag != 'robot':
        raise ValueError(f'{source}: the root element is <{root.tag}>, expected <robot>')
    joints = tuple(_parse_joint(element, source) for element in root.findall('joint'))
    names = [joint.name for joint in joints]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f'{source}: joint names appear more than once: {duplicates}')
    return RobotDescription(name=root.get('name', ''), joints=joints, source=source)


def load_robot_description(xml: str, path: str) -> RobotDescription | None:
    """
    Parse the ``robot_description`` text or the file at ``path``; None if neither is set.

    A relative ``path`` is taken inside the package's share folder (``urdf/arm_push.urdf``).
    Setting both is an error: which one the node used would be a guess.
    """
    if xml and path:
        raise ValueError('robot_description and robot_description_file are both set; set one '
                         f'(robot_description_file: {path!r})')
    if xml:
        return parse_urdf(xml, 'robot_description')
    if not path:
        return None
    file = Path(path).expanduser()
    if not file.is_absolute():
        file = package_path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise ValueError(f'robot_description_file: cannot read {str(file)!r} '
                         f'({error.strerror or error})') from None
    return parse_urdf(text, str(file))


def resolve_joint_names(explicit: list[str],
                        description: RobotDescription | None) -> tuple[str, ...]:
    """
    Return ``explicit`` if set, else the description's commandable joints.

    Every explicit joint must be a commandable joint of the description (when there is one);
    otherwise ValueError names both lists.
    """
    if description is None:
        if not explicit:
            raise ValueError('joint_names: empty and no robot description to take them from; '
                             'set joint_names or robot_description(_file)')
        return tuple(explicit)
    available = description.commandable_joint_names()
    if not explicit:
        if not available:
            raise ValueError(f'{description.source}: no revolute, continuous or prismatic '
                             'joint to command')
        return tuple(available)
    unknown = [name for name in explicit if name not in available]
    if unknown:
        raise ValueError(f'joint_names {list(explicit)} do not match the robot description '
                         f'{description.source}: {unknown} not among its commandable joints '
                         f'{available}')
    return tuple(explicit)


LIMIT_PARAMS = ('joint_position_lower', 'joint_position_upper', 'max_joint_velocity',
                'max_joint_acceleration')


def _from_description(param: str, joint: UrdfJoint, source: str) -> float:
    if param == 'max_joint_velocity':
        if joint.velocity is None or joint.velocity <= 0:
            raise ValueError(f'max_joint_velocity: joint {joint.name!r} of {source} has no '
                             f'positive velocity limit (velocity={joint.velocity}); set '
                             'max_joint_velocity')
        return joint.velocity
    if joint.lower is None:  # continuous
        raise ValueError(f'{param}: joint {joint.name!r} of {source} is {joint.kind} (no '
                         'position limits); set joint_position_lower and joint_position_upper')
    return joint.lower if param == 'joint_position_lower' else joint.upper


def resolve_joint_limits(settings: dict, joint_names: tuple[str, ...],
                         description: RobotDescription | None
                         ) -> tuple[JointLimits, dict[str, str], list[str]]:
    """
    Limits per joint: each limit parameter if set, else from the description.

    Returns the limits, where each came from (``{param: 'parameter' | source}``) and warnings:
    an explicit limit looser than the robot description's. ``max_joint_acceleration`` must
    always be set (a URDF has none).
    """
    dof = len(joint_names)
    arrays, origins, warnings = {}, {}, []
    for param in LIMIT_PARAMS:
        explicit = list(settings[param])
        if explicit:
            if len(explicit) != dof:
                raise ValueError(f'{param}: expected one value per joint ({dof}: '
                                 f'{list(joint_names)}), got {explicit}')
            arrays[param] = np.array(explicit, dtype=np.float64)
            origins[param] = 'parameter'
        elif param == 'max_joint_acceleration':
            raise ValueError(f'max_joint_acceleration: expected one value per joint ({dof}: '
                             f'{list(joint_names)}), got []; a URDF carries no acceleration '
                             'limits')
        elif description is None:
            raise ValueError(f'{param}: expected one value per joint ({dof}: '
                             f'{list(joint_names)}), got [] and no robot description')
        else:
            arrays[param] = np.array([_from_description(param, description.joint(name),
                                                        description.source)
                                      for name in joint_names])
            origins[param] = description.source
        if description is not None and origins[param] == 'parameter':
            warnings += _looser_than_description(param, arrays[param], joint_names,
                                                 description)
    limits = JointLimits(lower=arrays['joint_position_lower'],
                         upper=arrays['joint_position_upper'],
                         max_velocity=arrays['max_joint_velocity'],
                         max_acceleration=arrays['max_joint_acceleration'])
    return limits, origins, warnings


def _looser_than_description(param: str, values: np.ndarray, joint_names: tuple[str, ...],
                             description: RobotDescription) -> list[str]:
    warnings = []
    for name, value in zip(joint_names, values):
        joint = description.joint(name)
        bound = {'joint_position_lower': joint.lower, 'joint_position_upper': joint.upper,
                 'max_joint_velocity': joint.velocity}.get(param)
        if bound is None:
            continue
        looser = value < bound if param == 'joint_position_lower' else value > bound
        if looser:
            warnings.append(f'{param}: {value} for joint {name!r} is outside the robot '
                            f"description's {bound} ({description.source}); the parameter "
                            'wins')
    return warnings


def configured_joint_limits(overrides: dict | None = None
                            ) -> tuple[tuple[str, ...], JointLimits]:
    """
    Return the joint names and limits of the shipped ``config/policy.yaml``, with overrides.

    What the policy node starts with from that file (the demo arm's URDF for names, positions
    and speeds, the file's accelerations), read without rclpy: the demo's motion check and the
    evaluation's node executor use it. ``overrides``: parameter values that replace the file's
    (the Panda's limits, ``robot_description_file: ''``). Raises ValueError as the node would.
    """
    config = yaml.safe_load(package_path('config', 'policy.yaml').read_text())
    params = {'robot_description': '', 'robot_description_file': '', 'joint_names': [],
              **{name: [] for name in LIMIT_PARAMS}}
    params.update({key: value for key, value in
                   config['/**/policy_node']['ros__parameters'].items() if key in params})
    params.update(overrides or {})
    description = load_robot_description(params['robot_description'],
                                         params['robot_description_file'])
    joint_names = resolve_joint_names(params['joint_names'], description)
    return joint_names, resolve_joint_limits(params, joint_names, description)[0]
