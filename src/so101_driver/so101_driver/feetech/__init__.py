"""Feetech STS3215 servo bus: control table, bus access, LeRobot calibration, bus emulator.

No rclpy here; the arm and the leader nodes use it."""
