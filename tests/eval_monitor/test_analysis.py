"""Failure analysis and detector-vs-truth agreement on synthetic gripper + truth streams.

A :class:`Cell` stream publishes a sim truth message with every gripper sample (50 Hz), so
each scripted attempt has a known ground truth: held spans, drops, the cube in the bowl.
"""

from __future__ import annotations

import json

import pytest

from eval_monitor.metrics import EventKind, MetricEngine, Summary
from eval_monitor.metrics.analysis import ATTEMPT_CLASSES, EPISODE_CLASSES
from eval_monitor.metrics.truth import match_stamps
from so101_driver.eval_topics import SimTruth
from tests.eval_monitor.test_metrics import CUBE, GRIP_NM, OPEN, Stream


class Cell(Stream):
    """A Stream that also publishes sim truth (held, in_bowl, dropped once) every sample."""

    def __init__(self, engine: MetricEngine | None = None, truth: bool = True, **kwargs):
        super().__init__(engine, **kwargs)
        self.send_truth = truth
        self.held = False
        self.in_bowl = False
        self._dropped = False

    def _sample(self, q: float, v: float, e: float) -> None:
        super()._sample(q, v, e)
        if self.send_truth:
            dropped, self._dropped = self._dropped, False
            self.events += self.engine.truth(SimTruth(self.t, (0.0, 0.0, 0.05), self.held,
                                                      self.held, self.in_bowl, dropped))

    # truth changes ----------------------------------------------------------------------
    def lift(self) -> Cell:
        self.held = True
        return self

    def let_go(self, dropped: bool) -> Cell:
        self.held, self._dropped = False, dropped
        return self

    def reset(self) -> Cell:
        """The cell's reset at an episode boundary: the cube leaves the jaws and the bowl."""
        self.held = self.in_bowl = False
        return self

    # attempts ---------------------------------------------------------------------------
    def close_on_cube(self) -> Cell:
        """Close on the cube (attempt at rest, success 0.5 s later) and lift it."""
        self.move(CUBE).stay(0.8, effort=GRIP_NM)
        return self.lift()

    def placed(self, hold: float = 1.0) -> Cell:
        self.close_on_cube().stay(hold, effort=GRIP_NM)
        self.let_go(False).move(OPEN)
        self.in_bowl = True
        return self.stay(0.3)

    def slipped(self) -> Cell:
        self.close_on_cube().stay(1.0, effort=GRIP_NM)  # truth: held 1.0 s (>= 0.7 s)
        return self.let_go(True).drop()

    def dropped_in_transport(self) -> Cell:
        self.close_on_cube().stay(2.5, effort=GRIP_NM)
        return self.let_go(True).drop()

    def released_outside(self) -> Cell:
        self.close_on_cube().stay(2.5, effort=GRIP_NM).move(0.45, 0.1)  # jaws open ...
        return self.let_go(True).move(OPEN).stay(0.3)  # ... and the cube falls beside the bowl

    def relaxed(self) -> Cell:
        """Mid-carry the grip relaxes a little (not to open_rad), the cube falls out, the
        jaws close again (the sim expert's transport_drop)."""
        self.close_on_cube().stay(2.5, effort=GRIP_NM).move(0.44, 0.1)
        return self.let_go(True).move(-0.1745, 0.2).stay(0.4).open()

    def narrow_miss(self, opening: float) -> Cell:
        """Half-closed home pose, then a narrow opening and a close on nothing."""
        self.move(0.3).stay(0.4).move(opening).stay(0.3)
        return self.miss()

    def end_episode(self, success: bool) -> Cell:
        self.end(success)
        return self.reset()


