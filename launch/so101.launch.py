"""Bring up the SO-101 suite: arm (real, emulated or simulated), policy, monitor, recorder, RViz.

    ros2 launch so101_driver so101.launch.py hardware:=sim policy:=expert record:=true

Which nodes start, with which YAML files, comes from ``so101_driver.bringup.plan`` — the same plan
that ``so101 up`` runs on machines without ``ros2 launch`` — so the two cannot drift.
Invalid argument values fail at start with the list of valid ones. Every executable is found
as ``ros2 run`` finds it (``lib/<package>/``); with ``hardware:=emulated`` the arm starts once
the bus emulator says its port exists.
"""

import tempfile
from pathlib import Path

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, OpaqueFunction,
                            RegisterEventHandler, SetEnvironmentVariable)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.logging import launch_config
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import ExecutableInPackage

from so101_driver.bringup import plan as bringup
from so101_driver.joints import urdf_text

#: What ``so101-servo-emulator`` prints once its port exists (feetech/emulator/cli.py).
EMULATOR_READY = b': port '


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in bringup.ARGUMENTS}
    args = bringup.parse_args(values)
    specs = bringup.plan(args)
    given = bringup.check_config_files(specs)
    namespace = args.namespace or None
    # one params file per node, keyed by its full name: the YAML files' bare node names
    # would not reach a namespaced node (see bringup.plan.write_params_file). They go to this
    # launch's log folder: kept with the logs, a record of what each node was given.
    folder = Path(tempfile.mkdtemp(prefix='so101_params_', dir=launch_config.log_dir))
    nodes = {
        spec.name: Node(package=spec.package, executable=spec.executable, name=spec.name,
                        namespace=namespace, output='screen',
                        parameters=[str(bringup.write_params_file(
                            spec, args.namespace, given[spec.name], folder))])
        for spec in specs
    }
    # TF for RViz from /joint_states (robot_state_publisher exists on ROS installs)
    extra = [Node(package='robot_state_publisher', executable='robot_state_publisher',
                  name='robot_state_publisher', namespace=namespace,
                  parameters=[{'robot_description': ParameterValue(urdf_text(), value_type=str),
                               'use_sim_time': args.use_sim_time}],
                  remappings=[('robot_description', 'robot_description_rsp')])]
    if args.rviz:  # the layout's topics are absolute: remapped into the namespace
        rviz_config = bringup.rviz_config()
        extra.append(Node(package='rviz2', executable='rviz2', name='rviz2', namespace=namespace,
                          arguments=['-d', str(rviz_config)],
                          parameters=[{'use_sim_time': args.use_sim_time}],
                          remappings=bringup.rviz_remappings(args.namespace, rviz_config)))
    # a sim or emulator session stays on this host unless the user exported a range
    scope = ([SetEnvironmentVariable('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')]
             if args.hardware in (bringup.Hardware.SIM, bringup.Hardware.EMULATED)
             and 'ROS_AUTOMATIC_DISCOVERY_RANGE' not in context.environment else [])
    commands = bringup.processes(args)
    if not commands:
        return [*scope, *nodes.values(), *extra]
    # hardware:=emulated: the arm opens the emulator's port, so it starts once the emulator
    # says the port exists; the emulator is found as ros2 run finds it (lib/so101_driver/).
    emulator = ExecuteProcess(cmd=[ExecutableInPackage(commands[0][0], 'so101_driver'),
                                   *commands[0][1:]], output='screen', name=commands[0][0])
    arm = nodes.pop('so101_arm')
    return [*scope, *_start_when_ready(emulator, [arm]), emulator, *nodes.values(), *extra]


def _start_when_ready(emulator, actions):
    """Event handlers that start ``actions`` on the emulator's port line, or end the launch
    (exit status 1, with the reason) if the emulator exits before serving its port."""
    state = {'buffer': b'', 'ready': False}

    def on_stdout(event):
        if state['ready']:
            return None
        state['buffer'] = (state['buffer'] + event.text)[-4096:]  # output comes in chunks
        if EMULATOR_READY not in state['buffer']:
            return None
        state['ready'] = True
        return actions

    def on_exit(event, context):
        if state['ready'] or context.is_shutdown:
            return None
        # raised, the launch logs it, shuts everything down and exits non-zero
        raise bringup.BringupError(f'{event.process_name} exited with code {event.returncode} '
                                   'before serving its port; so101_arm cannot start')

    return [RegisterEventHandler(OnProcessIO(target_action=emulator, on_stdout=on_stdout)),
            RegisterEventHandler(OnProcessExit(target_action=emulator, on_exit=on_exit))]


def generate_launch_description():
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=arg.default, description=arg.description,
                                **({'choices': list(arg.choices)} if arg.choices else {}))
          for name, arg in bringup.ARGUMENTS.items()),
        OpaqueFunction(function=_nodes),
    ])
