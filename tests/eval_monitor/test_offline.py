"""so101-eval: a bag through the metric engine; missing topics, damaged bags, settings."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mcap.reader import make_reader

from eval_monitor.bag import BagWriter
from eval_monitor.offline import evaluate_bag, main

JOINTS = ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']
T0 = 1_700_000_000.0
OPEN, CUBE, EMPTY = 0.8, 0.10, -0.17  # gripper rad: open, closed on the cube, closed empty


@dataclass(frozen=True)
class Step:
    """One message of the scripted evaluation, ``t`` seconds after the script starts."""

    t: float
    topic: str  # relative topic name
    value: object  # gripper rad | override bool | (event, success, source) | None (trajectory)


def _gripper(t: float) -> float:
    """Gripper angle of the script: a grasp then a drop, an empty close, a grasp then a place."""
    keys = [(0.0, OPEN), (1.0, OPEN), (1.3, CUBE), (2.5, CUBE), (2.7, EMPTY), (3.2, EMPTY),
            (3.5, OPEN), (4.8, OPEN), (5.0, EMPTY), (5.6, EMPTY), (5.8, OPEN), (6.5, OPEN),
            (6.8, CUBE), (8.0, CUBE), (8.3, OPEN), (9.0, OPEN)]
    for (t0, q0), (t1, q1) in zip(keys, keys[1:]):
        if t0 <= t <= t1:
            return q0 + (q1 - q0) * (t - t0) / (t1 - t0)
    return OPEN


def script(marks_by_service: bool = False) -> list[Step]:
    """The scripted evaluation (9 s): 2 episodes (failure, success), 3 grasp attempts (2
    successes, 1 empty close), 1 drop, 1 place, 1 intervention of 0.8 s.

    ``marks_by_service``: episode 1's marks and episode 2's end are service calls (source
    'service'); episode 2 starts with a mark published by someone else (source 'sim').
    """
    steps = [Step(k / 100, 'joint_states', _gripper(k / 100)) for k in range(900)]
    steps += [Step(k / 3, 'joint_trajectory', None) for k in range(27)]
    steps += [Step(3.805, 'teleop/override', True), Step(4.605, 'teleop/override', False),
              Step(4.5, 'teleop/joint_trajectory', None)]
    service = 'service' if marks_by_service else 'bag'
    steps += [Step(0.105, 'eval/episode', ('start', None, service)),
              Step(6.005, 'eval/episode', ('end', False, service)),
              Step(6.205, 'eval/episode', ('start', None, 'sim')),
              Step(8.605, 'eval/episode', ('end', True, service))]
    return sorted(steps, key=lambda s: s.t)


EXPECTED = {'episodes': 2, 'episode_successes': 1, 'grasp_attempts': 3, 'grasp_successes': 2,
            'grasp_failures': 1, 'drops': 1, 'places': 1, 'interventions': 1}


def joint_state_msg(stamp: float, gripper: float, previous: float | None):
    from so101_driver.ros_io import joint_state_msg as make, time_msg

    velocity = 0.0 if previous is None else (gripper - previous) / 0.01
    effort = 0.4 if -0.09 < gripper < 0.3 else 0.0  # squeezing the cube
    return make(time_msg(stamp), [0.0, -0.3, 0.4, 0.2, 0.0, gripper],
                [0.0] * 5 + [velocity], [0.0] * 5 + [effort])


def step_message(step: Step, stamp: float, previous_gripper: float | None):
    """(ROS message type name, rclpy message) of a step stamped ``stamp`` seconds."""
    from so101_driver.eval_topics import EpisodeMark
    from so101_driver.ros_io import time_msg
    from std_msgs.msg import Bool, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    if step.topic == 'joint_states':
        return joint_state_msg(stamp, step.value, previous_gripper)
    if step.topic == 'teleop/override':
        return Bool(data=step.value)
    if step.topic == 'eval/episode':
        event, success, source = step.value
        return String(data=EpisodeMark(event, stamp, success=success, source=source).to_json())
    msg = JointTrajectory(joint_names=JOINTS, points=[JointTrajectoryPoint(positions=[0.0] * 6)])
    msg.header.stamp = time_msg(stamp)
    return msg


def write_script_bag(path: Path, drop_topics: tuple[str, ...] = (), **options) -> Path:
    """The script as a bag (log time = script time), without ``drop_topics``."""
    previous = None
    with BagWriter(path, **options) as writer:
        for step in script():
            msg = step_message(step, T0 + step.t, previous)
            if step.topic == 'joint_states':
                previous = step.value
            if step.topic not in drop_topics:
                writer.write_msg('/' + step.topic, msg, int(round((T0 + step.t) * 1e9)))
    return path


def counts(summary) -> dict:
    return {name: getattr(summary, name) for name in EXPECTED}


# ------------------------------------------------------------------------------- tests


def test_so101_eval_counts_the_scripted_bag_and_writes_the_run_directory(tmp_path):
    bag = write_script_bag(tmp_path / 'bag')
    run = tmp_path / 'run'
    done = subprocess.run([sys.executable, '-m', 'eval_monitor.offline', str(bag), '-o', str(run)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f'exit {done.returncode}: {done.stderr}'
    summary = json.loads((run / 'summary.json').read_text())
    got = {name: summary[name] for name in EXPECTED}
    assert got == EXPECTED, f'expected {EXPECTED}, got {got}'
    assert summary['mean_intervention_s'] == pytest.approx(0.8, abs=1e-6)
    assert summary['missing_topics'] == [] and summary['skipped'] == []
    events = [json.loads(line) for line in (run / 'events.jsonl').read_text().splitlines()]
    kinds = [e['kind'] for e in events]
    assert kinds.count('grasp_attempt') == 3 and kinds.count('drop') == 1, kinds
    for name in ('report.md', 'report.html'):
        assert (run / name).is_file(), f'{name} missing from the run directory'
    assert 'grasp_attempts: 3' in done.stdout, done.stdout


def test_missing_topics_are_named_and_their_metrics_marked_unavailable(tmp_path):
    bag = write_script_bag(tmp_path / 'bag', drop_topics=('joint_states', 'teleop/override'))
    result = evaluate_bag(bag, tmp_path / 'run')
    summary = result.summary
    assert result.missing_topics == ['joint_states', 'teleop/override']
    assert summary.missing_topics == ['joint_states', 'teleop/override']
    for metric in ('grasp_attempts', 'grasp_success', 'drops', 'interventions',
                   'interventions_per_episode'):
        assert 'missing' in summary.unavailable.get(metric, ''), \
            f'{metric} should be unavailable (topic missing), unavailable={summary.unavailable}'
    assert summary.grasp_attempts is None and summary.interventions is None, 'never silently 0'
    assert (summary.episodes, summary.episode_successes) == (2, 1)
    report = (tmp_path / 'run' / 'report.md').read_text()
    assert 'joint_states' in report and 'teleop/override' in report


def test_truncated_bag_counts_the_readable_part_and_lists_what_was_skipped(tmp_path):
    bag = write_script_bag(tmp_path / 'bag', chunk_size_bytes=4_000, compression='none')
    file = bag / 'bag_0.mcap'
    with open(file, 'rb') as stream:
        chunks = make_reader(stream).get_summary().chunk_indexes
    # Cut inside the first chunk past 7 s: episode 1 (ends at 6.0 s) is whole, episode 2
    # (ends at 8.6 s) is cut off.
    chunk = next(c for c in chunks if c.message_start_time > (T0 + 7.0) * 1e9)
    file.write_bytes(file.read_bytes()[: chunk.chunk_start_offset + chunk.chunk_length // 2])

    result = evaluate_bag(bag, tmp_path / 'run')
    assert any('bag_0.mcap' in s and 'truncated' in s for s in result.skipped), result.skipped
    assert result.summary.skipped == result.skipped
    assert result.summary.episodes == 1 and result.summary.episode_successes == 0
    assert result.summary.grasp_attempts == 2 and result.summary.drops == 1
    assert 0 < result.received['joint_states'] < 900
    report = (tmp_path / 'run' / 'report.md').read_text()
    assert 'truncated' in report, 'the report must list what was skipped'


def test_corrupt_and_unreadable_bags_fail_clearly_or_report_skipped(tmp_path, capsys):
    assert main([str(tmp_path / 'nothing'), '-o', str(tmp_path / 'run')]) == 2
    assert 'no bag at' in capsys.readouterr().err
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'junk_0.mcap').write_bytes(b'\x89MCAP0\r\n' + bytes(500))
    assert main([str(tmp_path / 'junk'), '-o', str(tmp_path / 'run')]) == 0
    out = capsys.readouterr().out
    assert 'skipped: junk_0.mcap' in out and 'missing topic: joint_states' in out, out


def test_detector_settings_come_from_the_monitor_params_file_and_set(tmp_path, capsys):
    bag = write_script_bag(tmp_path / 'bag')
    params = tmp_path / 'eval.yaml'
    params.write_text(yaml.safe_dump(
        {'eval_monitor': {'ros__parameters': {'detector': {'hold_s': 2.0}}}}))
    assert main([str(bag), '-o', str(tmp_path / 'run'), '--params-file', str(params),
                 '--set', 'settle_s=0.3']) == 0
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    config = summary['detector']['config']
    assert (config['hold_s'], config['settle_s']) == (2.0, 0.3)
    # The first grasp closes to empty 1.2 s after resting: with a 2 s hold it never succeeds.
    assert summary['grasp_successes'] == 0, summary['grasp_successes']
    assert main([str(bag), '-o', str(tmp_path / 'r2'), '--set', 'no_such=1']) == 2
    assert 'unknown detector setting' in capsys.readouterr().err
    assert main([str(bag), '-o', str(tmp_path / 'r3'), '--set', 'hold_s=-1']) == 2
    assert 'hold_s' in capsys.readouterr().err