def every_class_stream() -> Cell:
    """One episode per class: 8 episodes, 8 attempts (see test_every_attempt_class...)."""
    s = Cell().stay(0.3)
    s.start().placed().end_episode(True)                              # 1 success
    s.start().narrow_miss(0.6).end_episode(False)                     # 2 missed
    s.start().slipped().end_episode(False)                            # 3 slipped
    s.start().dropped_in_transport().end_episode(False)               # 4 dropped
    s.start().released_outside().end_episode(False)                   # 5 released
    s.start().narrow_miss(0.55).close_on_cube().stay(1.0, effort=GRIP_NM)
    s.end_episode(False).open()                                       # 6 held at the end
    s.start().stay(0.2).override(True).placed().override(False).end_episode(True)  # 7 rescue
    s.start().stay(1.0).end_episode(False)                            # 8 nothing: timed out
    return s.finish()


@pytest.fixture(scope='module')
def every_class():
    return every_class_stream().engine.summary()


def test_every_attempt_class_from_the_monitor_signals(every_class):
    fa = every_class.failure_analysis
    classes = [a['class'] for a in fa['attempts']]
    assert classes == ['placed', 'missed', 'slipped', 'dropped_in_transport',
                       'released_outside_bowl', 'missed', 'held_at_end', 'by_operator'], classes
    assert [a['episode'] for a in fa['attempts']] == [1, 2, 3, 4, 5, 6, 6, 7]
    assert fa['attempts'][-1]['outcome'] == 'placed' and fa['attempts'][-1]['by_operator']
    assert fa['attempt_classes'] == {'placed': 1, 'missed': 2, 'slipped': 1,
                                     'dropped_in_transport': 1, 'released_outside_bowl': 1,
                                     'held_at_end': 1, 'by_operator': 1}
    assert set(fa['attempt_classes']) == set(ATTEMPT_CLASSES)
    assert fa['attempts_counted'] == every_class.grasp_attempts == 8


def test_every_episode_class_and_cause(every_class):
    fa = every_class.failure_analysis
    rows = fa['episodes']
    assert [r['class'] for r in rows] == [
        'success', 'missed', 'slipped', 'dropped_in_transport', 'released_outside_bowl',
        'timed_out', 'rescued_by_operator', 'timed_out'], rows
    assert [r['cause'] for r in rows] == [
        None, 'missed', 'slipped', 'dropped_in_transport', 'released_outside_bowl',
        'timed_out', None, 'timed_out']
    # episode 6 ran out while the cube was held: its earlier miss is named, not the cause
    assert rows[5]['last_failed_attempt'] == 'missed' and rows[7]['last_failed_attempt'] is None
    assert [r['attempts'] for r in rows] == [1, 1, 1, 1, 1, 2, 1, 0]
    assert len(rows[6]['interventions']) == 1 and rows[0]['interventions'] == []
    start, end = rows[6]['interventions'][0]
    assert 0.15 < start < 0.3 and end > rows[6]['place_s'], rows[6]
    assert fa['episode_classes'] == {c: (2 if c == 'timed_out' else 1)
                                     for c in EPISODE_CLASSES}


def test_slip_window_decides_slipped_or_dropped_in_transport():
    s = Cell().stay(0.3).start().slipped().end_episode(False)
    s.start().dropped_in_transport().end_episode(False).finish()
    fa = s.engine.summary().failure_analysis
    assert [a['class'] for a in fa['attempts']] == ['slipped', 'dropped_in_transport']
    # the same stream with a 5 s slip window: both drops are slips
    engine = s.engine
    from eval_monitor.metrics.summary import build_summary

    wide = build_summary(engine.config, engine._log, engine._detector, engine._truth,
                         engine._inputs, slip_window_s=5.0).failure_analysis
    assert [a['class'] for a in wide['attempts']] == ['slipped', 'slipped']
    assert wide['truth']['agreement']['k'] == 2, wide['truth']


