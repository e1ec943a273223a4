"""Options of ``so101-dataset``: the conversion config, its enums, the dataset's names.

Everything else in the package takes a validated :class:`ConversionConfig`, so bad options
fail here, before a bag is opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from so101_driver.feetech.calibration import NormMode, so101_norm_modes

#: LeRobot's robot type of the SO-101 follower (meta/info.json ``robot_type``).
ROBOT_TYPE = 'so101_follower'
STATE_KEY = 'observation.state'
ACTION_KEY = 'action'
IMAGE_PREFIX = 'observation.images.'
INTERVENTION_KEY = 'intervention'
TIME_KEY = 'bag_time_ns'
#: A calibration file the recorder (or the operator) put in a bag folder.
BAG_CALIBRATION_FILE = 'calibration.json'
#: Log times and header stamps further apart than this (median, s) are different clocks.
CLOCK_OFFSET_S = 1.0
#: Joint-state ticks this far outside the calibrated range count as out of range.
RANGE_MARGIN_TICKS = 50
#: Frames per camera the streaming video encoder may queue.
STREAMING_QUEUE = 60


class DatasetError(ValueError):
    """Input that cannot become a dataset; the message names the bag, topic or field."""


class Segments(str, Enum):
    """Which frames of each episode become dataset episodes."""

    WHOLE = 'whole'  # every frame
    INTERVENTIONS = 'interventions'  # only frames where the operator is in control
    AUTONOMOUS = 'autonomous'  # every frame except those


class ImageSource(str, Enum):
    """Which camera topic to read."""

    AUTO = 'auto'  # image_raw when the bag has it, else image_raw/compressed
    RAW = 'raw'  # cameras/<name>/image_raw (sensor_msgs/Image)
    COMPRESSED = 'compressed'  # cameras/<name>/image_raw/compressed (CompressedImage)


class MismatchAction(str, Enum):
    """What a bag whose own calibration.json differs from the given calibration gets."""

    ERROR = 'error'  # stop before writing anything
    SKIP = 'skip'  # leave that bag out, listed in the summary


@dataclass
class ConversionConfig:
    """Everything ``so101-dataset`` needs; validated on construction."""

    bags: list[Path]  # bag directories (or single .mcap files), converted in this order
    root: Path  # dataset folder to create (must not exist unless overwrite)
    calibration_file: Path  # LeRobot calibration JSON of the arm (same as the policy node's)
    repo_id: str = 'local/so101'  # dataset repo id (meta only; nothing is pushed)
    use_degrees: bool = True  # body joints in degrees (LeRobot 0.6.1 default) or -100..100
    cameras: dict[str, str] = field(
        default_factory=lambda: {'front': 'front', 'handeye': 'handeye'})  # ROS name -> key
    image_source: ImageSource = ImageSource.AUTO  # raw or compressed camera topics
    fps: int = 30  # dataset frame rate (the policy node's control_fps)
    task: str = ''  # task string for every frame; '' = policy/task from the bag
    segments: Segments = Segments.WHOLE  # whole episodes, interventions only, or the rest
    image_tolerance_s: float = 0.1  # max age of the newest image at a frame time (s)
    state_tolerance_s: float = 0.05  # max age of the newest joint state at a frame time (s)
    min_frames: int = 2  # shorter segments are dropped (listed)
    image_size: tuple[int, int] | None = None  # (height, width) to resize every image to
    video: bool = True  # store cameras as video (LeRobot/PyAV encoder) instead of images
    vcodec: str = 'libsvtav1'  # video codec (LeRobot's default)
    streaming_encoding: bool = True  # frames straight to the encoder (checked; see package doc)
    max_jump: float = 0.35  # replay executor: the arm node's max_jump (rad)
    limit_margin: float = 0.0  # replay executor: the arm node's limit_margin (rad)
    on_calibration_mismatch: MismatchAction = MismatchAction.ERROR  # see MismatchAction
    namespace: str = '/'  # namespace the topics were recorded under
    overwrite: bool = False  # replace an existing dataset at root (only a LeRobot dataset)
    image_writer_threads: int = 2  # LeRobot's asynchronous frame writer threads
    summary_path: Path | None = None  # '' -> <root>.summary.json

    def __post_init__(self):
        self.bags = [Path(b).expanduser() for b in self.bags]
        self.root = Path(self.root).expanduser()
        self.calibration_file = Path(self.calibration_file).expanduser()
        self.image_source = ImageSource(self.image_source)
        self.segments = Segments(self.segments)
        self.on_calibration_mismatch = MismatchAction(self.on_calibration_mismatch)
        if not self.bags:
            raise DatasetError('no bags given')
        if len(set(self.bags)) != len(self.bags):
            raise DatasetError(f'a bag is given twice: {[str(b) for b in self.bags]}')
        if not self.cameras:
            raise DatasetError('cameras is empty: map at least one ROS camera to an image key')
        keys = list(self.cameras.values())
        if len(set(keys)) != len(keys):
            raise DatasetError(f'cameras map two ROS cameras to one image key: {self.cameras}')
        if not 1 <= int(self.fps) <= 1000:
            raise DatasetError(f'fps must be an integer in 1..1000, got {self.fps}')
        self.fps = int(self.fps)
        for name in ('image_tolerance_s', 'state_tolerance_s'):
            if not 0 < getattr(self, name) <= 10:
                raise DatasetError(f'{name} must be in (0, 10] s, got {getattr(self, name)}')
        if self.min_frames < 1:
            raise DatasetError(f'min_frames must be >= 1, got {self.min_frames}')
        if self.image_size is not None:
            h, w = (int(v) for v in self.image_size)
            if h < 1 or w < 1:
                raise DatasetError(f'image_size must be positive (height, width), got '
                                   f'{self.image_size}')
            self.image_size = (h, w)
        if self.max_jump <= 0 or not 0 <= self.limit_margin < 0.5:
            raise DatasetError(f'need max_jump > 0 and 0 <= limit_margin < 0.5 rad, got '
                               f'{self.max_jump}, {self.limit_margin}')
        if self.image_writer_threads < 0:
            raise DatasetError('image_writer_threads must be >= 0')
        if self.summary_path is None:
            self.summary_path = Path(str(self.root).rstrip('/') + '.summary.json')

    @property
    def norm_modes(self) -> tuple[NormMode, ...]:
        return so101_norm_modes(self.use_degrees)

    def topic(self, relative: str) -> str:
        """Absolute bag topic of a relative name under the namespace."""
        return '/' + '/'.join(p for p in (self.namespace.strip('/'), relative) if p)
