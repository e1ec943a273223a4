"""The launch files under the real ROS 2 launch system, from a colcon install space.

Stand-ins for ``launch`` cannot see how ``launch_ros`` finds executables, how parameter files
reach namespaced nodes, how events order the start, or how a Ctrl-C ends the processes. Here
the upstream ``launch``/``launch_ros`` (``../shared/ros2_launch``, unmodified) run the installed
launch files the way ``ros2 launch`` does, in a process whose environment is what sourcing
the install space gives, with the project venv's ``bin/`` off PATH (as on a ROS install,
where ``colcon build`` puts console scripts in ``lib/<pkg>/``). ``test_launch_consistency.py``
keeps the plan checks that are cheap for every argument combination.

Only what a ROS install has and PyPI cannot give is stood in for: ``robot_state_publisher``
and ``rviz2`` (small rclpy nodes with their graph footprint: the topics they would publish
or subscribe to, RViz's read from its ``-d`` layout) and the ``composition_interfaces``
module that ``launch_ros.actions`` imports. Each case checks the ROS graph from this process,
the recorded bag, and that one SIGINT ends everything cleanly within 10 s.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from so101_driver.bringup import plan as bringup
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ROS2_LAUNCH = ROOT.parent / 'shared' / 'ros2_launch'
PACKAGES = ('so101_driver', 'eval_monitor', 'pi05_policy')
#: A bring-up's start on two loaded cores (the policy node imports torch and LeRobot).
START_TIMEOUT_S = 150.0
#: One SIGINT must end the launch within this (launch escalates to SIGTERM after 5 s).
STOP_TIMEOUT_S = 10.0

# What `ros2 launch [--noninteractive] PKG FILE name:=value ...` does (ros2launch's
# launch_a_launch_file): a LaunchService with the arguments as argv, the file included with
# them as launch arguments, run() until it ends; `PKG FILE --show-args` lists the arguments.
RUNNER = '''\
import os
import sys

import launch
from ament_index_python.packages import get_package_share_directory

import so101_driver


def show_args(path):
    """What ``ros2 launch --show-args`` lists, as JSON."""
    import json

    source = launch.launch_description_sources.AnyLaunchDescriptionSource(path)
    context = launch.LaunchContext()
    print(json.dumps([
        {'name': arg.name, 'description': arg.description, 'choices': arg.choices,
         'default': launch.utilities.perform_substitutions(context, arg.default_value)}
        for arg in source.try_get_launch_description_without_context().get_launch_arguments()
    ]))
    return 0


def main(argv):
    noninteractive = argv[:1] == ['--noninteractive']
    package, file_name, *arguments = argv[1:] if noninteractive else argv
    path = os.path.join(get_package_share_directory(package), 'launch', file_name)
    if arguments == ['--show-args']:
        return show_args(path)
    print(f'[runner] so101_driver from {os.path.dirname(so101_driver.__file__)}', flush=True)
    service = launch.LaunchService(argv=arguments, noninteractive=noninteractive)
    service.include_launch_description(launch.LaunchDescription([
        launch.actions.IncludeLaunchDescription(
            launch.launch_description_sources.AnyLaunchDescriptionSource(path),
            launch_arguments=[tuple(a.split(':=', 1)) for a in arguments])]))
    return service.run()


sys.exit(main(sys.argv[1:]))
'''

# robot_state_publisher and rviz2 as installed by a ROS distribution, reduced to their graph
# footprint: robot_state_publisher subscribes to joint_states and publishes
# robot_description; rviz2 subscribes to every topic of its -d layout, by display class.
STANDIN = '''\
import signal
import sys
import threading

import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

NAME = {name!r}


def rviz_subscriptions(node, layout):
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    types = {{'rviz_default_plugins/RobotModel': String, 'rviz_default_plugins/Image': Image,
             'rviz_default_plugins/MarkerArray': MarkerArray}}
    for display in layout['Visualization Manager']['Displays']:
        topic = display.get('Topic') or display.get('Description Topic')
        if not topic or not display.get('Enabled', True):
            continue
        qos = QoSProfile(depth=int(topic.get('Depth', 1)))
        if topic.get('Reliability Policy') == 'Best Effort':
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if topic.get('Durability Policy') == 'Transient Local':
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
        node.create_subscription(types[display['Class']], topic['Value'], lambda m: None, qos)


def main():
    user_args = rclpy.utilities.remove_ros_args(sys.argv)
    rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = rclpy.create_node(NAME, automatically_declare_parameters_from_overrides=True)
    if NAME == 'robot_state_publisher':
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_publisher(String, 'robot_description', latched)
        node.create_subscription(JointState, 'joint_states', lambda m: None, 10)
    else:
        with open(user_args[user_args.index('-d') + 1]) as f:
            rviz_subscriptions(node, yaml.safe_load(f))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


main()
'''

COMPOSITION_INTERFACES_SRV = '''\
"""Stand-in: launch_ros.actions imports composition_interfaces.srv (LoadComposableNodes)."""


class LoadNode:
    class Request:
        pass

    class Response:
        pass
'''


@dataclasses.dataclass
class Workspace:
    install: Path
    env: dict[str, str]
    runner: Path

    def lib(self, package: str, executable: str) -> Path:
        return self.install / package / 'lib' / package / executable


def _without_venv_bin(path: str) -> str:
    venv_bin = Path(sys.executable).parent.resolve()
    return os.pathsep.join(p for p in path.split(os.pathsep)
                           if p and Path(p).resolve() != venv_bin)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Workspace:
    """colcon-built install space + stand-ins, and the environment sourcing it gives."""
    if not (ROS2_LAUNCH / 'launch' / '__init__.py').is_file():
        pytest.skip(f'{ROS2_LAUNCH} (upstream launch/launch_ros) is absent: the real launch '
                    'system cannot run here')
    for module, dist in (('osrf_pycommon', 'osrf-pycommon'), ('lark', 'lark-parser')):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f'{dist} (needed by launch) is not installed: pip install -r '
                        'requirements.txt -c constraints.txt')
    scratch = tmp_path_factory.mktemp('real_launch')
    colcon = Path(sys.executable).parent / 'colcon'
    build = subprocess.run(
        [str(colcon), '--log-base', str(scratch / 'log'), 'build', '--base-paths', 'src',
         '--build-base', str(scratch / 'build'), '--install-base', str(scratch / 'install'),
         '--event-handlers', 'console_direct-'],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, f'colcon build failed:\n{build.stdout}\n{build.stderr}'

    ros_prefix = scratch / 'ros_install'  # what a ROS install provides that PyPI does not
    for package in ('robot_state_publisher', 'rviz2'):
        marker = ros_prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / package
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        exe = ros_prefix / 'lib' / package / package
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text(f'#!{sys.executable}\n' + STANDIN.format(name=package))
        exe.chmod(0o755)
    standins = scratch / 'python_standins'
    (standins / 'composition_interfaces').mkdir(parents=True)
    (standins / 'composition_interfaces' / '__init__.py').write_text('')
    (standins / 'composition_interfaces' / 'srv.py').write_text(COMPOSITION_INTERFACES_SRV)
    runner = scratch / 'ros2_launch_runner.py'
    runner.write_text(RUNNER)

    install = scratch / 'install'
    pyver = f'python{sys.version_info.major}.{sys.version_info.minor}'
    env = dict(os.environ)
    env.update(
        AMENT_PREFIX_PATH=os.pathsep.join([*(str(install / p) for p in PACKAGES),
                                           str(ros_prefix)]),
        PYTHONPATH=os.pathsep.join([
            *(str(install / p / 'lib' / pyver / 'site-packages') for p in PACKAGES),
            str(ROS2_LAUNCH), str(standins), sysconfig.get_paths()['purelib']]),
        PATH=_without_venv_bin(os.environ.get('PATH', '')),
        ROS_HOME=str(scratch / 'ros_home'),  # launch and node logs
        PYTHONUNBUFFERED='1',
        RCUTILS_COLORIZED_OUTPUT='0',
    )
    env.pop('VIRTUAL_ENV', None)
    return Workspace(install=install, env=env, runner=runner)


@pytest.fixture(scope='module')
def tiny_act_224(tmp_path_factory) -> Path:
    """A tiny ACT whose cameras are the sim's: front and handeye at 224 x 224."""
    from pi05_policy.tiny_checkpoints import build_tiny_act

    sim = yaml.safe_load((ROOT / 'config' / 'so101_sim.yaml').read_text())
    params = sim['so101_sim']['ros__parameters']
    return build_tiny_act(tmp_path_factory.mktemp('act'), images=tuple(params['cameras']),
                          image_shape=(3, params['camera_height'], params['camera_width']))


