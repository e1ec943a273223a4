"""Failure analysis: every counted attempt and every episode classified from the monitor's own
events; in simulation, each attempt classified by ground truth too, to validate the classes.

:func:`failure_analysis` builds the summary's ``failure_analysis`` entry from the final event
log (events assigned to episodes), the episode spans and, when sim truth was seen, the
:class:`~eval_monitor.metrics.truth.TruthLog`. The classes and the rules behind them are in
the package docstring ("Failure analysis"). No rclpy, no plotting.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence

from eval_monitor.metrics.definitions import DetectorConfig, EvalEvent, EventKind
from eval_monitor.metrics.detector import Hold
from eval_monitor.metrics.episodes import Episode
from eval_monitor.metrics.truth import DROP_WINDOW_S, TruthLog
from eval_monitor.stats import Rate

#: A drop this soon (s) after the grasp success decision is a slip.
SLIP_WINDOW_S = 1.5

#: Outcome of an attempt, from the monitor's events.
OUTCOMES = ('placed', 'missed', 'slipped', 'dropped_in_transport', 'released_outside_bowl',
            'held_at_end')
#: Outcomes that are failed attempts (they can end an episode as its cause).
FAILED = ('missed', 'slipped', 'dropped_in_transport', 'released_outside_bowl')
#: Class of an attempt: its outcome, or ``by_operator`` when made during an intervention.
ATTEMPT_CLASSES = (*OUTCOMES, 'by_operator')
#: Class of a completed episode: a success, or the cause of its failure.
EPISODE_CLASSES = ('success', 'rescued_by_operator', *FAILED, 'timed_out')
#: Classes ground truth can tell apart (package docstring: why two outcomes share one).
TRUTH_CLASSES = ('placed', 'missed', 'slipped', 'lost_outside_bowl', 'held_at_end')
#: The truth class each outcome agrees with.
TRUTH_CLASS_OF = {'placed': 'placed', 'missed': 'missed', 'slipped': 'slipped',
                  'dropped_in_transport': 'lost_outside_bowl',
                  'released_outside_bowl': 'lost_outside_bowl', 'held_at_end': 'held_at_end'}

_OUTCOME_KINDS = (EventKind.GRASP_FAILED, EventKind.GRASP_SUCCESS, EventKind.DROP,
                  EventKind.PLACE)


def attempt_outcome(events: Sequence[EvalEvent], slip_window_s: float = SLIP_WINDOW_S,
                    reclosed: bool | None = None) -> str:
    """Outcome of one attempt from its outcome events (failed / success, drop / place) and,
    for a release, whether the jaws closed to empty-closed after it (``Hold.reclosed``)."""
    failed = next((e for e in events if e.kind is EventKind.GRASP_FAILED), None)
    if failed is not None:
        reason = failed.data.get('reason')
        return 'held_at_end' if reason in ('episode_boundary', 'stream_end') else 'missed'
    success = next((e for e in events if e.kind is EventKind.GRASP_SUCCESS), None)
    end = next((e for e in events if e.kind in (EventKind.DROP, EventKind.PLACE)), None)
    if success is None or end is None:
        return 'held_at_end'  # still held (or deciding) when its episode or the stream ended
    if end.kind is EventKind.PLACE:
        return 'placed'
    if end.stamp - success.stamp <= slip_window_s:
        return 'slipped'
    if end.data.get('reason') == 'released_outside_bowl' and not reclosed:
        return 'released_outside_bowl'
    return 'dropped_in_transport'  # closed to empty, or a grip that relaxed and closed again


def _median(values: list[float]) -> dict:
    return {'n': len(values),
            'median_rad': float(statistics.median(values)) if values else None}


def failure_analysis(events: Sequence[EvalEvent], episodes: Sequence[Episode], scope: str,
                     config: DetectorConfig, truth: TruthLog | None = None,
                     end_default: float = 0.0, slip_window_s: float = SLIP_WINDOW_S,
                     drop_window_s: float = DROP_WINDOW_S,
                     holds: Sequence[Hold] = ()) -> dict:
    """The summary's ``failure_analysis`` (package docstring, "Failure analysis")."""
    completed = {ep.index: ep for ep in episodes if ep.end is not None}

    def counted(ev: EvalEvent) -> bool:
        return not ev.data.get('learning') and (scope == 'stream' or ev.episode in completed)

    by_attempt: dict[float, list[EvalEvent]] = {}
    for ev in events:
        if ev.kind in _OUTCOME_KINDS and ev.data.get('attempt_stamp') is not None:
            by_attempt.setdefault(float(ev.data['attempt_stamp']), []).append(ev)
    all_attempts = [ev for ev in events if ev.kind is EventKind.GRASP_ATTEMPT]
    reclosed = {h.start: h.reclosed for h in holds}
    t0_stream = min((ev.stamp for ev in events), default=0.0)

    def since_start(ev: EvalEvent) -> float:
        ep = completed.get(ev.episode)
        return ev.stamp - (ep.start if ep is not None else t0_stream)

    attempts = []
    for ev in all_attempts:
        if not counted(ev):
            continue
        outcome = attempt_outcome(by_attempt.get(ev.stamp, []), slip_window_s,
                                  reclosed.get(ev.stamp))
        operator = bool(ev.data.get('during_intervention'))
        attempts.append({'episode': ev.episode, 'stamp': ev.stamp,
                         'seconds': since_start(ev),
                         'class': 'by_operator' if operator else outcome, 'outcome': outcome,
                         'by_operator': operator, 'open_rad': ev.data.get('open_rad')})

    spans = _interventions(events)
    per_episode: dict[int | None, list[dict]] = {}
    for a in attempts:
        per_episode.setdefault(a['episode'], []).append(a)
    places: dict[int | None, list[EvalEvent]] = {}
    for ev in events:
        if ev.kind is EventKind.PLACE:
            places.setdefault(ev.episode, []).append(ev)
    rows = [_episode_row(ep, per_episode.get(ep.index, []), spans, places.get(ep.index, []))
            for ep in completed.values()]

    def openings(keep) -> dict:
        return _median([a['open_rad'] for a in attempts
                        if a['open_rad'] is not None and keep(a)])

    result = {
        'scope': scope,
        'slip_window_s': slip_window_s,
        'attempts_counted': len(attempts),
        'attempt_classes': {c: sum(a['class'] == c for a in attempts) for c in ATTEMPT_CLASSES},
        'attempt_outcomes': {c: sum(a['outcome'] == c for a in attempts) for c in OUTCOMES},
        'episode_classes': {c: sum(r['class'] == c for r in rows) for c in EPISODE_CLASSES},
        'opening': {
            'successful': openings(lambda a: a['outcome'] == 'placed'),
            'failed': openings(lambda a: a['outcome'] in FAILED),
            'by_outcome': {c: openings(lambda a, c=c: a['outcome'] == c) for c in OUTCOMES},
        },
        'attempts': attempts,
        'episodes': rows,
        'truth': None,
    }
    if truth is not None and truth.seen:
        result['truth'] = _truth_validation(attempts, all_attempts, completed, truth,
                                            end_default, config, slip_window_s, drop_window_s)
    return result


