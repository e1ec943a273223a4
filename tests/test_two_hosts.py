"""The two-host setup as two hosts: the robot's computer (sim, recorder) in one Linux network
namespace, the GPU host (policy node) in another, joined only by a veth pair with addresses
of this test's choosing (10.203.0.1/30 and .2/30, inside the namespaces only; nothing is
routed anywhere else). DDS (Fast DDS, UDPv4 only, so nothing takes the shared-memory short
cut the two processes would otherwise find) discovers across the link by multicast on the
veth, with the peer's address as a static peer besides.

Asserted: the policy runs on compressed images that crossed the link (it subscribes to
nothing else, and the GPU side's veth received them), the sim accepts its chunks (its
diagnostics' ``accepted_policy``), and the bag recorded on the robot side has every latency
stamp of every chunk, in order, with publish -> received measured across the link.

Needs root and ``ip netns`` (CI runs as root); skipped, saying why, where namespaces cannot
be made. Namespaces and processes are removed whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from eval_monitor.latency import analyse_bag, table_rows
from eval_monitor.offline import evaluate_bag
from tests.eval_monitor.test_latency import (  # noqa: F401 - the fixture is used by name
    SIM_PARAMS,
    assert_complete_and_in_order,
    tiny_act_96x128,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROBOT_IP, GPU_IP = '10.203.0.1', '10.203.0.2'
CHUNKS = 6  # policy chunks the sim must accept across the link
TASK = 'put the cube in the bowl'


@dataclass(frozen=True)
class Hosts:
    robot: str  # namespace of the robot's computer: sim, recorder, probe
    gpu: str  # namespace of the GPU host: the policy node
    robot_dev: str
    gpu_dev: str


def _ip(*args: str) -> str:
    done = subprocess.run(['ip', *args], capture_output=True, text=True, timeout=20)
    if done.returncode:
        raise RuntimeError(f'ip {" ".join(args)}: {done.stderr.strip()}')
    return done.stdout


@pytest.fixture
def hosts():
    """Two namespaces joined by a veth pair; deleted (with the pair) afterwards."""
    if not sys.platform.startswith('linux') or shutil.which('ip') is None:
        pytest.skip('needs Linux network namespaces and iproute2 (ip)')
    if os.geteuid() != 0:
        pytest.skip('needs root to create network namespaces (CI runs as root)')
    tag = f'so101t{os.getpid() % 100000}'
    h = Hosts(robot=f'{tag}r', gpu=f'{tag}g', robot_dev=f'{tag}r', gpu_dev=f'{tag}g')
    made = []
    try:
        for ns in (h.robot, h.gpu):
            try:
                _ip('netns', 'add', ns)
            except RuntimeError as err:
                pytest.skip(f'cannot create a network namespace here: {err}')
            made.append(ns)
        _ip('link', 'add', h.robot_dev, 'netns', h.robot, 'type', 'veth', 'peer', 'name',
            h.gpu_dev, 'netns', h.gpu)
        for ns, dev, addr in ((h.robot, h.robot_dev, ROBOT_IP), (h.gpu, h.gpu_dev, GPU_IP)):
            _ip('-n', ns, 'addr', 'add', f'{addr}/30', 'dev', dev)
            _ip('-n', ns, 'link', 'set', 'lo', 'up')
            _ip('-n', ns, 'link', 'set', dev, 'up', 'multicast', 'on')
            # DDS discovery is multicast: send it to the link (the namespace's only one)
            _ip('-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', dev)
        yield h
    finally:
        for ns in made:  # removes the veth pair too
            try:
                _ip('netns', 'del', ns)
            except RuntimeError:
                pass


def rx_bytes(ns: str, dev: str) -> int:
    [link] = json.loads(_ip('-n', ns, '-j', '-s', 'link', 'show', 'dev', dev))
    return int(link['stats64']['rx']['bytes'])


def dds_env(peer: str) -> dict[str, str]:
    """The test's DDS domain, discovery on the subnet (not LOCALHOST as in the other tests),
    UDP only, the other host as a static peer; no GPU, no network for the policy."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='SUBNET', ROS_STATIC_PEERS=peer,
               FASTDDS_BUILTIN_TRANSPORTS='UDPv4', CUDA_VISIBLE_DEVICES='', HF_HUB_OFFLINE='1',
               PYTHONUNBUFFERED='1')
    env.pop('ROS_LOCALHOST_ONLY', None)
    return env


class Process:
    """A child in a namespace; its output in a file, or line by line (``lines``)."""

    def __init__(self, name: str, ns: str, argv: list[str], env: dict, log: Path,
                 pipe: bool = False):
        self.name = name
        self.log = log
        self.lines: list[str] = []
        self._file = log.open('w')
        self.proc = subprocess.Popen(
            ['ip', 'netns', 'exec', ns, *argv], cwd=ROOT, env=env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if pipe else self._file,
            stderr=self._file, start_new_session=True)
        if pipe:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip('\n'))
            self._file.write(line)
            self._file.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._file.close()
        return self.proc.returncode

    def tail(self) -> str:
        self._file.flush()
        return f'--- {self.name} ---\n' + self.log.read_text()[-3000:]


def _params(values: dict) -> list[str]:
    out = ['--ros-args']
    for key, value in values.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out += ['-p', f'{key}:={text}']
    return out