def test_a_grip_that_relaxes_and_closes_again_is_a_drop_in_transport():
    s = Cell().stay(0.3).start().relaxed().end_episode(False)
    s.start().released_outside().end_episode(False).finish()
    summary = s.engine.summary()
    drops = [e for e in s.engine.events if e.kind is EventKind.DROP]
    # both are releases to the detector (the jaws opened while holding) ...
    assert [d.data['reason'] for d in drops] == ['released_outside_bowl'] * 2, drops
    assert [h.reclosed for h in s.engine._detector.holds] == [True, False]
    # ... but only the second opened wide: a release; the first closed again: a drop
    fa = summary.failure_analysis
    assert [a['class'] for a in fa['attempts']] == ['dropped_in_transport',
                                                    'released_outside_bowl']
    assert [r['cause'] for r in fa['episodes']] == ['dropped_in_transport',
                                                    'released_outside_bowl']
    assert fa['truth']['agreement']['k'] == 2 and summary.truth_agreement['drop_recall']['k'] == 2


def test_open_rad_is_the_peak_of_the_opening_before_each_close(every_class):
    fa = every_class.failure_analysis
    openings = [a['open_rad'] for a in fa['attempts']]
    # narrow misses open to 0.6 and 0.55 after a half-closed pose; the rest open to OPEN
    assert openings == pytest.approx([OPEN, 0.6, OPEN, OPEN, OPEN, 0.55, OPEN, OPEN]), openings
    attempts = [e for e in every_class_stream().engine.events
                if e.kind is EventKind.GRASP_ATTEMPT]
    assert attempts[1].data['open_rad'] == pytest.approx(0.6), attempts[1].data
    opening = fa['opening']
    assert opening['by_outcome']['missed'] == {'n': 2, 'median_rad': pytest.approx(0.575)}
    assert opening['successful'] == {'n': 2, 'median_rad': pytest.approx(OPEN)}
    # failed: 0.6, 1.0, 1.0, 1.0, 0.55 -> median 1.0
    assert opening['failed'] == {'n': 5, 'median_rad': pytest.approx(OPEN)}


def test_truth_validates_every_class(every_class):
    truth = every_class.failure_analysis['truth']
    classes = [a['truth_class'] for a in every_class.failure_analysis['attempts']]
    assert classes == ['placed', 'missed', 'slipped', 'lost_outside_bowl', 'lost_outside_bowl',
                       'missed', 'held_at_end', 'placed'], classes
    assert (truth['agreement']['k'], truth['agreement']['n']) == (8, 8), truth['agreement']
    assert truth['confusion']['dropped_in_transport']['lost_outside_bowl'] == 1
    assert truth['confusion']['missed'] == {'placed': 0, 'missed': 2, 'slipped': 0,
                                            'lost_outside_bowl': 0, 'held_at_end': 0}
    assert truth['disagreements'] == []


def test_truth_agreement_is_total_when_detector_and_truth_agree(every_class):
    ta = every_class.truth_agreement
    # held grasps: episodes 1, 3, 4, 5, 6, 7; drops: 3, 4, 5
    for key, n in (('precision', 6), ('recall', 6), ('drop_precision', 3), ('drop_recall', 3)):
        assert (ta[key]['k'], ta[key]['n']) == (n, n), (key, ta[key])
    assert ta['mismatches'] == {'grasp_false_positives': [], 'grasp_false_negatives': [],
                                'drop_false_positives': [], 'drop_false_negatives': []}


