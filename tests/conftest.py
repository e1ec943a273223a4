"""Suite-wide test fixtures.

Every test process gets its own DDS domain, discovery limited to this host, so test runs
(and a developer's running nodes) never see each other's topics.
"""

import os
import random

import pytest

from tests.helpers import Spinner

os.environ['ROS_DOMAIN_ID'] = os.environ.get('SO101_TEST_DOMAIN_ID') or str(random.randint(1, 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')


@pytest.fixture
def ros_context():
    """A fresh rclpy context for one test, shut down afterwards (rclpy's own tests do this)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture
def spinner(ros_context):
    s = Spinner(ros_context)
    try:
        yield s
    finally:
        s.shutdown()


@pytest.fixture
def started(spinner):
    """Spin nodes made by the test; remove and destroy them afterwards (reverse order)."""
    nodes = []

    def start(node):
        nodes.append(node)
        return spinner.add(node)

    yield start
    for node in reversed(nodes):
        spinner.executor.remove_node(node)
        node.destroy_node()
