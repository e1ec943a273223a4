"""One guard for every callback: no message can crash a node.

Any process on the DDS domain can publish on any topic, so a subscription callback must
survive any message of its type: empty, ragged, NaN, huge, unknown names, broken JSON. Each
callback already rejects what it knows to be wrong (a trajectory's rules, a payload's fields);
``GuardedNode`` is the net under all of them: an exception that escapes a subscription or
service callback is caught (rclpy would otherwise let it end the executor, and so the node),
counted per topic, and logged at most once per ``GUARD_LOG_PERIOD_S`` per topic with the count
since the last line. Nodes put :meth:`GuardedNode.guard_values` into their diagnostics or
status so the counter is visible. A service whose callback fails answers with an empty
response (``success`` false and the error as ``message`` where the type has them).

A rejected message never reaches a command path: callbacks validate before they act, and the
guard only ever drops the message.
"""

from __future__ import annotations

import functools
import time
from collections import Counter

from rclpy.node import Node

#: At most one log line per topic per this many seconds (the count says what was skipped).
GUARD_LOG_PERIOD_S = 5.0


class GuardedNode(Node):
    """A ``rclpy.node.Node`` whose subscription and service callbacks cannot crash it."""

    def __init__(self, *args, **kwargs):
        self.rejected_messages: Counter[str] = Counter()  # topic or service -> failures
        self.last_rejection = ''
        self._guard_logged: dict[str, tuple[float, int]] = {}  # name -> (time, count then)
        super().__init__(*args, **kwargs)

    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        return super().create_subscription(msg_type, topic, self._guarded(topic, callback),
                                           qos_profile, **kwargs)

    def create_service(self, srv_type, srv_name, callback, **kwargs):
        guarded = self._guarded(srv_name, callback, on_error=lambda exc: _failed(srv_type, exc))
        return super().create_service(srv_type, srv_name, guarded, **kwargs)

    def guard_values(self) -> dict[str, int]:
        """``{'rejected_messages': total, 'rejected_messages <topic>': n, ...}``."""
        values = {'rejected_messages': sum(self.rejected_messages.values())}
        values.update({f'rejected_messages {name}': n
                       for name, n in sorted(self.rejected_messages.items())})
        return values

    def _guarded(self, name: str, callback, on_error=lambda exc: None):
        @functools.wraps(callback)
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as exc:  # noqa: BLE001 - the point: nothing escapes to rclpy
                self._reject(name, exc)
                return on_error(exc)
        return guarded

    def _reject(self, name: str, exc: Exception) -> None:
        self.rejected_messages[name] += 1
        count = self.rejected_messages[name]
        self.last_rejection = f'{name}: {type(exc).__name__}: {exc}'[:300]
        now = time.monotonic()
        last_time, last_count = self._guard_logged.get(name, (-GUARD_LOG_PERIOD_S, 0))
        if now - last_time >= GUARD_LOG_PERIOD_S:
            since = f' ({count - last_count - 1} more since the last line)' \
                if count - last_count > 1 else ''
            self.get_logger().error(f'rejected a message on {self.last_rejection}{since}; '
                                    f'{count} rejected on {name} so far')
            self._guard_logged[name] = (now, count)


def _failed(srv_type, exc: Exception):
    response = srv_type.Response()
    if hasattr(response, 'success'):
        response.success = False
    if hasattr(response, 'message'):
        response.message = f'refused: {type(exc).__name__}: {exc}'[:300]
    return response
