"""Run a bag's close to its end even when a signal handler raises in the main thread.

Python runs signal handlers in the main thread only, between two bytecodes, and the default
SIGINT handler raises ``KeyboardInterrupt`` there (a SIGTERM handler may raise
``SystemExit``): a second Ctrl-C while a bag closes would stop the close wherever it is, with
the MCAP footer half written or metadata.yaml still saying 0 messages. Blocking the signals
is no cure in a threaded process (the kernel delivers them to another thread and Python still
runs the handler in the main thread), and replacing the handlers would also replace rclpy's
own C handler. Other threads, though, are never interrupted: :func:`run_to_completion` runs
the work in one and has the main thread wait, holding back what a handler raises until the
work is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    'run_to_completion',
]

T = TypeVar('T')


def run_to_completion(work: Callable[[], T], name: str = 'run_to_completion') -> T:
    """Return ``work()``, run so that no signal handler can cut it short.

    Off the main thread ``work`` simply runs (nothing interrupts other threads). On it,
    ``work`` runs in a helper thread (not a daemon, so even an exiting interpreter waits for
    it) while the main thread waits; a ``KeyboardInterrupt`` or
    ``SystemExit`` raised by a handler meanwhile is re-raised once ``work`` has finished, so
    Ctrl-C still ends the program, after the work. An exception of ``work`` itself is raised
    (the held one is chained to it as its context).
    """
    if threading.current_thread() is not threading.main_thread():
        return work()
    outcome: dict[str, object] = {}
    done = threading.Event()
    claim = threading.Lock()

    def run() -> None:
        if not claim.acquire(blocking=False):
            return  # a second helper, started after an interrupted start: one is at work
        try:
            outcome['value'] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome['error'] = exc
        finally:
            done.set()

    held: BaseException | None = None
    started = False
    while True:
        try:
            if not started:
                # A handler may raise inside start(), before or after the thread exists; then
                # another is started, and the claim lets only one of them do the work.
                threading.Thread(target=run, name=name).start()
                started = True
            done.wait()
            break
        except (KeyboardInterrupt, SystemExit) as exc:  # raised by a signal handler
            if held is None:
                held = exc
    if 'error' in outcome:
        error = outcome['error']
        assert isinstance(error, BaseException)
        if held is not None and error.__context__ is None:
            error.__context__ = held
        raise error
    if held is not None:
        raise held
    return outcome['value']  # type: ignore[return-value]
