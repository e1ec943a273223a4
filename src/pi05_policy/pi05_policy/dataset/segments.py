"""Planning: episodes, frame times, state/action/flags, validity, segments.

From what pass 1 read (:mod:`.streams`), each bag's episodes are cut into frames at the
dataset fps; frames without a fresh joint state, camera image or known command are skipped
(and listed), and the rest is split into contiguous dataset episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
from so101_driver.feetech.calibration import ArmCalibration
from so101_driver.joints import JOINT_NAMES

from pi05_policy.dataset.actions import replay_commands
from pi05_policy.dataset.config import ConversionConfig, DatasetError, Segments
from pi05_policy.dataset.streams import BagStreams


@dataclass
class SourceEpisode:
    """An episode of a bag (from its marks, or the whole bag)."""

    index: int  # within the bag
    start: float  # s, stamp clock
    end: float
    success: bool | None
    start_source: str  # who marked the start ('' when the bag has no marks)


@dataclass
class PlannedEpisode:
    """One dataset episode: a contiguous run of valid, kept frames of a source episode."""

    bag: Path
    source: SourceEpisode
    times: np.ndarray  # (F,) frame times, s
    state: np.ndarray  # (F, 6) float32, LeRobot units
    action: np.ndarray  # (F, 6) float32
    intervention: np.ndarray  # (F,) bool
    tasks: list[str]
    images: dict[str, np.ndarray]  # camera -> (F,) stream ordinals

    @property
    def kind(self) -> str:
        if self.intervention.all():
            return 'intervention'
        return 'autonomous' if not self.intervention.any() else 'mixed'


@dataclass
class BagPlan:
    streams: BagStreams
    episodes: list[PlannedEpisode]
    source_episodes: list[SourceEpisode]
    skipped: list[dict]  # spans of frames not written, with the reason
    filtered_frames: int  # valid frames left out by the segment filter
    replay: dict[str, Any]  # executor counters


def source_episodes(streams: BagStreams) -> tuple[list[SourceEpisode], list[str]]:
    """Episodes from the START/END marks (in stamp order); the whole bag when none."""
    notes = []
    first, last = float(streams.js_stamp[0]), float(streams.js_stamp[-1])
    episodes: list[SourceEpisode] = []
    open_mark: EpisodeMark | None = None
    for _, mark in sorted(streams.marks, key=lambda m: (m[1].stamp, m[0])):
        if mark.event is EpisodeEvent.START:
            if open_mark is not None:
                notes.append(f'episode started at {open_mark.stamp:.3f} s has no END mark; '
                             f'ended by the next START at {mark.stamp:.3f} s')
                episodes.append(SourceEpisode(len(episodes), open_mark.stamp, mark.stamp, None,
                                              open_mark.source))
            open_mark = mark
        elif open_mark is None:
            notes.append(f'END mark at {mark.stamp:.3f} s without a START: ignored')
        else:
            episodes.append(SourceEpisode(len(episodes), open_mark.stamp, mark.stamp,
                                          mark.success, open_mark.source))
            open_mark = None
    if open_mark is not None:
        notes.append(f'episode started at {open_mark.stamp:.3f} s has no END mark; ended at '
                     f'the last joint state ({last:.3f} s)')
        episodes.append(SourceEpisode(len(episodes), open_mark.stamp, math.nextafter(last, 1e18),
                                      None, open_mark.source))
    if not streams.marks:
        notes.append('no eval/episode marks: the whole bag is one episode')
        episodes.append(SourceEpisode(0, first, math.nextafter(last, 1e18), None, ''))
    kept = []
    for ep in episodes:
        if ep.end <= ep.start or ep.end < first or ep.start > last:
            notes.append(f'episode {ep.index} [{ep.start:.3f}, {ep.end:.3f}) s holds no joint '
                         f'states (bag: [{first:.3f}, {last:.3f}] s): skipped; marks and joint '
                         'states on different clocks?')
        else:
            kept.append(ep)
    return kept, notes


def _latest(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the newest stamp <= each time (-1 where none)."""
    return np.searchsorted(stamps, times, side='right') - 1


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the True runs of ``mask``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def plan_bag(streams: BagStreams, config: ConversionConfig,
             calibration: ArmCalibration) -> tuple[BagPlan, list[str]]:
    """Frame times, values and validity of every episode of one bag; segments to write."""
    episodes, notes = source_episodes(streams)
    dt = 1.0 / config.fps
    per_episode = []
    for ep in episodes:
        n = max(0, math.ceil((ep.end - ep.start) * config.fps - 1e-9))
        times = ep.start + np.arange(n) * dt
        times = times[times < ep.end]
        per_episode.append((ep, times))
    all_times = np.concatenate([t for _, t in per_episode]) if per_episode else np.zeros(0)
    order = np.argsort(all_times, kind='stable')
    setpoints = np.zeros((len(all_times), len(JOINT_NAMES)))
    known = np.zeros(len(all_times), dtype=bool)
    sp, kn, replay = replay_commands(streams, all_times[order], config, calibration)
    setpoints[order], known[order] = sp, kn

    if not config.task and not streams.tasks:
        raise DatasetError(f'bag {streams.path}: no {config.topic("policy/task")} message and '
                           'no --task given; every frame needs a task string')
    task_times = np.array([t for t, _ in streams.tasks])
    task_texts = [text for _, text in streams.tasks]
    override_times = np.array([t for t, _ in streams.overrides])
    override_values = np.array([v for _, v in streams.overrides], dtype=bool)
    if not streams.overrides:
        notes.append(f'no {config.topic("teleop/override")} messages: intervention is false '
                     'on every frame')

    plans: list[PlannedEpisode] = []
    skipped: list[dict] = []
    filtered = 0
    offset = 0
    for ep, times in per_episode:
        count = len(times)
        sl = slice(offset, offset + count)
        offset += count
        reasons = [[] for _ in range(count)]
        # joint state: newest at or before the frame, inside the episode, young enough
        js_i = _latest(streams.js_stamp, times)
        _check(reasons, streams.js_stamp, js_i, times, ep.start, config.state_tolerance_s,
               'joint_states')
        image_index = {}
        for name, cam in streams.cameras.items():
            idx = _latest(cam.stamps, times)
            _check(reasons, cam.stamps, idx, times, ep.start, config.image_tolerance_s,
                   f'camera {name}')
            image_index[name] = idx
        for j in np.flatnonzero(~known[sl]):
            reasons[j].append('no command yet (the plan before the first trajectory is '
                              'unknown)')
        valid = np.array([not r for r in reasons], dtype=bool)
        intervention = np.zeros(count, dtype=bool)
        if len(override_times):
            ov_i = _latest(override_times, times)
            intervention = np.where(ov_i >= 0, override_values[np.maximum(ov_i, 0)], False)
        keep = {Segments.WHOLE: np.ones(count, dtype=bool),
                Segments.INTERVENTIONS: intervention,
                Segments.AUTONOMOUS: ~intervention}[config.segments]
        filtered += int(np.count_nonzero(valid & ~keep))
        for a, b in _runs(~valid):
            skipped.append(_span(streams.path, ep, times, a, b, dt,
                                 sorted({r for rs in reasons[a:b] for r in rs})))
        for a, b in _runs(valid & keep):
            if b - a < config.min_frames:
                skipped.append(_span(streams.path, ep, times, a, b, dt,
                                     [f'segment shorter than min_frames ({config.min_frames})']))
                continue
            ts = times[a:b]
            if config.task:
                tasks = [config.task] * (b - a)
            else:
                ti = _latest(task_times, ts)
                tasks = [task_texts[max(i, 0)] for i in ti]
            js = js_i[a:b]
            plans.append(PlannedEpisode(
                bag=streams.path, source=ep, times=ts,
                state=np.stack([calibration.radians_to_lerobot(streams.js_pos[i],
                                                               config.norm_modes)
                                for i in js]).astype(np.float32),
                action=np.stack([calibration.radians_to_lerobot(q, config.norm_modes)
                                 for q in setpoints[sl][a:b]]).astype(np.float32),
                intervention=intervention[a:b].astype(bool), tasks=tasks,
                images={name: streams.cameras[name].ordinals[idx[a:b]]
                        for name, idx in image_index.items()}))
    return BagPlan(streams, plans, episodes, skipped, filtered, replay), notes


def _check(reasons: list[list[str]], stamps: np.ndarray, index: np.ndarray, times: np.ndarray,
           start: float, tolerance: float, what: str) -> None:
    for j, (i, t) in enumerate(zip(index, times, strict=True)):
        if i < 0 or stamps[i] <= start:  # a sample stamped at the start may predate a reset
            reasons[j].append(f'lead-in: no {what} since the episode start')
        elif t - stamps[i] > tolerance + 1e-9:
            reasons[j].append(f'stale {what} (newest older than {tolerance:g} s)')


def _span(bag: Path, ep: SourceEpisode, times: np.ndarray, a: int, b: int, dt: float,
          reasons: list[str]) -> dict:
    return {'bag': str(bag), 'source_episode': ep.index, 'start_s': round(float(times[a]), 6),
            'end_s': round(float(times[b - 1] + dt), 6), 'frames': b - a, 'reasons': reasons}
