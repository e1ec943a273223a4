"""Cameras: OpenCV capture and calibration (no rclpy) and the ``so101_camera`` node."""
