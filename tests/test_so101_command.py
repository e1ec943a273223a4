"""The ``so101`` command end to end: ``so101 up`` brings up the launch file's graph from the
same YAML, reports a misspelt key, and ``so101 demo`` produces its report and bag.

Each test runs the real console script in a child process (same DDS domain as the test) and
observes it from outside, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from so101_driver.bringup import plan as bringup
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
SO101 = str(Path(sys.executable).parent / 'so101')

#: Topics (and types) the sim bring-up must show, by who publishes them.
EXPECTED_TOPICS = {
    '/joint_states': 'sensor_msgs/msg/JointState',
    '/joint_trajectory': 'trajectory_msgs/msg/JointTrajectory',
    '/teleop/override': 'std_msgs/msg/Bool',
    '/robot_description': 'std_msgs/msg/String',
    '/clock': 'rosgraph_msgs/msg/Clock',
    '/sim/truth': 'std_msgs/msg/String',
    '/cameras/front/image_raw': 'sensor_msgs/msg/Image',
    '/eval/episode': 'std_msgs/msg/String',
    '/eval/events': 'std_msgs/msg/String',
    '/eval/status': 'diagnostic_msgs/msg/DiagnosticArray',
    '/eval/markers': 'visualization_msgs/msg/MarkerArray',
}


def so101(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, MUJOCO_GL=os.environ.get('MUJOCO_GL', 'egl'))
    return subprocess.Popen([SO101, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, **kwargs)


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


@pytest.mark.slow
def test_so101_up_starts_the_launch_plan_and_its_topics(ros_context, tmp_path):
    import rclpy

    args = ['hardware:=sim', 'policy:=expert', 'record:=true']
    plan = bringup.plan(bringup.parse_args(bringup.parse_assignments(args)))
    proc = so101('up', *args, cwd=tmp_path)
    node = rclpy.create_node('graph_probe', context=ros_context)
    try:
        wait_for(lambda: {s.name for s in plan} <= set(node.get_node_names()) or
                 proc.poll() is not None, 90, interval=0.2,
                 message=f'nodes {[s.name for s in plan]} in the graph')
        assert proc.poll() is None, f'so101 up exited early:\n{stop(proc)}'

        def topics():
            found = dict(node.get_topic_names_and_types())
            return all(t in found for t in EXPECTED_TOPICS) and found
        found = wait_for(topics, 30, interval=0.2, message=f'topics {sorted(EXPECTED_TOPICS)}')
        for topic, type_name in EXPECTED_TOPICS.items():
            assert type_name in found[topic], f'{topic}: {found[topic]}, expected {type_name}'
    finally:
        node.destroy_node()
        out = stop(proc)
    assert proc.returncode == 0, f'so101 up did not stop cleanly on Ctrl-C:\n{out}'
    assert 'configuration problems' not in out, out
    bags = list((tmp_path / 'bags').glob('*/metadata.yaml'))
    assert bags, f'the recorder left no closed bag in {tmp_path / "bags"}:\n{out}'


def test_so101_up_names_a_misspelt_parameter_and_its_file(tmp_path):
    config = tmp_path / 'config'
    shutil.copytree(ROOT / 'config', config)
    data = yaml.safe_load((config / 'eval.yaml').read_text())
    data['eval_monitor']['ros__parameters']['status_perod_s'] = 2.0
    (config / 'eval.yaml').write_text(yaml.safe_dump(data))
    proc = so101('up', 'hardware:=sim', 'policy:=none', f'config_dir:={config}', cwd=tmp_path)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, f'expected exit 2, got {proc.returncode}:\n{out}'
    assert "'status_perod_s' is not declared by node eval_monitor" in out, out
    assert str(config / 'eval.yaml') in out, out


def test_so101_up_rejects_an_invalid_argument_value_with_the_valid_ones():
    proc = so101('up', 'hardware:=robot')
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert 'choose one of real, emulated, sim' in out, out


@pytest.mark.slow
def test_so101_up_emulated_hardware_brings_the_arm_up_on_the_emulator(ros_context, tmp_path):
    import rclpy
    import rclpy.executors
    from sensor_msgs.msg import JointState

    from so101_driver import qos

    proc = so101('up', 'hardware:=emulated', 'policy:=none', 'monitor:=false', cwd=tmp_path)
    node = rclpy.create_node('emulated_probe', context=ros_context)
    states = []
    node.create_subscription(JointState, 'joint_states', states.append, qos.STREAM_SUB)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 60
        while len(states) < 20 and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert len(states) >= 20, f'no joint_states from the emulated arm:\n{stop(proc)}'
    finally:
        node.destroy_node()
        out = stop(proc)
    assert proc.returncode == 0, out


@pytest.mark.slow
def test_demo_runs_two_episodes_and_leaves_report_and_bag(tmp_path):
    """``so101 demo --fast``: several attempts per episode, the operator takes over inside
    an episode (counted there), report and bag agree."""
    run = tmp_path / 'demo'
    proc = so101('demo', '--fast', '--episodes', '2', '--rescue-after', '2', '--failure-scale',
                 '1.05', '--seed', '3',
                 '--run-dir', str(run), cwd=tmp_path)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, f'so101 demo failed:\n{out[-4000:]}'
    report = (run / 'report' / 'report.md').read_text()
    for heading in ('| Metric | Value | 95% CI |', '## Per episode', 'Episode success',
                    'Grasp success', 'Interventions per episode'):
        assert heading in report, f'{heading!r} missing from report.md'
        assert heading in out, f'{heading!r} not printed at the end of the demo'
    summary = json.loads((run / 'report' / 'summary.json').read_text())
    assert summary['episodes'] == 2, summary['episodes']
    assert summary['grasp_attempts'] >= 4, summary['per_episode']
    assert summary['interventions'] >= 1, summary['per_episode']
    assert sum(row['interventions'] for row in summary['per_episode']) == \
        summary['interventions'], 'an intervention was counted outside its episode'
    assert 'cameras off' in out and 'the simulated operator takes over' in out
    assert (run / 'bag' / 'metadata.yaml').is_file()
    assert (run / 'report' / 'report.html').is_file()

    offline = run / 'offline'
    result = subprocess.run([SO101, 'eval', str(run / 'bag'), '-o', str(offline)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    again = json.loads((offline / 'summary.json').read_text())
    for key in ('episodes', 'episode_successes', 'grasp_attempts', 'grasp_successes', 'drops',
                'interventions'):
        assert again[key] == summary[key], \
            f'{key}: live {summary[key]} != offline {again[key]} from the demo bag'


@pytest.mark.parametrize('command', ['', 'up', 'demo', 'eval', 'compare', 'emulator', 'dataset',
                                     'train', 'console', 'view', 'latency',
                                     'bag-reindex'])
def test_help_works_on_so101_and_every_subcommand(command):
    """``so101 up --help`` was once refused as a malformed name:=value; ``so101 console --help``
    started the console instead of answering."""
    from so101_driver.bringup.cli import COMMANDS

    assert not command or command in COMMANDS
    done = subprocess.run([SO101, *filter(None, [command]), '--help'], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f'so101 {command} --help: exit {done.returncode}\n{done.stderr}'
    assert done.stdout.startswith('usage:'), done.stdout[:300]
    if command == 'up':
        assert all(f'{name}:=' in done.stdout for name in bringup.ARGUMENTS)


def test_every_subcommand_has_a_help_test():
    from so101_driver.bringup.cli import COMMANDS

    tested = {'up', 'demo', 'eval', 'compare', 'emulator', 'dataset', 'train', 'console', 'view',
              'latency', 'bag-reindex'}
    assert set(COMMANDS) == tested, 'a new subcommand needs its --help in the test above'


def _mcap_counts(bag: Path) -> dict[str, int]:
    from mcap.reader import make_reader

    counts: dict[str, int] = {}
    for path in sorted(bag.glob('*.mcap')):
        with open(path, 'rb') as f:
            for _, channel, _ in make_reader(f).iter_messages():
                counts[channel.topic] = counts.get(channel.topic, 0) + 1
    return counts


@pytest.mark.slow
def test_ctrl_c_three_times_stops_everything_cleanly_and_the_bag_is_whole(ros_context, tmp_path):
    """A terminal sends SIGINT to the whole foreground process group, and users press Ctrl-C
    more than once. Each node must still stop once, cleanly, and the bag's metadata must
    count what its MCAP holds (a second SIGINT once cut the recorder's close short)."""
    import rclpy

    args = ['hardware:=sim', 'policy:=expert', 'record:=true']
    plan = bringup.plan(bringup.parse_args(bringup.parse_assignments(args)))
    proc = so101('up', *args, cwd=tmp_path, start_new_session=True)  # its own terminal group
    node = rclpy.create_node('ctrl_c_probe', context=ros_context)
    try:
        wait_for(lambda: {s.name for s in plan} <= set(node.get_node_names()) or
                 proc.poll() is not None, 90, interval=0.2, message='the nodes in the graph')
        assert proc.poll() is None, f'so101 up exited early:\n{stop(proc)}'
        wait_for(lambda: sum(p.stat().st_size for p in tmp_path.glob('bags/*/*.mcap')) > 200_000
                 or proc.poll() is not None, 60, interval=0.2, message='200 kB recorded')
    finally:
        node.destroy_node()
    t0 = time.monotonic()
    for _ in range(3):  # Ctrl-C, Ctrl-C, Ctrl-C within a second, to the whole group
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.3)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f'so101 up still running 30 s after Ctrl-C:\n{out[-4000:]}')
    assert proc.returncode == 0, out[-4000:]
    assert time.monotonic() - t0 < 15, 'stopping took longer than the 10 s grace period'
    for sign in ('Traceback', 'FATAL', 'context is invalid'):
        assert sign not in out, out[-4000:]
    [bag] = [p.parent for p in tmp_path.glob('bags/*/metadata.yaml')]
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    counted = {t['topic_metadata']['name']: t['message_count']
               for t in meta['topics_with_message_count'] if t['message_count']}
    assert counted == _mcap_counts(bag)
    assert meta['message_count'] == sum(counted.values())


