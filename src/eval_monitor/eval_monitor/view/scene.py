"""Messages of the suite's topics -> rerun entities, shared by the live node and bag replay.

:class:`SceneLogger` gets each message with its relative topic name and its time (live: the
node clock on receipt, sim time in simulation; replay: the bag's log time, which the recorder
set the same way), so a run looks the same live and replayed. Entities:

- ``robot/...``: the SO-101 from the URDF and its meshes (rerun's URDF loader, static), moved
  by ``robot/joints`` (one ``Transform3D`` per joint from ``joint_states``);
- ``world/chunks/<policy|teleop>``: each commanded chunk as the gripper tip's path from the
  splice point on (``.../splice``) through its future points, computed by a shadow of the
  arm's own :class:`~so101_driver.arm.trajectory.ArmController` (same splice and override
  rules; drawn grey when the arm would ignore or reject it);
- ``world/cube``, ``world/bowl``: sim ground truth; everything under ``world/`` is in the
  URDF root frame, which is the sim's world frame;
- ``cameras/<name>``: raw images as they are, compressed ones passed through undecoded;
- ``plots/joints``, ``plots/gripper/{angle,effort,override}``: time series, with the
  ``eval/events`` as markers under ``plots/gripper/events/<kind>`` and the override as a
  0/1 step (drawn step-after); ``plots/policy/latency/<stage>`` from ``policy/status``;
- ``log/events``, ``log/episodes``, ``log/override``, ``log/policy``: text logs.

A message that cannot be drawn is skipped and described in :attr:`SceneLogger.skipped`; none
raises (any process can publish anything). No rclpy here.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import rerun as rr

from so101_driver.arm.trajectory import (ArmController, CommandSource, ExecutorConfig,
                                         Outcome, Trajectory)
from so101_driver.eval_topics import EpisodeMark, PayloadError, SimTruth
from so101_driver.joints import GRIPPER, JOINT_NAMES, urdf_limits

from eval_monitor.feeder import stamp_seconds
from eval_monitor.metrics import EvalEvent
from eval_monitor.view.kinematics import so101_kinematics
from eval_monitor.view.style import CUBE_HALF_M, SOURCE_COLORS, SPLICE_COLOR, log_static_styles

#: Timeline every entity is logged on (sim time in simulation, ROS time otherwise).
TIMELINE = 'ros_time'
#: Stamps below this are durations (sim time from 0), above it wall-clock timestamps.
WALL_CLOCK_AFTER_S = 1e8
#: Stamps beyond this (s, about 30000 years) are a corrupt or hostile message, not a time.
MAX_TIME_S = 1e12
#: Trajectories with more points than this are not drawn (a fuzzer's 10^5-point chunk).
MAX_CHUNK_POINTS = 10_000
#: At most this many unusable messages are described one by one in ``skipped``.
MAX_SKIPPED_NOTES = 50
CAMERA_TOPIC = re.compile(r'^cameras/([A-Za-z0-9_]+)/image_raw(/compressed)?$')
COLOR_MODELS = {'rgb8': 'RGB', 'bgr8': 'BGR', 'mono8': 'L', 'rgba8': 'RGBA', 'bgra8': 'BGRA'}
#: Relative topics the view reads (plus ``cameras/<name>/image_raw[/compressed]``).
TOPICS = ('joint_states', 'joint_trajectory', 'teleop/joint_trajectory', 'teleop/override',
          'eval/events', 'eval/episode', 'sim/truth', 'policy/status')


class Skip(ValueError):
    """A message that cannot be drawn; the text says why."""


@dataclass
class SceneOptions:
    """Rates (message time, Hz; 0: every message) and the model's URDF file."""

    urdf_path: str | None = None  # viewer_urdf() output; None: no 3D robot model
    model_rate_hz: float = 30.0  # robot/joints updates (6 transforms each)
    image_rate_hz: float = 0.0  # images per camera


def trajectory_of(msg: Any) -> Trajectory:
    """A core trajectory from a JointTrajectory (rclpy or decoded from a bag)."""
    names = tuple(str(n) for n in msg.joint_names)
    if len(msg.points) > MAX_CHUNK_POINTS:
        raise Skip(f'{len(msg.points)} points (more than {MAX_CHUNK_POINTS})')
    if any(len(p.positions) != len(names) for p in msg.points):
        raise Skip(f'points do not all have {len(names)} positions')
    start = stamp_seconds(msg.header.stamp)
    return Trajectory(joint_names=names, start=start if start > 0 else None,
                      time_from_start=np.array([stamp_seconds(p.time_from_start)
                                                for p in msg.points], dtype=float),
                      positions=np.array([list(p.positions) for p in msg.points],
                                         dtype=float).reshape(len(msg.points), len(names)))


