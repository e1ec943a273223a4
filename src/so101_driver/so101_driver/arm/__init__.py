"""The follower arm: trajectory execution and override arbitration (no rclpy), the
``so101_arm`` node, and the driver demo."""
