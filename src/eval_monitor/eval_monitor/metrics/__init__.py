"""The evaluation metric engine: episodes, grasps, drops, places, interventions (no rclpy).

The monitor node (live) and the offline evaluator (over a recorded bag) feed the same
:class:`MetricEngine` one message at a time and get the same events and the same
:class:`Summary` for the same messages. Definitions (DESIGN.md, "Evaluation definitions"),
as implemented in this package:

Gripper (from ``joint_states``, joint ``gripper``, radians, larger = more open)
    *Attempt*: the gripper was open (at or above ``open_rad``), falls below
    ``open_rad - open_hysteresis_rad`` (a close) and comes to rest: its angle stays inside
    ``rest_band_rad`` for ``settle_s`` (and, when the message carries a velocity,
    ``|velocity| <= rest_velocity_rad_s``). One attempt per close; a close that reopens
    before resting is no attempt. The attempt is stamped when rest is confirmed. With
    effort in use (below), a close that comes to rest short of empty-closed *without* grip
    effort is no attempt either: the gripper was commanded to a half-open pose (the sim's
    home pose, 0.3 rad, is one) and squeezes nothing; the detector keeps watching that
    close (``detector.partial_closes`` counts them).

    *Failed grasp*: at rest at or below the empty-closed angle plus ``empty_margin_rad``
    (nothing between the jaws); also an attempt that closes to empty, reopens, or loses its
    grip effort before ``hold_s`` has passed.

    *Grasp success*: at rest short of empty-closed (above it by more than the margin) and
    staying short of it, without reopening, for ``hold_s`` after the attempt. The angle is
    the primary signal; effort confirms it. Effort is *in use* when ``use_effort`` is on and
    the stream carries a gripper effort (an effort channel that has been exactly 0.0
    throughout counts as absent: drivers fill zeros when they have no estimate). Then the
    median ``|effort|`` over the rest window must reach ``effort_threshold_nm`` for the rest
    to be an attempt at all, and the median over the hold must reach it for the success;
    a hold whose grip fades fails with reason ``no_grip_effort``. Without effort the angle
    alone decides (``detector.effort_used`` in the summary says which applied), and any
    rest short of empty-closed is an attempt.

    *Opening*: each attempt's event carries ``open_rad``, the peak of the last opening
    before its close: the largest angle since the gripper last rose to ``open_rad`` after
    being below ``open_rad - open_hysteresis_rad``, so an opening too small for the cube
    shows. (Not the largest angle since the previous attempt ended: that would report the
    wide opening of the previous release for a narrow approach after a half-closed home
    pose.)

    *Drop*: while holding, the gripper reaches the empty-closed angle (+ margin): the object
    left the jaws. With sim truth and no bowl region this is decided like a release
    (below): a cube that slid out over the bowl and lies in it by ``place_window_s`` is a
    place, not a drop (the simulated cell showed such cubes pinched by a corner slipping
    out during the lower: truth called them placed, the detector used to call them drops).

    *Place / release*: while holding, the gripper opens by ``release_delta_rad`` above the
    smallest held angle. Where the place happened decides place or drop:
    with a bowl region configured and a sim truth cube position known, release with the
    cube inside the region is a place, outside it a drop; with sim truth but no region,
    the decision waits for truth up to ``place_window_s`` after the release (``in_bowl`` ->
    place, ``dropped`` or not in the bowl by then -> drop); without either, opening while
    holding is a place (a release, never a drop). At an episode end a pending decision is
    taken at once: place if the cube is in the bowl or the episode succeeded, else drop.

    Holds do not cross episode boundaries: at an episode start or end a held grasp ends
    without an event (an episode that ends with the cube held is not a drop; the
    per-episode row says ``held_at_end``), a grasp still within ``hold_s`` fails with reason
    ``episode_boundary``, and the gripper must open again before the next attempt.

    *Empty-closed angle*: ``empty_closed_rad`` (default: URDF gripper lower limit), or with
    ``learn_empty_closed`` the median rest angle of the first ``learn_closes`` closes that
    rest *outside* episodes within ``learn_window_rad`` of the configured angle (the
    operator closes the empty gripper fully a few times before the first episode); those
    calibration closes are reported as failed attempts with reason ``learning`` and
    ``data.learning = true`` and are left out of every count.

    SO-101 figures behind the defaults (MuJoCo cell of this suite, 3 cm cube): an empty
    close rests at the URDF lower limit, -0.1745 rad; the cube holds the jaws at ~0.29 rad
    with ~3.3 N·m of actuator effort; the approach opens to ~0.9 rad; a half-open pose
    without load shows ~0.01 N·m. The real arm's effort is load x stall torque (1.96 N·m).

Interventions (``teleop/override``, std_msgs/Bool)
    A rising edge starts one; it lasts until the falling edge, across an episode end if the
    operator keeps control (it counts in the episode where it started), or until
    :meth:`MetricEngine.finish` at stream end (``closed_by: stream_end``). Repeated ``true``
    messages (the topic is re-sent periodically) are not edges.

Episodes (``eval/episode``, EpisodeMark JSON)
    Start and end marks; success from the end mark. An end without a start or a start while
    one is open raises :class:`EpisodeOrderError` (nothing changes).

Which episode an event belongs to
    Episode ``k`` spans ``[start_k, end_k]`` (stamps; when one ends where the next starts,
    the shared stamp belongs to the new one). An event belongs to the episode containing
    its *anchor*: its own stamp, except grasp outcomes, drops and places (anchored to their
    attempt) and intervention ends (anchored to their start), so an attempt and its
    outcome always count together. Assignment is redone from the final spans in
    :attr:`MetricEngine.events` and :meth:`MetricEngine.summary`, so a mark that arrives
    after the joint states of its episode still gets them.

How the summary treats events outside episodes
    When the stream has episode marks, the headline counts and rates cover completed
    episodes only; events outside every episode are counted in ``outside_episodes`` and an
    episode still open at the end of the stream is listed (``open: true``) but left out of
    every rate. Without any episode mark (``scope: stream``), grasp, drop and intervention
    counts cover the whole stream and the per-episode metrics are unavailable.

Timing
    Stamps, never arrival order, drive every duration. Per topic, a message stamped earlier
    than the previous one is counted (``input.out_of_order``) and ignored; equal stamps are
    processed in the order fed (durations of zero are fine). Across topics the engine
    depends only on stamps, except that an episode boundary acts on the detector state
    when its mark is fed.

Sim truth agreement (``truth_agreement``; with ``sim/truth`` in the stream, whole stream)
    One truth definition for both sides. A *truth held grasp* is a truth ``held`` span (both
    jaw pads on the cube, off the table: from the first message with ``held`` to the first
    without) lasting at least ``settle_s + hold_s`` (0.7 s), the detector's time from the
    jaws coming to rest to a success. Truth's span starts at lift-off, which is about when
    the jaws come to rest (in the sim cell within 0.35 s of the attempt stamp, before or
    after), not at the attempt; the longer threshold keeps out of recall a grasp that the
    detector's definition calls failed (lost within ``hold_s`` of the attempt). How a held
    span ends: a ``dropped`` report within ``drop_window_s`` (0.2 s) of its end (nearest end,
    one report per span) makes it a *truth drop*; else, still held at the stream end: held
    at the end; the cube entering the bowl within ``place_window_s`` after it: a *truth
    place*; an episode end inside it or up to ``drop_window_s`` after it (the sim's reset
    lets go of the cube): held at the end; otherwise a truth drop too (let go over the
    bowl's rim without landing in it, as the detector's place-or-drop rule says).
    A detected grasp success is a true positive when its hold (attempt stamp to hold end)
    overlaps a truth held span; *recall* is the share of truth held grasps overlapped by a
    detected hold. The two sides differ on purpose in one place: precision accepts a truth
    span of any length (the cube really was held in both jaws), recall counts only truth
    held grasps (a grasp lost sooner is, by the definitions above, a failed grasp, not a
    missed success). Drops the same way: detected and truth drops are paired one to one (in
    time order, each with the earliest unpaired one in reach: the most pairs) within
    ``match_window_s`` (default 1.5 s, a ``build_summary`` keyword; the detector's drop is
    stamped where the jaws closed to empty or opened, truth's where the pads let go: in the
    sim cell a slipping cube leaves the pads up to ~0.95 s before the jaws reach
    empty-closed, and attempts are several seconds apart). *Drop precision* = paired detected
    drops / detected drops (against every truth drop, and ``dropped`` reports of no span);
    *drop recall* = paired truth drops of truth held grasps / truth drops of truth held
    grasps; drops of shorter spans are left out of drop recall (``truth_drops_excluded``):
    the detector calls such a grasp failed, not dropped. Each rate is ``{k, n, rate, ci95}``
    with a Wilson interval; ``mismatches`` lists the stamps (at most 50 each) of
    false-positive / false-negative grasps (grasp_success event / truth span start) and
    drops (drop event / truth drop).

Failure analysis (``failure_analysis``; counted attempts and completed episodes)
    Every counted attempt gets an *outcome* from the monitor's own signals: ``placed``
    (success, then a place), ``missed`` (a failed grasp, any reason but an episode or
    stream boundary), ``slipped`` (success, then a drop within ``slip_window_s``, default
    1.5 s, of the success decision, whether the jaws closed to empty or opened),
    ``dropped_in_transport`` (a later drop where the jaws closed to empty-closed: at once,
    or after the grip relaxed, opening a little and closing again before reaching
    ``open_rad``; ``Hold.reclosed``), ``released_outside_bowl`` (a later drop where the jaws
    opened to ``open_rad`` and the cube did not land in the bowl), ``held_at_end`` (still
    held, or within ``hold_s``, when the episode or stream ended). Its *class* is the
    outcome, or ``by_operator`` when the attempt was made during an intervention. A
    completed episode is ``success``, ``rescued_by_operator`` (a success with an
    intervention running or started before its last place, or before its end without a
    place), or failed with a *cause*: the outcome of its last attempt when that is a failure
    (missed, slipped, dropped_in_transport, released_outside_bowl), else ``timed_out`` (no
    attempt, or the last one placed or held at the end: no failed attempt ended the episode;
    ``last_failed_attempt`` names the last failed one anyway). Openings (``open_rad``) are
    listed per attempt, with their medians for successful (placed) and failed attempts and
    per outcome.
    *Truth validation* (when sim truth was seen): each attempt owns the time from its rest
    start minus ``settle_s`` to the next attempt's (at most to its episode's end); its truth
    class comes from the first truth held span of at least ``settle_s`` (the cube lifted in
    both jaws, longer than contact chatter) starting there, by the same rules: none ->
    ``missed``; a truth drop within ``settle_s + hold_s + slip_window_s`` of lift-off ->
    ``slipped`` (the detector decides a success at most ``settle_s + hold_s`` after
    lift-off, and its slip window starts there); a later drop, or an end not in the bowl
    within ``place_window_s`` -> ``lost_outside_bowl``; still held at the stream end or up
    to ``drop_window_s`` before the episode end (the sim's reset lets go of the cube without
    a drop) -> ``held_at_end``; else ``placed``. They differ where the definitions must:
    truth cannot tell a release from a cube sliding out (``dropped`` means "let go outside
    the bowl" either way), so ``dropped_in_transport`` and ``released_outside_bowl`` both
    agree with ``lost_outside_bowl``; a cube lost before the detector's ``hold_s`` is a
    failed grasp (``missed``) to the detector but ``slipped`` to truth, and counts as a
    disagreement. The agreement is the share of attempts whose outcome agrees (Wilson
    interval); ``confusion`` counts outcome x truth class and ``disagreements`` lists the
    attempt stamps (at most 50).

The package is layered; each module imports only the ones above it:

- :mod:`eval_monitor.metrics.definitions`: event kinds, metric names, :class:`EvalEvent`,
  :class:`DetectorConfig`, :class:`Summary` and the topic names;
- :mod:`eval_monitor.metrics.episodes`: input counts, episode spans, the event log with
  each event's anchor, interventions and trajectory stamps;
- :mod:`eval_monitor.metrics.detector`: the grasp/drop detector (gripper state machine,
  holds, learning the empty-closed angle, place or drop);
- :mod:`eval_monitor.metrics.truth`: sim truth (held spans, drops, bowl entries), the
  agreement of detected grasps and drops with it, the truth class of an attempt;
- :mod:`eval_monitor.metrics.analysis`: the failure analysis (attempt and episode classes,
  openings, truth validation);
- :mod:`eval_monitor.metrics.summary`: counts, rates, availability; calls the two above;
- :mod:`eval_monitor.metrics.engine`: :class:`MetricEngine`, which owns one of each and
  feeds them in the order the definitions above need.
"""

from __future__ import annotations

from eval_monitor.metrics.definitions import (METRIC_LABELS, RATE_METRICS, SUMMARY_FORMAT,
                                              TOPIC_EPISODE, TOPIC_JOINT_STATES,
                                              TOPIC_OVERRIDE, TOPIC_TRUTH, DetectorConfig,
                                              EpisodeOrderError, EvalEvent, EventKind, Metric,
                                              Summary, TrajectorySource)
from eval_monitor.metrics.engine import MetricEngine

__all__ = [
    'METRIC_LABELS', 'RATE_METRICS', 'SUMMARY_FORMAT', 'TOPIC_EPISODE', 'TOPIC_JOINT_STATES',
    'TOPIC_OVERRIDE', 'TOPIC_TRUTH', 'DetectorConfig', 'EpisodeOrderError', 'EvalEvent',
    'EventKind', 'Metric', 'MetricEngine', 'Summary', 'TrajectorySource',
]
