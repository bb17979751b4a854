"""
What the policy node commands: the plan the controller follows and how new chunks join it.

``CommandOutput`` keeps the trajectory last sent (a ``TrajectoryFollower`` that samples it the
way joint_trajectory_controller does), plans each new chunk from that command and its velocity
within the limits (``control/planning.py``), measures the seam against the running plan,
publishes it (JointTrajectory and / or the forward_position stream) and brakes to a stop when
told. The lock is the caller's; the publishers are the node's (anything with ``publish``).
"""

import numpy as np

from .trajectory import to_joint_trajectory_msg
from ..control.planning import hold_plan, plan_chunk, TrajectoryPlan
from ..control.replanning import Replanner, Splice
from ..control.safety import SafetyFilter
from ..control.trajectory_follower import TrajectoryFollower


class CommandOutput:
    """The commanded trajectory: splice chunks onto it, stop it, stream it."""

    def __init__(self, joint_names: tuple[str, ...], output_type: str):
        """Command ``joint_names``; ``output_type: preview`` means no controller follows."""
        self.joint_names = tuple(joint_names)
        self.output_type = output_type
        self.follower = TrajectoryFollower(self.joint_names)  # what was last commanded
        self.safety: SafetyFilter | None = None
        self.replanner: Replanner | None = None
        self.trajectory_pub = None
        self.forward_pub = None
        self.holding = False  # the last thing sent was a braking stop
        self.executable_due = np.zeros(0)  # due times of the policy's points in the plan

    def configure(self, safety: SafetyFilter, replanner: Replanner) -> None:
        """Use these limits and this replanning bookkeeping from now on."""
        self.safety = safety
        self.replanner = replanner

    def release(self) -> None:
        """Forget limits, bookkeeping and the plan (cleanup); publishers are the node's."""
        self.safety = None
        self.replanner = None
        self.trajectory_pub = self.forward_pub = None
        self.clear()

    def clear(self) -> None:
        """Drop the plan without a stop: it no longer describes the arm (reset, jump)."""
        self.follower.clear()
        if self.replanner is not None:
            self.replanner.clear()
        self.executable_due = np.zeros(0)

    @property
    def commanding(self) -> bool:
        """Tell whether a plan of ours may be moving the arm (something sent, not a stop)."""
        return self.follower.active and not self.holding

    @property
    def plan_end(self) -> float | None:
        """When the running plan's last policy action is due (None without one)."""
        return float(self.executable_due[-1]) if self.executable_due.size else None

    def current(self, now: float, latest_joint_state) -> tuple[np.ndarray, np.ndarray] | None:
        """
        Return where the arm is commanded to be now, and how fast: our plan.

        Before anything was commanded, and always in a dry run (``output_type: preview``,
        where no controller follows the plan): ``latest_joint_state`` ((stamp, positions) or
        None), at rest.
        """
        if self.follower.active and self.output_type != 'preview':
            return self.follower.sample_state(now)
        if latest_joint_state is None:
            return None
        return (latest_joint_state[1].astype(np.float64),
                np.zeros(len(self.joint_names)))

    def tracking_error(self, stamp: float, positions: np.ndarray) -> np.ndarray | None:
        """
        Return |measured - commanded| per joint at ``stamp``, the measurement's time.

        None when nothing of ours is followed (no plan yet, or a dry run).
        """
        if not self.follower.active or self.output_type == 'preview':
            return None
        return np.abs(np.asarray(positions, dtype=np.float64) - self.follower.sample(stamp))

    def plan(self, actions: np.ndarray, time_base: float, now: float, control_period: float,
             current: tuple[np.ndarray, np.ndarray]) -> tuple[TrajectoryPlan, Splice | None]:
        """
        Plan ``actions`` (row 0 due at ``time_base``) from ``current``, stamped ``now``.

        Points due within half a control period are dropped. Returns the plan and how it
        joins the running one (None while holding or with nothing running). Raises
        ``ActionRejected`` for non-finite or mis-shaped actions.
        """
        plan = plan_chunk(actions, time_base, now, control_period, self.joint_names,
                          self.safety, *current, min_lead=0.5 * control_period)
        splice = None
        if not self.holding and self.replanner is not None and len(plan):
            splice = self.replanner.splice(self.follower, plan)
        return plan, splice

    def publish(self, plan: TrajectoryPlan, now: float, current: np.ndarray) -> None:
        """Send ``plan`` to the controller and follow it from ``now``."""
        if self.trajectory_pub is not None:
            self.trajectory_pub.publish(to_joint_trajectory_msg(plan))
        if self.replanner is not None:
            self.replanner.replaced(self.follower, now)
        self.follower.set_trajectory(plan.joint_names, plan.stamp, plan.times_from_start,
                                     plan.positions, now, current, plan.velocities)
        self.executable_due = plan.absolute_times[:plan.executable]
        self.holding = False

    def brake(self, now: float) -> TrajectoryPlan | None:
        """
        Publish a braking stop from the current command within the limits; return it.

        None (nothing sent) when nothing was commanded yet, the arm is not moving on our
        account, or the node is not configured.
        """
        if not self.follower.active or self.safety is None:
            return None
        state = self.follower.sample_state(now)
        plan = hold_plan(self.safety, self.joint_names, now, *state)
        self.publish(plan, now, state[0])
        self.holding = True
        return plan

    def forward_command(self, now: float, control_period: float) -> np.ndarray | None:
        """Return the position to stream to forward_position_controller now (None: no plan)."""
        end = self.follower.end_time
        if end is None or now > end + control_period:
            return None
        return self.follower.sample(now)