def _children_env(pid: int) -> list[dict[str, str]]:
    """Environments of the direct children of ``pid`` (Linux /proc)."""
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
            if int(fields[1]) == pid:
                raw = (stat.parent / 'environ').read_bytes().split(b'\0')
                found.append(dict(e.decode(errors='replace').split('=', 1)
                                  for e in raw if b'=' in e))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.parametrize('given, expected', [(None, 'LOCALHOST'), ('SUBNET', 'SUBNET')])
def test_sim_bring_up_stays_on_this_host_unless_the_user_asks(given, expected, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'ROS_AUTOMATIC_DISCOVERY_RANGE'}
    if given:
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = given
    proc = subprocess.Popen([SO101, 'up', 'hardware:=sim', 'policy:=none', 'monitor:=false'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(env, MUJOCO_GL=env.get('MUJOCO_GL', 'egl')), cwd=tmp_path)
    try:
        children = wait_for(lambda: _children_env(proc.pid) or proc.poll() is not None, 60,
                            interval=0.1, message='so101 up to start its nodes')
    finally:
        out = stop(proc)
    assert isinstance(children, list), out
    assert {c.get('ROS_AUTOMATIC_DISCOVERY_RANGE') for c in children} == {expected}, out
    assert f'ROS_AUTOMATIC_DISCOVERY_RANGE={expected}' in out, out


def test_a_node_that_never_answers_list_parameters_is_a_warning_not_an_abort():
    """One lost list_parameters reply once ended a healthy 30-episode demo."""
    from so101_driver.bringup.plan import NodeSpec
    from so101_driver.bringup.processes import ParameterChecker

    checker = ParameterChecker(namespace='')
    try:
        spec = NodeSpec(package='so101_driver', executable='so101_sim', name='nobody_here_xyz',
                        params_files=(), overrides={})
        t0 = time.monotonic()
        problems, warnings = checker.check(spec, {'x': 1}, timeout=0.5, attempts=3)
        assert problems == []
        assert len(warnings) == 1 and 'did not answer list_parameters in 3 tries' in warnings[0]
        assert time.monotonic() - t0 >= 1.5, 'it must ask three times'
        problems, warnings = checker.check(spec, {'x': 1}, timeout=5.0, alive=lambda: False)
        assert (problems, warnings) == ([], []), 'an exited process is reported by its caller'
    finally:
        checker.close()


def test_so101_up_under_a_namespace_gives_every_node_its_yaml(ros_context, tmp_path):
    """The YAML files key sections by bare node name, which rcl applies only at the root:
    under namespace:=X every value used to be dropped without a word."""
    import rclpy
    import rclpy.executors
    from rcl_interfaces.srv import GetParameters

    config = tmp_path / 'config'
    shutil.copytree(ROOT / 'config', config)
    data = yaml.safe_load((config / 'so101_sim.yaml').read_text())
    data['so101_sim']['ros__parameters']['camera_rate_hz'] = 7.0  # default 10.0
    (config / 'so101_sim.yaml').write_text(yaml.safe_dump(data))
    proc = so101('up', 'hardware:=sim', 'policy:=none', 'monitor:=false', 'namespace:=arm1',
                 f'config_dir:={config}', cwd=tmp_path)
    node = rclpy.create_node('ns_probe', context=ros_context)
    try:
        client = node.create_client(GetParameters, '/arm1/so101_sim/get_parameters')
        assert client.wait_for_service(timeout_sec=60), f'no /arm1/so101_sim:\n{stop(proc)}'
        future = client.call_async(GetParameters.Request(names=['camera_rate_hz']))
        executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        executor.spin_until_future_complete(future, timeout_sec=30)
        assert future.result() is not None, 'get_parameters did not answer'
        assert future.result().values[0].double_value == 7.0
    finally:
        node.destroy_node()
        out = stop(proc)
    assert proc.returncode == 0, out
