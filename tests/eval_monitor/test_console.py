"""Operator console against small fake monitor and leader service servers, over real DDS."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]


class FakeMonitor:
    """eval/start_episode, eval/end_episode, eval/save_report; eval/status and eval/events."""

    def __init__(self, ros_context):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from so101_driver.qos import COMMAND, STREAM_PUB
        from std_msgs.msg import String
        from std_srvs.srv import SetBool, Trigger

        self.node = Node('fake_monitor', context=ros_context)
        self.calls: list[tuple[str, object]] = []
        self.episode = 0
        self.node.create_service(Trigger, 'eval/start_episode', self._start)
        self.node.create_service(SetBool, 'eval/end_episode', self._end)
        self.node.create_service(Trigger, 'eval/save_report', self._save)
        self.status_pub = self.node.create_publisher(DiagnosticArray, 'eval/status', STREAM_PUB)
        self.events_pub = self.node.create_publisher(String, 'eval/events', COMMAND)

    def _start(self, request, response):
        self.episode += 1
        self.calls.append(('start', None))
        response.success, response.message = True, f'episode {self.episode} started'
        return response

    def _end(self, request, response):
        self.calls.append(('end', bool(request.data)))
        response.success = True
        response.message = f'episode {self.episode} ended: ' + \
            ('success' if request.data else 'failure')
        return response

    def _save(self, request, response):
        self.calls.append(('save', None))
        response.success, response.message = True, '/tmp/run-1'
        return response

    def publish_status(self, **counters):
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        status = DiagnosticStatus(level=DiagnosticStatus.OK, name='eval_monitor: counters',
                                  message='episode 1 running',
                                  values=[KeyValue(key=k, value=str(v))
                                          for k, v in counters.items()])
        self.status_pub.publish(DiagnosticArray(status=[status]))

    def publish_event(self, kind, episode, **data):
        from std_msgs.msg import String

        self.events_pub.publish(String(data=json.dumps(
            {'kind': kind, 'stamp': 12.5, 'episode': episode, 'data': data})))


class FakeLeader:
    """so101_leader/set_override that publishes teleop/override as the leader does."""

    def __init__(self, ros_context):
        from rclpy.node import Node
        from so101_driver.qos import LATCHED
        from std_msgs.msg import Bool
        from std_srvs.srv import SetBool

        self.node = Node('so101_leader', context=ros_context)
        self.requests: list[bool] = []
        self.pub = self.node.create_publisher(Bool, 'teleop/override', LATCHED)
        self.pub.publish(Bool(data=False))
        self.node.create_service(SetBool, '~/set_override', self._set)

    def _set(self, request, response):
        from std_msgs.msg import Bool

        self.requests.append(bool(request.data))
        self.pub.publish(Bool(data=bool(request.data)))
        response.success, response.message = True, f'override {request.data}'
        return response


class Listener:
    """teleop/override (latched) and eval/episode as another node sees them."""

    def __init__(self, ros_context, name='console_listener'):
        from rclpy.node import Node
        from so101_driver.qos import COMMAND, LATCHED
        from std_msgs.msg import Bool, String

        self.node = Node(name, context=ros_context)
        self.overrides: list[bool] = []
        self.episodes: list[str] = []
        self.node.create_subscription(Bool, 'teleop/override',
                                      lambda m: self.overrides.append(m.data), LATCHED)
        self.node.create_subscription(String, 'eval/episode',
                                      lambda m: self.episodes.append(m.data), COMMAND)


class Output(io.StringIO):
    def text(self) -> str:
        return self.getvalue()


@pytest.fixture
def console_factory(ros_context, spinner):
    from rclpy.parameter import Parameter

    from eval_monitor.console import ConsoleNode

    made = []

    def factory(**params):
        out = Output()
        node = ConsoleNode(out=out, context=ros_context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        spinner.add(node)
        made.append(node)
        return node, out
    yield factory
    for node in made:
        spinner.executor.remove_node(node)
        node.destroy_node()


def test_episode_and_report_keys_call_the_monitor_services_and_print_their_answers(
        ros_context, spinner, console_factory):
    monitor = FakeMonitor(ros_context)
    spinner.add(monitor.node)
    console, out = console_factory()
    for key in ('s', 'y', 's', 'n', 'r'):
        assert console.execute(key), f'{key!r} must not quit'
    assert monitor.calls == [('start', None), ('end', True), ('start', None), ('end', False),
                             ('save', None)], f'service calls: got {monitor.calls}'
    text = out.text()
    for expected in ('start episode: ok: episode 1 started',
                     'end episode (success): ok: episode 1 ended: success',
                     'end episode (failure): ok: episode 2 ended: failure',
                     'save report: ok: /tmp/run-1'):
        assert expected in text, f'expected {expected!r} in the output, got:\n{text}'
    assert not console.execute('q'), 'q must quit'


def test_override_toggle_goes_through_the_leader_service_when_it_is_there(
        ros_context, spinner, console_factory):
    leader = FakeLeader(ros_context)
    spinner.add(leader.node)
    console, out = console_factory()
    wait_for(lambda: console.view.override is False, timeout=10,
             message='console sees the leader\'s latched override=false')
    console.execute('o')
    assert leader.requests == [True], f'expected one set_override(true), got {leader.requests}'
    wait_for(lambda: console.view.override is True, timeout=5, message='override shown ON')
    console.execute('o')
    assert leader.requests == [True, False], f'toggle back: got {leader.requests}'
    assert 'via so101_leader/set_override: ok' in out.text(), out.text()


def test_override_without_leader_is_published_latched_by_the_console(
        ros_context, spinner, console_factory):
    console, out = console_factory(service_wait_s=0.2)
    console.execute('override on')
    assert 'published on teleop/override' in out.text(), out.text()
    late = Listener(ros_context, name='late_listener')  # joins after the publication
    spinner.add(late.node)
    wait_for(lambda: late.overrides and late.overrides[-1] is True, timeout=10,
             message='latched override=true for a late subscriber')
    count = len(late.overrides)
    wait_for(lambda: len(late.overrides) >= count + 1, timeout=5,
             message='the console re-sends the override it owns')
    console.execute('o')  # toggle: off
    wait_for(lambda: late.overrides[-1] is False, timeout=5, message='override false')


def test_status_shows_live_counters_and_the_last_events(ros_context, spinner, console_factory):
    monitor = FakeMonitor(ros_context)
    spinner.add(monitor.node)
    console, out = console_factory(max_events=2)
    # eval/events is reliable, but wait for the match so the first event is not published
    # before the console's subscription is discovered
    wait_for(lambda: monitor.events_pub.get_subscription_count() >= 1, timeout=10,
             message='console subscribed to eval/events')
    monitor.publish_event('grasp_attempt', 1, gripper_rad=0.21)
    monitor.publish_event('grasp_success', 1)
    monitor.publish_event('intervention_start', 1)

    def status_arrived():
        monitor.publish_status(episodes=3, grasp_attempts=9, grasp_successes=4,
                               interventions=2)
        return console.view.counters

    wait_for(status_arrived, timeout=10, interval=0.1, message='eval/status at the console')
    wait_for(lambda: len(console.view.events) == 2 and 'intervention_start'
             in console.view.events[-1], timeout=5, message='events at the console')
    console.execute('p')
    text = out.text()
    status_block = text[text.rindex('counters:'):]
    for expected in ('episodes=3', 'grasp_successes=4', 'grasp_attempts=9', 'interventions=2',
                     'grasp_success episode 1', 'intervention_start episode 1'):
        assert expected in status_block, f'expected {expected!r} in:\n{status_block}'
    assert 'grasp_attempt episode 1' not in status_block, \
        f'only the last 2 events are kept, got:\n{status_block}'
    assert 'event: grasp_attempt episode 1 t=12.50 gripper_rad=0.21' in text, \
        f'live event line missing:\n{text}'


def test_without_monitor_marks_go_on_eval_episode_stamped_with_sim_time(
        ros_context, spinner, console_factory):
    from rclpy.node import Node
    from rclpy.qos import QoSProfile
    from rosgraph_msgs.msg import Clock
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark

    listener = Listener(ros_context)
    spinner.add(listener.node)
    clock_node = spinner.add(Node('fake_clock', context=ros_context))
    clock_pub = clock_node.create_publisher(Clock, '/clock', QoSProfile(depth=10))
    console, out = console_factory(service_wait_s=0.2, use_sim_time=True)

    def clock_reached():
        from builtin_interfaces.msg import Time

        clock_pub.publish(Clock(clock=Time(sec=42, nanosec=500_000_000)))
        return console.get_clock().now().nanoseconds == 42_500_000_000
    wait_for(clock_reached, timeout=10, interval=0.05, message='sim time 42.5 s at the console')
    wait_for(lambda: console.pub_episode.get_subscription_count() >= 1, timeout=10,
             message='listener subscribed to eval/episode')
    console.execute('s')
    console.execute('n')
    wait_for(lambda: len(listener.episodes) >= 2, timeout=5, message='two marks on eval/episode')
    start, end = (EpisodeMark.from_json(t) for t in listener.episodes[:2])
    assert (start.event, end.event, end.success) == (EpisodeEvent.START, EpisodeEvent.END,
                                                     False), f'got {start}, {end}'
    assert start.source == 'console' and start.stamp == pytest.approx(42.5), \
        f'expected a console mark stamped with sim time 42.5, got {start}'
    assert 'eval/start_episode is not available' in out.text(), out.text()


def test_unknown_commands_are_named_and_bad_override_argument_refused(
        ros_context, spinner, console_factory):
    console, out = console_factory(service_wait_s=0.0)
    assert console.execute('dance')
    assert console.execute('override maybe')
    text = out.text()
    assert "unknown command 'dance'" in text and 's start episode' in text, text
    assert "override takes on, off or nothing (toggle), got 'maybe'" in text, text


def test_console_main_reads_commands_line_by_line_from_a_pipe(ros_context, spinner):
    monitor = FakeMonitor(ros_context)
    spinner.add(monitor.node)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'eval_monitor.console', '--ros-args', '-p',
         'service_wait_s:=10.0'], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    try:
        proc.stdin.write('start\n')
        proc.stdin.flush()
        wait_for(lambda: ('start', None) in monitor.calls, timeout=30,
                 message='start_episode called by the console process')
        proc.stdin.write('y\nreport\nquit\n')
        proc.stdin.flush()
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f'console exit code {proc.returncode}, output:\n{output}'
    assert monitor.calls == [('start', None), ('end', True), ('save', None)], monitor.calls
    assert 'end episode (success): ok' in output and 'save report: ok' in output, output


def test_parse_command_accepts_keys_and_words():
    from eval_monitor.console import Command, parse_command

    assert parse_command('s') == (Command.START, '')
    assert parse_command('  Override OFF ') == (Command.OVERRIDE, 'off')
    assert parse_command('failure') == (Command.FAILURE, '')
    assert parse_command('xyz')[0] is None


def test_console_on_a_terminal_acts_on_single_keys_without_enter(ros_context, spinner):
    import pty

    monitor = FakeMonitor(ros_context)
    spinner.add(monitor.node)
    master, slave = pty.openpty()  # the console's stdin is a terminal: single-key mode
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'eval_monitor.console', '--ros-args', '-p',
         'service_wait_s:=10.0'], stdin=slave, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    os.close(slave)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, '')),
                              daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(line.startswith('keys:') for line in lines), timeout=30,
                 message='the console ready in single-key mode (help line)')
        os.write(master, b's')  # no newline
        wait_for(lambda: ('start', None) in monitor.calls, timeout=30,
                 message='start_episode called on the single key s')
        os.write(master, b'n')
        wait_for(lambda: ('end', False) in monitor.calls, timeout=10,
                 message='end_episode(false) called on the single key n')
        os.write(master, b'q')
        proc.wait(timeout=30)
        reader.join(timeout=10)
        output = ''.join(lines)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f'console exit code {proc.returncode}, output:\n{output}'
    assert 'end episode (failure): ok' in output, output
