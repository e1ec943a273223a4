"""Teleoperation: the leader arm mapped onto the follower (no rclpy) and the ``so101_leader``
node."""
