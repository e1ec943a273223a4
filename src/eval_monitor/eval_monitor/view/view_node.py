"""``so101_view``: the suite's topics live in rerun (the arm in 3D, chunks, cameras, events).

Subscribes to what :class:`~eval_monitor.view.scene.SceneLogger` draws and hands it each
message with the node clock's time on receipt (sim time under ``use_sim_time``), which is
what the recorder stamps into a bag: a live view and the replay of its bag look the same.
Where the recording goes (a spawned viewer, rerun's web viewer served from here for a
headless machine, a running viewer, a file) is the ``viewer`` parameter; the line saying
where to look (the web viewer's URL) is logged at start.

Images are the largest stream: ``image_rate_hz`` caps what is logged per camera (the
recorder, not the view, is the record of a run), ``image_transport`` picks raw or compressed.
The QoS of each subscription is a stream subscriber's (best-effort, newest first) except
where losing a message would change the picture: trajectories, events, episode marks and
the latched override are reliable.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from sensor_msgs.msg import CompressedImage, Image, JointState
from so101_driver import qos
from so101_driver.guard import GuardedNode
from so101_driver.ros_io import run_node
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory

from eval_monitor.view.kinematics import viewer_urdf
from eval_monitor.view.scene import SceneLogger, SceneOptions
from eval_monitor.view.viewer import ViewerChoice, ViewerError, close_recording, open_recording

SUBSCRIPTIONS = (
    (JointState, 'joint_states', qos.STREAM_SUB),
    (JointTrajectory, 'joint_trajectory', qos.COMMAND),
    (JointTrajectory, 'teleop/joint_trajectory', qos.COMMAND),
    (Bool, 'teleop/override', qos.LATCHED),
    (String, 'eval/events', qos.COMMAND),
    (String, 'eval/episode', qos.COMMAND),
    (String, 'sim/truth', qos.STREAM_SUB),
    (DiagnosticArray, 'policy/status', qos.STREAM_SUB),
)


def _descriptor(description: str) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=True)


class ViewNode(GuardedNode):
    """Live rerun view (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('so101_view', **kwargs)

        def p(name, default, description):
            return self.declare_parameter(name, default, _descriptor(description)).value

        mode = p('viewer', 'auto', 'auto (spawn with a display, else web), spawn, web, '
                 'connect or none')
        save = p('save_path', '', '.rrd file to record to too (empty: none)')
        choice = ViewerChoice(
            mode=mode, save=Path(save).expanduser() if save else None,
            connect_url=p('connect_url', '', 'viewer to stream to (viewer: connect)'),
            web_port=p('web_port', 9090, 'port of the web viewer (viewer: web)'),
            grpc_port=p('grpc_port', 9876, 'port of the gRPC stream the viewer reads'),
            memory_limit=p('memory_limit', '1GiB', 'data the served stream keeps for late '
                           'viewers (oldest goes first; the robot model always stays)'),
            cameras=tuple(p('cameras', ['front', 'handeye'], 'camera names: '
                            'cameras/<name>/image_raw[/compressed]')),
        )
        transport = p('image_transport', 'raw', 'raw (image_raw) or compressed '
                      '(image_raw/compressed)')
        if transport not in ('raw', 'compressed'):
            raise ViewerError(f"image_transport must be 'raw' or 'compressed', not {transport!r}")
        image_rate = p('image_rate_hz', 10.0, 'images logged per camera per second (0: all)')
        model_rate = p('model_rate_hz', 30.0, 'robot model updates per second (0: every '
                       'joint state)')

        self._folder = tempfile.TemporaryDirectory(prefix='so101_view_')
        self._lock = threading.Lock()
        self.rec, where = open_recording('so101 live', choice)
        self.scene = SceneLogger(self.rec, SceneOptions(
            urdf_path=str(viewer_urdf(Path(self._folder.name))), model_rate_hz=model_rate,
            image_rate_hz=image_rate))
        topics = [*SUBSCRIPTIONS]
        for camera in choice.cameras:
            topics.append((Image, f'cameras/{camera}/image_raw', qos.IMAGE_SUB)
                          if transport == 'raw' else
                          (CompressedImage, f'cameras/{camera}/image_raw/compressed',
                           qos.STREAM_SUB))
        for msg_type, topic, profile in topics:
            self.create_subscription(msg_type, topic,
                                     lambda msg, topic=topic: self._on_message(topic, msg),
                                     profile)
        self.get_logger().info(where)

    def _on_message(self, topic: str, msg: Any) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        with self._lock:
            self.scene.handle(topic, msg, now)

    def logged(self) -> dict[str, int]:
        """Messages logged so far per kind (tests wait on these)."""
        with self._lock:
            return dict(self.scene.logged)

    def destroy_node(self) -> None:
        """Close the recording (a saved file gets its footer) before the node goes."""
        if hasattr(self, 'rec'):
            with self._lock:
                close_recording(self.rec)
            self._folder.cleanup()
        super().destroy_node()


def main(args=None):
    run_node(ViewNode, 'so101_view', (ViewerError, ValueError, OSError, RuntimeError),
             args=args)


if __name__ == '__main__':
    main()
