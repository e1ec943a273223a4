"""What a bring-up starts: one plan shared by ``launch/so101.launch.py`` and ``so101 up``.

ROS 2 installs start the suite with ``ros2 launch``; machines with rclpy from PyPI have no
``launch`` package, so the ``so101`` command starts the same nodes itself. Both read their
arguments and their node list from here, so they cannot drift: the launch file only wraps
each ``NodeSpec`` in a ``launch_ros.actions.Node``. No rclpy and no launch imports here.

Arguments use the launch vocabulary (``hardware:=sim policy:=expert``); an unknown argument
or an invalid value fails at once with the list of valid ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import yaml

from so101_driver.joints import package_root

DEFAULT_TASK = 'pick the red cube and place it in the gray bowl'
#: Where ``hardware:=emulated`` serves the emulated bus (a symlink to its pty).
EMULATOR_PORT = Path(tempfile.gettempdir()) / f'so101_emulator_{os.getuid()}'


class BringupError(ValueError):
    """Invalid bring-up arguments or configuration; the message lists what is valid."""


class Hardware(str, Enum):
    REAL = 'real'  # Feetech bus on a serial port + USB cameras
    EMULATED = 'emulated'  # STS3215 bus emulator on a pseudo-terminal, no cameras
    SIM = 'sim'  # MuJoCo cell: arm, cameras, cube, bowl; publishes /clock


class PolicyKind(str, Enum):
    NONE = 'none'  # nothing commands the arm (teleop only)
    EXPERT = 'expert'  # scripted expert of the simulation (sim only)
    CHECKPOINT = 'checkpoint'  # a LeRobot pretrained_model directory, run by pi05_policy


@dataclass(frozen=True)
class Argument:
    default: str
    description: str
    choices: tuple[str, ...] | None = None  # None: free text


#: Launch arguments, in the order ``ros2 launch ... --show-args`` lists them.
ARGUMENTS: dict[str, Argument] = {
    'hardware': Argument('sim', 'What the arm is: real (Feetech bus + USB cameras), emulated '
                         '(STS3215 bus emulator) or sim (MuJoCo cell)',
                         tuple(h.value for h in Hardware)),
    'policy': Argument('expert', "What commands the arm: 'none', 'expert' (scripted, sim "
                       "only) or the path of a LeRobot pretrained_model directory"),
    'task': Argument(DEFAULT_TASK, 'Language instruction given to the policy'),
    'record': Argument('false', 'Record the evaluation topics to a rosbag2 MCAP bag',
                       ('true', 'false')),
    'rviz': Argument('false', 'Start RViz with config/so101.rviz (ROS 2 installs only)',
                     ('true', 'false')),
    'monitor': Argument('true', 'Start the evaluation monitor', ('true', 'false')),
    'cameras': Argument('true', 'Start the USB camera nodes (hardware:=real only)',
                        ('true', 'false')),
    'leader': Argument('false', 'Start the leader-arm teleop node (config/so101_leader.yaml)',
                       ('true', 'false')),
    'view': Argument('false', 'Start the rerun view (config/view.yaml): a viewer window, or '
                     'the web viewer\'s URL on a headless machine', ('true', 'false')),
    'namespace': Argument('', 'Namespace pushed onto every node (empty: none)'),
    'config_dir': Argument('', 'Folder of the YAML parameter files (empty: the package\'s '
                           'config/)'),
}


@dataclass(frozen=True)
class BringupArgs:
    hardware: Hardware = Hardware.SIM
    policy: str = 'expert'  # 'none', 'expert' or a checkpoint directory
    task: str = DEFAULT_TASK
    record: bool = False
    rviz: bool = False
    monitor: bool = True
    cameras: bool = True
    leader: bool = False
    view: bool = False
    namespace: str = ''
    config_dir: Path = field(default_factory=lambda: default_config_dir())

    @property
    def policy_kind(self) -> PolicyKind:
        if self.policy in (PolicyKind.NONE.value, PolicyKind.EXPERT.value):
            return PolicyKind(self.policy)
        return PolicyKind.CHECKPOINT

    @property
    def use_sim_time(self) -> bool:
        return self.hardware is Hardware.SIM


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: ``ros2 run <package> <executable>`` with these parameters."""

    package: str
    executable: str
    name: str
    params_files: tuple[Path, ...] = ()
    overrides: dict = field(default_factory=dict)


