"""QoS profiles of the suite, defined once (DESIGN.md, QoS).

Publishers offer RELIABLE so every subscriber can connect; stream subscribers take
BEST_EFFORT keep-last so a slow consumer never back-pressures a 100 Hz or 30 fps producer;
commands are RELIABLE; latched state is TRANSIENT_LOCAL depth 1 so late joiners get it.
"""

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

#: Publisher of a stream (joint states, images, camera info, diagnostics, status).
STREAM_PUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
)
#: Publisher of a small stream that the monitor and the recorder must get whole (joint states,
#: sim truth): a longer reliable history, so a subscriber busy for half a second (a loaded
#: machine, a sim at 4x real time: 200 joint states/s) still gets every sample resent.
MEASUREMENT_PUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE
)
#: Subscriber of a stream: newest sample only matters.
STREAM_SUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT
)
#: Subscriber of raw images: RELIABLE keep-last 1. Best-effort delivery between processes
#: loses most 640x480 rgb8 frames (921 kB, many DDS fragments; bench_camera: 3-15 of 30 Hz
#: arrive), while reliable keep-last 1 receives all 30 Hz and never queues stale frames.
IMAGE_SUB = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE
)
#: Commands (trajectories, episode marks, events): nothing may be lost.
COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
)
#: Latched state (/robot_description, /teleop/override, /policy/task).
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
#: Publisher of episode marks (/eval/episode): reliable, and kept for late joiners, so a
#: recorder that subscribes after the first mark (it finds topics by discovery) still gets
#: it. Subscribers use COMMAND (volatile), which matches this and any volatile publisher.
EPISODE_MARKS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
