"""``so101-console``: the operator's keyboard during an evaluation.

Single keys on a terminal, or one command per line when stdin is not a terminal (a pipe, a
script, a test); the same commands either way (``h`` lists them):

====  =================  ===============================================================
key   line command       does
====  =================  ===============================================================
s     start              ``eval/start_episode`` (std_srvs/Trigger)
y     success            ``eval/end_episode`` with data = true (std_srvs/SetBool)
n     fail / failure     ``eval/end_episode`` with data = false
o     override [on|off]  toggle (or set) the operator override, see below
r     report / save      ``eval/save_report`` (std_srvs/Trigger)
p     status             live counters from ``eval/status`` and the last ``eval/events``
h     help               this table
q     quit               leave (also Ctrl-C, Ctrl-D / end of input)
====  =================  ===============================================================

Override: when the leader node's ``so101_leader/set_override`` service (``leader_service``)
answers, the console calls it, so the leader stays the one publisher of ``teleop/override``
and its trajectories start with the override. Without a leader, the console publishes
``teleop/override`` itself (std_msgs/Bool, transient-local, re-sent every second while it
owns it). The current value shown is whatever ``teleop/override`` carries, whoever sent it.

Episodes: the monitor's services are the normal path (the monitor publishes the mark on
``eval/episode``). If the monitor does not answer within ``service_wait_s``, the console
publishes the ``EpisodeMark`` (source ``console``) on ``eval/episode`` itself, so a recording
still carries it, and says so.

``use_sim_time`` is honoured: marks are stamped with the node clock. The node spins in a
background executor thread; the main thread runs the keyboard/line loop and waits on service
futures, never inside a callback.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import TextIO

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.utilities import remove_ros_args
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
from so101_driver.guard import GuardedNode
from so101_driver.qos import COMMAND, EPISODE_MARKS, LATCHED, STREAM_SUB
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger


class Command(str, Enum):
    START = 'start'
    SUCCESS = 'success'
    FAILURE = 'failure'
    OVERRIDE = 'override'
    REPORT = 'report'
    STATUS = 'status'
    HELP = 'help'
    QUIT = 'quit'


#: Key or word -> command (line mode accepts both; tty mode reads single keys).
ALIASES: dict[str, Command] = {
    's': Command.START, 'start': Command.START,
    'y': Command.SUCCESS, 'success': Command.SUCCESS,
    'n': Command.FAILURE, 'fail': Command.FAILURE, 'failure': Command.FAILURE,
    'o': Command.OVERRIDE, 'override': Command.OVERRIDE,
    'r': Command.REPORT, 'report': Command.REPORT, 'save': Command.REPORT,
    'p': Command.STATUS, 'status': Command.STATUS,
    'h': Command.HELP, '?': Command.HELP, 'help': Command.HELP,
    'q': Command.QUIT, 'quit': Command.QUIT, 'exit': Command.QUIT,
}

HELP = ('keys: s start episode | y end: success | n end: failure | o toggle override '
        '(line mode: "override on|off") | r save report | p status | h help | q quit')

#: eval/status keys shown first, in this order; every other key follows.
PREFERRED_KEYS = ('episodes', 'episode_success_rate', 'grasp_successes', 'grasp_attempts',
                  'grasp_success_rate', 'drops', 'interventions', 'interventions_per_episode',
                  'episode_open', 'current_episode')


def parse_command(text: str) -> tuple[Command | None, str]:
    """(command, argument) of one typed line or key; (None, text) if unknown."""
    words = text.strip().split(maxsplit=1)
    if not words:
        return None, ''
    command = ALIASES.get(words[0].lower())
    return command, (words[1].strip().lower() if len(words) > 1 else '')


@dataclass
class ConsoleView:
    """What the console shows, fed from the subscriptions (no rclpy)."""

    max_events: int = 5  # last eval/events kept for display
    counters: dict[str, str] = field(default_factory=dict)  # eval/status key -> value
    status_message: str = ''  # eval/status summary line
    events: deque = field(default_factory=deque)  # formatted last events
    override: bool | None = None  # last teleop/override seen (None: none yet)

    def __post_init__(self):
        if self.max_events < 1:
            raise ValueError(f'max_events must be >= 1, got {self.max_events}')
        self.events = deque(self.events, maxlen=self.max_events)

    def counters_line(self) -> str:
        if not self.counters:
            return 'counters: none yet (is eval_monitor running?)'
        keys = [k for k in PREFERRED_KEYS if k in self.counters]
        keys += sorted(k for k in self.counters if k not in keys)
        shown = ' '.join(f'{k}={self.counters[k]}' for k in keys if self.counters[k] != '')
        return f'counters: {shown}' + (f' [{self.status_message}]' if self.status_message
                                       else '')

    def override_line(self) -> str:
        value = 'unknown' if self.override is None else 'ON' if self.override else 'off'
        return f'override: {value}'

    def status_lines(self) -> list[str]:
        lines = [self.counters_line(), self.override_line()]
        lines += ['last events:'] + [f'  {e}' for e in self.events] if self.events else \
            ['last events: none']
        return lines

    @staticmethod
    def format_event(text: str) -> str:
        """One eval/events JSON object as a short line (raw text if it is not JSON)."""
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            return text[:160]
        if not isinstance(event, dict):
            return text[:160]
        kind = event.get('kind', event.get('event', '?'))
        parts = [str(kind)]
        if event.get('episode') is not None:
            parts.append(f'episode {event["episode"]}')
        if isinstance(event.get('stamp'), (int, float)):
            parts.append(f't={event["stamp"]:.2f}')
        data = event.get('data')
        if isinstance(data, dict) and data:
            parts.append(' '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                                  for k, v in list(data.items())[:4]))
        return ' '.join(parts)


class ConsoleNode(GuardedNode):
    """ROS side of the console: service clients, the override publisher, the live view."""

    def __init__(self, out: TextIO | None = None, **kwargs):
        super().__init__('so101_console', **kwargs)

        def declare(name, default, description, **ranges):
            return self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True, **ranges)).value

        self.service_wait_s = declare(
            'service_wait_s', 2.0, 'How long to wait for a service to appear before falling '
            'back (episode marks published by the console, override published by the console)',
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=60.0, step=0.0)])
        self.service_timeout_s = declare(
            'service_timeout_s', 10.0, 'How long to wait for a service answer (s)',
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=600.0, step=0.0)])
        self.leader_service = declare('leader_service', 'so101_leader/set_override',
                                      'The leader node\'s override service (std_srvs/SetBool)')
        self.live_updates = declare('live_updates', True, 'Print each new event and each '
                                    'change of the counters as they arrive')
        max_events = declare('max_events', 5, 'Last eval/events kept for display',
                             integer_range=[IntegerRange(from_value=1, to_value=100, step=1)])
        self.out = out or sys.stdout
        self._out_lock = threading.Lock()
        self._lock = threading.Lock()
        self.view = ConsoleView(max_events=max_events)
        self._own_override: bool | None = None  # value this console publishes, if it does
        self._last_counters_line = ''

        self.start_client = self.create_client(Trigger, 'eval/start_episode')
        self.end_client = self.create_client(SetBool, 'eval/end_episode')
        self.save_client = self.create_client(Trigger, 'eval/save_report')
        self.override_client = self.create_client(SetBool, self.leader_service)
        self.pub_override = self.create_publisher(Bool, 'teleop/override', LATCHED)
        self.pub_episode = self.create_publisher(String, 'eval/episode', EPISODE_MARKS)
        self.create_subscription(DiagnosticArray, 'eval/status', self._on_status, STREAM_SUB)
        self.create_subscription(String, 'eval/events', self._on_event, COMMAND)
        self.create_subscription(Bool, 'teleop/override', self._on_override, LATCHED)
        self.create_timer(1.0, self._resend_override)

    # -- output ----------------------------------------------------------------------
    def say(self, *lines: str) -> None:
        with self._out_lock:
            for line in lines:
                self.out.write(line + '\n')
            self.out.flush()

    # -- subscriptions -------------------------------------------------------------------
    def _on_status(self, msg: DiagnosticArray) -> None:
        if not msg.status:
            return
        status = msg.status[0]
        with self._lock:
            self.view.counters = {kv.key: kv.value for kv in status.values}
            self.view.status_message = status.message
            line = self.view.counters_line()
            changed = line != self._last_counters_line
            self._last_counters_line = line
        if changed and self.live_updates:
            self.say(line)

    def _on_event(self, msg: String) -> None:
        text = ConsoleView.format_event(msg.data)
        with self._lock:
            self.view.events.append(text)
        if self.live_updates:
            self.say(f'event: {text}')

    def _on_override(self, msg: Bool) -> None:
        with self._lock:
            changed = self.view.override is not None and self.view.override != msg.data
            self.view.override = bool(msg.data)
        if changed and self.live_updates:
            self.say(self.view.override_line())

    def _resend_override(self) -> None:
        if self._own_override is not None:
            self.pub_override.publish(Bool(data=self._own_override))

    # -- commands (called from the UI thread, never from a callback) ----------------------
    def _call(self, client, request, wait_s: float | None = None) -> tuple[bool | None, str]:
        """(success, message) of a service call; (None, why) if it is not there or silent."""
        wait_s = self.service_wait_s if wait_s is None else wait_s
        if not (client.service_is_ready() or wait_s > 0
                and client.wait_for_service(timeout_sec=wait_s)):
            return None, f'{client.service_name} is not available'
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.service_timeout_s):
            client.remove_pending_request(future)
            return None, (f'no answer from {client.service_name} within '
                          f'{self.service_timeout_s:g} s')
        result = future.result()
        if result is None:
            return None, f'{client.service_name} failed: {future.exception()}'
        return bool(result.success), result.message

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _fallback_mark(self, mark: EpisodeMark, why: str) -> str:
        self.pub_episode.publish(String(data=mark.to_json()))
        return f'{why}; published the {mark.event.value} mark on eval/episode (source console)'

    def start_episode(self) -> str:
        ok, message = self._call(self.start_client, Trigger.Request())
        if ok is None:
            return self._fallback_mark(
                EpisodeMark(EpisodeEvent.START, stamp=self._now_s(), source='console'), message)
        return f'start episode: {"ok" if ok else "REFUSED"}: {message}'

    def end_episode(self, success: bool) -> str:
        what = 'success' if success else 'failure'
        ok, message = self._call(self.end_client, SetBool.Request(data=success))
        if ok is None:
            return self._fallback_mark(EpisodeMark(EpisodeEvent.END, stamp=self._now_s(),
                                                   success=success, source='console'), message)
        return f'end episode ({what}): {"ok" if ok else "REFUSED"}: {message}'

    def save_report(self) -> str:
        ok, message = self._call(self.save_client, Trigger.Request())
        if ok is None:
            return f'save report: {message}'
        return f'save report: {"ok" if ok else "FAILED"}: {message}'

    def set_override(self, value: bool | None = None) -> str:
        """Set the override (toggle it when ``value`` is None)."""
        with self._lock:
            current = self.view.override
        if value is None:
            value = not current
        # The leader owns the override whenever it is there; the console only stands in. Once
        # standing in, a leader is not waited for again (a key press must answer at once).
        wait = self.service_wait_s if self._own_override is None else 0.0
        ok, message = self._call(self.override_client, SetBool.Request(data=value), wait_s=wait)
        if ok is not None:
            self._own_override = None  # the leader publishes (and re-sends) from now on
            return f'override {"ON" if value else "off"} via {self.leader_service}: ' \
                   f'{"ok" if ok else "REFUSED"}: {message}'
        why = message
        self._own_override = value
        self.pub_override.publish(Bool(data=value))
        return f'override {"ON" if value else "off"}: published on teleop/override ({why})'

    def status(self) -> list[str]:
        with self._lock:
            return self.view.status_lines()

    def execute(self, text: str) -> bool:
        """Run one command line or key; False when the console should quit."""
        command, arg = parse_command(text)
        if command is None:
            if text.strip():
                self.say(f'unknown command {text.strip()!r}; {HELP}')
            return True
        if command is Command.QUIT:
            return False
        if command is Command.START:
            self.say(self.start_episode())
        elif command is Command.SUCCESS:
            self.say(self.end_episode(True))
        elif command is Command.FAILURE:
            self.say(self.end_episode(False))
        elif command is Command.OVERRIDE:
            if arg not in ('', 'on', 'off'):
                self.say(f'override takes on, off or nothing (toggle), got {arg!r}')
            else:
                self.say(self.set_override(None if not arg else arg == 'on'))
        elif command is Command.REPORT:
            self.say(self.save_report())
        elif command is Command.STATUS:
            self.say(*self.status())
        elif command is Command.HELP:
            self.say(HELP)
        return True


# -- front ends -----------------------------------------------------------------------------
def run_lines(node: ConsoleNode, stream: TextIO) -> None:
    """One command per line until ``quit`` or end of input (stdin not a terminal)."""
    for line in stream:
        if not node.execute(line):
            break


def run_keys(node: ConsoleNode, fd: int) -> None:
    """Single keys on a terminal (cbreak mode, no Enter needed) until ``q``."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)  # (flushes keys typed before this point)
        node.say(HELP)  # after the switch: from here on every key counts
        while rclpy.ok(context=node.context):
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            key = os.read(fd, 1).decode(errors='replace')
            if key in ('\x04',):  # Ctrl-D
                break
            if not node.execute(key):
                break
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog='so101-console', formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__, epilog='ROS arguments follow --ros-args (e.g. -r __ns:=/arm1, '
        '-p service_wait_s:=2.0).')


def main(args=None):
    argv = sys.argv if args is None else args
    build_parser().parse_args(remove_ros_args(argv)[1:])  # --help; anything else is refused
    rclpy.init(args=argv)
    node = ConsoleNode()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, name='console_spin', daemon=True)
    spin.start()
    try:
        if sys.stdin.isatty():
            run_keys(node, sys.stdin.fileno())
        else:
            node.say(HELP)
            run_lines(node, sys.stdin)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # the spin thread must be out of rcl's wait before the interpreter exits
        executor.shutdown(timeout_sec=5.0)
        spin.join(timeout=5.0)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
