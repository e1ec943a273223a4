"""The emulated bus served on a pseudo-terminal, with its control surface (``call``).

A stable symlink points at the slave side of a raw pty, so the real ``scservo_sdk`` opens
it like a USB bus adapter; vanish/reappear re-point it at a fresh pty.
"""

from __future__ import annotations

import os
import select
import shutil
import tempfile
import threading
import time
import tty

from so101_driver.feetech.emulator.bus import ServoBus
from so101_driver.feetech.emulator.servo import EmulatorConfig

#: The motion model advances at least this often (seconds).
MOTION_PERIOD_S = 0.01


#: Methods ``EmulatorServer.call`` (and so ``EmulatorProcess.call``) may run.
RPC_METHODS = frozenset({
    'load_calibration', 'set_position', 'set_register', 'set_silent', 'set_corrupt',
    'set_error_bits', 'block_gripper', 'set_reply_delay_ms', 'set_speed', 'vanish',
    'reappear', 'reset', 'state',
})


class EmulatorServer:
    """A ``ServoBus`` served on a pty, at a stable symlink path that survives vanish/reappear.

    ``serve()`` runs the loop in the calling thread (what the child process and the CLI
    do); ``start()`` runs it in a daemon thread. Control methods are thread-safe.
    """

    def __init__(self, config: EmulatorConfig | None = None, link: str | None = None):
        self.config = config or EmulatorConfig()
        self.bus = ServoBus(self.config)
        self.reply_delay_s = self.config.reply_delay_ms / 1000.0
        self._tmpdir = None if link else tempfile.mkdtemp(prefix='so101-emu-')
        self.port = os.path.abspath(link) if link else os.path.join(self._tmpdir, 'ttySTS0')
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._outbox: list[tuple[float, bytes]] = []
        self._tasks: list[tuple] = []  # (function, done event) to run in the serving thread
        self.sent = 0  # status packets written to the pty
        self._running = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._open_pty()

    # -- pty -----------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a serial line
        os.set_blocking(master, False)
        # the emulator keeps a slave fd open so the pty survives the host closing its side
        self._master, self._slave = master, slave
        tmp = self.port + '.new'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.port)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if os.path.lexists(self.port):
            os.unlink(self.port)

    @property
    def present(self) -> bool:
        """False between ``vanish`` and ``reappear``."""
        return self._master is not None

    def vanish(self) -> None:
        """Close the pty (the host's reads and writes fail) and remove the port path."""
        loop = self._thread
        if loop is not None and loop.is_alive() and threading.current_thread() is not loop:
            # close in the serving thread: a select() in flight elsewhere would keep the
            # pty open for a moment after close(), and the host could still write to it
            done = threading.Event()
            with self._lock:
                self._tasks.append((self._vanish_now, done))
            self._wake()
            if not done.wait(5.0):
                raise TimeoutError('emulator loop did not close the port within 5 s')
            return
        self._vanish_now()

    def _vanish_now(self) -> None:
        with self._lock:
            if self._master is not None:
                self._close_pty()
            self._outbox.clear()
            self.bus.clear_input()

    def reappear(self) -> str:
        """Serve again at the same path (a fresh pty, as a re-plugged adapter)."""
        with self._lock:
            if self._master is None:
                self._open_pty()
                self._wake()
            return self.port

    # -- controls (also reachable through call) ------------------------------------
    def load_calibration(self, calibration, place_mid: bool = True) -> None:
        with self._lock:
            self.bus.load_calibration(calibration, place_mid)

    def set_position(self, sid: int, tick: int) -> None:
        with self._lock:
            self.bus.set_position(sid, tick)

    def set_register(self, sid: int, register, value: int) -> None:
        with self._lock:
            self.bus.set_register(sid, register, value)

    def set_silent(self, ids) -> None:
        with self._lock:
            self.bus.set_silent(ids)

    def set_corrupt(self, fraction: float | None = None, count: int | None = None) -> None:
        with self._lock:
            self.bus.set_corrupt(fraction, count)

    def set_error_bits(self, sid: int, bits) -> None:
        with self._lock:
            self.bus.set_error_bits(sid, bits)

    def block_gripper(self, tick: int | None) -> None:
        with self._lock:
            self.bus.block_gripper(tick)

    def set_reply_delay_ms(self, ms: float) -> None:
        if ms < 0:
            raise ValueError(f'reply delay must be >= 0 ms, got {ms}')
        with self._lock:
            self.reply_delay_s = ms / 1000.0

    def set_speed(self, ticks_per_s: float) -> None:
        if not ticks_per_s > 0:
            raise ValueError(f'speed must be > 0 ticks/s, got {ticks_per_s}')
        with self._lock:
            self.bus.config.speed = float(ticks_per_s)

    def reset(self) -> None:
        """Factory state and no faults (the start configuration), port present."""
        with self._lock:
            self.bus = ServoBus(self.config)
            self.reply_delay_s = self.config.reply_delay_ms / 1000.0
            self._outbox.clear()
            self.sent = 0
            self.reappear()

    def state(self) -> dict:
        with self._lock:
            self.bus.advance(time.monotonic())
            out = self.bus.state()
            out['port'] = self.port
            out['present'] = self.present
            out['sent'] = self.sent
            return out

    def call(self, name: str, *args, **kwargs):
        """Run control method ``name`` (the same surface as ``EmulatorProcess.call``)."""
        if name not in RPC_METHODS:
            raise ValueError(f'unknown emulator call {name!r}; expected one of '
                             f'{sorted(RPC_METHODS)}')
        return getattr(self, name)(*args, **kwargs)

    # -- serving -------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b'x')
        except OSError:
            pass

    def _step(self, readable: list) -> None:
        now = time.monotonic()
        with self._lock:
            replies = []
            if self._master is not None and self._master in readable:
                try:
                    data = os.read(self._master, 4096)
                except (BlockingIOError, InterruptedError):
                    data = b''
                except OSError:  # EIO: nobody holds the slave (cannot happen while we do)
                    data = b''
                if data:
                    replies += self.bus.feed(data, now)
            replies += self.bus.poll(now)
            due = now + self.reply_delay_s
            self._outbox.extend((due, r) for r in replies)
            self._flush(now)

    def _flush(self, now: float) -> None:
        while self._outbox and self._outbox[0][0] <= now:
            _, packet = self._outbox.pop(0)
            if self._master is None:
                continue
            try:
                os.write(self._master, packet)
                self.sent += 1
            except (BlockingIOError, OSError):
                pass  # the host is not reading: bytes are lost, as on a real line

    def _timeout(self) -> float:
        with self._lock:
            if self._outbox:
                return max(0.0, min(MOTION_PERIOD_S, self._outbox[0][0] - time.monotonic()))
        return MOTION_PERIOD_S

    def serve(self, conn=None, should_stop=None) -> None:
        """Serve until ``stop()``, ``should_stop()`` is true or ``conn`` (a
        ``multiprocessing`` connection carrying ``(name, args, kwargs)`` calls) closes."""
        self._running = True
        while self._running and not (should_stop and should_stop()):
            fds = [self._wake_r] + ([self._master] if self._master is not None else [])
            if conn is not None:
                fds.append(conn)
            try:
                readable, _, _ = select.select(fds, [], [], self._timeout())
            except (OSError, ValueError):  # a fd closed by vanish() under select
                continue
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            self._step(readable)
            with self._lock:
                tasks, self._tasks = self._tasks, []
            for task, done in tasks:
                task()
                done.set()
            if conn is not None and conn in readable:
                if not self._serve_call(conn):
                    break
        self._running = False

    def _serve_call(self, conn) -> bool:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return False
        if request is None:  # stop
            conn.send(('ok', None))
            return False
        name, args, kwargs = request
        try:
            result = ('ok', self.call(name, *args, **kwargs))
        except Exception as err:  # noqa: BLE001 - handed back to the caller
            result = ('error', err)
        conn.send(result)
        return True

    def start(self) -> str:
        """Serve in a daemon thread; returns the port path."""
        self._thread = threading.Thread(target=self.serve, name='so101-servo-emulator',
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._running = False
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            if self._master is not None:
                self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