class Emulator:
    """A ``so101-servo-emulator`` the test starts (the one from the install space)."""

    def __init__(self, workspace: Workspace, link: Path):
        self.link = link
        self.proc = subprocess.Popen(
            [str(workspace.lib('so101_driver', 'so101-servo-emulator')), '--link', str(link),
             '--calibration', str(ROOT / 'config' / 'calibration' / 'so101_demo.json')],
            env=workspace.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            process_group=0)
        line = self.proc.stdout.readline()  # the emulator prints its port once it exists
        assert ': port ' in line, f'emulator did not start: {line!r}'

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def emulators(workspace, tmp_path):
    started: list[Emulator] = []

    def start(name: str) -> Emulator:
        started.append(Emulator(workspace, tmp_path / name))
        return started[-1]

    try:
        yield start
    finally:
        for emulator in started:
            emulator.stop()


def config_on_emulators(tmp_path: Path, emulators, arm: bool, leader: bool) -> Path:
    """A copy of config/ whose real arm and/or leader are emulators this test started."""
    config = tmp_path / 'config'
    shutil.copytree(ROOT / 'config', config)
    calibration = str(config / 'calibration' / 'so101_demo.json')
    for wanted, file_name, node in ((arm, 'so101_arm.yaml', 'so101_arm'),
                                    (leader, 'so101_leader.yaml', 'so101_leader')):
        if not wanted:
            continue
        path = config / file_name
        data = yaml.safe_load(path.read_text())
        params = data[node]['ros__parameters']
        params['port'] = str(emulators(node).link)
        params['calibration_file'] = calibration
        params['packet_timeout_ms'] = 50.0  # the emulator shares two loaded cores
        path.write_text(yaml.safe_dump(data))
    return config


