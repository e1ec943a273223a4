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

    *Drop*: while holding, the gripper reaches the empty-closed angle (+ margin).

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

The package is layered; each module imports only the ones above it:

- :mod:`eval_monitor.metrics.definitions`: event kinds, metric names, :class:`EvalEvent`,
  :class:`DetectorConfig`, :class:`Summary` and the topic names;
- :mod:`eval_monitor.metrics.episodes`: input counts, episode spans, the event log with
  each event's anchor, interventions and trajectory stamps;
- :mod:`eval_monitor.metrics.detector`: the grasp/drop detector (gripper state machine,
  holds, learning the empty-closed angle, place or drop);
- :mod:`eval_monitor.metrics.summary`: counts, rates, availability and the agreement with
  sim truth;
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
