"""``so101_camera``: one camera (USB device or a looping video file) as a ROS 2 node.

Publishes ``cameras/<camera_name>/image_raw`` (rgb8), ``cameras/<camera_name>/camera_info``
and, if ``publish_compressed``, ``cameras/<camera_name>/image_raw/compressed`` (JPEG), all
stamped at capture time with ``frame_id``; plus ``diagnostics`` (state, achieved fps, drops,
reconnects). Names are relative: the ``camera_name`` prefix makes two cameras coexist in one
namespace without a launch file, and a namespace pushed by launch still applies on top. With
``camera_name`` empty the topics are bare (``image_raw`` ...), for launch files that push
``cameras/<name>`` themselves.

Capture runs in ``camera.CaptureThread``; images are converted and published from that
thread (publishing is thread-safe), so no ROS callback ever waits on a camera. ``camera_info``
comes from ``camera_info_file`` (ROS camera_calibration YAML) when given; otherwise it carries
the header and the delivered image size with all-zero K/R/P ("uncalibrated").
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from so101_driver import qos
from so101_driver.guard import GuardedNode
from so101_driver.cameras.camera import (
    CameraCalibration,
    CameraCalibrationError,
    CameraConfig,
    CameraError,
    CaptureState,
    CaptureThread,
    Frame,
    describe,
)
from so101_driver.images import numpy_to_image, rgb_to_compressed
from so101_driver.ros_io import diag_status, float_range, run_node

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR



def _int_range(lo, hi):
    return [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]


def topic_prefix(camera_name: str) -> str:
    """``cameras/<name>/`` for a named camera, '' when the namespace is pushed by launch."""
    name = camera_name.strip().strip('/')
    return f'cameras/{name}/' if name else ''


class CameraNode(GuardedNode):
    """One camera: capture thread -> image_raw, camera_info, image_raw/compressed."""

    def __init__(self, **kwargs):
        super().__init__('so101_camera', **kwargs)
        self.capture: CaptureThread | None = None
        self._declare_parameters()
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self.camera_name = p('camera_name')
        self.frame_id = p('frame_id') or (f'{self.camera_name}_camera_optical_frame'
                                          if self.camera_name else 'camera_optical_frame')
        self.config = CameraConfig(source=str(p('source')), width=p('width'), height=p('height'),
                                   fps=p('fps'), fourcc=p('fourcc'),
                                   reconnect_period_s=p('reconnect_period_s'))
        self.jpeg_quality = p('jpeg_quality')
        self.calibration = (CameraCalibration.from_yaml(p('camera_info_file'))
                            if p('camera_info_file') else None)
        self._size_warned = False
        prefix = topic_prefix(self.camera_name)
        self.topics = {'image': prefix + 'image_raw', 'info': prefix + 'camera_info',
                       'compressed': prefix + 'image_raw/compressed'}
        self.pub_image = self.create_publisher(Image, self.topics['image'], qos.STREAM_PUB)
        self.pub_info = self.create_publisher(CameraInfo, self.topics['info'], qos.STREAM_PUB)
        self.pub_compressed = (self.create_publisher(CompressedImage, self.topics['compressed'],
                                                     qos.STREAM_PUB)
                               if p('publish_compressed') else None)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, 'diagnostics',
                                                     qos.STREAM_PUB)
        self.capture = CaptureThread(self.config, self._publish_frame,
                                     now=lambda: self.get_clock().now().to_msg(),
                                     on_state=self._on_state)
        self.create_timer(1.0 / p('diagnostics_rate_hz'), self._publish_diagnostics)
        self.capture.start()  # raises CameraError naming the camera if it cannot open
        self.get_logger().info(
            f'{describe(self.config)} -> {self.pub_image.topic_name} '
            f'(frame_id {self.frame_id}, camera_info '
            f'{"from " + p("camera_info_file") if self.calibration else "uncalibrated"}, '
            f'compressed {"on" if self.pub_compressed else "off"})')

    def _declare_parameters(self):
        def declare(name, default, description, read_only=True, **ranges):
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=read_only, **ranges))

        declare('camera_name', 'front', 'Camera name: topics go to cameras/<camera_name>/...; '
                'empty = bare names (namespace pushed by launch)')
        declare('source', '0', 'Device index (0), device path (prefer /dev/v4l/by-id/...) '
                'or video file (looped at its own fps)', dynamic_typing=True)
        declare('width', 640, 'Requested frame width (devices; 0 = device default)',
                integer_range=_int_range(0, 8192))
        declare('height', 480, 'Requested frame height (devices; 0 = device default)',
                integer_range=_int_range(0, 8192))
        declare('fps', 30.0, 'Requested device frame rate; rate of a file that does not state '
                'its own', floating_point_range=float_range(0, 1000))
        declare('fourcc', '', 'Requested device pixel format (MJPG, YUYV; empty = default)')
        declare('frame_id', '', 'header.frame_id of images and camera_info '
                '(empty = <camera_name>_camera_optical_frame)')
        declare('camera_info_file', '', 'ROS camera_calibration YAML; empty = uncalibrated '
                'camera_info (size only, zero K/R/P)')
        declare('publish_compressed', False, 'Also publish image_raw/compressed (JPEG)')
        declare('jpeg_quality', 90, 'JPEG quality of image_raw/compressed',
                integer_range=_int_range(1, 100))
        declare('reconnect_period_s', 1.0, 'How often a lost camera is re-opened',
                floating_point_range=float_range(0.05, 60))
        declare('diagnostics_rate_hz', 1.0, 'diagnostics publish rate',
                floating_point_range=float_range(0.1, 10))

    # -- capture thread side -----------------------------------------------------
    def _camera_info(self, frame: Frame) -> CameraInfo:
        height, width = frame.rgb.shape[:2]
        cal = self.calibration or CameraCalibration.uncalibrated(width, height, self.camera_name)
        if self.calibration and (cal.width, cal.height) != (width, height) \
                and not self._size_warned:
            self._size_warned = True
            self.get_logger().warning(
                f'camera_info_file was made at {cal.width}x{cal.height}, frames are '
                f'{width}x{height}: the published intrinsics do not fit these images')
        info = CameraInfo()
        info.header.stamp = frame.stamp
        info.header.frame_id = self.frame_id
        info.width, info.height = cal.width, cal.height
        info.distortion_model = cal.distortion_model
        info.d = list(cal.d)
        info.k = list(cal.k)
        info.r = list(cal.r)
        info.p = list(cal.p)
        return info

    def _publish_frame(self, frame: Frame) -> None:
        self.pub_image.publish(numpy_to_image(frame.rgb, 'rgb8', stamp=frame.stamp,
                                              frame_id=self.frame_id))
        self.pub_info.publish(self._camera_info(frame))
        if self.pub_compressed is not None:
            self.pub_compressed.publish(rgb_to_compressed(
                frame.rgb, quality=self.jpeg_quality, stamp=frame.stamp, frame_id=self.frame_id))

    def _on_state(self, state: CaptureState, text: str) -> None:
        if state is CaptureState.LOST:
            self.get_logger().error(f'{text}; no frames are published until it returns '
                                    f'(re-opening every {self.config.reconnect_period_s:g} s)')
        elif state is CaptureState.STREAMING and self.capture.stats.reconnects:
            self.get_logger().info(text)

    # -- diagnostics -------------------------------------------------------------
    def diagnostics(self) -> DiagnosticArray:
        stats, state = self.capture.stats, self.capture.state
        fps = stats.fps()
        if state is CaptureState.LOST:
            level, message = ERROR, self.capture.state_text
        elif state is CaptureState.STREAMING and stats.frames and fps == 0.0:
            level, message = WARN, 'no frames in the last 2 s'
        elif stats.sink_errors:
            level, message = WARN, stats.last_error
        else:
            level, message = OK, state.value
        values = {
            'state': state.value, 'source': self.config.source,
            'fps_achieved': f'{fps:.1f}', 'frames': stats.frames, 'drops': stats.drops,
            'reconnects': stats.reconnects, 'open_failures': stats.open_failures,
            'width': stats.width, 'height': stats.height,
            'compressed': self.pub_compressed is not None, 'last_error': stats.last_error,
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(diag_status(f'so101_camera: {self.camera_name or self.get_name()}',
                                        level, message, self.config.source, values))
        return array

    def _publish_diagnostics(self):
        self.pub_diagnostics.publish(self.diagnostics())

    def destroy_node(self):
        # also runs on a half-built node (rclpy's shutdown destroys it after a start failure)
        if self.capture is not None:
            self.capture.stop()
        return super().destroy_node()


def main(args=None):
    run_node(CameraNode, 'so101_camera', (CameraError, CameraCalibrationError, ValueError),
             args=args)


if __name__ == '__main__':
    main()