def default_config_dir() -> Path:
    return package_root() / 'config'


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``['hardware:=sim', ...]`` -> ``{'hardware': 'sim'}``; rejects unknown names."""
    values = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep:
            raise BringupError(f'argument {item!r} is not of the form name:=value; valid '
                               f'names: {", ".join(ARGUMENTS)}')
        values[name] = value
    return values


def parse_args(values: Mapping[str, str]) -> BringupArgs:
    """Validate launch-argument strings (missing ones take their defaults)."""
    unknown = sorted(set(values) - set(ARGUMENTS))
    if unknown:
        raise BringupError(f'unknown argument(s) {unknown}; valid: {", ".join(ARGUMENTS)}')
    merged = {name: arg.default for name, arg in ARGUMENTS.items()} | dict(values)
    for name, arg in ARGUMENTS.items():
        if arg.choices is not None and merged[name] not in arg.choices:
            raise BringupError(f'{name}:={merged[name]!r} is not valid; choose one of '
                               f'{", ".join(arg.choices)}')
    args = BringupArgs(
        hardware=Hardware(merged['hardware']),
        policy=merged['policy'].strip() or 'none',
        task=merged['task'],
        record=merged['record'] == 'true',
        rviz=merged['rviz'] == 'true',
        monitor=merged['monitor'] == 'true',
        cameras=merged['cameras'] == 'true',
        leader=merged['leader'] == 'true',
        view=merged['view'] == 'true',
        namespace=merged['namespace'].strip('/'),
        config_dir=Path(merged['config_dir']).expanduser() if merged['config_dir']
        else default_config_dir(),
    )
    if args.policy_kind is PolicyKind.EXPERT and args.hardware is not Hardware.SIM:
        raise BringupError('policy:=expert needs hardware:=sim (the scripted expert reads the '
                           'simulator\'s ground truth); use a checkpoint directory or none')
    if args.policy_kind is PolicyKind.CHECKPOINT and not Path(args.policy).expanduser().is_dir():
        raise BringupError(f'policy:={args.policy!r} is neither none, expert nor an existing '
                           'checkpoint directory (a LeRobot pretrained_model folder)')
    if not args.config_dir.is_dir():
        raise BringupError(f'config_dir {args.config_dir} does not exist')
    return args


def plan(args: BringupArgs) -> list[NodeSpec]:
    """The nodes that ``args`` asks for, in start order."""
    cfg = args.config_dir
    sim_time = {'use_sim_time': True} if args.use_sim_time else {}
    nodes: list[NodeSpec] = []
    # monitor and recorder first: the sim's first episode mark must not precede them
    if args.monitor:
        nodes.append(NodeSpec('eval_monitor', 'eval_monitor', 'eval_monitor',
                              (cfg / 'eval.yaml',), dict(sim_time)))
    if args.record:
        nodes.append(NodeSpec('eval_monitor', 'so101_recorder', 'so101_recorder',
                              (cfg / 'eval.yaml',), dict(sim_time)))
    if args.view:  # before the arm too: the view shows the run from its first message
        nodes.append(NodeSpec('eval_monitor', 'so101_view', 'so101_view',
                              (cfg / 'view.yaml',), dict(sim_time)))
    if args.hardware is Hardware.SIM:
        nodes.append(NodeSpec('so101_driver', 'so101_sim', 'so101_sim',
                              (cfg / 'so101_sim.yaml',)))
    elif args.hardware is Hardware.REAL:
        nodes.append(NodeSpec('so101_driver', 'so101_arm', 'so101_arm',
                              (cfg / 'so101_arm.yaml',)))
    else:
        nodes.append(NodeSpec('so101_driver', 'so101_arm', 'so101_arm',
                              (cfg / 'so101_arm_emulated.yaml',),
                              {'port': str(EMULATOR_PORT),
                               'calibration_file': str(emulator_calibration(args))}))
    if args.hardware is Hardware.REAL and args.cameras:
        for camera in ('front', 'handeye'):
            nodes.append(NodeSpec('so101_driver', 'so101_camera', f'{camera}_camera',
                                  (cfg / 'so101_cameras.yaml',)))
    if args.leader:
        nodes.append(NodeSpec('so101_driver', 'so101_leader', 'so101_leader',
                              (cfg / 'so101_leader.yaml',), dict(sim_time)))
    if args.policy_kind is PolicyKind.EXPERT:
        nodes.append(NodeSpec('so101_driver', 'so101_sim_expert', 'so101_sim_expert',
                              (cfg / 'so101_sim.yaml',), dict(sim_time)))
    elif args.policy_kind is PolicyKind.CHECKPOINT:
        nodes.append(NodeSpec('pi05_policy', 'pi05_policy', 'pi05_policy',
                              (cfg / 'pi05_policy.yaml',),
                              {**sim_time, 'checkpoint': str(Path(args.policy).expanduser()),
                               'task': args.task}))
    return nodes


def emulator_calibration(args: BringupArgs) -> Path:
    return args.config_dir / 'calibration' / 'so101_demo.json'


def processes(args: BringupArgs) -> list[list[str]]:
    """Non-node processes to start before the nodes: the bus emulator for hardware:=emulated."""
    if args.hardware is not Hardware.EMULATED:
        return []
    return [['so101-servo-emulator', '--link', str(EMULATOR_PORT),
             '--calibration', str(emulator_calibration(args))]]


def rviz_config() -> Path:
    """The RViz layout ``rviz:=true`` opens (the package's, not ``config_dir``'s: it holds
    no parameters)."""
    return package_root() / 'config' / 'so101.rviz'


def rviz_topics(path: Path) -> list[str]:
    """Every topic an RViz layout subscribes to: the ``Value`` of each ``Topic`` or
    ``Description Topic`` property, in file order."""
    found: list[str] = []

    def walk(item) -> None:
        if isinstance(item, dict):
            for key, value in item.items():
                if key.endswith('Topic') and isinstance(value, dict) and value.get('Value'):
                    found.append(str(value['Value']))
                else:
                    walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(yaml.safe_load(Path(path).read_text()))
    return found


def rviz_remappings(namespace: str, path: Path) -> list[tuple[str, str]]:
    """Remap rules that point an RViz layout's absolute topics into ``namespace``.

    RViz stores topics as absolute names, which a pushed namespace does not move; without
    these, ``namespace:=X rviz:=true`` would show nothing. ``/tf`` and ``/clock`` are global
    (robot_state_publisher and the sim publish them there) and are not in the layout.
    """
    namespace = namespace.strip('/')
    if not namespace:
        return []
    return [(topic, f'/{namespace}{topic}') for topic in dict.fromkeys(rviz_topics(path))
            if topic.startswith('/')]


def check_config_files(nodes: Iterable[NodeSpec]) -> dict[str, dict]:
    """Load every node's YAML; missing files or sections raise with file and node named.

    Returns node name -> the merged ``ros__parameters`` it will get from its files.
    """
    merged: dict[str, dict] = {}
    for node in nodes:
        params: dict = {}
        for path in node.params_files:
            if not path.is_file():
                raise BringupError(f'parameter file {path} for node {node.name} does not exist')
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise BringupError(f'parameter file {path} is not valid YAML: {err}') from err
            section = data.get(node.name) if isinstance(data, dict) else None
            if not isinstance(section, dict) or not isinstance(
                    section.get('ros__parameters'), dict):
                raise BringupError(f'parameter file {path} has no "{node.name}: '
                                   'ros__parameters:" section')
            params.update(section['ros__parameters'])
        merged[node.name] = params | node.overrides
    return merged


def write_params_file(spec: NodeSpec, namespace: str, params: Mapping[str, object],
                      folder: Path) -> Path:
    """One ``--params-file`` holding all that ``spec``'s node gets (``params``: its YAML
    section merged with its overrides, from ``check_config_files``), keyed by the node's
    fully qualified name; returns its path.

    The suite's YAML files key each section by the bare node name, which rcl reads as
    ``/name``: under ``namespace:=X`` the node is ``/X/name`` and every value of the file
    would be ignored without a word. A file also keeps each value's type, where launch_ros
    reads the strings of a parameter dict as YAML (a task ``yes`` would become a bool).
    """
    fqn = f'/{namespace.strip("/")}/{spec.name}' if namespace.strip('/') else f'/{spec.name}'
    path = Path(folder) / f'{spec.name}.params.yaml'
    sources = ''.join(f'# {p}\n' for p in spec.params_files)
    path.write_text(f'# {spec.name}: merged from\n{sources}# and the bring-up\'s overrides\n'
                    + yaml.safe_dump({fqn: {'ros__parameters': dict(params)}}, sort_keys=False))
    return path


def unknown_keys(given: Mapping[str, object], declared: Iterable[str]) -> list[str]:
    """Parameter names in ``given`` that the node did not declare."""
    declared = set(declared)
    return sorted(k for k in given if k not in declared and k != 'use_sim_time')
