"""``sensor_msgs/JointState`` -> joint positions in the node's order, with clear errors."""

from typing import Any

import numpy as np

from ..control.message_errors import MessageError


def joint_positions_from_msg(msg: Any, joint_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """
    Pick ``joint_names``' positions (float64, in that order) from a JointState message.

    The message may list joints in any order and carry extra joints, which are ignored.
    Raises :class:`MessageError` for a missing or duplicated joint name, mismatched array
    lengths or a non-finite position of a wanted joint.
    """
    names = list(msg.name)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise MessageError('joint_duplicate', 'joint_state.name', 'unique joint names',
                           f'{names} ({duplicates} repeated)')
    positions = np.asarray(msg.position, dtype=np.float64)
    if positions.shape != (len(names),):
        raise MessageError('joint_data', 'joint_state.position',
                           f'one position per name ({len(names)})', f'{positions.size} values')
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in joint_names if name not in index]
    if missing:
        raise MessageError('joint_missing', 'joint_state.name', f'to contain {missing}', names)
    picked = positions[[index[name] for name in joint_names]]
    if not np.all(np.isfinite(picked)):
        bad = int(np.argmax(~np.isfinite(picked)))
        raise MessageError('joint_nonfinite', f'joint_state.position[{joint_names[bad]!r}]',
                           'a finite value', picked[bad])
    return picked
