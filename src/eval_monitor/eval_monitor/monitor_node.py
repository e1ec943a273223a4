"""``eval_monitor``: the metric engine live on the evaluation topics.

Feeds ``joint_states``, ``teleop/override``, ``eval/episode``, ``sim/truth``,
``joint_trajectory`` and ``teleop/joint_trajectory`` to a
:class:`~eval_monitor.metrics.MetricEngine` through the same
:class:`~eval_monitor.feeder.EngineFeeder` as offline evaluation (see there which time each
message gets); publishes every event on ``eval/events`` (one EvalEvent JSON per message),
live counters on ``eval/status`` and RViz markers on ``eval/markers``.

Services ``eval/start_episode`` (Trigger) and ``eval/end_episode`` (SetBool: data = success)
feed an EpisodeMark to the engine and publish it on ``eval/episode`` so a recording holds it;
a call out of order (end without start, start while one is open) is refused with the engine's
message and publishes nothing. Marks from others on ``eval/episode`` (sim reset, console) are
fed too; the node's own marks coming back on that topic are recognised by their exact text
and not fed twice. ``eval/save_report`` (Trigger) and shutdown write the run directory
(``report.write_run_dir``) to ``run_dir``; the report is written from a copy of the engine in
its own callback group, so counting goes on meanwhile.

``joint_states`` is subscribed RELIABLE keep-last 100 rather than the suite's best-effort
stream profile: the monitor is a measurement, and a sample lost under load would make live
numbers differ from the bag's.
"""

from __future__ import annotations

import copy
import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
from so101_driver.guard import GuardedNode
from so101_driver.joints import urdf_text
from so101_driver.qos import COMMAND, EPISODE_MARKS, LATCHED, STREAM_PUB
from so101_driver.ros_io import diag_status, run_node
from std_msgs.msg import Bool, ColorRGBA, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from eval_monitor.metrics import EventKind, EvalEvent, MetricEngine
from eval_monitor.feeder import EngineFeeder, EvalTopic, detector_config, detector_defaults

#: joint_states subscription: every sample counts (see the module docstring).
MEASURE = QoSProfile(depth=100, reliability=COMMAND.reliability, history=COMMAND.history)
#: Grasp/drop spheres kept in RViz (oldest dropped first).
MAX_EVENT_MARKERS = 200
#: Sphere colour per event kind shown at the gripper.
EVENT_COLOURS = {
    EventKind.GRASP_SUCCESS: (0.1, 0.8, 0.1),
    EventKind.GRASP_FAILED: (0.95, 0.75, 0.1),
    EventKind.DROP: (0.9, 0.1, 0.1),
    EventKind.PLACE: (0.2, 0.4, 1.0),
}


class GripperKinematics:
    """Position of the gripper tip in the URDF root frame from joint angles (URDF chain).

    Only used to place event markers near the gripper: plain forward kinematics over the
    revolute/fixed joints from the root link to ``tip_link``.
    """

    def __init__(self, urdf: str, tip_link: str = 'gripper_frame_link') -> None:
        root = ET.fromstring(urdf)
        by_child = {j.find('child').get('link'): j for j in root.findall('joint')}
        chain = []
        link = tip_link
        while link in by_child:
            joint = by_child[link]
            chain.append(joint)
            link = joint.find('parent').get('link')
        self.root_link = link
        self._chain = []  # (joint name or None when fixed, origin 4x4, axis)
        for joint in reversed(chain):
            origin = joint.find('origin')
            xyz = [float(v) for v in (origin.get('xyz', '0 0 0') if origin is not None
                                      else '0 0 0').split()]
            rpy = [float(v) for v in (origin.get('rpy', '0 0 0') if origin is not None
                                      else '0 0 0').split()]
            axis = joint.find('axis')
            axis = np.array([float(v) for v in (axis.get('xyz') if axis is not None
                                                else '1 0 0').split()])
            name = joint.get('name') if joint.get('type') == 'revolute' else None
            self._chain.append((name, _transform(xyz, _rpy_matrix(*rpy)), axis))

    def tip_position(self, positions: dict[str, float]) -> tuple[float, float, float]:
        pose = np.eye(4)
        for name, origin, axis in self._chain:
            pose = pose @ origin
            if name is not None:
                pose = pose @ _transform((0.0, 0.0, 0.0),
                                         _axis_angle(axis, positions.get(name, 0.0)))
        return tuple(float(v) for v in pose[:3, 3])


