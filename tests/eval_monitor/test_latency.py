"""End-to-end latency: the driver's command records (so101_driver.latency, kept by the
ArmController), their join with the policy's chunk stamps and the joint states offline
(eval_monitor.latency), the report's Latency section, and a recorded sim run with the policy
node whose every chunk has all its stamps, in order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from eval_monitor.bag import BagWriter
from eval_monitor.latency import (STAGES, TOTALS, LatencyCollector, MotionConfig, analyse_bag,
                                  main as latency_main)
from eval_monitor.offline import evaluate_bag
from so101_driver.arm.trajectory import (ArmController, CommandSource, ExecutorConfig,
                                         Outcome, Trajectory)
from so101_driver.joints import JOINT_NAMES, urdf_limits
from so101_driver.latency import LOG_KEY, CommandLatencyLog, CommandRecord, parse_log
from so101_driver.ros_io import joint_state_msg, time_msg, trajectory_msg
from tests.helpers import wait_for

NS = 1_000_000_000
STAGE = {s.key: s for s in (*STAGES, *TOTALS)}


# -- the driver's records ----------------------------------------------------------------------
def controller() -> ArmController:
    return ArmController(ExecutorConfig(limits=urdf_limits()))


def traj(present, start, dt=0.1, n=3, step=0.05):
    positions = np.array([present + [step * (k + 1), 0, 0, 0, 0, 0] for k in range(n)])
    return Trajectory(JOINT_NAMES, start, dt * np.arange(1, n + 1), positions)


def test_the_first_tick_after_acceptance_completes_the_record():
    ctl = controller()
    q = np.zeros(6)
    ctl.hold_present(q, 10.0)
    ctl.goal(10.0, q)  # a tick with nothing pending records nothing
    outcome, _ = ctl.on_trajectory(CommandSource.POLICY, traj(q, 10.05), 10.02, q)
    assert outcome is Outcome.ACCEPTED and ctl.latency.records() == []
    ctl.goal(10.03, q)
    ctl.goal(10.04, q)  # later ticks of the same plan do not count again
    [record] = ctl.latency.records()
    assert (record.seq, record.source, record.start) == (0, 'policy', 10.05)
    assert record.first_point == pytest.approx(10.15)  # start + first time_from_start
    assert (record.received, record.applied) == (10.02, 10.03)
    assert 0 <= record.wall_s < 5.0
    values = ctl.latency.values()
    assert values['command_records'] == '1'
    assert values['command_policy_received_to_applied_p50_ms'] == '10.00'
    assert values['command_policy_applied_to_first_point_p95_ms'] == '120.00'
    assert values['command_teleop_received_to_applied_p50_ms'] == ''
    [read], bad = parse_log(values[LOG_KEY])
    assert bad == 0 and read.wall_s == pytest.approx(record.wall_s, abs=1e-6)
    assert read == CommandRecord(**{**record.__dict__, 'wall_s': read.wall_s})


def test_a_trajectory_without_start_is_due_from_receipt_and_only_accepted_ones_count():
    ctl = controller()
    q = np.zeros(6)
    ctl.hold_present(q, 0.0)
    ctl.on_trajectory(CommandSource.TELEOP, traj(q, None), 1.0, q)  # policy in control
    bad = traj(q, None, step=1.0)  # first point 1 rad away: jump_too_large
    assert ctl.on_trajectory(CommandSource.POLICY, bad, 1.0, q)[0] is Outcome.REJECTED
    ctl.goal(1.01, q)
    assert ctl.latency.records() == []
    ctl.on_trajectory(CommandSource.POLICY, traj(q, None), 2.0, q)
    ctl.on_trajectory(CommandSource.POLICY, traj(q, None), 2.001, q)  # replaces it: superseded
    ctl.goal(2.01, q)
    [record] = ctl.latency.records()
    assert record.start is None and record.first_point == pytest.approx(2.101)
    assert ctl.latency.superseded == 1
    ctl.on_trajectory(CommandSource.POLICY, traj(q, None), 3.0, q)
    ctl.on_override(True, 3.001, q)  # the hold throws the pending plan away
    ctl.goal(3.01, q)
    assert len(ctl.latency.records()) == 1 and ctl.latency.dropped == 1


def test_the_log_keeps_the_last_records_and_reads_back_what_it_wrote():
    log = CommandLatencyLog(log_records=3)
    for k in range(5):
        log.accepted('teleop', None, k + 0.5, float(k))
        log.applied(k + 0.01)
    values = log.values()
    records, bad = parse_log(values[LOG_KEY] + ';garbage;1 2 3')
    assert [r.seq for r in records] == [2, 3, 4] and bad == 2
    assert values['command_teleop_received_to_applied_p50_ms'] == '10.00'
    record = CommandRecord(7, 'policy', 12.5, 12.6, 12.4, 12.41, 0.002125)
    read = CommandRecord.from_text(record.to_text())
    assert read.wall_s == pytest.approx(0.002125) and read.seq == 7 and read.start == 12.5
    with pytest.raises(ValueError):
        CommandRecord.from_text('7 policy 1.0')


# -- the offline join --------------------------------------------------------------------------
FPS = 30.0


def status_msg(seq, stamps, name='pi05_policy: policy'):
    msg = DiagnosticArray()
    values = {'chunk_seq': str(seq), 'state': 'running'}
    values.update({f'chunk_stamp_{k}': f'{v:.6f}' for k, v in stamps.items()})
    msg.status = [DiagnosticStatus(name=name, values=[KeyValue(key=k, value=v)
                                                      for k, v in values.items()])]
    return msg


def diagnostics_msg(stamp, records, name='so101_sim: simulation', with_log=True):
    msg = DiagnosticArray()
    msg.header.stamp = time_msg(stamp)
    values = {'accepted_policy': str(len(records))}
    if with_log:
        values[LOG_KEY] = ';'.join(r.to_text() for r in records)
    msg.status = [DiagnosticStatus(name=name, values=[KeyValue(key=k, value=v)
                                                      for k, v in values.items()])]
    return msg


class Scripted:
    """Two chunks of a policy; the arm follows the first one from 15 ms after it is due and
    goes on the same way, away from the second (which goes back to where the arm was)."""

    def __init__(self):
        self.q0 = np.array([0.0, -1.0, 0.7, 1.5, 0.0, 0.3])
        c0 = dict(image_front=10.000, image_handeye=10.010, state=10.020,
                  inference_start=10.030, inference_end=10.080, publish=10.085)
        self.start0 = 10.100  # first point at 10.100 + 1/30
        c0['first_point'] = self.start0 + 1 / FPS
        c1 = {k: v + 0.5 for k, v in c0.items()}
        self.chunks = [c0, c1]
        self.records = [CommandRecord(0, 'policy', self.start0, c0['first_point'], 10.090,
                                      10.095, 0.004),
                        CommandRecord(1, 'policy', self.start0 + 0.5, c1['first_point'],
                                      10.590, 10.600, 0.006)]

    def messages(self, with_log=True, diagnostics=True):
        """(topic, log time s, message), in log-time order."""
        out = []
        far = self.q0 + [0.2, 0, 0, 0, 0, 0]
        for seq, (chunk, start) in enumerate(zip(self.chunks, (self.start0, self.start0 + .5))):
            out.append(('/policy/status', chunk['publish'] + 0.001, status_msg(seq, chunk)))
            # the second chunk holds where the arm is (it never moves in this script)
            points = np.linspace(self.q0, far, 5) if seq == 0 else np.tile(self.q0, (5, 1))
            out.append(('/joint_trajectory', chunk['publish'] + 0.002,
                        trajectory_msg(points, np.arange(1, 6) / FPS, start)))
        first = self.chunks[0]['first_point']
        for k in range(150):  # 100 Hz joint states from 10.0 s; moves from first + 20 ms
            t = 10.0 + k / 100
            q = self.q0 + [0.1 * max(0.0, t - first - 0.015), 0, 0, 0, 0, 0]
            out.append(('/joint_states', t, joint_state_msg(time_msg(t), q)))
        if diagnostics:
            out.append(('/diagnostics', 11.2, diagnostics_msg(11.2, self.records,
                                                              with_log=with_log)))
        return sorted(out, key=lambda m: m[1])

    def bag(self, path: Path, **kwargs) -> Path:
        writer = BagWriter(path)
        for topic, t, msg in self.messages(**kwargs):
            writer.write_msg(topic, msg, int(round(t * NS)))
        writer.close()
        return path


def collect(messages, **kwargs):
    collector = LatencyCollector(**kwargs)
    for topic, t, msg in messages:
        collector.feed(topic, int(round(t * NS)), msg)
    return collector.report()


def test_every_stage_of_a_chunk_is_the_difference_of_its_stamps():
    script = Scripted()
    report = collect(script.messages())
    assert report.unavailable is None and report.reporters == ['so101_sim: simulation']
    first, second = report.chunks
    c0 = script.chunks[0]
    ms = {key: 1e3 * first.interval(STAGE[key]) for key in STAGE}
    us = 1e-3  # policy/status prints microseconds
    assert ms['image_to_inference_start'] == pytest.approx(30.0, abs=us)  # the oldest image
    assert ms['inference'] == pytest.approx(50.0, abs=us)
    assert ms['inference_end_to_publish'] == pytest.approx(5.0, abs=us)
    assert ms['publish_to_received'] == pytest.approx(5.0, abs=us)
    assert ms['received_to_applied'] == pytest.approx(5.0, abs=us)
    assert ms['applied_to_first_point'] == pytest.approx(1e3 * (c0['first_point'] - 10.095),
                                                         abs=us)
    assert ms['publish_to_recorded'] == pytest.approx(2.0, abs=us)
    # moving 0.1 rad/s from first + 15 ms: above 5 mrad 65 ms later, seen at the next sample
    motion = first.stamps['motion']
    assert motion == pytest.approx(np.ceil((c0['first_point'] + 0.065) * 100) / 100)
    assert first.wall_s == pytest.approx(0.004)
    # the second chunk goes back to where the arm was; the arm carries on forward
    assert 'motion' not in second.stamps
    assert 'no motion toward the chunk' in second.missing['motion']
    assert second.details['motion'] == ('the arm stays 0.048 rad from its first point, it '
                                        'changes the command by at most 0.200 rad')
    stage = report.stage('first_point_to_motion')
    assert stage.n == 1 and list(stage.missing.values()) == [1]
    assert report.stage('received_to_applied_wall').p50_ms == pytest.approx(5.0)


def test_missing_stages_say_why():
    script = Scripted()
    report = collect([m for m in script.messages() if m[0] != '/joint_trajectory'])
    assert 'not in the bag' in report.chunks[0].missing['recorded']
    assert 'points are not in the bag' in report.chunks[0].missing['motion']
    report = collect(script.messages(with_log=False))
    assert 'no command_log' in report.chunks[0].missing['received']
    assert report.chunks[0].stamps['motion']  # no driver records at all: motion still tested
    report = collect(script.messages(diagnostics=False))
    assert report.chunks[0].missing['applied'] == 'diagnostics not in the bag'
    assert report.stage('publish_to_applied').n == 0
    only_first = Scripted()
    only_first.records = only_first.records[:1]
    report = collect(only_first.messages())
    assert 'no arm/sim record' in report.chunks[1].missing['received']
    assert 'not applied' in report.chunks[1].missing['motion']
    report = collect([m for m in script.messages() if m[0] != '/policy/status'])
    assert report.unavailable == 'policy/status not in the bag' and report.chunks == []
    # a namespace: the topics under it, nothing else
    report = collect(script.messages(), namespace='/robot1')
    assert report.unavailable == 'policy/status not in the bag'
    # a higher motion threshold than the chunk's reach: it "holds"
    report = collect(script.messages(), motion=MotionConfig(threshold_rad=0.5))
    assert 'holds position' in report.chunks[0].missing['motion']
    garbage = ('/policy/status', 12.0, status_msg('x', {'publish': 12.0}))
    report = collect([*script.messages(), garbage])
    assert len(report.chunks) == 2 and 'unreadable chunk stamps' in report.notes[0]
    messages = script.messages()
    for topic, _, msg in messages:  # joint states that are no measurement are not used
        if topic == '/joint_states':
            msg.position[1] = float('nan')
    report = collect(messages)
    assert report.chunks[0].missing['motion'] == 'joint_states not in the bag'


def test_so101_eval_writes_the_latency_section_plot_csv_and_summary(tmp_path, capsys):
    bag = Scripted().bag(tmp_path / 'bag')
    result = evaluate_bag(bag, tmp_path / 'run')
    assert len(result.latency.chunks) == 2
    report_md = (tmp_path / 'run' / 'report.md').read_text()
    assert '## Latency' in report_md and 'camera → command (image capture → publish)' in report_md
    assert '| first point due → motion | 1 |' in report_md
    assert ('1× no motion toward the chunk until the next one or its last point + 0.2 s'
            in report_md)
    assert (tmp_path / 'run' / 'latency.png').stat().st_size > 10_000
    assert 'Latency' in (tmp_path / 'run' / 'report.html').read_text()
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    stages = summary['latency']['stages']
    assert summary['latency']['chunks'] == 2
    assert stages['inference']['p50_ms'] == pytest.approx(50.0)
    rows = (tmp_path / 'run' / 'latency.csv').read_text().splitlines()
    assert rows[0].startswith('seq,image,state') and len(rows) == 3
    assert latency_main([str(bag)]) == 0
    out = capsys.readouterr().out
    assert '2 chunks' in out and 'inference start → end' in out


def test_a_bag_without_policy_stamps_has_a_latency_section_saying_so(tmp_path):
    script = Scripted()
    writer = BagWriter(tmp_path / 'bag')
    for topic, t, msg in script.messages():
        if topic == '/joint_states':
            writer.write_msg(topic, msg, int(round(t * NS)))
    writer.close()
    evaluate_bag(tmp_path / 'bag', tmp_path / 'run')
    assert 'n/a (policy/status not in the bag)' in (tmp_path / 'run' / 'report.md').read_text()
    assert not (tmp_path / 'run' / 'latency.png').exists()
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['latency']['unavailable'] == 'policy/status not in the bag'


# -- a recorded sim run with the policy node ---------------------------------------------------
#: Stamps in chain order. Stamps of different nodes (policy, sim, recorder) all follow the
#: sim's /clock, each node's reading lagging it by up to one /clock period: across nodes the
#: order holds to that much.
CHAIN = ('image', 'inference_start', 'inference_end', 'publish', 'received', 'applied')


def assert_complete_and_in_order(report, clock_period_s: float, min_chunks: int,
                                 unapplied: int = 0) -> None:
    """Every chunk has every stamp up to ``applied``, in chain order, and every stage but
    motion; motion follows the first point where it was measured and says why where not (an
    arm at rest a tracking error away from a chunk that repeats the last one does not move).
    Up to ``unapplied`` chunks (the driver's superseded + dropped count) have no driver
    record, and say so."""
    assert report.unavailable is None, report.unavailable
    assert len(report.chunks) >= min_chunks, len(report.chunks)
    tolerance = clock_period_s + 1e-6
    without = [c for c in report.chunks if 'applied' not in c.stamps]
    assert len(without) <= unapplied, [(c.seq, c.missing) for c in without]
    for chunk in without:
        assert 'dropped by a hold' in chunk.missing['applied'], chunk.missing
    for chunk in report.chunks:
        if chunk in without:
            continue
        s = chunk.stamps
        need = {*CHAIN, 'state', 'first_point', 'recorded'}
        assert need <= set(s), (chunk.seq, chunk.missing)
        for a, b in zip(CHAIN, CHAIN[1:]):
            assert s[a] <= s[b] + tolerance, (chunk.seq, a, b, s)
        assert s['inference_start'] <= s['inference_end'] <= s['publish'] < s['first_point']
        assert s['received'] <= s['applied'] and chunk.wall_s is not None
        assert s['recorded'] >= s['publish'] - tolerance
        if 'motion' in s:
            assert s['motion'] > s['first_point']
        else:
            assert chunk.missing['motion'], chunk.seq
    for stage in (*STAGES, *TOTALS):
        if stage.end != 'motion':
            assert report.stage(stage.key).n >= len(report.chunks) - len(without), \
                report.stage(stage.key)


def require_rendering() -> None:
    """The policy needs the sim's camera images: skip where no OpenGL backend renders."""
    from so101_driver.sim.sim_node import GL_BACKEND  # probes the backends once

    if not GL_BACKEND[0]:
        pytest.skip(f'the sim cannot render cameras here ({GL_BACKEND[1]}): install EGL '
                    '(libegl1) or OSMesa (libosmesa6)')


@pytest.fixture(scope='module')
def tiny_act_96x128(tmp_path_factory) -> Path:
    """A small ACT for the sim's 128x96 cameras (rendering available, else skipped)."""
    pytest.importorskip('lerobot', reason='the policy node needs LeRobot')
    require_rendering()
    from pi05_policy.tiny_checkpoints import build_tiny_act

    return build_tiny_act(tmp_path_factory.mktemp('act'), image_shape=(3, 96, 128),
                          chunk_size=15)


SIM_PARAMS = {'camera_width': 128, 'camera_height': 96, 'camera_rate_hz': 15.0,
              'publish_compressed': True,  # the policy takes JPEGs, as from another host
              'diagnostics_rate_hz': 4.0, 'episode_mark_wait_s': 0.0,
              'publish_episode_marks': False,
              # random weights act around the LeRobot zero pose, ~1 rad from the sim's home:
              # the first-point jump limit (a guard for real hardware) is widened, as in
              # tests/test_loop.py; every other check of a trajectory applies
              'max_jump': 3.2}
CHUNKS = 9  # policy chunks the sim must apply
RESETS = (3, 6)  # after this many chunks the sim is reset: the arm goes home, the next moves it


@pytest.mark.slow
def test_a_recorded_sim_run_with_the_policy_has_every_stamp_of_every_chunk(
        tmp_path, spinner, ros_context, tiny_act_96x128):
    import rclpy
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from eval_monitor.recorder_node import RecorderNode
    from pi05_policy.policy_node import PolicyNode
    from so101_driver import qos
    from so101_driver.sim.sim_node import SimNode

    def params(**values):
        return [Parameter(k, value=v) for k, v in values.items()]

    nodes = []

    def start(node):
        nodes.append(node)
        return spinner.add(node)

    calibration = Path(__file__).resolve().parents[2] / 'config/calibration/so101_demo.json'
    try:
        sim = start(SimNode(context=ros_context, parameter_overrides=params(**SIM_PARAMS)))
        recorder = start(RecorderNode(context=ros_context, parameter_overrides=params(
            output=str(tmp_path / 'bag'), discovery_period_s=0.05, use_sim_time=True)))
        policy = start(PolicyNode(context=ros_context, parameter_overrides=params(
            checkpoint=str(tiny_act_96x128), calibration_file=str(calibration),
            use_sim_time=True, control_fps=30.0, status_rate_hz=2.0, use_compressed=True)))
        wanted = {'/joint_trajectory', '/policy/status', '/diagnostics', '/joint_states'}
        wait_for(lambda: wanted <= set(recorder.recorded_topics)
                 and policy.pub_trajectory.get_subscription_count() >= 2
                 and policy.pub_status.get_subscription_count() >= 1, 30,
                 message='the recorder subscribed to the latency topics')
        probe = start(rclpy.create_node('latency_probe', context=ros_context))
        probe.create_publisher(String, 'policy/task', qos.LATCHED).publish(
            String(data='put the cube in the bowl'))
        reset = probe.create_client(Trigger, 'sim/reset')
        latency = sim.cell.controller.latency
        for target in (*RESETS, CHUNKS):
            wait_for(lambda: latency.completed >= target, 120, interval=0.1,  # noqa: B023
                     message=f'{target} chunks applied by the sim (policy: '
                             f'{policy.state.value}, {policy.counters}, sim: '
                             f'{dict(sim.cell.controller.counters.rejected)})')
            if target != CHUNKS:
                done = reset.call_async(Trigger.Request())
                wait_for(done.done, 20, message='sim/reset')
        # the policy stops; the sim's next diagnostics carry the last chunks' records
        spinner.executor.remove_node(policy)
        nodes.remove(policy)
        policy.destroy_node()
        stopped = sim.cell.time
        wait_for(lambda: sim.cell.time > stopped + 1.0, 30,
                 message='a second of sim time (4 diagnostics) after the last chunk')
        # a reset right after a chunk was accepted drops it before a tick applies it
        unapplied = latency.superseded + latency.dropped
    finally:
        for node in reversed(nodes):
            spinner.executor.remove_node(node)
            node.destroy_node()  # the recorder closes its bag
    report = analyse_bag(tmp_path / 'bag')
    assert_complete_and_in_order(report, 1.0 / 100.0, CHUNKS, unapplied)
    # the first chunk and those after a reset move the arm from home to the policy's pose
    moved = [c for c in report.chunks if 'motion' in c.stamps]
    assert len(moved) >= 1 + len(RESETS), [(c.seq, c.missing, c.details)
                                           for c in report.chunks]
    result = evaluate_bag(tmp_path / 'bag', tmp_path / 'run')
    report_md = (tmp_path / 'run' / 'report.md').read_text()
    for stage in (*STAGES, *TOTALS):
        assert f'| {stage.label} |' in report_md
    assert len(result.latency.chunks) == len(report.chunks)
