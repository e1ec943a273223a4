"""The evaluation side needs neither torch nor LeRobot.

A lab that only counts grasps and interventions installs eval_monitor without the 5.5 GB of
the policy side. Here the monitor node, the recorder, offline evaluation and comparison run as
their console scripts with ``torch`` and ``lerobot`` made unimportable (a folder first on
PYTHONPATH whose ``torch`` and ``lerobot`` raise ImportError), over real DDS, and must count the
scripted evaluation exactly as with the full install.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.eval_monitor.test_offline import EXPECTED, script, step_message
from tests.helpers import wait_for

BLOCKED = ('torch', 'lerobot')


def _blocked_env(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / 'blocked'
    folder.mkdir()
    for name in BLOCKED:
        (folder / f'{name}.py').write_text(
            f'raise ImportError("{name} is blocked: the evaluation side must not need it")\n')
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(folder), *filter(None, [env.get('PYTHONPATH')])])
    return env


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    assert path.exists(), f'console script {name} not installed next to {sys.executable}'
    return str(path)


def test_blocker_really_blocks(tmp_path):
    env = _blocked_env(tmp_path)
    for name in BLOCKED:
        done = subprocess.run([sys.executable, '-c', f'import {name}'], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and 'is blocked' in done.stderr, done.stderr


def test_modules_import_without_torch_or_lerobot(tmp_path):
    modules = ['eval_monitor.monitor_node', 'eval_monitor.recorder_node', 'eval_monitor.offline',
               'eval_monitor.compare', 'eval_monitor.console', 'eval_monitor.report',
               'eval_monitor.feeder', 'eval_monitor.metrics', 'eval_monitor.bag']
    code = ('import importlib, sys\n'
            f'for m in {modules!r}: importlib.import_module(m)\n'
            f'print(sorted(k for k in sys.modules if k.split(".")[0] in {BLOCKED!r}))\n')
    done = subprocess.run([sys.executable, '-c', code], env=_blocked_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]', done.stdout


@pytest.mark.slow
def test_monitor_recorder_eval_and_compare_run_without_torch(ros_context, spinner, tmp_path):
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from so101_driver.qos import COMMAND, EPISODE_MARKS, LATCHED, STREAM_PUB
    from std_msgs.msg import Bool, String
    from trajectory_msgs.msg import JointTrajectory

    env = _blocked_env(tmp_path)
    logs = {name: open(tmp_path / f'{name}.log', 'w') for name in ('monitor', 'recorder')}
    topics = ['joint_states', 'teleop/override', 'eval/episode', 'joint_trajectory',
              'teleop/joint_trajectory']
    procs = {
        'monitor': subprocess.Popen(
            [_script('eval_monitor'), '--ros-args', '-p', f'run_dir:={tmp_path / "live"}'],
            env=env, stdout=logs['monitor'], stderr=subprocess.STDOUT),
        'recorder': subprocess.Popen(
            [_script('so101_recorder'), '--ros-args', '-p', f'output:={tmp_path / "bag"}',
             '-p', f'topics:=[{",".join(topics)}]', '-p', 'discovery_period_s:=0.05'],
            env=env, stdout=logs['recorder'], stderr=subprocess.STDOUT),
    }

    def log(name):
        logs[name].flush()
        return (tmp_path / f'{name}.log').read_text()[-3000:]

    try:
        source = spinner.add(Node('test_source', context=ros_context))
        pubs = {
            'joint_states': source.create_publisher(JointState, 'joint_states', STREAM_PUB),
            'teleop/override': source.create_publisher(Bool, 'teleop/override', LATCHED),
            'eval/episode': source.create_publisher(String, 'eval/episode', EPISODE_MARKS),
            'joint_trajectory': source.create_publisher(JointTrajectory, 'joint_trajectory',
                                                        COMMAND),
            'teleop/joint_trajectory': source.create_publisher(
                JointTrajectory, 'teleop/joint_trajectory', COMMAND),
        }
        ends = []
        events = source.create_subscription(  # noqa: F841 - kept alive for the callback
            String, 'eval/events',
            lambda m: ends.append(m) if json.loads(m.data)['kind'] == 'episode_end' else None,
            COMMAND)
        wait_for(lambda: all(p.get_subscription_count() >= 2 for p in pubs.values())
                 or any(p.poll() is not None for p in procs.values()), 60.0,
                 message='monitor and recorder to subscribe to every topic')
        for name, proc in procs.items():
            assert proc.poll() is None, f'{name} exited {proc.returncode}:\n{log(name)}'

        clock = source.get_clock()
        t_start = time.monotonic()
        previous = None
        for step in script():
            delay = t_start + step.t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg = step_message(step, clock.now().nanoseconds * 1e-9, previous)
            if step.topic == 'joint_states':
                previous = step.value
            pubs[step.topic].publish(msg)
        wait_for(lambda: len(ends) == 2, 20.0, message='the monitor to end both episodes')
        time.sleep(0.5)  # the last messages reach the recorder's queue (it writes in order)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = {}
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = 'hung'
        for f in logs.values():
            f.close()
    for name, code in codes.items():
        assert code == 0, f'{name} exited {code} without torch:\n{log(name)}'

    # The live monitor counted episodes and interventions; its grasp counts need every joint
    # state, which a monitor process starved of CPU can lose (reliable, but the publisher
    # keeps only the last 10), so the exact counts are checked on the bag (the recorder
    # got all of them, or so101-eval would not count EXPECTED).
    live = json.loads((tmp_path / 'live' / 'summary.json').read_text())
    assert (live['episodes'], live['interventions']) == (2, 1), live

    done = subprocess.run([_script('so101-eval'), str(tmp_path / 'bag'), '-o',
                           str(tmp_path / 'offline')], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    offline = json.loads((tmp_path / 'offline' / 'summary.json').read_text())
    assert {k: offline[k] for k in EXPECTED} == EXPECTED

    done = subprocess.run([_script('so101-compare'), str(tmp_path / 'live'),
                           str(tmp_path / 'offline'), '-o', str(tmp_path / 'cmp'),
                           '--names', 'live', 'offline'], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / 'cmp').iterdir()), 'so101-compare wrote nothing'