# -- what each part of the suite puts in the graph (relative names; a namespace prefixes them)
PUB, SUB = 'pub', 'sub'
STRING, JOINT_STATE = 'std_msgs/msg/String', 'sensor_msgs/msg/JointState'
IMAGE, DIAGNOSTICS = 'sensor_msgs/msg/Image', 'diagnostic_msgs/msg/DiagnosticArray'
TRAJECTORY = 'trajectory_msgs/msg/JointTrajectory'
FOOTPRINT = {
    'so101_sim': [(PUB, 'joint_states', JOINT_STATE), (PUB, 'robot_description', STRING),
                  (PUB, '/clock', 'rosgraph_msgs/msg/Clock'),
                  (PUB, 'cameras/front/image_raw', IMAGE),
                  (PUB, 'cameras/handeye/image_raw', IMAGE),
                  (PUB, 'cameras/front/camera_info', 'sensor_msgs/msg/CameraInfo'),
                  (PUB, 'eval/episode', STRING), (SUB, 'joint_trajectory', TRAJECTORY)],
    'so101_arm': [(PUB, 'joint_states', JOINT_STATE), (PUB, 'robot_description', STRING),
                  (PUB, 'diagnostics', DIAGNOSTICS), (SUB, 'joint_trajectory', TRAJECTORY),
                  (SUB, 'teleop/joint_trajectory', TRAJECTORY)],
    'so101_sim_expert': [(PUB, 'joint_trajectory', TRAJECTORY)],
    'pi05_policy': [(PUB, 'joint_trajectory', TRAJECTORY), (PUB, 'policy/status', DIAGNOSTICS),
                    (SUB, 'cameras/front/image_raw', IMAGE),
                    (SUB, 'cameras/handeye/image_raw', IMAGE)],
    'eval_monitor': [(PUB, 'eval/markers', 'visualization_msgs/msg/MarkerArray'),
                     (PUB, 'eval/status', DIAGNOSTICS), (SUB, 'joint_states', JOINT_STATE)],
    'so101_recorder': [(SUB, 'joint_states', JOINT_STATE)],
    'so101_leader': [(PUB, 'teleop/joint_trajectory', TRAJECTORY),
                     (PUB, 'teleop/override', 'std_msgs/msg/Bool')],
    # remapped: the driver's robot_description (with the mesh URIs it chose) is the one
    'robot_state_publisher': [(PUB, 'robot_description_rsp', STRING),
                              (SUB, 'joint_states', JOINT_STATE)],
    # the layout's absolute topics, remapped into the namespace
    'rviz2': [(SUB, 'robot_description', STRING), (SUB, 'cameras/front/image_raw', IMAGE),
              (SUB, 'cameras/handeye/image_raw', IMAGE),
              (SUB, 'eval/markers', 'visualization_msgs/msg/MarkerArray')],
}