class SceneLogger:
    """Logs the suite's messages into one rerun recording (see the module doc)."""

    def __init__(self, rec: rr.RecordingStream, options: SceneOptions | None = None):
        self.rec = rec
        self.options = options or SceneOptions()
        self.kinematics = so101_kinematics()
        # the shadow arm: URDF limits, no jump limit (the view draws what is commanded; the
        # arm's own max_jump is its YAML's and may differ)
        self.shadow = ArmController(ExecutorConfig(limits=urdf_limits(), max_jump=1e9))
        self.logged: Counter[str] = Counter()  # entity kind -> messages logged
        self._notes: list[str] = []
        self._unnoted = 0
        self._duration: bool | None = None  # timeline kind, fixed by the first message
        self._present: np.ndarray | None = None
        self._gripper: float | None = None
        self._override: bool | None = None
        self._last_model = -math.inf
        self._last_image: dict[str, float] = {}
        self._bowl: tuple | None = None
        self._policy_state = ''
        self._joints = []
        if self.options.urdf_path:
            tree = rr.urdf.UrdfTree.from_file_path(self.options.urdf_path, 'robot')
            tree.log_urdf_to_recording(self.rec)
            self._joints = [tree.get_joint_by_name(n) for n in JOINT_NAMES]
        log_static_styles(self.rec)

    # -- bookkeeping -----------------------------------------------------------------
    @property
    def skipped(self) -> list[str]:
        more = [f'... and {self._unnoted} more'] if self._unnoted else []
        return self._notes + more

    def _note(self, text: str) -> None:
        if len(self._notes) < MAX_SKIPPED_NOTES:
            self._notes.append(text)
        else:
            self._unnoted += 1

    def _at(self, t: float) -> None:
        if not math.isfinite(t) or abs(t) > MAX_TIME_S:
            raise Skip(f'time {t} is not a plausible stamp')
        if self._duration is None:
            self._duration = t < WALL_CLOCK_AFTER_S
        if self._duration:
            self.rec.set_time(TIMELINE, duration=t)
        else:
            self.rec.set_time(TIMELINE, timestamp=t)

    def handle(self, topic: str, msg: Any, t: float) -> bool:
        """Log one message of relative ``topic`` received at ``t`` (s); False if skipped."""
        if not (math.isfinite(t) and abs(t) <= MAX_TIME_S):
            self._note(f'{topic}: receive time {t} is not plausible')
            return False
        camera = CAMERA_TOPIC.match(topic)
        try:
            if camera:
                return self._image(camera.group(1), msg, t, bool(camera.group(2)))
            handler = self._HANDLERS.get(topic)
            if handler is None:
                return False
            handler(self, msg, t)
            return True
        except (Skip, PayloadError, ValueError, TypeError, AttributeError, IndexError,
                OverflowError) as err:
            self._note(f'{topic} at {t:.3f} s: {err}')
            return False

    # -- robot -------------------------------------------------------------------------
    def _joint_state(self, msg, t: float) -> None:
        names = list(msg.name)
        index = {n: i for i, n in enumerate(names)}
        if len(msg.position) != len(names) or any(n not in index for n in JOINT_NAMES):
            raise Skip(f'joint_states lacks some of {list(JOINT_NAMES)} or is ragged')
        q = np.array([msg.position[index[n]] for n in JOINT_NAMES], dtype=float)
        if not np.all(np.isfinite(q)):
            raise Skip('non-finite joint positions')
        self._at(t)
        self._present = q
        self._gripper = float(q[JOINT_NAMES.index(GRIPPER)])
        self.rec.log('plots/joints', rr.Scalars(q))
        self.rec.log('plots/gripper/angle', rr.Scalars(self._gripper))
        effort = list(msg.effort)
        if len(effort) == len(names) and math.isfinite(effort[index[GRIPPER]]):
            self.rec.log('plots/gripper/effort', rr.Scalars(float(effort[index[GRIPPER]])))
        self.logged['joint_states'] += 1
        period = 1.0 / self.options.model_rate_hz if self.options.model_rate_hz > 0 else 0.0
        if self._joints and t - self._last_model >= period:
            self._last_model = t
            for joint, value in zip(self._joints, q, strict=True):
                self.rec.log('robot/joints', joint.compute_transform(float(value), clamp=False))
            self.logged['robot'] += 1

    def _chunk(self, source: CommandSource, msg, t: float) -> None:
        traj = trajectory_of(msg)
        missing = [n for n in JOINT_NAMES if n not in traj.joint_names]
        if missing or not len(traj.time_from_start):
            raise Skip(f'{source.value} chunk without points or joints {missing}')
        order = [traj.joint_names.index(n) for n in JOINT_NAMES]
        positions = traj.positions[:, order]
        if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(traj.time_from_start))):
            raise Skip(f'{source.value} chunk with NaN or inf')
        start = traj.start if traj.start else t
        times = start + traj.time_from_start
        cut = max(start, t)
        anchor = self.shadow.executor.setpoint(cut)  # the plan there, before this chunk
        if anchor is None:
            anchor = self._present if self._present is not None else positions[0]
        outcome, why = self.shadow.on_trajectory(source, traj, t, self._present)
        path = np.vstack([anchor[None, :], positions[times > cut]])
        tips = self.kinematics.tip(path)
        accepted = outcome is Outcome.ACCEPTED
        color = SOURCE_COLORS[source.value] if accepted else (128, 128, 128, 255)
        base = f'world/chunks/{source.value}'
        self._at(t)
        # labels always logged: an absent one would keep showing the last chunk's
        self.rec.log(base, rr.LineStrips3D([tips], colors=[color], radii=[0.004],
                                           labels=['' if accepted else outcome.value]))
        self.rec.log(f'{base}/points', rr.Points3D(tips[1:], colors=[color], radii=[0.005]))
        self.rec.log(f'{base}/splice', rr.Points3D(tips[:1], colors=[SPLICE_COLOR],
                                                   radii=[0.009]))
        if not accepted:
            self.rec.log('log/policy', rr.TextLog(why, level=rr.TextLogLevel.WARN))
        self.logged[f'chunks/{source.value}'] += 1

    def _policy_chunk(self, msg, t: float) -> None:
        self._chunk(CommandSource.POLICY, msg, t)

    def _teleop_chunk(self, msg, t: float) -> None:
        self._chunk(CommandSource.TELEOP, msg, t)

    def _override_msg(self, msg, t: float) -> None:
        active = bool(msg.data)
        edge = self.shadow.on_override(active, t, self._present)
        if self._override is not None and not edge:
            return  # the leader re-sends its state: only edges are drawn
        self._at(t)
        if self._override is not None:
            # the arm holds on an edge: the chunk of the source that lost control is gone
            loser = CommandSource.POLICY if active else CommandSource.TELEOP
            self.rec.log(f'world/chunks/{loser.value}', rr.Clear(recursive=True))
        self.rec.log('plots/gripper/override', rr.Scalars(float(active)))
        self.rec.log('log/override', rr.TextLog(f'override {"on" if active else "off"}',
                                                level=rr.TextLogLevel.INFO))
        self._override = active
        self.logged['override'] += 1

    # -- evaluation and ground truth -------------------------------------------------
    def _event(self, msg, t: float) -> None:
        event = EvalEvent.from_json(msg.data)
        kind = event.kind.value
        self._at(event.stamp)
        details = ', '.join(f'{k}={_short(v)}' for k, v in sorted(event.data.items()))
        episode = f'episode {event.episode}: ' if event.episode is not None else ''
        level = rr.TextLogLevel.WARN if kind in ('grasp_failed', 'drop') else \
            rr.TextLogLevel.INFO
        self.rec.log('log/events', rr.TextLog(f'{episode}{kind} {details}'.strip(),
                                              level=level))
        value = event.data.get('gripper_rad', self._gripper)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.rec.log(f'plots/gripper/events/{kind}', rr.Scalars(float(value)))
        self.logged['events'] += 1

    def _episode(self, msg, t: float) -> None:
        mark = EpisodeMark.from_json(msg.data)
        self._at(mark.stamp)
        outcome = '' if mark.success is None else (' success' if mark.success else ' failure')
        self.rec.log('log/episodes', rr.TextLog(
            f'episode {mark.event.value}{outcome} ({mark.source}) {mark.note}'.strip(),
            level=rr.TextLogLevel.INFO))
        self.logged['episodes'] += 1

    def _truth(self, msg, t: float) -> None:
        truth = SimTruth.from_json(msg.data)
        position = np.array(truth.cube_position, dtype=float)
        if not np.all(np.isfinite(position)):
            raise Skip('non-finite cube position')
        wxyz = truth.extra.get('cube_quat_wxyz')
        if not (isinstance(wxyz, list) and len(wxyz) == 4):
            wxyz = [1.0, 0.0, 0.0, 0.0]
        quat = rr.Quaternion(xyzw=[float(v) for v in (*wxyz[1:4], wxyz[0])])
        state = 'in bowl' if truth.in_bowl else 'held' if truth.held else \
            'dropped' if truth.dropped else 'lifted' if truth.lifted else ''
        color = (40, 200, 60) if truth.in_bowl else (230, 140, 20) if truth.held else \
            (220, 25, 20)
        self._at(t)
        self.rec.log('world/cube', rr.Boxes3D(centers=[position], half_sizes=[[CUBE_HALF_M] * 3],
                                              quaternions=[quat], colors=[color],
                                              labels=[state], fill_mode='solid'))
        bowl = truth.extra.get('bowl_position')
        if isinstance(bowl, list) and len(bowl) == 3 and tuple(bowl) != self._bowl:
            self._bowl = tuple(bowl)
            ring = np.linspace(0.0, 2.0 * np.pi, 33)
            rims = [np.column_stack([bowl[0] + 0.07 * np.cos(ring), bowl[1] + 0.07 *
                                     np.sin(ring), np.full_like(ring, bowl[2] + z)])
                    for z in (0.002, 0.045)]
            self.rec.log('world/bowl', rr.LineStrips3D(rims, colors=[(140, 140, 145)],
                                                       radii=[0.002]))
        self.logged['truth'] += 1

    def _status(self, msg, t: float) -> None:
        for status in msg.status:
            if not str(status.name).endswith('policy'):
                continue
            values = {str(kv.key): str(kv.value) for kv in status.values}
            self._at(t)
            for key, text in values.items():
                if not key.endswith('_ms') or key.endswith(('_mean_ms', '_p50_ms', '_p95_ms')):
                    continue
                number = _number(text)
                if number is not None:
                    self.rec.log(f'plots/policy/latency/{key[:-3]}', rr.Scalars(number))
            state = values.get('state', '')
            if state and state != self._policy_state:
                self._policy_state = state
                self.rec.log('log/policy', rr.TextLog(
                    f'policy {state}: {values.get("reason", "")}', level=rr.TextLogLevel.INFO))
            self.logged['policy_status'] += 1

    # -- cameras -----------------------------------------------------------------------
    def _image(self, camera: str, msg, t: float, compressed: bool) -> bool:
        rate = self.options.image_rate_hz
        if rate > 0 and t - self._last_image.get(camera, -math.inf) < 1.0 / rate:
            return False
        if compressed:
            fmt = str(msg.format).lower()
            media = 'image/jpeg' if 'jpeg' in fmt or 'jpg' in fmt else \
                'image/png' if 'png' in fmt else None
            if not len(msg.data):
                raise Skip('empty compressed image')
            archetype = rr.EncodedImage(contents=bytes(msg.data), media_type=media)
        else:
            from so101_driver.images import ImageError, image_to_numpy

            try:
                array = image_to_numpy(msg)
            except ImageError as err:
                raise Skip(str(err)) from err
            archetype = rr.Image(array, color_model=COLOR_MODELS[msg.encoding])
        self._last_image[camera] = t
        self._at(t)
        self.rec.log(f'cameras/{camera}', archetype)
        self.logged[f'cameras/{camera}'] += 1
        return True

    _HANDLERS: Mapping[str, Any] = {
        'joint_states': _joint_state,
        'joint_trajectory': _policy_chunk,
        'teleop/joint_trajectory': _teleop_chunk,
        'teleop/override': _override_msg,
        'eval/events': _event,
        'eval/episode': _episode,
        'sim/truth': _truth,
        'policy/status': _status,
    }


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _short(value: Any) -> str:
    return f'{value:.3f}' if isinstance(value, float) else str(value)


__all__ = ['SceneLogger', 'SceneOptions', 'Skip', 'TIMELINE', 'TOPICS', 'trajectory_of']
