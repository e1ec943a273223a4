"""Bring up the SO-101 suite: arm (real, emulated or simulated), policy, monitor, recorder, RViz.

    ros2 launch so101_driver so101.launch.py hardware:=sim policy:=expert record:=true

Which nodes start, with which YAML files, comes from ``so101_driver.bringup.plan`` — the same plan
that ``so101 up`` runs on machines without ``ros2 launch`` — so the two cannot drift.
Invalid argument values fail at start with the list of valid ones.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, TimerAction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from so101_driver.bringup import plan as bringup
from so101_driver.joints import package_root, urdf_text


def _nodes(context):
    values = {name: LaunchConfiguration(name).perform(context) for name in bringup.ARGUMENTS}
    args = bringup.parse_args(values)
    specs = bringup.plan(args)
    bringup.check_config_files(specs)
    actions = [
        Node(package=spec.package, executable=spec.executable, name=spec.name,
             namespace=args.namespace or None, output='screen',
             parameters=[*(str(p) for p in spec.params_files), spec.overrides])
        for spec in specs
    ]
    # TF for RViz from /joint_states (robot_state_publisher exists on ROS installs)
    actions.append(Node(package='robot_state_publisher', executable='robot_state_publisher',
                        name='robot_state_publisher', namespace=args.namespace or None,
                        parameters=[{'robot_description': urdf_text(),
                                     'use_sim_time': args.use_sim_time}],
                        remappings=[('robot_description', 'robot_description_rsp')]))
    if args.rviz:
        actions.append(Node(package='rviz2', executable='rviz2', name='rviz2',
                            arguments=['-d', str(package_root() / 'config' / 'so101.rviz')],
                            parameters=[{'use_sim_time': args.use_sim_time}]))
    helpers = [ExecuteProcess(cmd=cmd, output='screen') for cmd in bringup.processes(args)]
    if helpers:  # the emulator's port must exist before the arm node opens it
        return [*helpers, TimerAction(period=2.0, actions=actions)]
    return actions


def generate_launch_description():
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=arg.default, description=arg.description,
                                **({'choices': list(arg.choices)} if arg.choices else {}))
          for name, arg in bringup.ARGUMENTS.items()),
        OpaqueFunction(function=_nodes),
    ])
