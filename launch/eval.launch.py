"""An evaluation run: ``so101.launch.py`` with the monitor on and recording on by default.

    ros2 launch so101_driver eval.launch.py hardware:=real policy:=/path/to/pretrained_model

Every argument of so101.launch.py applies (see ``ros2 launch so101_driver so101.launch.py
--show-args``); episodes are started and ended with the operator console (``so101-console``)
or the monitor's services, and the report lands in the monitor's ``run_dir``.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument('record', default_value='true', choices=['true', 'false'],
                              description='Record the evaluation topics to a rosbag2 MCAP bag'),
        DeclareLaunchArgument('monitor', default_value='true', choices=['true', 'false'],
                              description='Start the evaluation monitor'),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(
            str(Path(__file__).with_name('so101.launch.py')))),
    ])