def _interventions(events: Sequence[EvalEvent]) -> list[tuple[float, float]]:
    """(start, end) of every intervention; one still open ends at +inf."""
    spans = [(float(ev.data['start_stamp']), ev.stamp) for ev in events
             if ev.kind is EventKind.INTERVENTION_END and 'start_stamp' in ev.data]
    ended = {s for s, _ in spans}
    spans += [(ev.stamp, math.inf) for ev in events
              if ev.kind is EventKind.INTERVENTION_START and ev.stamp not in ended]
    return spans


def _episode_row(ep: Episode, attempts: list[dict], interventions: list[tuple[float, float]],
                 places: list[EvalEvent]) -> dict:
    place_at = places[-1].stamp if places else ep.end
    # overlapping the episode by more than a shared stamp (one that ends as it starts is not
    # in it), or a zero-length one inside it
    inside = [(s, e) for s, e in interventions
              if (s < ep.end and e > ep.start) or (s == e and ep.start <= s <= ep.end)]
    failed = [a for a in attempts if a['outcome'] in FAILED]
    last_failed = failed[-1]['outcome'] if failed else None
    if ep.success:
        rescued = any(s <= place_at for s, _ in inside)
        cls, cause = ('rescued_by_operator' if rescued else 'success'), None
    else:
        last = attempts[-1]['outcome'] if attempts else None
        cause = last if last in FAILED else 'timed_out'
        cls = cause
    return {'episode': ep.index, 'start': ep.start, 'end': ep.end,
            'duration_s': ep.end - ep.start, 'success': bool(ep.success), 'class': cls,
            'cause': cause, 'last_failed_attempt': last_failed, 'attempts': len(attempts),
            'place_s': places[-1].stamp - ep.start if places else None,
            'interventions': [[max(s, ep.start) - ep.start, min(e, ep.end) - ep.start]
                              for s, e in inside]}


