"""The bring-up plan checked for every argument combination, without a ROS install.

``tests/test_real_launch.py`` runs the launch files with the real launch system for a few
combinations users run (and skips where ``../shared/ros2_launch`` is absent). What stays here
is cheap enough for all combinations and needs neither ``launch`` nor a colcon build: every
executable the plan starts is a console script of its package (what ``ros2 run`` finds after
``colcon build``), every parameter file exists with a section for its node, the per-node
params file reaches a namespaced node with its types, and invalid arguments name the valid
ones.
"""

from __future__ import annotations

import importlib.metadata
import itertools
from pathlib import Path

import pytest

from so101_driver.bringup import plan as bringup

ROOT = Path(__file__).resolve().parent.parent


def console_scripts(package: str) -> set[str]:
    return {ep.name for ep in importlib.metadata.distribution(package).entry_points
            if ep.group == 'console_scripts'}


COMBINATIONS = [
    dict(zip(('hardware', 'policy', 'record', 'monitor', 'cameras', 'leader'), combo))
    for combo in itertools.product(('real', 'emulated', 'sim'), ('none', 'expert'),
                                   ('true', 'false'), ('true', 'false'), ('true', 'false'),
                                   ('true', 'false'))
    if not (combo[1] == 'expert' and combo[0] != 'sim')
] + [  # a checkpoint directory (any existing folder will do for the plan)
    {'hardware': hw, 'policy': str(ROOT), 'record': 'true', 'monitor': 'true',
     'cameras': 'true', 'leader': 'false'} for hw in ('real', 'emulated', 'sim')
]


@pytest.mark.parametrize('arguments', COMBINATIONS,
                         ids=lambda a: '-'.join(f'{k}={v}' for k, v in a.items()))
def test_plan_starts_console_scripts_with_existing_files(arguments):
    args = bringup.parse_args(arguments)
    plan = bringup.plan(args)
    for spec in plan:
        assert spec.executable in console_scripts(spec.package), \
            f'{spec.name}: {spec.executable} is not a console script of {spec.package}'
    for cmd in bringup.processes(args):
        assert cmd[0] in console_scripts('so101_driver'), f'{cmd[0]} is not a console script'
    given = bringup.check_config_files(plan)  # raises naming a missing file or section
    assert set(given) == {s.name for s in plan}
    if arguments['hardware'] == 'emulated':
        arm = next(s for s in plan if s.name == 'so101_arm')
        assert arm.overrides['port'] == str(bringup.EMULATOR_PORT)
        assert Path(arm.overrides['calibration_file']).is_file()
    if arguments['policy'] not in ('none', 'expert'):
        policy = next(s for s in plan if s.name == 'pi05_policy')
        assert policy.overrides['checkpoint'] == arguments['policy']
        assert policy.overrides['task'] == bringup.DEFAULT_TASK


@pytest.mark.parametrize('namespace', ['', 'cell_a'])
def test_params_file_reaches_the_node_in_a_namespace_with_its_types(namespace, tmp_path):
    """rcl reads a YAML section ``name:`` as ``/name``: the suite's files alone would not
    reach ``/cell_a/name``. The per-node file the launch passes is keyed by the full name,
    and a task that looks like YAML (``yes``) stays a string."""
    import rclpy

    args = bringup.parse_args({'namespace': namespace, 'task': 'yes',
                               'policy': str(ROOT), 'hardware': 'sim'})
    spec = next(s for s in bringup.plan(args) if s.name == 'pi05_policy')
    given = bringup.check_config_files([spec])[spec.name]
    path = bringup.write_params_file(spec, args.namespace, given, tmp_path)
    context = rclpy.Context()
    rclpy.init(context=context, args=['test', '--ros-args', '-r', f'__ns:=/{namespace}',
                                              '--params-file', str(path)])
    try:
        node = rclpy.create_node(spec.name, context=context,
                                 automatically_declare_parameters_from_overrides=True)
        held = {name: p.value for name, p in node.get_parameters_by_prefix('').items()}
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert held['task'] == 'yes'
    assert held['checkpoint'] == str(ROOT)
    assert held['calibration_file'] == given['calibration_file'] != ''
    assert list(held['cameras']) == list(given['cameras'])


@pytest.mark.parametrize('arguments, expected', [
    ({'hardware': 'robot'}, 'real, emulated, sim'),
    ({'record': 'yes'}, 'true, false'),
    ({'policy': 'expert', 'hardware': 'real'}, 'needs hardware:=sim'),
    ({'policy': '/no/such/checkpoint'}, 'neither none, expert nor an existing'),
])
def test_invalid_arguments_fail_with_the_valid_values(arguments, expected):
    with pytest.raises(bringup.BringupError, match=expected):
        bringup.parse_args(arguments)


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
