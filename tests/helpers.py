"""Helpers shared by the tests: spinning nodes, waiting on conditions with deadlines."""

import threading
import traceback
import time


class _NodeExecutors:
    """``executor``-like facade over one executor per node (see ``Spinner``)."""

    def __init__(self, spinner):
        self._spinner = spinner

    @property
    def context(self):
        return self._spinner.context

    def add_node(self, node):
        return self._spinner.add(node)

    def remove_node(self, node):
        self._spinner.remove(node)


class Spinner:
    """Spins each node on its own SingleThreadedExecutor in its own thread, as if each were
    its own process.

    One rclpy MultiThreadedExecutor shared by a busy node (a 100 Hz driver, a renderer) and
    a test probe was measured here delivering almost none of a 100 Hz stream to the probe;
    separate executors keep every node's callbacks independent of the others'.
    """

    def __init__(self, context):
        self.context = context
        self.executor = _NodeExecutors(self)
        self._lock = threading.Lock()
        self._spinning = {}  # node -> (executor, thread)

    def add(self, node):
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(executor,), daemon=True,
                                  name=f'spin-{node.get_name()}')
        with self._lock:
            self._spinning[node] = (executor, thread)
        thread.start()
        return node

    @staticmethod
    def _spin(executor):
        try:
            executor.spin()
        except Exception:  # noqa: BLE001 - printed: a callback's exception ends its executor
            if executor.context.ok():
                traceback.print_exc()

    def remove(self, node):
        """Stop spinning ``node`` (its executor shuts down; the node itself stays)."""
        with self._lock:
            entry = self._spinning.pop(node, None)
        if entry is not None:
            executor, thread = entry
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=5.0)

    def shutdown(self):
        with self._lock:
            nodes = list(self._spinning)
        for node in nodes:
            self.remove(node)


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
