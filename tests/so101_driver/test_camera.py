"""Camera node on a real cv2.VideoCapture over a video file written here, over real DDS."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import yaml

from tests.helpers import wait_for

W, H, FILE_FPS = 64, 48, 30.0
#: Quadrant colours of every frame, RGB: top-left red, top-right green, bottom-left blue,
#: bottom-right white.
QUADRANTS_RGB = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255),
                 (1, 1): (255, 255, 255)}
JPEG_TOLERANCE = 40  # per channel, at the centre of a quadrant

CALIBRATION = {
    'image_width': W, 'image_height': H, 'camera_name': 'front',
    'camera_matrix': {'rows': 3, 'cols': 3, 'data': [50.0, 0, 32.0, 0, 51.0, 24.0, 0, 0, 1]},
    'distortion_model': 'plumb_bob',
    'distortion_coefficients': {'rows': 1, 'cols': 5, 'data': [0.1, -0.2, 0.001, 0.002, 0.0]},
    'rectification_matrix': {'rows': 3, 'cols': 3, 'data': [1.0, 0, 0, 0, 1, 0, 0, 0, 1]},
    'projection_matrix': {'rows': 3, 'cols': 4,
                          'data': [50.0, 0, 32.0, 0, 0, 51.0, 24.0, 0, 0, 0, 1, 0]},
}


def write_video(path, frames: int = 15):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), FILE_FPS, (W, H))
    assert writer.isOpened(), 'cv2.VideoWriter could not open an MJPG .avi'
    frame = np.zeros((H, W, 3), np.uint8)
    for (row, col), rgb in QUADRANTS_RGB.items():
        frame[row * H // 2:(row + 1) * H // 2, col * W // 2:(col + 1) * W // 2] = rgb[::-1]
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path


def assert_quadrants(rgb: np.ndarray, what: str):
    for (row, col), want in QUADRANTS_RGB.items():
        got = rgb[row * H // 2 + H // 4, col * W // 2 + W // 4].astype(int)
        assert np.all(np.abs(got - want) <= JPEG_TOLERANCE), \
            f'{what}: quadrant {(row, col)} expected RGB {want}, got {got.tolist()}'


def stamp_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class Collector:
    """Subscribes to one camera's topics and its diagnostics; records receipt times."""

    def __init__(self, node, prefix='cameras/front/'):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from so101_driver.qos import STREAM_SUB

        self.node = node
        self.lock = threading.Lock()
        self.images, self.infos, self.compressed, self.diags = [], [], [], []
        node.create_subscription(Image, prefix + 'image_raw',
                                 lambda m: self._add(self.images, m), STREAM_SUB)
        node.create_subscription(CameraInfo, prefix + 'camera_info',
                                 lambda m: self._add(self.infos, m), STREAM_SUB)
        node.create_subscription(CompressedImage, prefix + 'image_raw/compressed',
                                 lambda m: self._add(self.compressed, m), STREAM_SUB)
        node.create_subscription(DiagnosticArray, 'diagnostics',
                                 lambda m: self._add(self.diags, m), STREAM_SUB)

    def _add(self, store, msg):
        now = self.node.get_clock().now().nanoseconds * 1e-9
        with self.lock:
            store.append((now, msg))

    def count(self, store):
        with self.lock:
            return len(store)

    def snapshot(self, store):
        with self.lock:
            return list(store)

    def diag_levels(self):
        return [ord(m.status[0].level) for _, m in self.snapshot(self.diags)]


def make_camera(ros_context, **params):
    from rclpy.parameter import Parameter
    from so101_driver.cameras.camera_node import CameraNode

    params.setdefault('camera_name', 'front')
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return CameraNode(context=ros_context, parameter_overrides=overrides)


@pytest.fixture
def camera_factory(ros_context, spinner):
    """Makes spun camera nodes; stops their capture threads before the context goes away."""
    made = []

    def factory(**params):
        node = spinner.add(make_camera(ros_context, **params))
        made.append(node)
        return node
    yield factory
    for node in made:
        spinner.executor.remove_node(node)
        node.destroy_node()


