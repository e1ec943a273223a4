"""Recorded bags -> a LeRobot dataset (``so101-dataset BAG... --root DIR``). No rclpy here.

Each bag (rosbag2 MCAP, read with :class:`eval_monitor.bag.BagReader`) becomes LeRobot
episodes written through LeRobot's own API (``LeRobotDataset.create``, ``add_frame``,
``save_episode``, ``finalize``), so the result is the current lerobot 0.6.1 on-disk format
and loads offline with ``LeRobotDataset(repo_id, root=...)``.

Frames. Episodes come from the ``eval/episode`` marks (START..END; one episode per bag when
there are none). Within an episode, frame ``k`` is at ``start + k / fps`` on the clock of the
bag's header stamps. Every stream is sampled causally: the frame holds the newest message
stamped at or before the frame time and at or after the episode start, i.e. what the policy
node would have had at that moment. A frame whose newest joint state or camera image is
older than its tolerance (a stalled camera, a gap in ``joint_states``) is never filled in:
it is skipped, the span is listed in the summary, and the episode is split there, because a
LeRobot episode's timestamps are ``frame_index / fps`` and a hole would shift every later
frame. Frames before each stream has delivered within the episode (the first frame or two
after a START mark) are skipped the same way ("lead-in").

Features (names as LeRobot's SO-101 follower writes them):

* ``observation.state`` (6 float32, ``<joint>.pos``): ``joint_states`` positions converted
  from radians to LeRobot units by ``so101_driver.feetech.calibration`` with the same calibration
  file and ``use_degrees`` as the policy node (``pi05_policy.runtime``), so training and
  deployment see the same numbers;
* ``action`` (same units and names): the commanded target at the frame time. It is
  reconstructed by replaying every ``joint_trajectory`` (policy) and
  ``teleop/joint_trajectory`` (operator) message, the ``teleop/override`` edges and the
  simulator's resets through the arm's own ``ArmController`` (splice at receipt, linear
  interpolation, hold after the last point, override arbitration, rejection rules; the
  joint limits and ``max_jump`` of the arm node) and reading the plan's setpoint at the
  frame time. The setpoint, not the measured position of the next frame, is what a policy
  outputs and what the arm was told to do, during operator control too, which makes
  intervention frames teach the correction the operator commanded. The per-tick clamp to
  ``present +/- max_relative_target`` is a safety limit of the arm, not part of the
  command, and is not applied. Frames before the first trajectory of a bag (whose plan was
  set before the recording began and is unknown) are skipped ("no command yet");
* ``observation.images.<key>``: the camera images (``cameras/<name>/image_raw``, or
  ``.../compressed`` when there is no raw topic or when asked), HxWx3 RGB, mapped from ROS
  camera names to keys as the policy node's ``cameras`` parameter does (``name`` or
  ``name:key``). Video (LeRobot's PyAV encoder, libsvtav1 by default) or, with ``--no-video``,
  PNG images in the parquet files. Video frames go straight to LeRobot's streaming encoder
  threads (several times faster than staging each frame as PNG); that encoder drops a frame
  when it falls 0.1 s behind, so every episode's video length is checked against its rows
  afterwards and, on a mismatch, the dataset is rewritten with PNG staging (which cannot
  drop);
* ``intervention`` (bool): ``teleop/override`` at the frame time, true for frame times in
  ``[rise, fall)``. It is deliberately not under ``observation.``: LeRobot would make every
  ``observation.*`` feature a policy input, which the policy node cannot provide;
* ``bag_time_ns`` (int64): the frame time in nanoseconds on the bag's stamp clock, to trace
  any frame back to the recording (an integer: LeRobot hands float64 columns to torch as
  float32, too coarse for wall-clock stamps);
* ``task``: ``policy/task`` at the frame time (the first one for frames before it: the
  topic is latched), or ``--task``.

Times: ``joint_states``, images and trajectory starts use their header stamps (zero: the
log time), ``eval/episode`` the stamp in its payload, and the unstamped ``teleop/override``,
``policy/task`` and the trajectories' receipt use the log time, as offline evaluation does.
When the recorder's clock differs from the stamps (sim time vs wall clock, > 1 s), log times
are mapped onto the stamp clock through the (log time, stamp) pairs of ``joint_states``.

Bad input: a missing required topic, joint names that are not the SO-101's, bags of
different robots (``robot_description`` joints and limits differ), a ``calibration.json``
in a bag folder that differs from the calibration given (error, or skip that bag), camera
images of another size than the dataset's: a :class:`DatasetError` naming the bag, topic
and field, before anything is written. What can be skipped is skipped and listed: the
summary is printed and written as JSON next to the dataset (``<root>.summary.json``).

Layout (each module imports only those above it):

* :mod:`.config`: :class:`ConversionConfig`, its enums, :class:`DatasetError`, feature names;
* :mod:`.streams`: pass 1 over a bag (everything but the image payloads), one clock;
* :mod:`.actions`: the command replay through ``ArmController`` (the ``action``);
* :mod:`.segments`: episodes, frame times, validity, skipped spans, dataset episodes;
* :mod:`.frames`: pass 2, the images decoded and the frames added in order;
* :mod:`.writer`: LeRobot's dataset writer (features, create, finalize, the video check);
* :mod:`.conversion`: :func:`convert`, the checks across bags, the summary;
* :mod:`.cli`: ``so101-dataset`` (:func:`main`).

LeRobot (and with it torch), PyAV and OpenCV are imported inside the functions that use them
(:mod:`.writer`, :mod:`.frames`), so importing the package stays light.
"""

