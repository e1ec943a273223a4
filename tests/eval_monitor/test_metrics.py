"""Metric engine: every DESIGN.md evaluation definition on synthetic streams with known truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval_monitor.metrics import (DetectorConfig, EpisodeOrderError, EvalEvent, EventKind,
                                  Metric, MetricEngine, Summary)
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark, SimTruth
from so101_driver.joints import JOINT_NAMES

OPEN = 1.0  # rad, a wide-open gripper
CUBE = 0.28  # rad, where the jaws stop on a 3 cm cube (as in the sim)
EMPTY = -0.1745  # rad, the empty close (URDF lower limit)
GRIP_NM = 0.6  # N·m, effort while squeezing the cube
RATE_HZ = 50.0


class Stream:
    """Writes a time-ordered synthetic message stream into a MetricEngine, like a bag would.

    The gripper moves linearly between set angles at RATE_HZ; effort is GRIP_NM while the
    jaws rest on the cube and a small value otherwise (or no effort at all).
    """

    def __init__(self, engine: MetricEngine | None = None, effort: bool = True,
                 t0: float = 100.0, open_angle: float = OPEN, empty: float = EMPTY,
                 idle_effort: float = 0.02):
        self.engine = engine or MetricEngine()
        self.t = t0
        self.q = open_angle
        self.open_angle = open_angle
        self.empty = empty
        self.effort = effort
        self.idle_effort = idle_effort
        self.events: list[EvalEvent] = []
        self.dt = 1.0 / RATE_HZ

    def _sample(self, q: float, v: float, e: float) -> None:
        pos = [0.0] * len(JOINT_NAMES)
        pos[-1] = q
        vel = [0.0] * len(JOINT_NAMES)
        vel[-1] = v
        eff = None
        if self.effort:
            eff = [0.0] * len(JOINT_NAMES)
            eff[-1] = e
        self.events += self.engine.joint_state(self.t, JOINT_NAMES, pos, vel, eff)

    def move(self, to: float, duration: float = 0.3, effort: float | None = None) -> Stream:
        effort = self.idle_effort if effort is None else effort
        steps = max(1, round(duration / self.dt))
        v = (to - self.q) / (steps * self.dt)
        start = self.q
        for i in range(1, steps + 1):
            self.t += self.dt
            self._sample(start + (to - start) * i / steps, v, effort)
        self.q = to
        return self

    def stay(self, duration: float, effort: float | None = None) -> Stream:
        effort = self.idle_effort if effort is None else effort
        for _ in range(max(1, round(duration / self.dt))):
            self.t += self.dt
            self._sample(self.q, 0.0, effort)
        return self

    # scripted gripper actions -----------------------------------------------------------
    def open(self) -> Stream:
        return self.move(self.open_angle).stay(0.3)

    def grasp(self, hold: float = 1.0) -> Stream:
        """Close on the cube and hold it: one attempt, one success."""
        return self.move(CUBE).stay(hold, effort=GRIP_NM)

    def miss(self) -> Stream:
        """Close on nothing and open again: one attempt, one failure."""
        return self.move(self.empty).stay(0.5).open()

    def drop(self) -> Stream:
        """The cube slips out while held: jaws close to empty."""
        return self.move(self.empty, 0.1).stay(0.4).open()

    def place(self) -> Stream:
        return self.open()

    # other topics -----------------------------------------------------------------------
    def start(self) -> Stream:
        self.t += self.dt
        self.events += self.engine.episode(EpisodeMark(EpisodeEvent.START, self.t))
        return self

    def end(self, success: bool) -> Stream:
        self.t += self.dt
        self.events += self.engine.episode(EpisodeMark(EpisodeEvent.END, self.t, success))
        return self

    def override(self, active: bool) -> Stream:
        self.events += self.engine.override(self.t, active)
        return self

    def truth(self, held: bool, in_bowl: bool = False, dropped: bool = False,
              xy: tuple[float, float] = (0.0, 0.0)) -> Stream:
        self.events += self.engine.truth(SimTruth(self.t, (*xy, 0.05), held, held, in_bowl,
                                                  dropped))
        return self

    def finish(self) -> Stream:
        self.events += self.engine.finish(self.t)
        return self

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]


def _count(events, kind):
    return sum(1 for e in events if e.kind is kind)


def reference_stream() -> Stream:
    """The DESIGN.md reference evaluation: 7/9 episodes, 13/54 grasps, 2 interventions.

    Every episode makes 6 attempts; its successful grasps but the last are dropped during
    transport, the last is placed. Episodes 3 and 7 fail; episodes 3 and 7 also have one
    intervention each.
    """
    successes = [2, 1, 1, 2, 1, 1, 2, 2, 1]
    episode_ok = [True, True, False, True, True, True, False, True, True]
    s = Stream().stay(0.5)
    for k, (n_ok, ok) in enumerate(zip(successes, episode_ok, strict=True), start=1):
        s.start()
        for _ in range(6 - n_ok):
            s.miss()
        for j in range(n_ok):
            if k in (3, 7) and j == 0:
                s.override(True)
            s.grasp()
            if j < n_ok - 1:
                s.drop()
            else:
                s.place()
            if k in (3, 7) and j == 0:
                s.override(False)
        s.end(ok)
    return s.finish()


# ----------------------------------------------------------------------------------------
def test_successful_grasp_gives_one_attempt_and_one_success():
    s = Stream().stay(0.2).start().grasp().place().end(True)
    assert s.kinds() == [EventKind.EPISODE_START, EventKind.GRASP_ATTEMPT,
                         EventKind.GRASP_SUCCESS, EventKind.PLACE, EventKind.EPISODE_END], \
        f'expected start, attempt, success, place, end; got {s.kinds()}'
    success = next(e for e in s.events if e.kind is EventKind.GRASP_SUCCESS)
    assert success.data['signal'] == 'angle+effort', success.data
    assert success.data['effort_nm'] == pytest.approx(GRIP_NM)
    assert all(e.episode == 1 for e in s.events), [e.episode for e in s.events]
    summary = s.engine.summary()
    assert (summary.grasp_attempts, summary.grasp_successes, summary.drops, summary.places) \
        == (1, 1, 0, 1), summary


def test_success_needs_hold_time_after_rest():
    s = Stream().stay(0.2).move(CUBE)
    s.stay(0.2 + 0.4, effort=GRIP_NM)  # settle 0.2 s + less than hold_s (0.5 s)
    assert _count(s.events, EventKind.GRASP_SUCCESS) == 0, s.kinds()
    assert _count(s.events, EventKind.GRASP_ATTEMPT) == 1, s.kinds()
    s.stay(0.2, effort=GRIP_NM)
    assert _count(s.events, EventKind.GRASP_SUCCESS) == 1, s.kinds()


def test_empty_close_is_a_failed_attempt():
    s = Stream().stay(0.2).start().miss().end(False)
    failed = [e for e in s.events if e.kind is EventKind.GRASP_FAILED]
    assert _count(s.events, EventKind.GRASP_ATTEMPT) == 1 and len(failed) == 1, s.kinds()
    assert failed[0].data['reason'] == 'empty_close', failed[0].data
    summary = s.engine.summary()
    assert summary.rates['grasp_success']['k'] == 0 and summary.rates['grasp_success']['n'] == 1


def test_close_that_reopens_before_resting_is_no_attempt():
    s = Stream().stay(0.2).move(0.2, 0.2).move(OPEN, 0.2).stay(0.3)
    assert s.kinds() == [], f'expected no event for an aborted close, got {s.kinds()}'


def test_drop_during_transport():
    s = Stream().stay(0.2).start().grasp().drop().end(False)
    assert [k for k in s.kinds() if k.value.startswith(('grasp', 'drop', 'place'))] == [
        EventKind.GRASP_ATTEMPT, EventKind.GRASP_SUCCESS, EventKind.DROP], s.kinds()
    drop = next(e for e in s.events if e.kind is EventKind.DROP)
    assert drop.episode == 1 and drop.data['reason'] == 'closed_to_empty', drop
    summary = s.engine.summary()
    assert summary.drops == 1 and summary.places == 0, summary
    assert summary.rates['drops_per_grasp']['rate'] == 1.0


def test_opening_while_holding_is_a_place_not_a_drop_without_location_info():
    s = Stream().stay(0.2).start().grasp().place().end(True)
    place = next(e for e in s.events if e.kind is EventKind.PLACE)
    assert place.data['location'] == 'unknown', place.data
    assert _count(s.events, EventKind.DROP) == 0, s.kinds()


def test_regrasp_after_a_miss_counts_two_attempts_one_success():
    s = Stream().stay(0.2).start().miss().grasp().place().end(True)
    summary = s.engine.summary()
    assert (summary.grasp_attempts, summary.grasp_successes) == (2, 1), summary
    assert summary.per_episode[0]['grasp_attempts'] == 2
    assert summary.rates['grasp_success']['rate'] == pytest.approx(0.5)


def test_half_close_without_grip_effort_is_no_attempt():
    # e.g. the sim's home pose (0.3 rad) after a release: short of closed, squeezing nothing
    s = Stream().stay(0.2).start().move(0.3).stay(1.0, effort=0.01).open().end(False)
    assert _count(s.events, EventKind.GRASP_ATTEMPT) == 0, s.kinds()
    assert s.engine.summary().detector['partial_closes'] == 1


def test_half_close_then_close_on_the_cube_is_one_attempt():
    s = Stream().stay(0.2).start().move(0.4).stay(0.5).grasp().place().end(True)
    assert _count(s.events, EventKind.GRASP_ATTEMPT) == 1, s.kinds()
    assert _count(s.events, EventKind.GRASP_SUCCESS) == 1, s.kinds()


def test_grip_that_fades_during_the_hold_is_a_failure():
    s = Stream().stay(0.2).start().move(CUBE).stay(0.25, effort=GRIP_NM)
    s.stay(0.8, effort=0.01).open().end(False)
    failed = [e for e in s.events if e.kind is EventKind.GRASP_FAILED]
    assert _count(s.events, EventKind.GRASP_ATTEMPT) == 1, s.kinds()
    assert len(failed) == 1 and failed[0].data['reason'] == 'no_grip_effort', s.events


def test_without_effort_the_angle_alone_decides():
    s = Stream(effort=False).stay(0.2).start().grasp().place().end(True)
    success = [e for e in s.events if e.kind is EventKind.GRASP_SUCCESS]
    assert len(success) == 1 and success[0].data['signal'] == 'angle', s.events
    summary = s.engine.summary()
    assert summary.detector['effort_used'] is False
    assert any('angle alone' in n for n in summary.notes), summary.notes


def test_all_zero_effort_counts_as_no_effort():
    s = Stream(idle_effort=0.0).stay(0.2).start().move(CUBE).stay(1.0).open().end(True)
    assert _count(s.events, EventKind.GRASP_SUCCESS) == 1, s.kinds()


def test_intervention_while_holding_counts_once_with_its_duration():
    s = Stream().stay(0.2).start().grasp()
    t_on = s.t
    s.override(True).stay(0.5, effort=GRIP_NM).override(True)  # re-sent true: no new edge
    s.place()
    t_off = s.t
    s.override(False).end(True)
    start = [e for e in s.events if e.kind is EventKind.INTERVENTION_START]
    end = [e for e in s.events if e.kind is EventKind.INTERVENTION_END]
    assert len(start) == 1 and len(end) == 1, s.kinds()
    assert start[0].data['holding'] is True, start[0].data
    assert end[0].data['duration_s'] == pytest.approx(t_off - t_on)
    place = next(e for e in s.events if e.kind is EventKind.PLACE)
    assert place.data.get('during_intervention') is True, place.data
    summary = s.engine.summary()
    assert summary.interventions == 1 and summary.interventions_per_episode == 1.0, summary
    assert summary.mean_intervention_s == pytest.approx(t_off - t_on)


def test_intervention_spanning_an_episode_end_counts_in_its_first_episode():
    s = Stream().stay(0.2).start().grasp()
    t_on = s.t
    s.override(True).place().end(True).stay(0.3).start().stay(0.4)
    t_off = s.t
    s.override(False).miss().end(False)
    summary = s.engine.summary()
    rows = summary.per_episode
    assert [r['interventions'] for r in rows] == [1, 0], rows
    assert rows[0]['intervention_s'] == pytest.approx(t_off - t_on)
    assert summary.interventions == 1
    assert summary.interventions_per_episode == pytest.approx(0.5)
    end = next(e for e in s.engine.events if e.kind is EventKind.INTERVENTION_END)
    assert end.episode == 1 and end.data['closed_by'] == 'falling_edge', end


def test_finish_closes_an_open_intervention_without_a_fake_episode_end():
    s = Stream().stay(0.2).start().override(True).stay(1.0).finish()
    end = [e for e in s.events if e.kind is EventKind.INTERVENTION_END]
    assert len(end) == 1 and end[0].data['closed_by'] == 'stream_end', s.events
    assert end[0].data['duration_s'] == pytest.approx(1.0, abs=0.03)
    assert _count(s.events, EventKind.EPISODE_END) == 0, s.kinds()
    summary = s.engine.summary()
    assert summary.per_episode[0]['open'] is True
    assert Metric.EPISODE_SUCCESS.value in summary.unavailable, summary.unavailable


def test_episode_end_while_holding_is_not_a_drop():
    s = Stream().stay(0.2).start().grasp().end(True).drop()
    assert _count(s.events, EventKind.DROP) == 0, s.kinds()
    summary = s.engine.summary()
    assert summary.per_episode[0]['held_at_end'] is True
    assert summary.drops == 0


def test_events_outside_episodes_are_listed_but_not_in_the_rates():
    s = Stream().stay(0.2).miss().start().grasp().place().end(True).miss()
    summary = s.engine.summary()
    assert summary.grasp_attempts == 1 and summary.grasp_successes == 1, summary
    assert summary.outside_episodes['grasp_attempts'] == 2, summary.outside_episodes
    outside = [e for e in s.engine.events if e.kind is EventKind.GRASP_ATTEMPT
               and e.episode is None]
    assert len(outside) == 2


def test_without_episode_marks_counts_cover_the_stream():
    s = Stream().stay(0.2).miss().grasp().place().finish()
    summary = s.engine.summary()
    assert summary.scope == 'stream'
    assert (summary.grasp_attempts, summary.grasp_successes) == (2, 1), summary
    assert summary.episodes is None and 'episode_success' in summary.unavailable


def test_missing_joint_states_makes_grasp_metrics_unavailable_not_zero():
    engine = MetricEngine()
    engine.episode(EpisodeMark(EpisodeEvent.START, 1.0))
    engine.episode(EpisodeMark(EpisodeEvent.END, 5.0, True))
    summary = engine.summary(missing_topics=['/joint_states'])
    assert summary.grasp_attempts is None and summary.grasp_successes is None, summary
    assert 'joint_states missing' in summary.unavailable['grasp_success'], summary.unavailable
    assert 'grasp_success' not in summary.rates
    assert summary.per_episode[0]['grasp_attempts'] is None
    assert summary.episodes == 1 and summary.rates['episode_success']['rate'] == 1.0


def test_missing_override_topic_makes_interventions_unavailable():
    s = Stream().stay(0.2).start().grasp().place().end(True)
    summary = s.engine.summary(missing_topics=['teleop/override'], skipped=['file_1.mcap'])
    assert summary.interventions is None, summary
    assert 'interventions_per_episode' in summary.unavailable
    assert summary.skipped == ['file_1.mcap']


def test_equal_stamps_are_processed_deterministically():
    def run() -> list[str]:
        engine = MetricEngine()
        s = Stream(engine).stay(0.2).start()
        # every sample twice with the same stamp, and an override toggled within one stamp
        s.override(True).override(False)
        for q in np.linspace(OPEN, CUBE, 10):
            for _ in range(2):
                s.events += engine.joint_state(s.t, JOINT_NAMES, [0, 0, 0, 0, 0, q])
            s.t += 0.02
        for _ in range(60):
            for _ in range(2):
                s.events += engine.joint_state(s.t, JOINT_NAMES, [0, 0, 0, 0, 0, CUBE])
            s.t += 0.02
        s.end(True)
        return [e.to_json() for e in engine.events]

    first, second = run(), run()
    assert first == second, 'two runs over identical input differ'
    kinds = [json.loads(e)['kind'] for e in first]
    assert kinds.count('grasp_attempt') == 1 and kinds.count('grasp_success') == 1, kinds
    end = next(json.loads(e) for e in first if json.loads(e)['kind'] == 'intervention_end')
    assert end['data']['duration_s'] == 0.0, end


def test_out_of_order_stamps_are_ignored_and_counted():
    engine = MetricEngine()
    engine.joint_state(2.0, JOINT_NAMES, [0, 0, 0, 0, 0, OPEN])
    engine.joint_state(1.0, JOINT_NAMES, [0, 0, 0, 0, 0, EMPTY])
    engine.override(3.0, False)
    engine.override(2.5, True)
    summary = engine.summary()
    assert summary.input['out_of_order'] == {'joint_states': 1, 'teleop/override': 1}, \
        summary.input
    assert engine.events == [], engine.events


def test_late_episode_mark_still_gets_its_events():
    engine = MetricEngine()
    s = Stream(engine).stay(0.2)
    t_start = s.t + 0.01
    s.t = t_start
    s.grasp().place()
    assert all(e.episode is None for e in s.events)  # mark not known yet
    engine.episode(EpisodeMark(EpisodeEvent.START, t_start))
    s.end(True)
    assert all(e.episode == 1 for e in engine.events), engine.events
    assert engine.summary().grasp_successes == 1


@pytest.mark.parametrize('mark, match', [
    ('end_first', 'without a start'),
    ('double_start', 'while episode 1'),
    ('end_before_start', 'before the start'),
    ('start_before_end', 'before the end'),
])
def test_episode_order_errors_name_the_problem(mark, match):
    engine = MetricEngine()
    with pytest.raises(EpisodeOrderError, match=match):
        if mark == 'end_first':
            engine.episode(EpisodeMark(EpisodeEvent.END, 1.0, True))
        elif mark == 'double_start':
            engine.episode(EpisodeMark(EpisodeEvent.START, 1.0))
            engine.episode(EpisodeMark(EpisodeEvent.START, 2.0))
        elif mark == 'end_before_start':
            engine.episode(EpisodeMark(EpisodeEvent.START, 5.0))
            engine.episode(EpisodeMark(EpisodeEvent.END, 4.0, True))
        else:
            engine.episode(EpisodeMark(EpisodeEvent.START, 1.0))
            engine.episode(EpisodeMark(EpisodeEvent.END, 5.0, True))
            engine.episode(EpisodeMark(EpisodeEvent.START, 4.0))
    assert len(engine.events) <= 2, 'a refused mark must not add events'


def test_refused_mark_changes_nothing():
    engine = MetricEngine()
    engine.episode(EpisodeMark(EpisodeEvent.START, 1.0))
    with pytest.raises(EpisodeOrderError):
        engine.episode(EpisodeMark(EpisodeEvent.START, 2.0))
    engine.episode(EpisodeMark(EpisodeEvent.END, 3.0, False))
    summary = engine.summary()
    assert summary.episodes == 1 and len(summary.per_episode) == 1, summary.per_episode


def test_learning_the_empty_closed_angle_from_closes_before_the_first_episode():
    worn = -0.05  # this arm's jaws meet here, far above the URDF limit
    # without learning, an empty close at -0.05 looks like a held object
    plain = Stream(effort=False, empty=worn).stay(0.2).start().move(worn).stay(1.0).open()
    assert _count(plain.events, EventKind.GRASP_SUCCESS) == 1, plain.kinds()

    engine = MetricEngine(DetectorConfig(learn_empty_closed=True, learn_closes=3))
    s = Stream(engine, effort=False, empty=worn).stay(0.2)
    for _ in range(3):
        s.miss()
    assert engine.empty_closed_rad == pytest.approx(worn), engine.empty_closed_rad
    s.start().move(worn).stay(1.0).open().grasp().place().end(True)
    summary = engine.summary()
    assert (summary.grasp_attempts, summary.grasp_successes) == (2, 1), summary
    assert summary.detector['empty_closed_source'] == 'learned'
    assert summary.detector['learned_from_rad'] == pytest.approx([worn] * 3)
    assert summary.outside_episodes['grasp_attempts'] == 0, 'calibration closes are not counted'


def test_sim_truth_decides_place_or_drop_and_gives_agreement():
    s = Stream().stay(0.2).truth(False).start()
    # grasp 1: released, cube lands in the bowl -> place
    s.move(CUBE).truth(False).stay(0.1, GRIP_NM).truth(True).stay(0.9, GRIP_NM).truth(True)
    s.open().truth(False).stay(0.2).truth(False, in_bowl=True)
    # grasp 2: released over the table -> drop once the window passes
    s.move(CUBE).stay(0.1, GRIP_NM).truth(True).stay(0.9, GRIP_NM).truth(True)
    s.open().truth(False).stay(1.7).truth(False)
    s.end(False).finish()
    kinds = [e.kind for e in s.engine.events if e.kind in (EventKind.PLACE, EventKind.DROP)]
    assert kinds == [EventKind.PLACE, EventKind.DROP], kinds
    summary = s.engine.summary()
    agreement = summary.truth_agreement
    assert agreement['precision']['k'] == 2 and agreement['precision']['n'] == 2, agreement
    assert agreement['recall']['k'] == 2 and agreement['recall']['n'] == 2, agreement
    # grasp 2's cube was let go and never reached the bowl: a truth drop, found
    assert (agreement['drop_precision']['k'], agreement['drop_precision']['n']) == (1, 1)
    assert (agreement['drop_recall']['k'], agreement['drop_recall']['n']) == (1, 1)
    assert all(not v for v in agreement['mismatches'].values()), agreement['mismatches']


def test_grasp_attempt_records_the_opening_before_the_close():
    # from OPEN part-way down to 0.6 (still above the close threshold): the opening is OPEN
    s = Stream().stay(0.2).start().move(0.6).stay(0.3).miss()
    s.move(0.3).stay(0.5)  # the miss re-opened to OPEN; a half-closed home pose (no attempt)
    s.move(0.7).stay(0.3).grasp().place().end(True)  # ... ends that opening; now only 0.7
    attempts = [e for e in s.events if e.kind is EventKind.GRASP_ATTEMPT]
    assert [a.data['open_rad'] for a in attempts] == pytest.approx([OPEN, 0.7]), attempts


def test_bowl_region_decides_place_or_drop_from_the_cube_position():
    engine = MetricEngine(DetectorConfig(bowl_center_xy=(0.2, 0.1), bowl_radius_m=0.05))
    s = Stream(engine).stay(0.2).start()
    s.grasp().truth(True, xy=(0.21, 0.1)).place()
    s.grasp().truth(True, xy=(0.0, 0.0)).place()
    s.end(True)
    kinds = [e.kind for e in engine.events if e.kind in (EventKind.PLACE, EventKind.DROP)]
    assert kinds == [EventKind.PLACE, EventKind.DROP], kinds


def test_reference_evaluation_counts():
    s = reference_stream()
    summary = s.engine.summary()
    assert (summary.episodes, summary.episode_successes) == (9, 7), summary
    assert (summary.grasp_attempts, summary.grasp_successes) == (54, 13), summary
    assert summary.interventions == 2, summary
    assert summary.rates['episode_success']['text'] == '7/9 = 77.8%'
    assert summary.rates['grasp_success']['text'] == '13/54 = 24.1%'
    assert summary.rates['interventions_per_episode']['text'] == '2/9 = 0.22'
    assert summary.drops == 4 and summary.places == 9, summary
    assert summary.unavailable == {}, summary.unavailable


def test_summary_and_events_round_trip_through_json():
    s = reference_stream()
    summary = s.engine.summary()
    again = Summary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert again.to_dict() == summary.to_dict()
    for event in s.engine.events[:50]:
        assert EvalEvent.from_json(event.to_json()) == event


def test_gripper_trace_is_decimated_to_50_hz():
    engine = MetricEngine()
    for i in range(1000):  # 10 s at 100 Hz
        engine.joint_state(i * 0.01, JOINT_NAMES, [0, 0, 0, 0, 0, OPEN])
    stamps, angles = engine.gripper_trace
    assert 480 <= len(stamps) <= 501, len(stamps)
    assert np.all(np.diff(stamps) >= 0.02 - 1e-9) and np.all(angles == OPEN)


@pytest.mark.parametrize('kwargs, match', [
    ({'hold_s': 0.0}, 'hold_s'),
    ({'open_rad': -0.1}, 'open_rad'),
    ({'learn_closes': 0}, 'learn_closes'),
    ({'bowl_center_xy': (0.1,)}, 'bowl_center_xy'),
    ({'settle_s': float('nan')}, 'settle_s'),
])
def test_detector_config_rejects_bad_values_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DetectorConfig(**kwargs)


def test_bad_event_json_names_the_problem():
    with pytest.raises(ValueError, match='kind'):
        EvalEvent.from_json('{"stamp": 1.0}')
    with pytest.raises(ValueError, match='not JSON'):
        EvalEvent.from_json('nope')


def test_joint_state_without_gripper_is_counted_as_a_problem():
    engine = MetricEngine()
    engine.joint_state(1.0, ['shoulder_pan'], [0.0])
    summary = engine.summary()
    assert "never carried a valid 'gripper'" in summary.unavailable['grasp_success'], \
        summary.unavailable
    assert any('gripper' in k for k in summary.input['problems']), summary.input


def test_trajectories_are_counted_per_source_and_episode():
    engine = MetricEngine()
    engine.episode(EpisodeMark(EpisodeEvent.START, 1.0))
    engine.trajectory(1.5, 'policy')
    engine.trajectory(1.6, 'teleop')
    engine.trajectory(1.7, 'policy')
    engine.episode(EpisodeMark(EpisodeEvent.END, 2.0, True))
    engine.trajectory(2.5, 'policy')
    summary = engine.summary()
    assert summary.per_episode[0]['trajectories'] == {'policy': 2, 'teleop': 1}
    assert summary.outside_episodes['trajectories'] == {'policy': 1, 'teleop': 0}
    with pytest.raises(ValueError, match='policy'):
        engine.trajectory(3.0, 'leader')


def test_detector_agrees_with_the_simulated_cell():
    """Default thresholds on the MuJoCo cell: the scripted expert's grasps, misses and drops
    (judged by ground truth) are what the detector reports, and truth agreement is total."""
    pytest.importorskip('mujoco')
    from so101_driver.sim.cell import SimCell, SimConfig
    from so101_driver.sim.expert import AttemptOutcome, ExpertConfig, ScriptedExpert
    from so101_driver.arm.trajectory import CommandSource

    cell = SimCell(SimConfig(seed=1))
    expert = ScriptedExpert(ExpertConfig(seed=1, grasp_xy_noise_m=0.012))
    engine = MetricEngine()
    outcomes = []
    every = max(1, round(0.25 / cell.dt))
    engine.episode(EpisodeMark(EpisodeEvent.START, cell.time, source='sim'))
    while len(outcomes) < 4:
        truth = cell.truth()
        expert.observe(truth)
        engine.truth(truth)
        sample = cell.joint_sample()
        engine.joint_state(sample.stamp, JOINT_NAMES, sample.position, sample.velocity,
                           sample.effort)
        if cell.counters.ticks % every == 0:
            traj = expert.act(cell.time, cell.present())
            if traj is not None:
                cell.submit(CommandSource.POLICY, traj)
            if expert.finished and expert.episode == cell.episode:
                outcomes.append(expert.outcome)
                success, _ = cell.reset()
                engine.episode(EpisodeMark(EpisodeEvent.END, cell.time, success, source='sim'))
                if len(outcomes) < 4:
                    engine.episode(EpisodeMark(EpisodeEvent.START, cell.time, source='sim'))
                expert.observe(cell.truth())
        cell.step()
    engine.finish(cell.time)
    if AttemptOutcome.TIMEOUT in outcomes:
        pytest.skip(f'the expert timed out ({outcomes}); nothing to compare')
    summary = engine.summary()
    held = sum(o in (AttemptOutcome.SUCCESS, AttemptOutcome.DROP, AttemptOutcome.NOT_IN_BOWL)
               for o in outcomes)
    assert summary.grasp_attempts == len(outcomes), (summary.grasp_attempts, outcomes)
    assert summary.grasp_successes == held, (summary.grasp_successes, outcomes)
    # a cube the expert lost before its release that still landed in the bowl is a place
    lost = sum(o is AttemptOutcome.DROP and not in_bowl
               for o, in_bowl in zip(outcomes, cell.counters.episode_success, strict=True))
    assert summary.drops == lost, (summary.drops, outcomes, cell.counters.episode_success)
    assert summary.episode_successes == sum(cell.counters.episode_success)
    agreement = summary.truth_agreement
    assert agreement['precision']['k'] == agreement['precision']['n'] == held, agreement
    assert agreement['recall']['k'] == agreement['recall']['n'] == held, agreement
