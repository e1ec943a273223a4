"""Chunk timing and sync/async scheduling, with a fake clock and a fake model."""

import numpy as np
import pytest

from pi05_policy.chunking import (
    ChunkingConfig,
    ChunkMode,
    ChunkScheduler,
    time_chunk,
)
from so101_driver.joints import JOINT_NAMES, urdf_limits
from so101_driver.arm.trajectory import ExecutorConfig, Trajectory, TrajectoryExecutor

FPS = 30.0


def chunk_positions(k: int, offset: float = 0.0) -> np.ndarray:
    return np.full((k, len(JOINT_NAMES)), offset) + np.linspace(0, 0.05, k)[:, None]


def test_time_chunk_drops_actions_due_during_inference_and_keeps_the_rest_on_their_times():
    config = ChunkingConfig(fps=FPS, min_lead_s=0.0)
    t_obs, latency = 100.0, 0.1  # 3 actions (0, 1/30, 2/30) are due before the chunk is ready
    positions = chunk_positions(20)
    chunk = time_chunk(positions, t_obs, t_obs + latency, config)
    assert chunk.dropped == 4, (f'expected actions 0..3 (t <= {latency} s) dropped, '
                                f'got {chunk.dropped}')
    kept_times = chunk.start + chunk.time_from_start
    np.testing.assert_allclose(kept_times, t_obs + np.arange(4, 20) / FPS, atol=1e-12,
                               err_msg='each kept action must sit on t_obs + k / fps')
    np.testing.assert_array_equal(chunk.positions, positions[4:])
    assert chunk.start >= t_obs, f'start {chunk.start} before the observation {t_obs}'
    assert chunk.time_from_start[0] > 0, 'first point must lie strictly after the start'
    assert np.all(np.diff(chunk.time_from_start) > 0), 'time_from_start must increase'


def test_time_chunk_honours_min_lead_and_max_actions():
    config = ChunkingConfig(fps=FPS, min_lead_s=0.05, max_actions=10)
    chunk = time_chunk(chunk_positions(20), 10.0, 10.0, config)
    assert chunk.length == 10, f'expected 10 actions used, got {chunk.length}'
    assert chunk.first > 10.0 + 0.05, f'first point {chunk.first - 10:.3f} s ahead, lead 0.05 s'
    assert chunk.dropped == 2, f'actions at 0 and 1/30 s are within the lead, got {chunk.dropped}'


def test_time_chunk_is_none_when_every_action_is_already_due():
    assert time_chunk(chunk_positions(5), 0.0, 1.0, ChunkingConfig(fps=FPS)) is None


def test_sync_scheduler_infers_only_when_the_chunk_is_used_up():
    config = ChunkingConfig(fps=FPS, mode=ChunkMode.SYNC, min_lead_s=0.0)
    scheduler = ChunkScheduler(config)
    assert scheduler.due(0.0), 'the first inference is due at once'
    token = scheduler.start()
    assert not scheduler.due(0.0), 'one inference at a time'
    chunk = time_chunk(chunk_positions(30), 0.0, 0.05, config)
    assert scheduler.finish(token, chunk)
    assert not scheduler.due(chunk.end - 0.01), 'sync must wait for the chunk to run out'
    assert scheduler.due(chunk.end), 'sync must infer when the chunk is used up'


def test_async_scheduler_infers_when_less_than_the_threshold_remains():
    config = ChunkingConfig(fps=FPS, mode=ChunkMode.ASYNC, async_threshold=0.5, min_lead_s=0.0)
    scheduler = ChunkScheduler(config)
    token = scheduler.start()
    chunk = time_chunk(chunk_positions(30), 0.0, 0.0001, config)  # 1 s of actions
    scheduler.finish(token, chunk)
    assert not scheduler.due(chunk.end - 0.51), 'more than half a chunk left: not yet'
    assert scheduler.due(chunk.end - 0.49), 'less than half a chunk left: infer'


def test_reset_makes_the_inference_in_flight_stale():
    config = ChunkingConfig(fps=FPS)
    scheduler = ChunkScheduler(config)
    token = scheduler.start()
    scheduler.reset()  # e.g. operator override
    chunk = time_chunk(chunk_positions(10), 0.0, 0.0, config)
    assert not scheduler.finish(token, chunk), 'a result from before the reset must be dropped'
    assert scheduler.chunk_end is None and scheduler.due(0.1), 'after a reset: start afresh'


def simulate(mode: ChunkMode, latencies: list[float], chunk_size: int = 20):
    """Run the scheduler on a fake clock, splicing chunks into the driver's real executor.

    Returns (gaps, margins): for each published chunk after the first, how long the arm had
    been holding at the end of the previous plan before the chunk arrived (0 = no gap), and
    how much of the previous chunk was still ahead when it arrived (> 0: seamless splice).
    """
    config = ChunkingConfig(fps=FPS, mode=mode, async_threshold=0.5, min_lead_s=0.01)
    scheduler = ChunkScheduler(config)
    executor = TrajectoryExecutor(ExecutorConfig(limits=urdf_limits()))
    present = np.zeros(len(JOINT_NAMES))
    now, dt = 1.0, 0.002
    executor.hold(present, now)
    pending = None  # (ready_at, token, observation time)
    gaps, margins = [], []
    previous = None
    latencies = list(latencies)
    while latencies or pending:
        if pending is None and latencies and scheduler.due(now):
            pending = (now + latencies.pop(0), scheduler.start(), now)
        if pending and now >= pending[0]:
            _, token, t_obs = pending
            pending = None
            chunk = time_chunk(chunk_positions(chunk_size, 0.01), t_obs, now, config)
            if scheduler.finish(token, chunk) and chunk is not None:
                plan_end = executor.end_time()
                if previous is not None:
                    gaps.append(max(0.0, now - plan_end))
                    margins.append(previous.end - now)
                executor.submit(Trajectory(JOINT_NAMES, chunk.start, chunk.time_from_start,
                                           chunk.positions), now, present)
                previous = chunk
        now += dt
    return gaps, margins


def test_async_mode_never_leaves_a_gap_when_inference_is_faster_than_half_a_chunk():
    chunk_s = 20 / FPS
    rng = np.random.default_rng(3)
    latencies = list(rng.uniform(0.05, 0.45, size=40) * chunk_s)
    gaps, margins = simulate(ChunkMode.ASYNC, latencies)
    assert len(gaps) == 39, f'expected 39 chunk hand-overs, got {len(gaps)}'
    assert max(gaps) == 0.0, f'the arm reached the end of a plan {max(gaps):.3f} s early'
    assert min(margins) > 0, (f'expected every chunk to arrive while the previous one still had '
                              f'points ahead, smallest margin {min(margins):.3f} s')


def test_sync_mode_holds_between_chunks_for_the_inference_time():
    # The contrast case: sync waits for the chunk to end, so every hand-over has a gap.
    latencies = [0.2] * 5
    gaps, _ = simulate(ChunkMode.SYNC, latencies)
    assert len(gaps) == 4 and min(gaps) == pytest.approx(0.2, abs=0.01), (
        f'expected a 0.2 s hold before each new chunk in sync mode, got {gaps}')


@pytest.mark.parametrize('bad', [dict(fps=0), dict(async_threshold=0), dict(async_threshold=1.5),
                                 dict(min_lead_s=-1), dict(max_actions=-1),
                                 dict(mode='sometimes')])
def test_chunking_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        ChunkingConfig(**bad)
