"""The emulator in a child process, driven over a ``multiprocessing`` pipe.

A spawned child (no fork of a threaded parent such as rclpy) keeps the emulator's timing
independent of the caller's GIL.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading

from so101_driver.feetech.emulator.server import EmulatorServer
from so101_driver.feetech.emulator.servo import EmulatorConfig


def _child_main(config: EmulatorConfig, link: str | None, conn) -> None:
    """Entry of the emulator's child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    server = EmulatorServer(config, link)
    try:
        conn.send(('ready', server.port))
        server.serve(conn)
    finally:
        server.stop()
        conn.close()


class EmulatorProcess:
    """The emulator in a child process (its timing does not share the caller's GIL).

    ``start()`` returns the port path; ``call(name, *args, **kwargs)`` runs an
    ``EmulatorServer`` control method there (``RPC_METHODS``) and returns its result or
    raises its exception; ``stop()`` ends it. Also a context manager.
    """

    def __init__(self, config: EmulatorConfig | None = None, link: str | None = None,
                 call_timeout_s: float = 10.0, **config_fields):
        if config is not None and config_fields:
            raise TypeError('pass either config or its fields, not both')
        self.config = config or EmulatorConfig(**config_fields)
        self.link = link
        self.call_timeout_s = call_timeout_s
        self.port: str | None = None
        self._process = None
        self._conn = None
        self._lock = threading.Lock()

    def start(self, timeout_s: float = 30.0) -> str:
        if self._process is not None:
            raise RuntimeError('emulator process already started')
        ctx = multiprocessing.get_context('spawn')  # no fork of a threaded parent (rclpy)
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(target=_child_main, args=(self.config, self.link, child_conn),
                                    name='so101-servo-emulator', daemon=True)
        self._process.start()
        child_conn.close()
        if not self._conn.poll(timeout_s):
            self.stop()
            raise TimeoutError(f'servo emulator process did not start within {timeout_s} s')
        _, self.port = self._conn.recv()
        return self.port

    def call(self, name: str, *args, **kwargs):
        if self._conn is None:
            raise RuntimeError('emulator process is not running; call start() first')
        with self._lock:
            self._conn.send((name, args, kwargs))
            if not self._conn.poll(self.call_timeout_s):
                raise TimeoutError(f'servo emulator did not answer {name!r} within '
                                   f'{self.call_timeout_s} s')
            status, value = self._conn.recv()
        if status == 'error':
            raise value
        return value

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            with self._lock:
                self._conn.send(None)
                if self._conn.poll(2.0):
                    self._conn.recv()
        except (OSError, EOFError, BrokenPipeError):
            pass
        self._process.join(timeout=3.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=2.0)
        self._conn.close()
        self._process = self._conn = None

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
