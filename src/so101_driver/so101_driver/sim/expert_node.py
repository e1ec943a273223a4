"""``so101_sim_expert``: the scripted pick-and-place expert of the simulation as a node.

A scripted demonstrator that reads the simulator's ground truth (``sim/truth``) and the
joint states; not the policy. Every ``chunk_period_s`` (node clock: sim time when
``use_sim_time`` is true, as it should be) it publishes a stamped ``JointTrajectory`` chunk on
``joint_trajectory`` planned by ``sim_expert.ScriptedExpert`` (IK on its own copy of the arm
model). When an attempt ends (success, miss, drop, not in bowl, timeout) it logs the
outcome and, with ``auto_reset``, calls ``sim/reset`` (which publishes the episode's END
mark); after ``max_episodes`` attempts (0 = no limit) it stops commanding.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from so101_driver import qos
from so101_driver.guard import GuardedNode
from so101_driver.eval_topics import PayloadError, SimTruth
from so101_driver.joints import measured_positions
from so101_driver.ros_io import float_range, run_node, trajectory_msg
from so101_driver.sim.expert import FAILURE_RATES, ExpertConfig, ScriptedExpert

#: ExpertConfig fields that are node parameters beyond the noise (same names).
EPISODE_FIELDS = ('max_attempts', 'episode_timeout_s', 'clean_after_assist',
                  *FAILURE_RATES.values(), 'miss_offset_m', 'knock_offset_m',
                  'narrow_open_rad', 'slip_open_rad', 'release_outside_m')

class SimExpertNode(GuardedNode):
    """Scripted expert: ground truth in, joint trajectory chunks out."""

    def __init__(self, **kwargs):
        super().__init__('so101_sim_expert', **kwargs)
        self._declare_parameters()
        def p(name):
            return self.get_parameter(name).value
        self.expert = ScriptedExpert(ExpertConfig(
            seed=p('seed'), grasp_xy_noise_m=p('grasp_xy_noise_m'),
            grasp_z_noise_m=p('grasp_z_noise_m'), close_timing_noise_s=p('close_timing_noise_s'),
            speed_noise=p('speed_noise'), reaction_delay_s=p('reaction_delay_s'),
            chunk_horizon_s=p('chunk_horizon_s'), chunk_dt_s=p('chunk_dt_s'),
            model_path=p('model_path'), **{name: p(name) for name in EPISODE_FIELDS}))
        self.auto_reset = p('auto_reset')
        self.max_episodes = p('max_episodes')
        self.outcomes: Counter = Counter()
        self.chunks_sent = 0
        self._present: np.ndarray | None = None
        self._judged_episode: int | None = None  # episode whose outcome was handled
        self._reset_pending = False
        self._fresh_after = -1.0  # sim time: joint states older than a reset are stale
        self.pub = self.create_publisher(JointTrajectory, 'joint_trajectory', qos.COMMAND)
        self.create_subscription(String, 'sim/truth', self._on_truth, qos.STREAM_SUB)
        self.create_subscription(JointState, 'joint_states', self._on_joint_state,
                                 qos.STREAM_SUB)
        self.create_subscription(Bool, 'teleop/override', self._on_override, qos.LATCHED)
        self.reset_client = self.create_client(Trigger, 'sim/reset')
        self.create_timer(p('chunk_period_s'), self._on_timer)
        if not self.get_parameter('use_sim_time').value:
            self.get_logger().warning('use_sim_time is false: chunk stamps will be wall time, '
                                   'which the simulator reads as far in the future')
        self.get_logger().info('scripted expert (not a policy) ready: '
                               f'{self.max_episodes or "unlimited"} episodes, auto_reset '
                               f'{self.auto_reset}')

    def _declare_parameters(self):
        def declare(name, default, description, **ranges):
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True, **ranges))

        declare('seed', 0, 'Seed of every noise draw',
                integer_range=[IntegerRange(from_value=0, to_value=2**31 - 1, step=1)])
        declare('grasp_xy_noise_m', 0.008, 'Std of the horizontal grasp-point error (m)',
                floating_point_range=float_range(0, 0.1))
        declare('grasp_z_noise_m', 0.006, 'Std of the grasp height error (m)',
                floating_point_range=float_range(0, 0.1))
        declare('close_timing_noise_s', 0.3, 'Std of when the jaws close relative to the end '
                'of the descent (s; early closes grasp high)',
                floating_point_range=float_range(0, 5))
        declare('speed_noise', 0.2, 'Relative std of every segment duration',
                floating_point_range=float_range(0, 1))
        declare('reaction_delay_s', 0.2, 'Age of the ground truth the expert acts on (s)',
                floating_point_range=float_range(0, 5))
        declare('chunk_period_s', 0.25, 'How often a chunk is published (node clock, s)',
                floating_point_range=float_range(0.02, 5))
        declare('chunk_horizon_s', 1.0, 'Length of each chunk (s)',
                floating_point_range=float_range(0.05, 10))
        declare('chunk_dt_s', 0.05, 'Spacing of the points of a chunk (s)',
                floating_point_range=float_range(0.005, 1))
        declare('auto_reset', True, 'Call sim/reset when an episode ends')
        declare('max_episodes', 0, 'Stop commanding after this many episodes; 0 = no limit',
                integer_range=[IntegerRange(from_value=0, to_value=1_000_000, step=1)])
        declare('max_attempts', 1, 'Grasp attempts per episode; 0 = until episode_timeout_s',
                integer_range=[IntegerRange(from_value=0, to_value=1000, step=1)])
        declare('episode_timeout_s', 0.0, 'End the episode, failed, after this long (sim s); '
                '0 = never', floating_point_range=float_range(0, 3600))
        declare('clean_after_assist', True, 'The attempt after an operator takeover injects '
                'no failure (the operator set the arm up)')
        for name in FAILURE_RATES.values():
            declare(name, 0.0, f'Per-attempt probability of the {name[:-5]} failure (rates '
                    'add up to at most 1)', floating_point_range=float_range(0, 1))
        declare('miss_offset_m', 0.035, 'miss: grasp point this far across the jaws (m)',
                floating_point_range=float_range(0, 0.2))
        declare('knock_offset_m', 0.036, 'knock: grasp point this far along the jaws (m)',
                floating_point_range=float_range(0, 0.2))
        declare('narrow_open_rad', 0.5, 'narrow_open: jaw opening of the attempt (rad)',
                floating_point_range=float_range(-0.2, 1.8))
        declare('slip_open_rad', 0.36, 'slip, transport_drop: the grip relaxes to this (rad)',
                floating_point_range=float_range(-0.2, 1.8))
        declare('release_outside_m', 0.15, 'release_outside: release this far short of the '
                'bowl (m)', floating_point_range=float_range(0, 0.5))
        declare('model_path', '', 'Arm MJCF used for IK; empty = the packaged mjcf/so101.xml')

    # -- callbacks ---------------------------------------------------------------
    def _on_truth(self, msg: String):
        try:
            self.expert.observe(SimTruth.from_json(msg.data))
        except PayloadError as err:
            self.get_logger().error(f'sim/truth: {err}', throttle_duration_sec=5.0)

    def _on_override(self, msg: Bool):
        now = self.get_clock().now().nanoseconds * 1e-9
        was = self.expert.paused
        self.expert.set_override(bool(msg.data), now)
        if self.expert.paused != was:
            self.get_logger().info('operator took over: holding off' if self.expert.paused
                                   else 'operator handed back: re-planning')

    def _on_joint_state(self, msg: JointState):
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if stamp < self._fresh_after:
            return  # measured before the reset moved the arm home
        try:  # a NaN present would be the first point of every chunk
            self._present = measured_positions(msg.name, msg.position)
        except ValueError as err:
            self.get_logger().warning(f'{err}; ignored', throttle_duration_sec=5.0)

    @property
    def episodes_done(self) -> int:
        return sum(self.outcomes.values())

    def _on_timer(self):
        if self.max_episodes and self.episodes_done >= self.max_episodes:
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        if self._present is None or now <= 0:
            return
        traj = self.expert.act(now, self._present)
        later = self.get_clock().now().nanoseconds * 1e-9
        if traj is not None and later - now > self.expert.config.chunk_dt_s:
            traj = self.expert.act(later, self._present)  # planning took a while: start now
        if traj is not None and not np.all(np.isfinite(traj.positions)):
            self.get_logger().error('the plan is not finite (IK towards an absurd sim/truth '
                                    'cube position?): chunk not sent', throttle_duration_sec=5.0)
            traj = None
        if traj is not None and not self._reset_pending:
            self.pub.publish(trajectory_msg(traj.positions, traj.time_from_start, traj.start))
            self.chunks_sent += 1
        if self.expert.finished and self.expert.episode != self._judged_episode:
            self._judged_episode = self.expert.episode
            self.outcomes[self.expert.outcome.value] += 1
            attempts = [a for a in self.expert.attempts if a.episode == self.expert.episode]
            self.get_logger().info(
                f'episode {self.expert.episode}: {self.expert.outcome.value}'
                f'{" (placed by the operator)" if self.expert.rescued else ""} after '
                f'{len(attempts)} attempts ({", ".join(a.outcome.value for a in attempts)}); '
                f'{self.episodes_done} done: {dict(self.outcomes)}')
            if self.auto_reset:  # also after the last one: the sim's END mark closes it
                self._request_reset()
            if self.max_episodes and self.episodes_done >= self.max_episodes:
                self.get_logger().info(f'{self.max_episodes} episodes done; idle')

    def _request_reset(self):
        if not self.reset_client.service_is_ready():
            self.get_logger().warning('sim/reset is not available; not resetting')
            return
        self._reset_pending = True
        future = self.reset_client.call_async(Trigger.Request())
        future.add_done_callback(self._on_reset_done)

    def _on_reset_done(self, future):
        self._reset_pending = False
        self._present = None  # the reset moved the arm: wait for a joint state from after it
        self._fresh_after = self.get_clock().now().nanoseconds * 1e-9
        try:
            self.get_logger().info(f'sim/reset: {future.result().message}')
        except Exception as err:  # noqa: BLE001 - report a failed call, keep running
            self.get_logger().error(f'sim/reset failed: {err}')


def main(args=None):
    run_node(SimExpertNode, 'so101_sim_expert', (ValueError, FileNotFoundError), args=args)


if __name__ == '__main__':
    main()