def disagreeing_stream() -> tuple[Cell, dict]:
    """Detector and truth disagree four ways; returns the stream and the stamps involved."""
    s = Cell().stay(0.3)
    marks = {}
    # 1. truth drop the detector misses: the cube falls, the jaws stay where they were
    s.start().close_on_cube().stay(1.0, effort=GRIP_NM).let_go(True).stay(0.02, GRIP_NM)
    marks['missed_drop'] = s.t
    s.stay(1.0, effort=GRIP_NM).end_episode(False).open()
    # 2. a detected drop truth does not have: the jaws read empty-closed while truth still
    #    holds the cube (a bad reading), and later set it down in the bowl
    s.start().close_on_cube().stay(2.5, effort=GRIP_NM).drop().stay(2.0)
    marks['extra_drop'] = next(e.stamp for e in reversed(s.events) if e.kind is EventKind.DROP)
    s.let_go(False)
    s.in_bowl = True
    s.stay(0.2).end_episode(True)
    # 3. a detected grasp truth never saw (jaws rest on something, cube never lifted)
    s.start().move(CUBE).stay(1.5, effort=GRIP_NM)
    marks['extra_grasp'] = next(e.stamp for e in reversed(s.events)
                                if e.kind is EventKind.GRASP_SUCCESS)
    s.end_episode(False).open()
    # 4. a truth held grasp the detector calls a miss (jaws at empty-closed all along)
    s.start().move(-0.1745).stay(0.3).lift()
    marks['missed_grasp'] = s.t + s.dt
    s.stay(1.0).let_go(False).open()
    s.in_bowl = True
    s.stay(0.3).end_episode(True)
    return s.finish(), marks


def test_truth_agreement_names_missed_and_extra_grasps_and_drops():
    s, marks = disagreeing_stream()
    summary = s.engine.summary()
    ta = summary.truth_agreement
    # detected successes: episodes 1, 2, 3 (3 has no truth span); truth grasps: 1, 2, 4
    assert (ta['precision']['k'], ta['precision']['n']) == (2, 3), ta['precision']
    assert (ta['recall']['k'], ta['recall']['n']) == (2, 3), ta['recall']
    # detected drops: episode 2 only (no truth drop); truth drops: episode 1 (missed)
    assert (ta['drop_precision']['k'], ta['drop_precision']['n']) == (0, 1), ta
    assert (ta['drop_recall']['k'], ta['drop_recall']['n']) == (0, 1), ta
    for key in ('precision', 'recall', 'drop_precision', 'drop_recall'):
        lo, hi = ta[key]['ci95']
        assert 0.0 <= lo <= ta[key]['rate'] <= hi <= 1.0 and hi - lo > 0.3, (key, ta[key])
    mism = ta['mismatches']
    assert mism['grasp_false_positives'] == [pytest.approx(marks['extra_grasp'])], mism
    assert mism['grasp_false_negatives'] == [pytest.approx(marks['missed_grasp'])], mism
    assert mism['drop_false_positives'] == [pytest.approx(marks['extra_drop'])], mism
    assert mism['drop_false_negatives'] == [pytest.approx(marks['missed_drop'])], mism
    assert (ta['detected_drops'], ta['truth_drops'], ta['truth_drops_counted']) == (1, 1, 1)


def test_truth_validation_counts_the_disagreements():
    s, _ = disagreeing_stream()
    fa = s.engine.summary().failure_analysis
    outcomes = [a['outcome'] for a in fa['attempts']]
    truths = [a['truth_class'] for a in fa['attempts']]
    assert outcomes == ['held_at_end', 'dropped_in_transport', 'held_at_end', 'missed'], outcomes
    assert truths == ['slipped', 'placed', 'missed', 'placed'], truths
    truth = fa['truth']
    assert (truth['agreement']['k'], truth['agreement']['n']) == (0, 4), truth['agreement']
    assert truth['confusion']['held_at_end'] == {'placed': 0, 'missed': 1, 'slipped': 1,
                                                 'lost_outside_bowl': 0, 'held_at_end': 0}
    assert truth['confusion']['dropped_in_transport']['placed'] == 1
    assert len(truth['disagreements']) == 4