@dataclasses.dataclass
class Case:
    id: str
    launch_file: str
    arguments: dict[str, str]
    nodes: tuple[str, ...]  # expected in the graph; each is also the executable's name
    helpers: tuple[str, ...] = ()  # other executables launch starts (the bus emulator)
    emulated_arm: bool = False  # the test starts an emulator for hardware:=real
    emulated_leader: bool = False  # ... and one for leader:=true
    bag: bool = False
    noninteractive: bool = False  # SIGINT to the launch process alone (ros2 launch
    #                               --noninteractive, a supervisor); else to its group (Ctrl-C)
    implied: dict[str, str] = dataclasses.field(default_factory=dict)  # the file's defaults

    @property
    def processes(self) -> tuple[str, ...]:
        return (*self.helpers, *self.nodes)


CASES = [
    Case('sim-expert-record', 'so101.launch.py',
         {'hardware': 'sim', 'policy': 'expert', 'record': 'true'},
         nodes=('eval_monitor', 'so101_recorder', 'so101_sim', 'so101_sim_expert',
                'robot_state_publisher'), bag=True),
    Case('eval-emulated', 'eval.launch.py', {'hardware': 'emulated', 'policy': 'none'},
         nodes=('eval_monitor', 'so101_recorder', 'so101_arm', 'robot_state_publisher'),
         helpers=('so101-servo-emulator',), bag=True,
         implied={'record': 'true', 'monitor': 'true'}),
    Case('real-on-emulator-leader', 'so101.launch.py',
         {'hardware': 'real', 'policy': 'none', 'cameras': 'false', 'leader': 'true',
          'monitor': 'false'},
         nodes=('so101_arm', 'so101_leader', 'robot_state_publisher'),
         emulated_arm=True, emulated_leader=True, noninteractive=True),
    Case('sim-checkpoint-rviz-namespace', 'so101.launch.py',
         {'hardware': 'sim', 'policy': '<tiny ACT>', 'rviz': 'true', 'namespace': 'cell_a'},
         nodes=('eval_monitor', 'so101_sim', 'pi05_policy', 'robot_state_publisher', 'rviz2')),
    Case('emulated-rviz-namespace-record', 'so101.launch.py',
         {'hardware': 'emulated', 'policy': 'none', 'rviz': 'true', 'namespace': 'cell_b',
          'record': 'true', 'monitor': 'false'},
         nodes=('so101_recorder', 'so101_arm', 'robot_state_publisher', 'rviz2'),
         helpers=('so101-servo-emulator',), bag=True),
]


