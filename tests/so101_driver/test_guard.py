"""GuardedNode: an exception in any subscription or service callback is caught, counted per
topic and logged at a limited rate; the node keeps running."""

from __future__ import annotations

import pytest
from std_msgs.msg import String
from std_srvs.srv import SetBool

from so101_driver import guard, qos
from so101_driver.guard import GuardedNode
from tests.helpers import wait_for


class Fragile(GuardedNode):
    def __init__(self, context):
        super().__init__('fragile', context=context)
        self.good = []
        self.create_subscription(String, 'fragile/in', self._on_msg, qos.COMMAND)
        self.create_service(SetBool, 'fragile/set', self._on_set)

    def _on_msg(self, msg):
        self.good.append(int(msg.data))  # 'x' raises ValueError

    def _on_set(self, request, response):
        if not request.data:
            raise KeyError('boom')
        response.success = True
        return response


def test_a_raising_callback_is_counted_and_the_node_goes_on(ros_context, spinner, monkeypatch):
    from rclpy.node import Node

    monkeypatch.setattr(guard, 'GUARD_LOG_PERIOD_S', 3600.0)
    node = spinner.add(Fragile(ros_context))
    logged = []
    monkeypatch.setattr(node, 'get_logger', lambda: type('L', (), {
        'error': staticmethod(logged.append)})())
    probe = spinner.add(Node('guard_probe', context=ros_context))
    pub = probe.create_publisher(String, 'fragile/in', qos.COMMAND)
    wait_for(lambda: pub.get_subscription_count(), 10, message='the node to subscribe')
    for data in ('1', 'x', 'y', '2', 'z'):
        pub.publish(String(data=data))
    wait_for(lambda: node.good == [1, 2] and node.rejected_messages['fragile/in'] == 3, 10,
             message='two good messages and three rejected')
    assert node.guard_values() == {'rejected_messages': 3, 'rejected_messages fragile/in': 3}
    assert 'ValueError' in node.last_rejection
    assert len(logged) == 1, 'rate limit: one line per period per topic'

    client = probe.create_client(SetBool, 'fragile/set')
    assert client.wait_for_service(timeout_sec=10)
    answers = []
    for data in (False, True):
        future = client.call_async(SetBool.Request(data=data))
        wait_for(future.done, 10, message='the service to answer')
        answers.append(future.result())
    assert not answers[0].success and answers[0].message.startswith('refused: KeyError')
    assert answers[1].success
    assert node.rejected_messages['fragile/set'] == 1


@pytest.mark.parametrize('count_then, count_now, says', [(0, 1, ''), (1, 5, '(3 more since')])
def test_log_line_counts_what_it_skipped(ros_context, monkeypatch, count_then, count_now, says):
    node = Fragile(ros_context)
    try:
        lines = []
        monkeypatch.setattr(node, 'get_logger', lambda: type('L', (), {
            'error': staticmethod(lines.append)})())
        node.rejected_messages['t'] = count_now - 1
        node._guard_logged['t'] = (-1e9, count_then)
        node._reject('t', ValueError('bad'))
        assert lines and says in lines[0] and f'{count_now} rejected on t' in lines[0]
    finally:
        node.destroy_node()