def test_short_truth_holds_are_left_out_of_recall_not_of_precision():
    # the cube slips 0.3 s after lift-off: truth span shorter than hold_s
    s = Cell().stay(0.3).start().close_on_cube().stay(0.3, effort=GRIP_NM)
    s.let_go(True).drop().end_episode(False).finish()
    ta = s.engine.summary().truth_agreement
    assert ta['truth_held_spans'] == 0 and ta['recall']['n'] == 0, ta
    assert (ta['precision']['k'], ta['precision']['n']) == (1, 1), ta['precision']
    assert (ta['drop_precision']['k'], ta['drop_precision']['n']) == (1, 1), ta
    assert ta['drop_recall']['n'] == 0 and ta['truth_drops_excluded']['short_hold'] == 1, ta
    assert 'left out of drop recall' in ta['note']


def test_a_release_that_misses_the_bowl_is_a_truth_drop_without_a_dropped_report():
    # let go over the bowl's rim (no dropped report), the cube never lands in the bowl
    s = Cell().stay(0.3).start().close_on_cube().stay(2.5, effort=GRIP_NM)
    s.let_go(False).move(OPEN).stay(2.0).end_episode(False).finish()
    summary = s.engine.summary()
    ta = summary.truth_agreement
    assert (ta['truth_drops'], ta['truth_drops_counted']) == (1, 1), ta
    assert (ta['drop_precision']['k'], ta['drop_precision']['n']) == (1, 1), ta
    assert (ta['drop_recall']['k'], ta['drop_recall']['n']) == (1, 1), ta
    attempt = summary.failure_analysis['attempts'][0]
    assert (attempt['class'], attempt['truth_class']) == ('released_outside_bowl',
                                                          'lost_outside_bowl'), attempt


def test_an_intervention_ending_as_the_next_episode_starts_rescues_only_its_own():
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark

    s = Cell().stay(0.3).start().stay(0.2).override(True).placed().end(True)
    s.override(False)  # same stamp as the end mark and the next start
    s.events += s.engine.episode(EpisodeMark(EpisodeEvent.START, s.t))
    s.reset().placed().end_episode(True).finish()
    rows = s.engine.summary().failure_analysis['episodes']
    assert [r['class'] for r in rows] == ['rescued_by_operator', 'success'], rows
    assert rows[1]['interventions'] == [], rows[1]


def test_match_stamps_pairs_one_to_one_for_the_most_pairs():
    assert match_stamps([1.0, 1.2, 5.0], [1.15, 3.0], 1.0) == [(0, 0)]
    # nearest-first would pair 1.6 with 1.5 and leave 1.0 alone; two pairs are possible
    assert match_stamps([1.0, 1.6], [1.5, 2.4], 1.0) == [(0, 0), (1, 1)]
    assert match_stamps([1.0, 1.1], [1.05], 1.0) == [(0, 0)]
    assert match_stamps([1.0], [2.5], 1.0) == []


def test_without_truth_there_is_no_truth_validation():
    s = Cell(truth=False).stay(0.3).start().placed().end_episode(True).finish()
    summary = s.engine.summary()
    assert summary.truth_agreement is None
    assert summary.failure_analysis['truth'] is None
    assert summary.failure_analysis['attempt_classes']['placed'] == 1


def test_without_gripper_data_there_is_no_failure_analysis():
    engine = MetricEngine()
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark

    engine.episode(EpisodeMark(EpisodeEvent.START, 1.0))
    engine.episode(EpisodeMark(EpisodeEvent.END, 5.0, False))
    assert engine.summary(missing_topics=['joint_states']).failure_analysis is None


def test_failure_analysis_round_trips_and_old_summaries_still_load(every_class):
    data = json.loads(json.dumps(every_class.to_dict()))
    assert data['failure_analysis']['attempt_classes']['slipped'] == 1
    assert Summary.from_dict(data).to_dict() == every_class.to_dict()
    old = {k: v for k, v in data.items() if k != 'failure_analysis'}
    old['truth_agreement'] = {k: v for k, v in data['truth_agreement'].items()
                              if k not in ('drop_precision', 'drop_recall', 'mismatches')}
    loaded = Summary.from_dict(old)
    assert loaded.failure_analysis is None and loaded.episodes == 8