def _transform(xyz, rotation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = xyz
    return matrix


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    c, s, t = np.cos(angle), np.sin(angle), 1 - np.cos(angle)
    return np.array([[t * x * x + c, t * x * y - s * z, t * x * z + s * y],
                     [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
                     [t * x * z - s * y, t * y * z + s * x, t * z * z + c]])


#: Summary counts shown on eval/status and the RViz panel (completed episodes).
STATUS_COUNTS = ('episodes', 'episode_successes', 'grasp_attempts', 'grasp_successes', 'drops',
                 'places', 'interventions', 'interventions_per_episode', 'mean_intervention_s')
#: Counts of the episode in progress (its per-episode row), shown as current_<name>.
CURRENT_COUNTS = ('grasp_attempts', 'grasp_successes', 'drops', 'places', 'interventions')


def counters(summary: Any) -> dict[str, str]:
    """Flat ``{name: text}`` of a Summary for eval/status: headline counts ('n/a' when
    unavailable), rates as their text, and the open episode's own counts."""
    flat = {'scope': summary.scope}
    for name in STATUS_COUNTS:
        value = getattr(summary, name)
        flat[name] = ('n/a' if value is None else
                      f'{value:.3f}' if isinstance(value, float) else str(value))
    for name, rate in summary.rates.items():
        flat[f'{name}_rate'] = str(rate.get('text', rate.get('rate')))
    current = next((row for row in reversed(summary.per_episode) if row.get('open')), None)
    flat['episode_open'] = 'true' if current else 'false'
    flat['current_episode'] = str(current['episode']) if current else ''
    for name in CURRENT_COUNTS:
        value = current.get(name) if current else None
        flat[f'current_{name}'] = '' if value is None else str(value)
    flat['missing_topics'] = ', '.join(summary.missing_topics)
    flat['skipped'] = str(len(summary.skipped))
    return flat


def _descriptor(description: str, read_only: bool = True, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only, **kwargs)


class MonitorNode(GuardedNode):
    """Live evaluation monitor (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('eval_monitor', **kwargs)
        run_dir = self.declare_parameter(
            'run_dir', f'runs/{time.strftime("%Y%m%d_%H%M%S")}',
            _descriptor('Run directory written on eval/save_report and at shutdown.')).value
        self._frame_id = self.declare_parameter(
            'frame_id', 'base_link',
            _descriptor('Frame of eval/markers: the URDF root link.')).value
        status_period = self.declare_parameter(
            'status_period_s', 1.0,
            _descriptor('Period of eval/status and eval/markers.', floating_point_range=[
                FloatingPointRange(from_value=0.05, to_value=60.0, step=0.0)])).value
        self._title = self.declare_parameter(
            'title', '', _descriptor('Report title (empty: a default with the date).')).value
        values = {}
        for name, default in detector_defaults().items():
            values[name] = self.declare_parameter(
                f'detector.{name}',
                Parameter.Type.DOUBLE_ARRAY if default is None else default,  # None: unset
                _descriptor(f'Grasp/drop detector: DetectorConfig.{name} '
                            '(eval_monitor/metrics/definitions.py; offline: so101-eval '
                            '--params-file)'),
            ).value
        self.run_dir = Path(run_dir)

        self._lock = threading.Lock()  # engine, feeder, own marks, marker state
        self._engine = MetricEngine(detector_config(values))
        self._feeder = EngineFeeder(self._engine)
        self._own_marks: set[str] = set()
        self._joints: dict[str, float] = {}
        self._event_markers: deque[Marker] = deque(maxlen=MAX_EVENT_MARKERS)
        self._marker_id = 0
        self._kinematics = GripperKinematics(urdf_text())

        self._events_pub = self.create_publisher(String, 'eval/events', COMMAND)
        self._episode_pub = self.create_publisher(String, 'eval/episode', EPISODE_MARKS)
        self._status_pub = self.create_publisher(DiagnosticArray, 'eval/status', STREAM_PUB)
        self._markers_pub = self.create_publisher(MarkerArray, 'eval/markers', STREAM_PUB)

        subscriptions = [
            (JointState, EvalTopic.JOINT_STATES, MEASURE),
            (Bool, EvalTopic.OVERRIDE, LATCHED),
            (String, EvalTopic.EPISODE, COMMAND),
            (String, EvalTopic.TRUTH, COMMAND),
            (JointTrajectory, EvalTopic.TRAJECTORY, COMMAND),
            (JointTrajectory, EvalTopic.TELEOP_TRAJECTORY, COMMAND),
        ]
        for msg_type, topic, qos in subscriptions:
            self.create_subscription(msg_type, topic.value,
                                     lambda msg, topic=topic: self._on_message(topic, msg), qos)

        self.create_service(Trigger, 'eval/start_episode', self._on_start)
        self.create_service(SetBool, 'eval/end_episode', self._on_end)
        # Own group: writing the report (plots) must not hold up counting.
        self.create_service(Trigger, 'eval/save_report', self._on_save,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(status_period, self._publish_status)
        self.get_logger().info(f'monitoring; run directory {self.run_dir}')

    # -- public ----------------------------------------------------------------------------

    @property
    def skipped(self) -> list[str]:
        """Messages that could not be used (bad JSON, marks out of order)."""
        with self._lock:
            return self._feeder.skipped

    def summary(self) -> Any:
        """Summary of everything so far (spans still open are not closed)."""
        with self._lock:
            return self._engine.summary(missing_topics=self._feeder.missing_topics(),
                                        skipped=self._feeder.skipped)

    def save_report(self, final: bool = False) -> Path:
        """Write the run directory; open spans are closed at the present time in a copy
        (``final``: in the engine itself, at shutdown)."""
        from eval_monitor.report import write_run_dir

        now = self._now()
        with self._lock:
            engine = self._engine if final else copy.deepcopy(self._engine)
            missing = self._feeder.missing_topics()
            skipped = self._feeder.skipped
            received = {t.value: n for t, n in self._feeder.received.items()}
        engine.finish(now)
        summary = engine.summary(missing_topics=missing, skipped=skipped)
        meta = {'source': 'live', 'node': self.get_fully_qualified_name(),
                'messages': received, 'missing_topics': missing,
                'saved_at': time.strftime('%Y-%m-%d %H:%M:%S')}
        title = self._title or f'Live evaluation {time.strftime("%Y-%m-%d %H:%M")}'
        return write_run_dir(self.run_dir, engine, summary, title=title, meta=meta)

    def destroy_node(self) -> None:
        """Write the run directory (when anything was received), then destroy the node."""
        if not hasattr(self, '_feeder'):  # __init__ failed (rclpy destroys it at shutdown)
            super().destroy_node()
            return
        with self._lock:
            anything = sum(self._feeder.received.values()) > 0 or bool(self._engine.events)
        if anything:
            try:
                path = self.save_report(final=True)
                self.get_logger().info(f'report written to {path}')
            except Exception as exc:  # noqa: BLE001 - never lose the shutdown over a report
                self.get_logger().error(f'writing the report to {self.run_dir} failed: {exc}')
        super().destroy_node()

    # -- callbacks -------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _on_message(self, topic: EvalTopic, msg: Any) -> None:
        receive_time = self._now()
        with self._lock:
            if topic is EvalTopic.EPISODE and msg.data in self._own_marks:
                self._own_marks.discard(msg.data)  # our own mark coming back: fed already
                return
            if topic is EvalTopic.JOINT_STATES:
                self._joints = dict(zip(msg.name, msg.position))
            events = self._feeder.feed(topic, msg, receive_time)
            self._handle(events)

    def _on_start(self, request: Trigger.Request, response: Trigger.Response):
        mark = EpisodeMark(EpisodeEvent.START, stamp=self._now(), source='service')
        return self._episode_service(mark, response)

    def _on_end(self, request: SetBool.Request, response: SetBool.Response):
        mark = EpisodeMark(EpisodeEvent.END, stamp=self._now(), success=bool(request.data),
                           source='service')
        return self._episode_service(mark, response)

    def _episode_service(self, mark: EpisodeMark, response: Any) -> Any:
        from eval_monitor.metrics import EpisodeOrderError

        with self._lock:
            try:
                events = self._engine.episode(mark)
            except EpisodeOrderError as exc:
                response.success, response.message = False, str(exc)
                self.get_logger().warning(f'{mark.event.value} refused: {exc}')
                return response
            self._feeder.received[EvalTopic.EPISODE] += 1
            text = mark.to_json()
            self._own_marks.add(text)
            self._episode_pub.publish(String(data=text))
            self._handle(events)
            episode = next((e.episode for e in events if e.episode is not None), None)
        verb = 'started' if mark.event is EpisodeEvent.START else (
            'ended: success' if mark.success else 'ended: failure')
        response.success, response.message = True, f'episode {episode} {verb}'
        return response

    def _on_save(self, request: Trigger.Request, response: Trigger.Response):
        try:
            path = self.save_report()
        except Exception as exc:  # noqa: BLE001 - report to the caller, keep monitoring
            response.success, response.message = False, f'writing {self.run_dir} failed: {exc}'
            self.get_logger().error(response.message)
            return response
        response.success, response.message = True, str(path)
        return response

    # -- outputs (under self._lock) --------------------------------------------------------

    def _handle(self, events: list[EvalEvent]) -> None:
        for event in events:
            self._events_pub.publish(String(data=event.to_json()))
            colour = EVENT_COLOURS.get(event.kind)
            if colour is not None:
                self._event_markers.append(self._event_marker(event, colour))

    def _event_marker(self, event: EvalEvent, colour: tuple[float, float, float]) -> Marker:
        x, y, z = self._kinematics.tip_position(self._joints)
        self._marker_id += 1
        marker = Marker(ns='eval_events', id=self._marker_id % MAX_EVENT_MARKERS,
                        type=Marker.SPHERE, action=Marker.ADD)
        marker.header.frame_id = self._frame_id
        marker.pose.position = Point(x=x, y=y, z=z)
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = 0.02
        marker.color = ColorRGBA(r=colour[0], g=colour[1], b=colour[2], a=0.8)
        marker.text = event.kind.value
        return marker

    def _publish_status(self) -> None:
        with self._lock:
            flat = counters(self._engine.summary(
                missing_topics=self._feeder.missing_topics(), skipped=self._feeder.skipped))
            markers = list(self._event_markers)
        open_episode = flat['episode_open'] == 'true'
        level = ord(DiagnosticStatus.WARN if flat['missing_topics'] else DiagnosticStatus.OK)
        message = (f'nothing received on {flat["missing_topics"]}' if flat['missing_topics']
                   else f'episode {flat["current_episode"]} running' if open_episode
                   else 'no episode running')
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        flat.update(self.guard_values(), last_rejected_message=self.last_rejection)
        array.status = [diag_status('eval_monitor: counters', level, message,
                                    self.get_fully_qualified_name(), flat)]
        self._status_pub.publish(array)

        panel = Marker(ns='eval_panel', id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        panel.header.frame_id = self._frame_id
        panel.pose.position = Point(x=0.0, y=0.0, z=0.45)
        panel.pose.orientation.w = 1.0
        panel.scale.z = 0.025
        panel.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        lines = [message,
                 f'episodes {flat["episodes"]}, success {flat.get("episode_success_rate", "n/a")}',
                 f'grasps {flat["grasp_successes"]}/{flat["grasp_attempts"]}, '
                 f'drops {flat["drops"]}',
                 f'interventions {flat["interventions"]} '
                 f'({flat["interventions_per_episode"]}/episode)']
        if open_episode:
            lines.append(f'this episode: grasps {flat["current_grasp_successes"]}/'
                         f'{flat["current_grasp_attempts"]}, drops {flat["current_drops"]}, '
                         f'interventions {flat["current_interventions"]}')
        panel.text = '\n'.join(lines)
        self._markers_pub.publish(MarkerArray(markers=[panel] + markers))


def main(args=None):
    run_node(MonitorNode, 'eval_monitor', (FileExistsError, LookupError, ValueError),
             threads=2, args=args)


if __name__ == '__main__':
    main()