def test_file_frames_arrive_as_rgb8_with_capture_stamps_info_and_compressed_copy(
        ros_context, spinner, camera_factory, tmp_path):
    from rclpy.node import Node
    from so101_driver.images import compressed_to_rgb, image_to_rgb

    video = write_video(tmp_path / 'pattern.avi')
    info_file = tmp_path / 'front.yaml'
    info_file.write_text(yaml.safe_dump(CALIBRATION))
    probe = spinner.add(Node('camera_probe', context=ros_context))
    got = Collector(probe)
    camera = camera_factory(source=str(video), publish_compressed=True, jpeg_quality=95,
                            camera_info_file=str(info_file), frame_id='front_optical')
    assert camera.pub_image.topic_name == '/cameras/front/image_raw', \
        f'expected /cameras/front/image_raw, got {camera.pub_image.topic_name}'
    # 40 frames > 15 in the file: the file loops
    wait_for(lambda: got.count(got.images) >= 40 and got.count(got.compressed) >= 5
             and got.count(got.infos) >= 5, timeout=20,
             message='40 images, 5 compressed images and 5 camera_info from the camera')

    images = got.snapshot(got.images)
    stamps = [stamp_s(m.header.stamp) for _, m in images]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), \
        f'image stamps must increase strictly, got {stamps}'
    lags = [recv - s for (recv, _), s in zip(images, stamps)]
    assert all(0 <= lag < 2.0 for lag in lags), \
        f'stamps must be capture times shortly before receipt (0..2 s), got lags {lags}'
    for _, msg in images[:3] + images[-3:]:
        assert (msg.encoding, msg.width, msg.height) == ('rgb8', W, H), \
            f'expected rgb8 {W}x{H}, got {msg.encoding} {msg.width}x{msg.height}'
        assert msg.header.frame_id == 'front_optical'
        assert_quadrants(image_to_rgb(msg), 'image_raw')

    raw_by_stamp = {stamp_s(m.header.stamp): image_to_rgb(m) for _, m in images}
    matched = 0
    for _, msg in got.snapshot(got.compressed):
        assert 'jpeg' in msg.format, f'expected a JPEG format string, got {msg.format!r}'
        raw = raw_by_stamp.get(stamp_s(msg.header.stamp))
        if raw is None:
            continue
        decoded = compressed_to_rgb(msg)
        diff = np.abs(decoded.astype(int) - raw.astype(int))
        assert decoded.shape == raw.shape and diff.mean() < 4, \
            f'compressed frame must decode to the raw one (mean |diff| < 4), got ' \
            f'{diff.mean():.1f} for shape {decoded.shape} vs {raw.shape}'
        matched += 1
    assert matched >= 3, f'expected >= 3 compressed frames with a raw twin, got {matched}'

    _, info = got.snapshot(got.infos)[-1]
    assert (info.width, info.height) == (W, H)
    assert list(info.k) == pytest.approx(CALIBRATION['camera_matrix']['data'])
    assert list(info.d) == pytest.approx(CALIBRATION['distortion_coefficients']['data'])
    assert list(info.p) == pytest.approx(CALIBRATION['projection_matrix']['data'])
    assert info.distortion_model == 'plumb_bob'
    assert stamp_s(info.header.stamp) in raw_by_stamp, \
        'camera_info must carry the stamp of its image'


def test_without_calibration_file_camera_info_is_size_only_with_zero_intrinsics(
        ros_context, spinner, camera_factory, tmp_path):
    from rclpy.node import Node

    video = write_video(tmp_path / 'pattern.avi')
    probe = spinner.add(Node('camera_probe', context=ros_context))
    got = Collector(probe, prefix='cameras/handeye/')
    camera_factory(source=str(video), camera_name='handeye')
    wait_for(lambda: got.count(got.infos) >= 2, timeout=15, message='camera_info')
    _, info = got.snapshot(got.infos)[-1]
    assert (info.width, info.height) == (W, H), f'got {info.width}x{info.height}'
    assert list(info.k) == [0.0] * 9, f'expected zero K (uncalibrated), got {list(info.k)}'
    assert info.header.frame_id == 'handeye_camera_optical_frame'
    assert got.count(got.compressed) == 0, 'compressed output is off by default'


@pytest.mark.parametrize('source, named', [
    ('/dev/v4l/by-id/usb-so101-missing-video-index0', '/dev/v4l/by-id/usb-so101-missing'),
    (97, '/dev/video97'),  # an integer parameter works as well as "97"
])
def test_missing_device_fails_at_start_with_an_error_naming_it(ros_context, source, named):
    from so101_driver.cameras.camera import CameraError

    with pytest.raises(CameraError) as err:
        make_camera(ros_context, source=source)
    text = str(err.value)
    for part in (named, 'does not exist', 'permissions', '/dev/v4l/by-id'):
        assert part in text, f'error must mention {part!r}, got: {text}'


def test_missing_video_file_fails_with_an_error_naming_it(tmp_path):
    from so101_driver.cameras.camera import CameraConfig, CameraError, open_capture

    path = tmp_path / 'nope.avi'
    with pytest.raises(CameraError, match=f'{path}.*does not exist'):
        open_capture(CameraConfig(source=str(path)))


