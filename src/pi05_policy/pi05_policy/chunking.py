"""When to run the policy, and how an action chunk becomes a timed trajectory (no rclpy).

Timing of a chunk: the policy sees an observation taken at ``t_obs`` and returns actions
``a_0 .. a_{K-1}``; action ``k`` is the setpoint for ``t_obs + k / fps`` (``fps``: the control
rate of the training data), as in LeRobot's own control loop. By the time the chunk is ready
the first actions lie in the past (inference latency): they are dropped, and so are those
due sooner than ``min_lead_s`` from now. The kept actions ``k0 ..`` are sent as one
trajectory starting at ``t_obs + (k0 - 1) / fps`` with ``time_from_start = 1/fps, 2/fps, ...``,
so every point sits exactly on its action's time and the first point is strictly after the
start (the driver replaces its plan from ``max(start, now)`` and keeps its own setpoint at
that instant as an anchor, so nothing jumps).

Scheduling (``ChunkScheduler``), one inference at a time:

* ``SYNC``: infer when the current chunk is used up (its last point is due). The arm holds
  its last setpoint while the next chunk is computed: simple, but it pauses every chunk.
* ``ASYNC``: infer as soon as the part of the current chunk still ahead falls below
  ``async_threshold`` of a chunk's length; the new chunk replaces the tail of the old one.
  When inference takes less than ``async_threshold`` of a chunk, the new chunk arrives
  while the old one still has points ahead, so the commanded stream has no gap.
* ``RTC``: scheduled as ``ASYNC``; in addition each inference gets the part of the current
  chunk still to run and the inference delay, for LeRobot's Real-Time Chunking
  (``pi05_policy.rtc``), so the new chunk continues the old one instead of jumping at the
  seam. Timing is unchanged: chunks stay anchored to their observation stamp.

``reset()`` (operator override, watchdog) forgets the chunk and invalidates an inference in
flight, whose result must then be thrown away: ``finish`` returns False for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np


class ChunkMode(str, Enum):
    SYNC = 'sync'
    ASYNC = 'async'
    RTC = 'rtc'  # ASYNC plus LeRobot's Real-Time Chunking (policies with rtc_config)


@dataclass
class ChunkingConfig:
    """How chunks are timed and when inference runs."""

    fps: float = 30.0  # control rate of the training data: action k is for t_obs + k / fps
    mode: ChunkMode = ChunkMode.ASYNC  # SYNC: infer when used up; ASYNC/RTC: before it runs out
    async_threshold: float = 0.5  # ASYNC/RTC: infer when less than this fraction is left
    min_lead_s: float = 0.01  # actions due sooner than this after publishing are dropped
    max_actions: int = 0  # use at most this many actions of each chunk (0: all of them)

    def __post_init__(self):
        self.mode = ChunkMode(self.mode)
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f'fps must be positive, got {self.fps}')
        if not 0.0 < self.async_threshold <= 1.0:
            raise ValueError(f'async_threshold must be in (0, 1], got {self.async_threshold}')
        if not 0.0 <= self.min_lead_s < 10.0:
            raise ValueError(f'min_lead_s must be in [0, 10) s, got {self.min_lead_s}')
        if self.max_actions < 0:
            raise ValueError(f'max_actions must be >= 0 (0: all), got {self.max_actions}')


@dataclass(frozen=True)
class TimedChunk:
    """The kept part of a chunk, ready for ``so101_driver.ros_io.trajectory_msg``."""

    start: float  # header.stamp, seconds on the node clock
    time_from_start: np.ndarray  # (n,) seconds, k / fps, strictly increasing, > 0
    positions: np.ndarray  # (n, joints) radians
    observation_stamp: float  # t_obs the chunk was computed from
    dropped: int  # actions that were already due when the chunk was ready
    length: int  # actions the policy returned (after max_actions)

    @property
    def end(self) -> float:
        """Time of the last point."""
        return self.start + float(self.time_from_start[-1])

    @property
    def first(self) -> float:
        """Time of the first point."""
        return self.start + float(self.time_from_start[0])


def time_chunk(positions: np.ndarray, observation_stamp: float, now: float,
               config: ChunkingConfig) -> TimedChunk | None:
    """Time a chunk of actions; None when every action is already due (all dropped)."""
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 2 or len(positions) == 0:
        raise ValueError(f'a chunk is a (K, joints) array with K >= 1, got {positions.shape}')
    if config.max_actions:
        positions = positions[:config.max_actions]
    k = np.arange(len(positions))
    due = observation_stamp + k / config.fps
    keep = np.flatnonzero(due > now + config.min_lead_s)
    if len(keep) == 0:
        return None
    k0 = int(keep[0])
    return TimedChunk(
        start=observation_stamp + (k0 - 1) / config.fps,
        time_from_start=(k[k0:] - k0 + 1) / config.fps,
        positions=positions[k0:],
        observation_stamp=observation_stamp,
        dropped=k0,
        length=len(positions),
    )


class ChunkScheduler:
    """Decides when the next inference starts; tracks the chunk being executed."""

    def __init__(self, config: ChunkingConfig):
        self.config = config
        self._end: float | None = None  # time of the current chunk's last point
        self._length_s = 0.0  # nominal length of a chunk (actions / fps)
        self._generation = 0  # bumped by reset(): results of older inferences are stale
        self._in_flight: int | None = None  # generation of the running inference

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    @property
    def chunk_end(self) -> float | None:
        return self._end

    def remaining(self, now: float) -> float:
        """Seconds of the current chunk still ahead (0 without one)."""
        return 0.0 if self._end is None else max(0.0, self._end - now)

    def due(self, now: float) -> bool:
        """Should an inference start now?"""
        if self.in_flight:
            return False
        if self._end is None:
            return True
        if self.config.mode is ChunkMode.SYNC:
            return now >= self._end
        return self._end - now < self.config.async_threshold * self._length_s

    def start(self) -> int:
        """Mark an inference as started; returns the token to give to ``finish``."""
        self._in_flight = self._generation
        return self._generation

    def finish(self, token: int, chunk: TimedChunk | None) -> bool:
        """An inference ended. True if its chunk may be published (not reset meanwhile)."""
        if token != self._generation:
            return False
        self._in_flight = None
        if chunk is not None:
            self._end = chunk.end
            self._length_s = chunk.length / self.config.fps
        return True

    def reset(self) -> None:
        """Forget the current chunk; an inference in flight becomes stale."""
        self._generation += 1
        self._in_flight = None
        self._end = None
        self._length_s = 0.0
