"""Helpers shared by the tests: spinning nodes, waiting on conditions with deadlines."""

import threading
import time


class Spinner:
    """Spins nodes on a MultiThreadedExecutor in a background thread."""

    def __init__(self, context):
        from rclpy.executors import MultiThreadedExecutor

        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - context shut down under us at teardown
            pass

    def add(self, node):
        self.executor.add_node(node)
        return node

    def shutdown(self):
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)


def wait_for(predicate, timeout=10.0, interval=0.01, message='condition'):
    """Poll ``predicate`` until it returns truthy or ``timeout`` (monotonic) passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:.1f} s waiting for {message}')
        time.sleep(interval)