def test_the_policy_on_one_host_drives_the_sim_on_another_over_dds_with_compressed_images(
        hosts, tmp_path, tiny_act_96x128):
    calibration = ROOT / 'config' / 'calibration' / 'so101_demo.json'
    bag = tmp_path / 'bag'
    robot_env, gpu_env = dds_env(GPU_IP), dds_env(ROBOT_IP)
    procs: list[Process] = []

    def start(ns, argv, env, pipe=False):
        name = 'probe' if pipe else Path(argv[0]).name
        procs.append(Process(name, ns, argv, env, tmp_path / f'{name}.log', pipe))
        return procs[-1]

    def logs() -> str:
        return '\n'.join(p.tail() for p in procs)

    try:
        start(hosts.robot, [str(BIN / 'so101_sim'), *_params(SIM_PARAMS)], robot_env)
        start(hosts.robot, [str(BIN / 'so101_recorder'), *_params(
            {'output': str(bag), 'use_sim_time': True, 'discovery_period_s': 0.05})],
            robot_env)
        probe = start(hosts.robot, [sys.executable, '-c', 'from tests.test_two_hosts import '
                                    'probe_main; probe_main()'], robot_env, pipe=True)
        policy = start(hosts.gpu, [str(BIN / 'pi05_policy'), *_params(
            {'checkpoint': str(tiny_act_96x128), 'calibration_file': str(calibration),
             'use_compressed': True, 'use_sim_time': True, 'control_fps': 30.0})], gpu_env)

        def diagnostics() -> list[dict]:
            return [json.loads(line[5:]) for line in list(probe.lines)
                    if line.startswith('diag ')]

        def accepted():
            assert all(p.alive() for p in procs), 'a process ended early\n' + logs()
            last = diagnostics()[-1:] or [{}]
            return int(last[0].get('accepted_policy', 0)) >= CHUNKS

        try:
            wait_for(accepted, 240, interval=0.2, message=f'{CHUNKS} policy chunks accepted '
                     'by the sim across the link')
            # the policy stops; the sim's next diagnostics carry the last chunks' records
            assert policy.stop() == 0, logs()
            seen = len(diagnostics())
            wait_for(lambda: len(diagnostics()) >= seen + 3, 30,
                     message='three more sim diagnostics after the policy stopped')
        except AssertionError as err:
            raise AssertionError(f'{err}\n{logs()}') from None
        crossed = rx_bytes(hosts.gpu, hosts.gpu_dev)
        assert all(p.stop() == 0 for p in reversed(procs)), logs()  # the recorder closes
        values = diagnostics()[-1]
    finally:
        for p in reversed(procs):
            p.stop()
    assert 'task sent' in probe.lines, logs()
    assert int(values['accepted_policy']) >= CHUNKS and values['rejected_total'] == '0', values
    # 2 cameras x 15 Hz of ~3 kB JPEGs for several seconds reached the GPU side
    assert crossed > 200_000, crossed

    report = analyse_bag(bag)
    print('\nlatency across the link (sim time; the policy\'s clock is the sim\'s /clock '
          'received over the link):')
    for row in table_rows(report):
        print(f'  {row[0]:<58} n={row[1]:>3}  p50 {row[2]:>7}  p95 {row[3]:>7}  max {row[4]:>7}')
    # stamps of the policy follow the sim's /clock as it arrives over the link: across nodes
    # the chain order holds to one /clock period plus the link's delay
    unapplied = int(values['command_superseded']) + int(values['command_dropped'])
    assert_complete_and_in_order(report, 0.05, CHUNKS, unapplied)
    assert report.stage('publish_to_received').n >= len(report.chunks) - unapplied
    result = evaluate_bag(bag, tmp_path / 'run')
    assert '## Latency' in (tmp_path / 'run' / 'report.md').read_text()
    assert result.latency.stage('publish_to_applied').n >= len(report.chunks) - unapplied


def probe_main() -> None:
    """Robot side: once the recorder and the policy are on the graph, publish the task
    (latched); print every sim diagnostics as ``diag {json}`` until SIGINT."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import ExternalShutdownException
    from std_msgs.msg import String

    from so101_driver import qos

    rclpy.init()
    node = rclpy.create_node('two_hosts_probe')

    def on_diagnostics(msg):
        for status in msg.status:
            if status.name.startswith('so101_sim'):
                values = {kv.key: kv.value for kv in status.values}
                print('diag ' + json.dumps(values), flush=True)

    node.create_subscription(DiagnosticArray, 'diagnostics', on_diagnostics, qos.STREAM_SUB)
    task = node.create_publisher(String, 'policy/task', qos.LATCHED)

    def ready() -> bool:
        def nodes(infos):
            return {i.node_name for i in infos}
        trajectory = node.get_subscriptions_info_by_topic('/joint_trajectory')
        status = node.get_subscriptions_info_by_topic('/policy/status')
        images = node.get_subscriptions_info_by_topic('/cameras/front/image_raw/compressed')
        return ({'so101_sim', 'so101_recorder'} <= nodes(trajectory)
                and 'so101_recorder' in nodes(status) and 'pi05_policy' in nodes(images)
                and 'pi05_policy' in nodes(node.get_publishers_info_by_topic(
                    '/joint_trajectory')))

    sent = False
    try:
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
            if not sent and ready():
                task.publish(String(data=TASK))
                print('task sent', flush=True)
                sent = True
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
