"""The monitor's detector against simulation truth over hundreds of grasp attempts.

The scripted expert (``sim.expert``) retries within each episode and fails on purpose at
the demo's rates (``bringup.demo.FAILURES``): misses, narrow openings, knocked cubes,
slips on the lift, drops in transport, releases outside the bowl; the simulated operator
(``sim.operator``) takes over inside episodes. The cell runs in-process at physics speed
and the metric engine is fed what the monitor would get from the topics (joint states,
truth, episode marks, override edges). Ground truth validates the detector: precision and
recall of grasp successes and of drops must reach 0.95 over at least 150 attempts.
"""

from collections import Counter

import pytest

pytest.importorskip('mujoco')

from eval_monitor.metrics import MetricEngine  # noqa: E402
from so101_driver.bringup.demo import FAILURES  # noqa: E402
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark  # noqa: E402
from so101_driver.joints import JOINT_NAMES  # noqa: E402
from so101_driver.sim.cell import SimCell, SimConfig  # noqa: E402
from so101_driver.sim.expert import ExpertConfig, ScriptedExpert, run_episodes  # noqa: E402
from so101_driver.sim.operator import OperatorConfig, SimOperator  # noqa: E402

MIN_ATTEMPTS = 150
MIN_AGREEMENT = 0.95


class EngineFeed:
    """What the monitor node would feed the engine, from the in-process cell."""

    def __init__(self, engine: MetricEngine):
        self.engine = engine
        self.takeover_episodes: list[int] = []  # 1-based monitor episode of each takeover
        self.episodes = 0

    def tick(self, cell, truth):
        self.engine.truth(truth)
        sample = cell.joint_sample()
        self.engine.joint_state(sample.stamp, JOINT_NAMES, sample.position, sample.velocity,
                                sample.effort)

    def episode(self, stamp, success):
        event = EpisodeEvent.START if success is None else EpisodeEvent.END
        self.episodes += success is None
        self.engine.episode(EpisodeMark(event, stamp, success, source='sim'))

    def override(self, stamp, active):
        if active:
            self.takeover_episodes.append(self.episodes)
        self.engine.override(stamp, active)

    def trajectory(self, stamp, source):
        self.engine.trajectory(stamp, source)


def simulate(min_attempts: int = MIN_ATTEMPTS + 10, seed: int = 7):
    """The run the tests judge: whole batches of 5 episodes until enough attempts."""
    cell = SimCell(SimConfig(seed=seed))
    expert = ScriptedExpert(ExpertConfig(
        seed=seed, grasp_xy_noise_m=0.008, grasp_z_noise_m=0.006, close_timing_noise_s=0.3,
        speed_noise=0.2, reaction_delay_s=0.2, max_attempts=6, episode_timeout_s=75.0,
        **FAILURES))
    operator = SimOperator(OperatorConfig(rescue_after_failures=5, stall_s=45.0))
    feed = EngineFeed(MetricEngine())
    episodes = 0
    while len(expert.attempts) < min_attempts:
        run_episodes(cell, expert, 5, operator=operator, listener=feed)
        episodes += 5
    feed.engine.finish(cell.time)
    return cell, expert, operator, feed, feed.engine.summary(), episodes


@pytest.fixture(scope='module')
def run():
    return simulate()


def test_several_attempts_per_episode_and_most_episodes_succeed(run):
    cell, expert, operator, feed, summary, episodes = run
    per_episode = Counter(a.episode for a in expert.attempts)
    assert summary.episodes == episodes
    assert len(expert.attempts) / episodes >= 2.5, per_episode
    assert summary.episode_successes / summary.episodes >= 0.6, summary.per_episode
    assert summary.episode_successes == sum(cell.counters.episode_success)
    modes = Counter(a.mode.value for a in expert.attempts)
    outcomes = Counter(a.outcome.value for a in expert.attempts)
    for mode in ('miss', 'narrow_open', 'knock', 'slip', 'transport_drop', 'release_outside'):
        assert modes[mode] >= 3, modes
    for outcome in ('success', 'miss', 'slip', 'drop', 'not_in_bowl'):
        assert outcomes[outcome] >= 2, outcomes


def test_operator_rescues_inside_the_episode_where_it_took_over(run):
    _, expert, operator, feed, summary, _ = run
    assert operator.total >= 3, 'the operator never took over'
    assert summary.interventions == operator.total
    per_episode = Counter(row['episode'] for row in summary.per_episode
                          for _ in range(row['interventions'] or 0))
    assert per_episode == Counter(feed.takeover_episodes), (per_episode, feed.takeover_episodes)
    # the episode goes on after the hand-back and can still end in the bowl
    assisted = [a for a in expert.attempts if a.after_assist]
    assert assisted and any(a.outcome.value == 'success' for a in assisted), assisted


def test_detector_agrees_with_truth_over_hundreds_of_attempts(run):
    _, expert, _, _, summary, _ = run
    assert summary.grasp_attempts >= MIN_ATTEMPTS, summary.grasp_attempts
    agreement = summary.truth_agreement
    for key in ('precision', 'recall', 'drop_precision', 'drop_recall'):
        rate = agreement[key]
        assert set(rate) >= {'k', 'n', 'rate', 'ci95'}, rate
        assert rate['n'] >= 10, (key, rate)
        assert rate['rate'] >= MIN_AGREEMENT, (key, rate, agreement.get('mismatches'))
