"""The summary of a run: counts, rates, per-episode rows, availability, sim truth agreement.

Built from the final state of the other layers each time :meth:`MetricEngine.summary` is
called, never kept up to date on the way: events are assigned to episodes from the final
spans, and a metric whose input is missing is marked unavailable with its reason instead of
counted as 0 (package docstring, "How the summary treats events outside episodes").
:class:`~eval_monitor.metrics.truth.TruthLog` (re-exported here) keeps the sim truth that
the detected holds and drops are checked against; :mod:`eval_monitor.metrics.analysis`
classifies the attempts and episodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from eval_monitor.metrics.definitions import (TOPIC_EPISODE, TOPIC_JOINT_STATES,
                                              TOPIC_OVERRIDE, DetectorConfig, EvalEvent,
                                              EventKind, Metric, Summary, TrajectorySource)
from eval_monitor.metrics.analysis import SLIP_WINDOW_S, failure_analysis
from eval_monitor.metrics.detector import GraspDetector
from eval_monitor.metrics.episodes import EpisodeLog, InputLog
from eval_monitor.metrics.truth import MATCH_WINDOW_S, TruthLog
from eval_monitor.stats import Rate

__all__ = ['TruthLog', 'build_summary']

# Metrics that one missing input makes unavailable together.
_GRASP_METRICS = (Metric.GRASP_ATTEMPTS, Metric.GRASP_SUCCESS, Metric.DROPS,
                  Metric.DROPS_PER_GRASP, Metric.PLACES)
_EPISODE_METRICS = (Metric.EPISODES, Metric.EPISODE_SUCCESS, Metric.MEAN_TIME_TO_SUCCESS_S,
                    Metric.INTERVENTIONS_PER_EPISODE)
_INTERVENTION_METRICS = (Metric.INTERVENTIONS, Metric.INTERVENTIONS_PER_EPISODE,
                         Metric.MEAN_INTERVENTION_S)


def _norm_topic(name: str) -> str:
    return name.strip().strip('/')


def build_summary(config: DetectorConfig, log: EpisodeLog, detector: GraspDetector,
                  truth: TruthLog, inputs: InputLog, missing_topics: Iterable[str] = (),
                  skipped: Iterable[str] = (), match_window_s: float = MATCH_WINDOW_S,
                  slip_window_s: float = SLIP_WINDOW_S) -> Summary:
    """Counts, rates, per-episode rows, truth agreement and failure analysis (package
    docstring: scope and availability; sim truth agreement; failure analysis)."""
    missing = sorted({_norm_topic(m) for m in missing_topics})
    events = log.events
    completed = [ep for ep in log.episodes if ep.end is not None]
    done = {ep.index for ep in completed}
    scope = 'episodes' if log.episodes else 'stream'

    def counted(ev: EvalEvent) -> bool:
        if ev.data.get('learning'):
            return False
        return scope == 'stream' or ev.episode in done

    tally: Counter[tuple[int | None, EventKind]] = Counter()
    durations: dict[int | None, list[float]] = {}
    for ev in events:
        if ev.data.get('learning'):
            continue
        tally[ev.episode, ev.kind] += 1
        if ev.kind is EventKind.INTERVENTION_END:
            durations.setdefault(ev.episode, []).append(float(ev.data['duration_s']))

    def total(kind: EventKind) -> int:
        return sum(1 for ev in events if ev.kind is kind and counted(ev))

    s = Summary(scope=scope, missing_topics=missing, skipped=[str(x) for x in skipped])
    unavailable = s.unavailable
    grasp_reason = _grasp_unavailable(config, detector, inputs, missing)
    if grasp_reason:
        unavailable.update({m.value: grasp_reason for m in _GRASP_METRICS})
    if TOPIC_OVERRIDE in missing:
        reason = f'topic {TOPIC_OVERRIDE} missing from the recording'
        unavailable.update({m.value: reason for m in _INTERVENTION_METRICS})
    if not completed:
        reason = (f'topic {TOPIC_EPISODE} missing from the recording'
                  if TOPIC_EPISODE in missing else
                  'no completed episode (no eval/episode start and end marks)')
        unavailable.update({m.value: reason for m in _EPISODE_METRICS})

    def available(metric: Metric) -> bool:
        return metric.value not in unavailable

    if available(Metric.EPISODES):
        s.episodes = len(completed)
        s.episode_successes = sum(1 for ep in completed if ep.success)
        s.rates[Metric.EPISODE_SUCCESS.value] = Rate.proportion(
            s.episode_successes, s.episodes).to_dict()
        successful = [ep.end - ep.start for ep in completed if ep.success]
        if successful:
            s.mean_time_to_success_s = float(np.mean(successful))
    if available(Metric.GRASP_ATTEMPTS):
        s.grasp_attempts = total(EventKind.GRASP_ATTEMPT)
        s.grasp_successes = total(EventKind.GRASP_SUCCESS)
        s.grasp_failures = total(EventKind.GRASP_FAILED)
        s.drops = total(EventKind.DROP)
        s.places = total(EventKind.PLACE)
        s.rates[Metric.GRASP_SUCCESS.value] = Rate.proportion(
            s.grasp_successes, s.grasp_attempts).to_dict()
        s.rates[Metric.DROPS_PER_GRASP.value] = Rate.proportion(
            s.drops, s.grasp_successes).to_dict()
    if available(Metric.INTERVENTIONS):
        s.interventions = total(EventKind.INTERVENTION_START)
        spans = [float(ev.data['duration_s']) for ev in events
                 if ev.kind is EventKind.INTERVENTION_END and counted(ev)]
        if spans:
            s.mean_intervention_s = float(np.mean(spans))
        if available(Metric.INTERVENTIONS_PER_EPISODE):
            rate = Rate.per_unit(s.interventions, s.episodes)
            s.interventions_per_episode = rate.value
            s.rates[Metric.INTERVENTIONS_PER_EPISODE.value] = rate.to_dict()

    traj: Counter[tuple[int | None, str]] = Counter(
        (log.episode_of(t), src.value) for t, src in log.trajectories)
    for ep in log.episodes:
        row = {'episode': ep.index, 'start': ep.start, 'end': ep.end,
               'duration_s': None if ep.end is None else ep.end - ep.start,
               'success': ep.success, 'open': ep.end is None,
               'held_at_end': ep.held_at_end, 'source': ep.source, 'note': ep.note,
               'trajectories': {src.value: traj[ep.index, src.value]
                                for src in TrajectorySource}}
        row.update(_row_counts(tally, durations, ep.index, grasp_reason is None,
                               TOPIC_OVERRIDE not in missing))
        s.per_episode.append(row)
    if scope == 'episodes':
        s.outside_episodes = _row_counts(tally, durations, None, grasp_reason is None,
                                         TOPIC_OVERRIDE not in missing)
        s.outside_episodes['trajectories'] = {src.value: traj[None, src.value]
                                              for src in TrajectorySource}
    open_eps = [ep.index for ep in log.episodes if ep.end is None]
    if open_eps:
        s.notes.append(f'episode {open_eps[0]} has no end mark (stream ended inside it); '
                       'it is listed but left out of every rate')
    if not inputs.messages[TOPIC_OVERRIDE] and TOPIC_OVERRIDE not in missing:
        s.notes.append(f'no {TOPIC_OVERRIDE} messages: no intervention was seen')
    if detector.effort_seen is False and detector.samples and config.use_effort:
        s.notes.append('no gripper effort in joint_states: grasp success decided by the '
                       'gripper angle alone')
    end_default = (inputs.finished_at if inputs.finished_at is not None
                   else inputs.last_stamp.get(TOPIC_JOINT_STATES, 0.0))
    if truth.seen:
        drops = [ev.stamp for ev, _ in log.entries if ev.kind is EventKind.DROP]
        s.truth_agreement = truth.agreement(
            detector.holds, drops, end_default, config.settle_s + config.hold_s,
            [ep.end for ep in log.episodes if ep.end is not None], config.place_window_s,
            match_window_s)
    else:
        s.truth_agreement = None
    if grasp_reason is None:
        s.failure_analysis = failure_analysis(events, log.episodes, scope, config, truth,
                                              end_default, slip_window_s,
                                              holds=detector.holds)
    s.detector = detector.describe()
    s.input = {'messages': dict(sorted(inputs.messages.items())),
               'out_of_order': dict(sorted(inputs.out_of_order.items())),
               'problems': dict(sorted(inputs.problems.items())),
               'finished_at': inputs.finished_at}
    return s


def _grasp_unavailable(config: DetectorConfig, detector: GraspDetector, inputs: InputLog,
                       missing: list[str]) -> str | None:
    if TOPIC_JOINT_STATES in missing:
        return f'topic {TOPIC_JOINT_STATES} missing from the recording'
    if not inputs.messages[TOPIC_JOINT_STATES]:
        return f'no {TOPIC_JOINT_STATES} messages'
    if not detector.samples:
        return (f'{TOPIC_JOINT_STATES} never carried a valid '
                f'{config.gripper_joint!r} position')
    return None


def _row_counts(tally: Counter, durations: dict, episode: int | None, grasps: bool,
                interventions: bool) -> dict:
    row: dict[str, Any] = {}
    for key, kind in (('grasp_attempts', EventKind.GRASP_ATTEMPT),
                      ('grasp_successes', EventKind.GRASP_SUCCESS),
                      ('drops', EventKind.DROP), ('places', EventKind.PLACE)):
        row[key] = tally[episode, kind] if grasps else None
    row['interventions'] = tally[episode, EventKind.INTERVENTION_START] if interventions \
        else None
    row['intervention_s'] = (float(sum(durations.get(episode, []))) if interventions
                             else None)
    return row