from __future__ import annotations

from pi05_policy.dataset.actions import replay_commands
from pi05_policy.dataset.cli import (
    build_parser,
    config_from_args,
    main,
    parse_cameras,
    policy_params,
    print_summary,
)
from pi05_policy.dataset.config import (
    ACTION_KEY,
    BAG_CALIBRATION_FILE,
    CLOCK_OFFSET_S,
    IMAGE_PREFIX,
    INTERVENTION_KEY,
    RANGE_MARGIN_TICKS,
    ROBOT_TYPE,
    STATE_KEY,
    STREAMING_QUEUE,
    TIME_KEY,
    ConversionConfig,
    DatasetError,
    ImageSource,
    MismatchAction,
    Segments,
)
from pi05_policy.dataset.conversion import (
    ConversionResult,
    calibration_differences,
    convert,
    out_of_range,
)
from pi05_policy.dataset.frames import Timings, write_bag
from pi05_policy.dataset.segments import (
    BagPlan,
    PlannedEpisode,
    SourceEpisode,
    plan_bag,
    source_episodes,
)
from pi05_policy.dataset.streams import BagStreams, CameraStream, read_streams, robot_fingerprint
from pi05_policy.dataset.writer import check_video_encoder, dataset_features, dropped_video_frames

__all__ = [
    'ACTION_KEY', 'BAG_CALIBRATION_FILE', 'CLOCK_OFFSET_S', 'IMAGE_PREFIX', 'INTERVENTION_KEY',
    'RANGE_MARGIN_TICKS', 'ROBOT_TYPE', 'STATE_KEY', 'STREAMING_QUEUE', 'TIME_KEY',
    'BagPlan', 'BagStreams', 'CameraStream', 'ConversionConfig', 'ConversionResult',
    'DatasetError', 'ImageSource', 'MismatchAction', 'PlannedEpisode', 'Segments',
    'SourceEpisode', 'Timings',
    'build_parser', 'calibration_differences', 'check_video_encoder', 'config_from_args',
    'convert', 'dataset_features', 'dropped_video_frames', 'main', 'out_of_range',
    'parse_cameras', 'plan_bag', 'policy_params', 'print_summary', 'read_streams',
    'replay_commands', 'robot_fingerprint', 'source_episodes', 'write_bag',
]
