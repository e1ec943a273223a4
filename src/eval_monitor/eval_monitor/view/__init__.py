"""``so101 view``: the suite in rerun, live (the ``so101_view`` node) and from bags.

LeRobot users know rerun from ``lerobot-record --display_data=true``; this shows the same
viewer for the ROS side: the arm in 3D from its URDF and meshes moved by ``joint_states``,
each commanded chunk as the gripper tip's future path with its splice point, both cameras,
the gripper's angle and effort with the evaluation events and override spans, the sim's
cube and the policy's latency.

- :mod:`~eval_monitor.view.kinematics`: URDF forward kinematics (tip paths), the URDF copy
  rerun's loader reads;
- :mod:`~eval_monitor.view.scene`: messages -> rerun entities, shared by live and replay;
- :mod:`~eval_monitor.view.style`: colours, series styles, the layout;
- :mod:`~eval_monitor.view.viewer`: where the recording goes (spawn, web, connect, file);
- :mod:`~eval_monitor.view.replay`: a bag through the scene;
- :mod:`~eval_monitor.view.view_node`: the rclpy node ``so101_view``;
- :mod:`~eval_monitor.view.cli`: ``so101-view`` (replay with a bag, live without).

Only ``view_node`` imports rclpy; rerun is imported by the modules that log (not by the
rest of ``eval_monitor``, which runs without it).
"""