def test_vanished_file_gives_error_diagnostics_no_frames_then_reconnects(
        ros_context, spinner, camera_factory, tmp_path):
    from rclpy.node import Node
    from diagnostic_msgs.msg import DiagnosticStatus

    video = write_video(tmp_path / 'pattern.avi')
    probe = spinner.add(Node('camera_probe', context=ros_context))
    got = Collector(probe)
    camera = camera_factory(source=str(video), reconnect_period_s=0.2, diagnostics_rate_hz=5.0)
    clock = camera.get_clock()
    wait_for(lambda: got.count(got.images) >= 5, timeout=15, message='first frames')

    lost_at = clock.now().nanoseconds * 1e-9
    video.rename(tmp_path / 'moved.avi')
    errors_before = got.diag_levels().count(ord(DiagnosticStatus.ERROR))
    wait_for(lambda: got.diag_levels().count(ord(DiagnosticStatus.ERROR)) >= errors_before + 3,
             timeout=10, message='three ERROR diagnostics after the file vanished')
    _, diag = got.snapshot(got.diags)[-1]
    values = {kv.key: kv.value for kv in diag.status[0].values}
    assert values['state'] == 'lost', f'expected state lost, got {values}'
    # at most the one frame whose grab was under way when the file went
    late = [stamp_s(m.header.stamp) - lost_at for _, m in got.snapshot(got.images)
            if stamp_s(m.header.stamp) > lost_at]
    assert len(late) <= 1, \
        f'no frames may follow once the file vanished, got ones {late} s after it'

    restored_at = clock.now().nanoseconds * 1e-9
    (tmp_path / 'moved.avi').rename(video)
    wait_for(lambda: any(stamp_s(m.header.stamp) > restored_at
                         for _, m in got.snapshot(got.images)),
             timeout=10, message='frames again after the file came back')
    wait_for(lambda: got.diag_levels()[-1] == ord(DiagnosticStatus.OK), timeout=5,
             message='OK diagnostics after reconnect')
    assert camera.capture.stats.reconnects == 1, \
        f'expected 1 reconnect, got {camera.capture.stats.reconnects}'


def test_camera_calibration_yaml_errors_name_the_field(tmp_path):
    from so101_driver.cameras.camera import CameraCalibration, CameraCalibrationError

    bad = dict(CALIBRATION, camera_matrix={'rows': 3, 'cols': 3, 'data': [1.0, 2.0]})
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(CameraCalibrationError, match=r'bad\.yaml.*camera_matrix'):
        CameraCalibration.from_yaml(path)
    with pytest.raises(CameraCalibrationError, match='does not exist'):
        CameraCalibration.from_yaml(tmp_path / 'missing.yaml')


def test_example_camera_info_file_in_config_parses():
    from pathlib import Path

    from so101_driver.cameras.camera import CameraCalibration

    folder = Path(__file__).resolve().parents[2] / 'config' / 'camera_info'
    files = sorted(folder.glob('*.yaml'))
    assert files, f'expected an example calibration in {folder}'
    for path in files:
        cal = CameraCalibration.from_yaml(path)
        assert cal.k[0] > 0 and cal.k[8] == 1.0, f'{path}: implausible camera_matrix {cal.k}'


def test_source_kind_tells_index_device_and_file_apart():
    from so101_driver.cameras.camera import SourceKind, source_kind

    assert source_kind('0') is SourceKind.DEVICE_INDEX
    assert source_kind('/dev/v4l/by-id/usb-x-video-index0') is SourceKind.DEVICE_PATH
    assert source_kind('replay/front.mp4') is SourceKind.FILE


def test_camera_config_rejects_bad_fourcc():
    from so101_driver.cameras.camera import CameraConfig

    with pytest.raises(ValueError, match='fourcc'):
        CameraConfig(source='0', fourcc='MJPEG')


@pytest.mark.parametrize('node_name', ['front_camera', 'handeye_camera'])
def test_config_file_parameters_are_all_declared_with_matching_types(
        ros_context, camera_factory, tmp_path, node_name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / 'config' / 'so101_cameras.yaml'
    params = yaml.safe_load(path.read_text())[node_name]['ros__parameters']
    params['source'] = str(write_video(tmp_path / 'pattern.avi'))  # no camera on CI
    camera = camera_factory(**params)  # a wrong type or an undeclared name raises here
    undeclared = [name for name in params if not camera.has_parameter(name)]
    assert not undeclared, f'{path} sets parameters the node does not declare: {undeclared}'
