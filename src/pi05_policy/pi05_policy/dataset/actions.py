"""The action: the commanded setpoint, replayed through the arm's own ``ArmController``.

Kept apart from the planning so that the one place that must match the arm node (splicing,
interpolation, override arbitration, rejection rules) is small and reads against
``so101_driver.arm.trajectory``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from so101_driver.eval_topics import EpisodeEvent
from so101_driver.feetech.calibration import ArmCalibration
from so101_driver.joints import JOINT_NAMES

from pi05_policy.dataset.config import ConversionConfig
from pi05_policy.dataset.streams import BagStreams


def replay_commands(streams: BagStreams, times: np.ndarray, config: ConversionConfig,
                    calibration: ArmCalibration) -> tuple[np.ndarray, np.ndarray, dict]:
    """Commanded targets (radians) at ``times`` (sorted) through the arm's ``ArmController``.

    Returns the setpoints, a mask of the times where the plan is known (a trajectory was
    accepted or the simulator reset the arm before), and the controller's counters.
    """
    from pi05_policy.runtime import command_limits
    from so101_driver.arm.trajectory import ArmController, ExecutorConfig, Outcome

    controller = ArmController(ExecutorConfig(
        limits=command_limits(calibration, config.limit_margin), max_jump=config.max_jump))
    # Simulator resets teleport the arm and hold where it lands (sim.SimCell.reset).
    resets = [(mark.stamp, order, 'reset', None) for order, mark in streams.marks
              if mark.event is EpisodeEvent.START and mark.source == 'sim']
    events = sorted(streams.events + resets, key=lambda e: (e[0], e[1]))
    js_stamp, js_pos = streams.js_stamp, streams.js_pos
    out = np.zeros((len(times), len(JOINT_NAMES)))
    known = np.zeros(len(times), dtype=bool)
    plan_known = False
    rejections: Counter[str] = Counter()
    k = 0

    def present_at(t: float, after: bool = False) -> np.ndarray | None:
        """Newest joint state at or before ``t`` (``after``: the first one after it)."""
        if after:
            i = int(np.searchsorted(js_stamp, t, side='right'))
        else:
            i = int(np.searchsorted(js_stamp, t, side='right')) - 1
        return js_pos[i] if 0 <= i < len(js_stamp) else None

    for i, t in enumerate(times):
        while k < len(events) and events[k][0] <= t:
            when, _, kind, payload = events[k]
            k += 1
            if kind == 'trajectory':
                source, traj = payload
                outcome, text = controller.on_trajectory(source, traj, when, present_at(when))
                if outcome is Outcome.ACCEPTED:
                    plan_known = True
                elif outcome is Outcome.REJECTED:
                    rejections[text.split(':')[0]] += 1
            elif kind == 'override':
                controller.on_override(payload, when, present_at(when))
            elif kind == 'reset':
                landed = present_at(when, after=True)
                if landed is not None:
                    controller.hold_present(landed, when)
                    plan_known = True
        setpoint = controller.executor.setpoint(float(t))
        if plan_known and setpoint is not None:
            out[i] = setpoint
            known[i] = True
    counters = controller.counters
    replay = {'accepted': dict(counters.accepted), 'rejected': dict(counters.rejected),
              'ignored': dict(counters.ignored), 'override_edges': counters.override_edges,
              'rejections': dict(rejections)}
    return out, known, replay
