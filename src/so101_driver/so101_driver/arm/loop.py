"""The arm's control loop beside the node (no rclpy): its health over the last seconds and
the options a real-time loop in Python needs, each measured in ``bench/bench_bus.py``.

- :class:`LoopHealth`: tick starts, overruns and bus retries on the monotonic clock, read as
  rate and tick-period percentiles over a window (diagnostics WARN below
  ``WARN_RATE_FRACTION`` of the rate or on retries, ERROR below ``ERROR_RATE_FRACTION``).
- :func:`set_switch_interval`: a shorter GIL switch interval, so the control thread waits less
  for the GIL at every blocking call.
- :func:`set_realtime_priority`: SCHED_FIFO for the control thread where the OS allows it.
- :func:`freeze_gc` / :func:`collect_if_due`: Python's garbage collector kept out of the tick:
  automatic collection off, the start-up heap frozen, and the collections the interpreter
  would have run done in the idle time between ticks.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import deque

import numpy as np

WARN_RATE_FRACTION = 0.9  # of control_rate_hz: below it diagnostics say WARN
ERROR_RATE_FRACTION = 0.5  # ... and ERROR
RETRY_LOG_PERIOD_S = 5.0  # bus retries are logged at most this often


class LoopHealth:
    """What the control loop did over the last seconds: tick starts, overruns and bus
    retries on the monotonic clock (no rclpy: the control thread records; diagnostics,
    tests and benchmarks read copies)."""

    def __init__(self, rate_hz: float, history_s: float = 120.0):
        self.period = 1.0 / rate_hz
        self._lock = threading.Lock()
        self._starts: deque[float] = deque(maxlen=int(history_s * rate_hz) + 2)
        self._overruns: deque[float] = deque(maxlen=10_000)
        self._retries: deque[tuple[float, int]] = deque(maxlen=10_000)

    def record(self, start: float, late_s: float, retries: int) -> None:
        """One tick that started ``late_s`` after its deadline and needed ``retries``."""
        with self._lock:
            self._starts.append(start)
            if late_s > 0.5 * self.period:  # it missed its slot by more than half a period
                self._overruns.append(start)
            if retries:
                self._retries.append((start, retries))

    def tick_starts(self) -> np.ndarray:
        """All recorded tick starts (the last ``history_s``), oldest first."""
        with self._lock:
            return np.array(self._starts)

    def window(self, window_s: float, now: float | None = None) -> dict[str, float]:
        """Rate, tick period p50/p99/max (ms), overruns and retries in the last ``window_s``
        (or since the first tick, if that is more recent). A tick that is overdue now
        counts as a period, so a stalled loop shows at once."""
        now = time.monotonic() if now is None else now
        since = now - window_s
        with self._lock:
            all_starts = np.array(self._starts)
            overruns = sum(1 for t in self._overruns if t > since)
            retries = sum(n for t, n in self._retries if t > since)
        starts = all_starts[np.searchsorted(all_starts, since, side='right'):]
        first = all_starts[0] if len(all_starts) else now
        span = min(window_s, now - first) if len(starts) else window_s
        periods = np.diff(starts)
        if len(starts) and now - starts[-1] > 1.5 * self.period:
            periods = np.append(periods, now - starts[-1])
        if not len(periods):
            periods = np.array([now - first])
        return {
            'rate_hz': len(starts) / span if span > 0 else 0.0,
            'period_p50_ms': float(np.percentile(periods, 50) * 1e3),
            'period_p99_ms': float(np.percentile(periods, 99) * 1e3),
            'period_max_ms': float(periods.max() * 1e3),
            'ticks': len(starts),
            'overruns': overruns,
            'retries': retries,
            'window_s': float(span),
        }


def set_switch_interval(ms: float) -> bool:
    """Lower the interpreter's GIL switch interval to ``ms`` (never raise it): a thread that
    waits for the GIL waits this long before the holder is asked to let go, at every
    blocking call the control thread makes (sleep, select, write). True if changed."""
    if ms > 0 and ms / 1e3 < sys.getswitchinterval():
        sys.setswitchinterval(ms / 1e3)
        return True
    return False


def set_realtime_priority(priority: int, logger) -> str:
    """SCHED_FIFO ``priority`` for the calling (control) thread, or a clear WARN why not;
    returns what was achieved (for diagnostics)."""
    if not priority:
        return 'off'
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except AttributeError:
        logger.warning('realtime_priority: this OS has no SCHED_FIFO; the control thread runs '
                       'at normal priority')
        return 'unsupported'
    except OSError as err:
        logger.warning(
            f'realtime_priority {priority} refused by the OS ({err.strerror}); the control '
            'thread runs at normal priority. Allow it with an rtprio limit (e.g. '
            '"@realtime - rtprio 95" in /etc/security/limits.conf, the user in group '
            'realtime, log in again) or CAP_SYS_NICE')
        return f'refused ({err.strerror})'
    logger.info(f'control thread at SCHED_FIFO priority {priority}')
    return f'SCHED_FIFO {priority}'


def freeze_gc() -> bool:
    """Collect once, freeze what exists (modules, rclpy, numpy never need scanning again) and
    turn automatic collection off; True if this call turned it off."""
    if not gc.isenabled():
        return False
    gc.collect()
    gc.freeze()
    gc.disable()
    return True


def collect_if_due(slack_s: float, period_s: float) -> None:
    """The collection the interpreter would have run by now; an older generation only with
    half a period of slack left before the next tick (a young-generation pass takes well
    under a millisecond, a full one a few once the start is frozen)."""
    count, threshold = gc.get_count(), gc.get_threshold()
    if slack_s > 0.5 * period_s:
        for generation in (2, 1):
            if count[generation] >= threshold[generation] > 0:
                gc.collect(generation)
                return
    if count[0] >= threshold[0] > 0:
        gc.collect(0)
