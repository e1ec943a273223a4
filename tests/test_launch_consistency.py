"""Launch files checked without a ROS install: what they start exists, and matches ``so101 up``.

``launch``/``launch_ros`` are not installable from PyPI, so the launch files run here against
small recording stand-ins for the few classes they use. That still executes the real
launch-file code: every argument it declares, every node it would start, every file it
passes. Each executable must be a console script of its package (what ``ros2 run`` finds
after ``colcon build``), each parameter file must exist with a section for its node, and the
node list must equal ``so101_driver.bringup.plan.plan`` (what ``so101 up`` starts).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import runpy
import sys
import types
from pathlib import Path

import pytest

from so101_driver.bringup import plan as bringup
ROOT = Path(__file__).resolve().parent.parent
LAUNCH_DIR = ROOT / 'launch'
#: Executables that come from a ROS 2 install, not from this suite.
ROS_PACKAGES = {('robot_state_publisher', 'robot_state_publisher'), ('rviz2', 'rviz2')}


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context[self.name]


@pytest.fixture
def fake_launch(monkeypatch):
    """Install recording stand-ins for launch / launch_ros."""
    mods = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.substitutions', 'launch.launch_description_sources',
        'launch_ros', 'launch_ros.actions')}
    mods['launch'].LaunchDescription = lambda entities: list(entities)
    mods['launch.actions'].DeclareLaunchArgument = type('DeclareLaunchArgument', (_Recorded,), {})
    mods['launch.actions'].OpaqueFunction = type('OpaqueFunction', (_Recorded,), {})
    mods['launch.actions'].IncludeLaunchDescription = type('IncludeLaunchDescription',
                                                           (_Recorded,), {})
    mods['launch.actions'].ExecuteProcess = type('ExecuteProcess', (_Recorded,), {})
    mods['launch.actions'].TimerAction = type('TimerAction', (_Recorded,), {})
    mods['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    mods['launch.launch_description_sources'].PythonLaunchDescriptionSource = \
        lambda path: path
    mods['launch_ros.actions'].Node = type('Node', (_Recorded,), {})
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods


def run_launch_file(path: Path, arguments: dict[str, str]) -> tuple[dict, list]:
    """(declared arguments, Node stand-ins) of a launch file for these argument values."""
    entities = runpy.run_path(str(path))['generate_launch_description']()
    declared, nodes, processes = {}, [], []
    for entity in entities:
        kind = type(entity).__name__
        if kind == 'DeclareLaunchArgument':
            declared[entity.args[0]] = entity.kwargs
        elif kind == 'IncludeLaunchDescription':
            inner_declared, inner_nodes = run_launch_file(
                Path(entity.args[0]), {k: v for k, v in arguments.items()} | {
                    k: arguments.get(k, v['default_value']) for k, v in declared.items()})
            declared = inner_declared | declared
            nodes += inner_nodes
        elif kind == 'OpaqueFunction':
            context = {name: arg.default for name, arg in bringup.ARGUMENTS.items()}
            context |= {k: v['default_value'] for k, v in declared.items()} | arguments
            for action in entity.kwargs['function'](context):
                if type(action).__name__ == 'TimerAction':
                    nodes += action.kwargs['actions']
                elif type(action).__name__ == 'ExecuteProcess':
                    processes.append(action.kwargs['cmd'])
                else:
                    nodes.append(action)
    return declared, nodes


def console_scripts(package: str) -> set[str]:
    return {ep.name for ep in importlib.metadata.distribution(package).entry_points
            if ep.group == 'console_scripts'}


COMBINATIONS = [
    dict(zip(('hardware', 'policy', 'record', 'monitor', 'rviz', 'leader'), combo))
    for combo in itertools.product(('real', 'emulated', 'sim'), ('none', 'expert'),
                                   ('true', 'false'), ('true', 'false'), ('true', 'false'),
                                   ('true', 'false'))
    if not (combo[1] == 'expert' and combo[0] != 'sim')
] + [  # a checkpoint directory (any existing folder will do for the plan)
    {'hardware': hw, 'policy': str(ROOT), 'record': 'true', 'monitor': 'true', 'rviz': 'false',
     'leader': 'false'} for hw in ('real', 'emulated', 'sim')
]


def test_launch_file_declares_every_bringup_argument_with_a_description(fake_launch):
    declared, _ = run_launch_file(LAUNCH_DIR / 'so101.launch.py', {})
    assert set(declared) == set(bringup.ARGUMENTS), \
        f'launch arguments {sorted(declared)} != bringup arguments {sorted(bringup.ARGUMENTS)}'
    for name, kwargs in declared.items():
        assert kwargs.get('description'), f'launch argument {name} has no description'
        assert kwargs['default_value'] == bringup.ARGUMENTS[name].default


@pytest.mark.parametrize('arguments', COMBINATIONS,
                         ids=lambda a: '-'.join(f'{k}={v}' for k, v in a.items()))
def test_launch_starts_the_bringup_plan_with_existing_executables_and_files(fake_launch,
                                                                            arguments):
    _, nodes = run_launch_file(LAUNCH_DIR / 'so101.launch.py', arguments)
    started = [(n.kwargs['package'], n.kwargs['executable'], n.kwargs['name']) for n in nodes]
    plan = bringup.plan(bringup.parse_args(arguments))
    ours = [s for s in started if s[:2] not in ROS_PACKAGES]
    assert ours == [(s.package, s.executable, s.name) for s in plan], \
        f'launch file starts {ours}, so101 up starts {plan}'
    for package, exe, name in ours:
        assert exe in console_scripts(package), \
            f'{name}: {exe} is not a console script of {package} ({console_scripts(package)})'
    given = bringup.check_config_files(plan)  # raises naming a missing file or section
    if arguments['hardware'] == 'emulated':
        arm = next(s for s in plan if s.name == 'so101_arm')
        assert arm.overrides['port'] == str(bringup.EMULATOR_PORT)
        assert Path(arm.overrides['calibration_file']).is_file()
        assert 'so101-servo-emulator' in console_scripts('so101_driver')
    for node in nodes:
        for entry in node.kwargs.get('parameters', []):
            if isinstance(entry, str):
                assert Path(entry).is_file(), f'{node.kwargs["name"]}: {entry} missing'
    assert set(given) == {s.name for s in plan}
    if arguments['policy'] not in ('none', 'expert'):
        policy = next(s for s in plan if s.name == 'pi05_policy')
        assert policy.overrides['checkpoint'] == arguments['policy']
        assert policy.overrides['task'] == bringup.DEFAULT_TASK
    if arguments['rviz'] == 'true':
        rviz = [n for n in nodes if n.kwargs['package'] == 'rviz2']
        assert rviz and Path(rviz[0].kwargs['arguments'][1]).is_file(), 'RViz config missing'


def test_eval_launch_records_and_monitors_by_default(fake_launch):
    declared, nodes = run_launch_file(LAUNCH_DIR / 'eval.launch.py', {})
    names = {n.kwargs['name'] for n in nodes}
    assert {'eval_monitor', 'so101_recorder'} <= names, f'eval launch started {names}'
    assert declared['record']['default_value'] == 'true'


@pytest.mark.parametrize('arguments, expected', [
    ({'hardware': 'robot'}, 'real, emulated, sim'),
    ({'record': 'yes'}, 'true, false'),
    ({'policy': 'expert', 'hardware': 'real'}, 'needs hardware:=sim'),
    ({'policy': '/no/such/checkpoint'}, 'neither none, expert nor an existing'),
])
def test_invalid_launch_arguments_fail_with_the_valid_values(fake_launch, arguments, expected):
    with pytest.raises(bringup.BringupError, match=expected):
        run_launch_file(LAUNCH_DIR / 'so101.launch.py', arguments)


def test_so101_up_rejects_unknown_argument_names_and_malformed_assignments():
    with pytest.raises(bringup.BringupError, match='valid: hardware, policy'):
        bringup.parse_args(bringup.parse_assignments(['hardwre:=sim']))
    with pytest.raises(bringup.BringupError, match='name:=value'):
        bringup.parse_assignments(['hardware=sim'])


def test_missing_config_section_names_file_and_node(tmp_path):
    for src in (ROOT / 'config').glob('*.yaml'):
        (tmp_path / src.name).write_text(src.read_text())
    (tmp_path / 'eval.yaml').write_text('other_node:\n  ros__parameters: {}\n')
    args = bringup.parse_args({'config_dir': str(tmp_path)})
    with pytest.raises(bringup.BringupError, match=r'eval\.yaml has no "eval_monitor: '):
        bringup.check_config_files(bringup.plan(args))