class Graph:
    """The test process's view of the ROS graph, and counts of the arm's state and commands."""

    def __init__(self, spinner, namespace: str):
        import rclpy
        from sensor_msgs.msg import JointState

        self.ns = f'/{namespace}' if namespace else ''
        self.node = spinner.add(rclpy.create_node('real_launch_probe',
                                                  context=spinner.context))
        from trajectory_msgs.msg import JointTrajectory

        self.joint_states = self.trajectories = 0

        def count_state(_msg):
            self.joint_states += 1

        def count_trajectory(_msg):
            self.trajectories += 1

        self.node.create_subscription(JointState, self.name('joint_states'), count_state, 10)
        self.node.create_subscription(JointTrajectory, self.name('joint_trajectory'),
                                      count_trajectory, 10)

    def name(self, topic: str) -> str:
        return topic if topic.startswith('/') else f'{self.ns}/{topic}'

    def missing(self, nodes) -> list[str]:
        """What of the nodes' footprints is not in the graph (yet)."""
        have_nodes = {f'{ns.rstrip("/")}/{n}' for n, ns in
                      self.node.get_node_names_and_namespaces()}
        topics = dict(self.node.get_topic_names_and_types())
        missing = [f'node {self.ns}/{n}' for n in nodes if f'{self.ns}/{n}' not in have_nodes]
        for node in nodes:
            for kind, topic, msg_type in FOOTPRINT[node]:
                full = self.name(topic)
                if msg_type not in topics.get(full, []):
                    missing.append(f'topic {full} [{msg_type}]')
                    continue
                infos = (self.node.get_publishers_info_by_topic(full) if kind == PUB
                         else self.node.get_subscriptions_info_by_topic(full))
                if not any(i.node_name == node and i.node_namespace == (self.ns or '/')
                           for i in infos):
                    missing.append(f'{self.ns}/{node} {kind} {full}')
        return missing


    def rviz_qos_problems(self) -> list[str]:
        """RViz subscriptions whose QoS (the layout's settings) a publisher of the suite
        does not match: RViz would connect and show nothing."""
        from rclpy.qos import QoSCompatibility, qos_check_compatible

        problems = []
        for _, topic, _ in FOOTPRINT['rviz2']:
            full = self.name(topic)
            for sub in self.node.get_subscriptions_info_by_topic(full):
                for pub in self.node.get_publishers_info_by_topic(full):
                    result, reason = qos_check_compatible(pub.qos_profile, sub.qos_profile)
                    if sub.node_name == 'rviz2' and result == QoSCompatibility.ERROR:
                        problems.append(f'{full}: RViz QoS does not match {pub.node_name}: '
                                        f'{reason}')
        return problems

    def parameters(self, node: str, names: list[str], timeout: float = 30.0) -> dict:
        """The values ``node`` holds for ``names`` (its get_parameters service)."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        client = self.node.create_client(GetParameters, self.name(f'{node}/get_parameters'))
        try:
            assert client.wait_for_service(timeout_sec=timeout), f'{node}: no get_parameters'
            future = client.call_async(GetParameters.Request(names=names))
            wait_for(future.done, timeout=timeout, interval=0.05,
                     message=f'{node} get_parameters')
            return {n: parameter_value_to_python(v)
                    for n, v in zip(names, future.result().values)}
        finally:
            self.node.destroy_client(client)


def _same(given, held) -> bool:
    if isinstance(given, (list, tuple)):
        return list(given) == list(held)
    return given == held


def _output(path: Path) -> str:
    return path.read_text(errors='replace') if path.exists() else ''


def _stop(proc: subprocess.Popen, group: bool) -> float:
    """One SIGINT; returns the seconds until the launch process ended."""
    start = time.monotonic()
    if group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.monotonic() - start


@pytest.mark.parametrize('case', CASES, ids=lambda c: c.id)
def test_ros2_launch_brings_up_the_suite_and_one_sigint_ends_it(case, workspace, emulators,
                                                                 spinner, tmp_path, request):
    arguments = dict(case.arguments)
    if arguments.get('policy') == '<tiny ACT>':
        arguments['policy'] = str(request.getfixturevalue('tiny_act_224'))
    if case.emulated_arm or case.emulated_leader:
        arguments['config_dir'] = str(config_on_emulators(tmp_path, emulators,
                                                          case.emulated_arm,
                                                          case.emulated_leader))
    graph = Graph(spinner, arguments.get('namespace', ''))
    run_dir = tmp_path / 'cwd'  # the monitor's runs/ and the recorder's bags/ land here
    run_dir.mkdir()
    log = tmp_path / 'launch.log'
    argv = [sys.executable, str(workspace.runner),
            *(['--noninteractive'] if case.noninteractive else []),
            'so101_driver', case.launch_file, *(f'{k}:={v}' for k, v in arguments.items())]
    # as in a newcomer's shell: no discovery range, so the launch's own default shows
    env = {k: v for k, v in workspace.env.items() if k != 'ROS_AUTOMATIC_DISCOVERY_RANGE'}
    with log.open('w') as out:
        proc = subprocess.Popen(argv, cwd=run_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                process_group=0)
    try:
        def up():
            assert proc.poll() is None, f'launch ended ({proc.returncode}):\n{_output(log)}'
            assert 'process has died' not in _output(log), _output(log)
            return not graph.missing(case.nodes)

        try:
            wait_for(up, timeout=START_TIMEOUT_S, interval=0.5, message='the graph')
        except AssertionError as err:
            raise AssertionError(f'{err}; missing {graph.missing(case.nodes)}\n'
                                 f'{_output(log)}') from None
        # the arm or sim streams, and every process is still up while it does
        wait_for(lambda: graph.joint_states >= 100, timeout=60, interval=0.2,
                 message=f'100 messages on {graph.name("joint_states")}')
        if {'so101_sim_expert', 'pi05_policy'} & set(case.nodes):  # it commands the arm
            wait_for(lambda: graph.trajectories >= 1, timeout=90, interval=0.2,
                     message=f'a chunk on {graph.name("joint_trajectory")}')
        output = _output(log)
        assert f'so101_driver from {workspace.install}' in output, \
            'the launch did not run the install space\'s so101_driver'
        started = output.count('process started with pid')
        assert started == len(case.processes), f'{started} processes started:\n{output}'
        for executable in case.processes:
            assert f'[{executable}-' in output, f'{executable} did not start:\n{output}'
        assert 'process has' not in output, f'a process ended while running:\n{output}'
        if 'rviz2' in case.nodes:
            problems = graph.rviz_qos_problems()
            assert not problems, problems
        # every value of each node's YAML (and the bring-up's overrides) reached the node,
        # in a namespace too
        share_config = workspace.install / 'so101_driver' / 'share' / 'so101_driver' / 'config'
        specs = bringup.plan(bringup.parse_args(
            {'config_dir': str(share_config)} | case.implied | arguments))
        for name, given in bringup.check_config_files(specs).items():
            held = graph.parameters(name, list(given))
            wrong = {k: (v, held[k]) for k, v in given.items() if not _same(v, held[k])}
            assert not wrong, f'{name}: parameters (YAML, held) differ: {wrong}'
        # a sim or emulator session discovers only this host unless the user asked
        local = arguments.get('hardware', 'sim') in ('sim', 'emulated')
        ranges = {e.get('ROS_AUTOMATIC_DISCOVERY_RANGE') for e in _descendants_env(proc.pid)}
        assert ranges == ({'LOCALHOST'} if local else {None}), ranges
        assert proc.poll() is None
        stop_s = _stop(proc, group=not case.noninteractive)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = _output(log)
    assert stop_s < STOP_TIMEOUT_S, f'one SIGINT took {stop_s:.1f} s to end the launch'
    assert proc.returncode == 0, f'launch exited with {proc.returncode}:\n{output}'
    assert 'Traceback' not in output, output
    assert output.count('process has finished cleanly') == len(case.processes), output
    bags = sorted((run_dir / 'bags').glob('*/metadata.yaml'))
    if case.bag:
        assert len(bags) == 1, f'expected one bag under {run_dir / "bags"}: {bags}'
        info = yaml.safe_load(bags[0].read_text())['rosbag2_bagfile_information']
        counts = {t['topic_metadata']['name']: t['message_count']
                  for t in info['topics_with_message_count']}
        assert counts.get(graph.name('joint_states'), 0) > 0, f'bag topics: {counts}'
    else:
        assert not bags


def _descendants_env(pid: int) -> list[dict[str, str]]:
    """Environments of every process below ``pid`` (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    below, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        below += children
        todo += children
    found = []
    for child in below:
        try:
            raw = Path(f'/proc/{child}/environ').read_bytes().split(b'\0')
        except OSError:
            continue
        found.append(dict(e.decode(errors='replace').split('=', 1) for e in raw if b'=' in e))
    assert found, f'no processes below {pid}'
    return found


def _run_launch(workspace: Workspace, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """A launch that is expected to end on its own (listing arguments, refusing them)."""
    return subprocess.run([sys.executable, str(workspace.runner), 'so101_driver', *argv],
                          cwd=cwd, env=workspace.env, capture_output=True, text=True,
                          timeout=120)


def test_show_args_lists_every_bringup_argument_and_eval_defaults(workspace, tmp_path):
    listed = {}
    for file_name in ('so101.launch.py', 'eval.launch.py'):
        result = _run_launch(workspace, tmp_path, file_name, '--show-args')
        assert result.returncode == 0, result.stdout + result.stderr
        listed[file_name] = {a['name']: a for a in json.loads(result.stdout)}
    so101 = listed['so101.launch.py']
    assert list(so101) == list(bringup.ARGUMENTS)
    for name, arg in bringup.ARGUMENTS.items():
        assert so101[name]['default'] == arg.default, name
        assert so101[name]['description'].startswith(arg.description), name  # + choices
        assert so101[name]['choices'] == (list(arg.choices) if arg.choices else None), name
    evaluation = listed['eval.launch.py']
    assert set(evaluation) == set(bringup.ARGUMENTS), 'eval.launch.py hides arguments'
    assert evaluation['record']['default'] == evaluation['monitor']['default'] == 'true'


@pytest.mark.parametrize('arguments, expected', [
    (['hardware:=robot'], "'real', 'emulated', 'sim'"),  # launch's own check of choices
    (['hardware:=real', 'policy:=expert'], 'needs hardware:=sim'),  # the bring-up's
    (['policy:=/no/such/checkpoint'], 'neither none, expert nor an existing'),
])
def test_invalid_arguments_end_the_launch_with_the_valid_values(workspace, tmp_path,
                                                                 arguments, expected):
    result = _run_launch(workspace, tmp_path, 'so101.launch.py', *arguments)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert expected in output, output
    assert 'process started' not in output and 'Traceback' not in output, output


def test_every_executable_is_where_ros2_run_looks(workspace):
    """Each node or helper of any bring-up is in its package's lib/<package>/ folder."""
    wanted = set()
    for values in itertools.product(('real', 'emulated', 'sim'), ('none', 'expert', str(ROOT)),
                                    ('true', 'false')):
        hardware, policy, flag = values
        if policy == 'expert' and hardware != 'sim':
            continue
        args = bringup.parse_args({'hardware': hardware, 'policy': policy, 'record': flag,
                                   'leader': flag, 'monitor': flag, 'cameras': flag})
        wanted |= {(s.package, s.executable) for s in bringup.plan(args)}
        wanted |= {('so101_driver', cmd[0]) for cmd in bringup.processes(args)}
    for package, executable in sorted(wanted):
        path = workspace.lib(package, executable)
        assert path.is_file() and os.access(path, os.X_OK), \
            f'{package}/{executable}: not an executable at {path}'


def test_an_emulator_that_dies_before_its_port_ends_the_launch(workspace, tmp_path):
    """hardware:=emulated starts the arm on the emulator's port line; an emulator that exits
    first (here: a calibration file it refuses) ends the launch with the reason instead of
    leaving a bring-up without an arm."""
    config = tmp_path / 'config'
    shutil.copytree(ROOT / 'config', config)
    (config / 'calibration' / 'so101_demo.json').write_text('{}')
    start = time.monotonic()
    result = _run_launch(workspace, tmp_path, 'so101.launch.py', 'hardware:=emulated',
                         'policy:=none', 'monitor:=false', f'config_dir:={config}')
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'exited with code 2 before serving its port' in output, output
    assert '[so101_arm-' not in output, 'the arm started without its port'
    assert 'Traceback' not in output, output
    assert time.monotonic() - start < 60
