"""How the view looks: colours, series styles, the world frame and the viewer layout.

Kept apart from :mod:`eval_monitor.view.scene` so the message handling reads without the
styling. Everything here is logged once, static, before the first message: a series' name
and colour, and the frame of each ``world/`` entity. No rclpy here.
"""

from __future__ import annotations

import rerun as rr
import rerun.blueprint as rrb

from so101_driver.joints import JOINT_NAMES

from eval_monitor.metrics.definitions import EventKind

#: Half edge of the sim cell's 3 cm cube (``mjcf/scene.xml``); sim/truth gives no size.
CUBE_HALF_M = 0.015
#: The URDF root link: the frame of everything under ``world/`` (the sim's world frame).
ROOT_FRAME = 'base_link'
SOURCE_COLORS = {'policy': (40, 120, 255, 255), 'teleop': (255, 150, 20, 255)}
SPLICE_COLOR = (255, 40, 200, 255)
#: Event kind -> (colour, marker) of its points on the gripper plot.
EVENT_STYLE: dict[str, tuple[tuple[int, int, int], str]] = {
    EventKind.EPISODE_START.value: ((200, 200, 200), 'up'),
    EventKind.EPISODE_END.value: ((200, 200, 200), 'down'),
    EventKind.GRASP_ATTEMPT.value: ((240, 220, 40), 'circle'),
    EventKind.GRASP_SUCCESS.value: ((40, 200, 60), 'diamond'),
    EventKind.GRASP_FAILED.value: ((230, 40, 40), 'cross'),
    EventKind.DROP.value: ((255, 120, 0), 'asterisk'),
    EventKind.PLACE.value: ((60, 140, 255), 'square'),
    EventKind.INTERVENTION_START.value: ((190, 80, 255), 'right'),
    EventKind.INTERVENTION_END.value: ((190, 80, 255), 'left'),
}
#: Entities drawn in the URDF root frame.
WORLD_ENTITIES = ('world/cube', 'world/bowl', *(f'world/chunks/{s}{part}' for s in SOURCE_COLORS
                                                 for part in ('', '/points', '/splice')))


def log_static_styles(rec: rr.RecordingStream) -> None:
    """Series names/colours and the world entities' frame, static (logged once)."""
    for path in WORLD_ENTITIES:
        rec.log(path, rr.CoordinateFrame(ROOT_FRAME), static=True)
    rec.log('plots/joints', rr.SeriesLines(names=list(JOINT_NAMES)), static=True)
    rec.log('plots/gripper/angle', rr.SeriesLines(names=['gripper angle (rad)'],
                                                  colors=[(235, 95, 25)], widths=[2.5]),
            static=True)
    rec.log('plots/gripper/effort', rr.SeriesLines(names=['gripper effort (N·m)'],
                                                   colors=[(0, 170, 170)]), static=True)
    rec.log('plots/gripper/override', rr.SeriesLines(
        names=['operator override'], colors=[(190, 80, 255)], widths=[3.0],
        interpolation_mode='StepAfter'), static=True)
    for kind, (color, marker) in EVENT_STYLE.items():
        rec.log(f'plots/gripper/events/{kind}', rr.SeriesPoints(
            names=[kind], colors=[color], markers=[marker], marker_sizes=[6.0]), static=True)


def blueprint(cameras: tuple[str, ...] = ('front', 'handeye')) -> rrb.Blueprint:
    """The default layout: the arm in 3D beside the cameras, gripper plot, latency, logs."""
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(
                rrb.Spatial3DView(name='SO-101', origin='/',
                                  contents=['+ /robot/**', '+ /world/**'],
                                  # from in front of the arm, a little to its right:
                                  # the workspace between the arm and the eye
                                  eye_controls=rrb.EyeControls3D(
                                      position=(0.50, -0.12, 0.33),
                                      look_target=(0.1, 0.04, 0.04), eye_up=(0.0, 0.0, 1.0))),
                rrb.TimeSeriesView(name='gripper, events, override',
                                   origin='/plots/gripper'),
                row_shares=[3, 2]),
            rrb.Vertical(
                rrb.Horizontal(*(rrb.Spatial2DView(name=c, origin=f'/cameras/{c}')
                                 for c in cameras)),
                rrb.TimeSeriesView(name='joints (rad)', origin='/plots/joints'),
                rrb.TimeSeriesView(name='policy latency (ms)', origin='/plots/policy'),
                rrb.TextLogView(name='events', origin='/log'),
                row_shares=[3, 2, 2, 2]),
            column_shares=[3, 2]),
        rrb.TimePanel(state='expanded'),
        collapse_panels=True,
    )