def _truth_validation(attempts: list[dict], all_attempts: list[EvalEvent],
                      completed: dict[int, Episode], truth: TruthLog, end_default: float,
                      config: DetectorConfig, slip_window_s: float,
                      drop_window_s: float) -> dict:
    """Each counted attempt's truth class, agreement with its outcome, confusion counts."""
    spans = truth.spans(end_default, [ep.end for ep in completed.values()],
                        config.place_window_s, drop_window_s)
    starts = [(ev.data.get('rest_since') if ev.data.get('rest_since') is not None
               else ev.stamp) - config.settle_s for ev in all_attempts]
    window_of = {ev.stamp: (starts[i], starts[i + 1] if i + 1 < len(starts) else math.inf)
                 for i, ev in enumerate(all_attempts)}
    confusion: dict[str, Counter] = {c: Counter() for c in OUTCOMES}
    agree = 0
    for a in attempts:
        ep = completed.get(a['episode'])
        w0, w1 = window_of[a['stamp']]
        if ep is not None:
            w1 = min(w1, ep.end)
        a['truth_class'] = truth.attempt_class(spans, (w0, w1), config.settle_s,
                                               config.settle_s + config.hold_s, slip_window_s)
        confusion[a['outcome']][a['truth_class']] += 1
        agree += TRUTH_CLASS_OF[a['outcome']] == a['truth_class']
    return {
        'agreement': Rate.proportion(agree, len(attempts)).to_dict(),
        'classes': list(TRUTH_CLASSES),
        'confusion': {c: {t: confusion[c][t] for t in TRUTH_CLASSES} for c in OUTCOMES},
        'disagreements': [a['stamp'] for a in attempts
                          if TRUTH_CLASS_OF[a['outcome']] != a['truth_class']][:50],
        'note': ('truth class of an attempt: the first truth held span of at least settle_s '
                 '(the cube lifted in both jaws, more than contact chatter) starting between '
                 'its rest and the next attempt\'s; none: missed; dropped within '
                 f'settle_s + hold_s + slip_window_s ({slip_window_s} s) of lift-off (the '
                 'detector decides a success at most settle_s + hold_s after lift-off): '
                 'slipped; dropped later, or let go and not in the bowl within '
                 'place_window_s: lost_outside_bowl (truth cannot tell a release from a cube '
                 'sliding out, so dropped_in_transport and released_outside_bowl both agree '
                 'with it); still held at the episode end: held_at_end; else placed. A cube '
                 'lost before the detector\'s hold_s is a failed grasp (missed) to the '
                 'detector and slipped to truth.'),
    }
