"""Bag replay: a recorded rosbag2 MCAP bag through the same :class:`SceneLogger` as live.

Messages come in log-time order from :class:`~eval_monitor.bag.BagReader` (damage skipped
and reported), each at its log time: the recorder stamped it on receipt with its node clock,
which is what the live view node uses, so a replay looks like the run did. No rclpy here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eval_monitor.bag import BagReader
from eval_monitor.view.scene import CAMERA_TOPIC, TOPICS, SceneLogger


@dataclass
class ReplayResult:
    read: Counter = field(default_factory=Counter)  # relative topic -> messages read
    logged: Counter = field(default_factory=Counter)  # relative topic -> messages logged
    problems: list[str] = field(default_factory=list)  # the bag's damage and skipped messages
    first: float | None = None  # log time of the first and last message read (s)
    last: float | None = None


def relative_topics(reader: BagReader, namespace: str = '') -> dict[str, str]:
    """Absolute bag topic -> relative topic, for the topics the view draws."""
    prefix = f'/{namespace.strip("/")}/' if namespace.strip('/') else '/'
    found = {}
    for topic in reader.topics():
        if not topic.startswith(prefix):
            continue
        relative = topic[len(prefix):]
        if relative in TOPICS or CAMERA_TOPIC.match(relative):
            found[topic] = relative
    return found


def cameras_in(reader: BagReader, namespace: str = '') -> tuple[str, ...]:
    """Camera names with images in the bag, in name order (for the layout)."""
    names = {CAMERA_TOPIC.match(r).group(1) for r in relative_topics(reader, namespace).values()
             if CAMERA_TOPIC.match(r)}
    return tuple(sorted(names))


def replay(bag: str | Path, scene: SceneLogger, namespace: str = '') -> ReplayResult:
    """Log every message of ``bag`` the view draws into ``scene``'s recording."""
    reader = BagReader(bag)
    topics = relative_topics(reader, namespace)
    result = ReplayResult()
    for topic, _, log_time_ns, msg in reader.messages(topics):
        relative = topics[topic]
        t = log_time_ns * 1e-9
        result.first = t if result.first is None else result.first
        result.last = t
        result.read[relative] += 1
        if scene.handle(relative, msg, t):
            result.logged[relative] += 1
    result.problems = [*reader.problems, *scene.skipped]
    return result
