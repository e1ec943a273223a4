"""so101 view: bags and live topics -> rerun recordings that rerun's own reader loads.

The main bag is recorded in-process from the simulated cell (SimCell + ScriptedExpert +
SimRenderer at 64x64, physics speed), as the suite's nodes would publish it: joint states,
the expert's chunks (on teleop/joint_trajectory during one operator takeover), the override,
sim truth, episode marks, the monitor's events (computed by the same EngineFeeder as live),
a policy status per chunk, the front camera raw and the handeye camera compressed. Replayed
with ``so101-view BAG --save``, the ``.rrd`` is read back with ``rerun.experimental.RrdReader``
(rerun 0.33's reader; ``rerun.dataframe`` is gone since 0.32) and compared with the bag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

os.environ.setdefault('MUJOCO_GL', 'egl')  # before mujoco is imported (offscreen rendering)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

rr = pytest.importorskip('rerun', reason='rerun-sdk missing (requirements.txt)')

from eval_monitor.bag import BagReader, BagWriter  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VIEW = str(Path(sys.executable).parent / 'so101-view')
OVERRIDE = (2.0, 3.5)  # operator takeover (sim time, s)
CAMERA_EVERY = 10  # ticks of 10 ms: cameras at 10 Hz
STATE_EVERY = 2  # joint states at 50 Hz
TRUTH_EVERY = 5  # sim truth at 20 Hz


def ns(t: float) -> int:
    return int(round(t * 1e9))


def record_view_bag(path: Path, episodes: int = 1, size: int = 64) -> Path:
    """Expert episodes of the simulated cell with every topic the view draws."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Bool, String

    from eval_monitor.feeder import EngineFeeder, EvalTopic
    from eval_monitor.metrics import MetricEngine
    from so101_driver.arm.trajectory import CommandSource
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
    from so101_driver.images import numpy_to_image, rgb_to_compressed
    from so101_driver.ros_io import diag_status, joint_state_msg, time_msg, trajectory_msg
    from so101_driver.sim.cell import SimCell, SimConfig
    from so101_driver.sim.expert import ExpertConfig, ScriptedExpert, run_episodes
    from so101_driver.sim.renderer import SimRenderer

    writer = BagWriter(path)
    feeder = EngineFeeder(MetricEngine())

    def write(topic, msg, t, feed=None):
        writer.write_msg(topic, msg, ns(t))
        if feed is not None:
            for event in feeder.feed(feed, msg, t):
                writer.write_msg('/eval/events', String(data=event.to_json()), ns(t))

    class RecordingCell(SimCell):
        def __init__(self):
            super().__init__(SimConfig(seed=3))
            try:
                self.renderer = SimRenderer(self, size, size)
            except Exception:  # noqa: BLE001 - no offscreen GL here: synthetic images
                self.renderer = None
            self.operator = False
            self.chunks = 0
            self._mark(EpisodeEvent.START, None, 'sim started')
            write('/teleop/override', Bool(data=False), self.time, EvalTopic.OVERRIDE)
            self._joint_state()

        def _joint_state(self):
            s = self.joint_sample()
            write('/joint_states', joint_state_msg(time_msg(self.time), s.position, s.velocity,
                                                   s.effort), self.time, EvalTopic.JOINT_STATES)

        def _mark(self, event, success, note):
            mark = EpisodeMark(event=event, stamp=self.time, success=success, source='sim',
                               note=note)
            write('/eval/episode', String(data=mark.to_json()), self.time, EvalTopic.EPISODE)

        def _image(self, camera):
            if self.renderer is not None:
                return self.renderer.render(camera)
            return np.full((size, size, 3), int(self.time * 20) % 256, dtype=np.uint8)

        def submit(self, source, traj):
            source = CommandSource.TELEOP if self.operator else CommandSource.POLICY
            topic = '/teleop/joint_trajectory' if self.operator else '/joint_trajectory'
            write(topic, trajectory_msg(traj.positions, traj.time_from_start, traj.start),
                  self.time)
            if not self.operator:
                self.chunks += 1
                status = DiagnosticArray()
                status.header.stamp = time_msg(self.time)
                status.status = [diag_status('pi05_policy: policy', 0, 'running', 'test', {
                    'state': 'running', 'reason': 'running', 'total_ms': 20.0 + self.chunks,
                    'model_ms': 15.0, 'total_mean_ms': 21.0, 'image_to_publish_p50_ms': 30})]
                write('/policy/status', status, self.time)
            return super().submit(source, traj)

        def step(self):
            super().step()
            t, tick = self.time, self.counters.ticks
            if tick % STATE_EVERY == 0:
                self._joint_state()
            if tick % TRUTH_EVERY == 0:
                write('/sim/truth', String(data=self.truth().to_json()), t, EvalTopic.TRUTH)
            active = OVERRIDE[0] <= t < OVERRIDE[1]
            if active != self.operator:
                self.operator = active
                self.set_override(active)
                write('/teleop/override', Bool(data=active), t, EvalTopic.OVERRIDE)
            elif tick % 50 == 0:
                write('/teleop/override', Bool(data=active), t, EvalTopic.OVERRIDE)
            if tick % CAMERA_EVERY == 0:
                write('/cameras/front/image_raw',
                      numpy_to_image(self._image('front'), 'rgb8', time_msg(t), 'front'), t)
                write('/cameras/handeye/image_raw/compressed',
                      rgb_to_compressed(self._image('handeye'), stamp=time_msg(t)), t)

        def reset(self):
            success, cube = super().reset()
            self._mark(EpisodeEvent.END, success, 'cube in bowl' if success else 'not in bowl')
            if self.counters.resets < episodes:
                self._mark(EpisodeEvent.START, None, 'sim reset')
            return success, cube

    cell = RecordingCell()
    expert = ScriptedExpert(ExpertConfig(
        seed=3, reach_s=1.0, descend_s=0.6, close_s=0.5, lift_s=0.6, carry_s=1.0, lower_s=0.5,
        release_s=0.4, retreat_s=0.6, settle_s=0.4))
    run_episodes(cell, expert, episodes)
    cell.run(0.3)
    for event in feeder.engine.finish(cell.time):
        writer.write_msg('/eval/events', String(data=event.to_json()), ns(cell.time))
    writer.close()
    if cell.renderer is not None:
        cell.renderer.close()
    return path


def bag_counts(path: Path) -> Counter:
    return Counter(topic for topic, *_ in BagReader(path).raw_messages())


def rrd_rows(path: Path) -> tuple[Counter, dict[str, list]]:
    """(temporal rows per entity, every chunk's pyarrow columns per entity) of an .rrd."""
    from rerun.experimental import RrdReader

    rows: Counter = Counter()
    columns: dict[str, list] = {}
    reader = RrdReader(path)
    assert len(reader.recordings()) == 1
    for chunk in reader.store().stream().to_chunks():
        entity = chunk.entity_path.lstrip('/')
        batch = chunk.to_record_batch()
        columns.setdefault(entity, []).append(batch)
        if not chunk.is_static:
            data = [n for n in batch.schema.names if ':' in n]
            if data:
                rows[(entity, data[0].split(':')[0])] += chunk.num_rows
    return rows, columns


def column(columns: dict[str, list], entity: str, name: str) -> list:
    """Every row's value of component ``name`` of ``entity``, in log order."""
    found = []
    for batch in columns.get(entity, []):
        if name in batch.schema.names:
            ticks = batch.column('log_tick').to_pylist() if 'log_tick' in batch.schema.names \
                else [0] * batch.num_rows
            found += list(zip(ticks, batch.column(name).to_pylist(), strict=True))
    return [value for _, value in sorted(found, key=lambda pair: pair[0])]


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def view_bag(tmp_path_factory) -> Path:
    return record_view_bag(tmp_path_factory.mktemp('view') / 'bag')


@pytest.fixture(scope='module')
def replayed(view_bag, tmp_path_factory):
    """``so101-view BAG --save`` as a user runs it: (rrd path, its output)."""
    rrd = tmp_path_factory.mktemp('rrd') / 'run.rrd'
    done = subprocess.run([VIEW, str(view_bag), '--save', str(rrd)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return rrd, done.stdout + done.stderr


# ---------------------------------------------------------------------------------- tests


def test_tip_kinematics_agrees_with_rerun_urdf_joint_transforms():
    """The tip paths (own chain product) sit on the model rerun draws (its URDF joints)."""
    import tempfile

    from so101_driver.joints import JOINT_NAMES
    from eval_monitor.view.kinematics import so101_kinematics, viewer_urdf

    kinematics = so101_kinematics()
    with tempfile.TemporaryDirectory() as folder:
        tree = rr.urdf.UrdfTree.from_file_path(viewer_urdf(Path(folder)))
    rng = np.random.default_rng(7)
    q = rng.uniform(-1.2, 1.2, size=(5, len(JOINT_NAMES)))
    tips = kinematics.tip(q)
    for row, tip in zip(q, tips, strict=True):
        pose = np.eye(4)
        for joint in kinematics.chain:
            value = row[JOINT_NAMES.index(joint.name)] if joint.kind != 'fixed' else 0.0
            transform = tree.get_joint_by_name(joint.name).compute_transform(float(value),
                                                                             clamp=False)
            x, y, z, w = transform.quaternion.as_arrow_array().to_pylist()[0]
            step = np.eye(4)
            step[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
            step[:3, 3] = transform.translation.as_arrow_array().to_pylist()[0]
            pose = pose @ step
        assert np.allclose(pose[:3, 3], tip, atol=1e-5), (pose[:3, 3], tip)
    assert np.allclose(kinematics.tip(q[0]), tips[0])


def test_replayed_bag_becomes_an_rrd_with_every_stream_and_the_bags_counts(view_bag, replayed):
    rrd, output = replayed
    bag = bag_counts(view_bag)
    rows, columns = rrd_rows(rrd)
    # the robot model: one mesh per URDF <visual>, and six joint transforms per update
    visuals = [e for e in columns if e.startswith('robot/so101/visual_geometries/')]
    urdf_visuals = (REPO / 'src/so101_driver/urdf/so101.urdf').read_text().count('<visual>')
    assert len(visuals) == urdf_visuals
    assert not any('collision' in e for e in columns)
    assert rows['robot/joints', 'Transform3D'] % 6 == 0 and rows['robot/joints', 'Transform3D']
    # every message of the bag the view draws, once
    assert rows['cameras/front', 'Image'] == bag['/cameras/front/image_raw'] > 0
    assert rows['cameras/handeye', 'EncodedImage'] == \
        bag['/cameras/handeye/image_raw/compressed'] > 0
    assert rows['plots/joints', 'Scalars'] == bag['/joint_states'] > 0
    assert rows['plots/gripper/angle', 'Scalars'] == bag['/joint_states']
    assert rows['plots/gripper/effort', 'Scalars'] == bag['/joint_states']
    for source, topic in (('policy', '/joint_trajectory'), ('teleop', '/teleop/joint_trajectory')):
        for part, archetype in (('', 'LineStrips3D'), ('/splice', 'Points3D')):
            assert rows[f'world/chunks/{source}{part}', archetype] == bag[topic] > 0, source
    assert rows['log/events', 'TextLog'] == bag['/eval/events'] > 0
    markers = sum(n for (e, _), n in rows.items() if e.startswith('plots/gripper/events/'))
    assert 0 < markers <= bag['/eval/events']
    assert rows['log/episodes', 'TextLog'] == bag['/eval/episode']
    assert rows['world/cube', 'Boxes3D'] == bag['/sim/truth'] > 0
    assert rows['plots/policy/latency/total', 'Scalars'] == bag['/policy/status'] > 0
    assert ('plots/policy/latency/total_mean', 'Scalars') not in rows
    # the takeover: one step up and one down (the re-sent samples are not drawn)
    assert column(columns, 'plots/gripper/override', 'Scalars:scalars') == [[0.0], [1.0], [0.0]]
    assert 'joint_states 304' in output or f'joint_states {bag["/joint_states"]}' in output


def test_the_splice_point_is_where_the_plan_was_when_the_chunk_took_over(replayed):
    """Each policy chunk's path starts at its splice point, and (no override in between)
    that point lies on the path drawn for the chunk before: the shadow arm splices as the
    arm does, so the drawn paths join up without a jump."""
    rrd, _ = replayed
    _, columns = rrd_rows(rrd)
    strips = [np.array(s[0]) for s in column(columns, 'world/chunks/policy',
                                             'LineStrips3D:strips')]
    splices = [np.array(p[0]) for p in column(columns, 'world/chunks/policy/splice',
                                              'Points3D:positions')]
    assert len(strips) == len(splices) > 5
    joined = 0
    for k, (strip, splice) in enumerate(zip(strips, splices, strict=True)):
        assert np.allclose(strip[0], splice, atol=1e-6)
        if k and len(strips[k - 1]) > 1:
            before = strips[k - 1]
            a, b = before[:-1], before[1:]
            u = np.clip(np.einsum('ij,ij->i', splice - a, b - a) /
                        np.maximum(np.einsum('ij,ij->i', b - a, b - a), 1e-12), 0, 1)
            gap = np.min(np.linalg.norm(a + u[:, None] * (b - a) - splice, axis=1))
            joined += gap < 0.003
    # all but the first after the takeover (the operator's chunks came in between)
    assert joined == len(strips) - 2, f'only {joined} of {len(strips) - 1} chunks join the last'


def test_bad_messages_are_skipped_and_described_never_raised():
    from types import SimpleNamespace as M

    from eval_monitor.view.scene import SceneLogger

    rec = rr.RecordingStream('so101_test')
    rec.memory_recording()
    scene = SceneLogger(rec)
    stamp = M(sec=1, nanosec=0)
    bad = [
        ('joint_states', M(name=['gripper'], position=[0.1], effort=[])),
        ('joint_states', M(name=['a', 'b'], position=[0.1], effort=[])),
        ('joint_trajectory', M(joint_names=['x'], header=M(stamp=stamp), points=[])),
        ('joint_trajectory', M(joint_names=['a', 'b'], header=M(stamp=stamp),
                               points=[M(positions=[1.0], time_from_start=stamp)])),
        ('eval/events', M(data='not json')),
        ('eval/events', M(data='{"kind": "drop", "stamp": NaN, "episode": null, "data": {}}')),
        ('eval/episode', M(data='{"event": "end"}')),
        ('sim/truth', M(data='{"stamp": 1, "cube_position": [NaN, 0, 0]}')),
        ('cameras/front/image_raw', M(encoding='rgb8', width=4, height=4, step=1, data=b'')),
        ('cameras/front/image_raw/compressed', M(format='jpeg', data=b'')),
        ('policy/status', M(status=None)),
    ]
    for topic, msg in bad:
        assert scene.handle(topic, msg, 1.0) is False, topic
    assert len(scene.skipped) == len(bad)
    assert scene.handle('joint_states', M(name=['gripper'], position=[0.1], effort=[]),
                        float('nan')) is False


def test_viewer_choices_that_cannot_work_say_why(monkeypatch):
    from eval_monitor.view.cli import _mode, build_parser
    from eval_monitor.view.viewer import ViewerChoice, ViewerError, resolve_mode, web_viewer_url

    for variable in ('DISPLAY', 'WAYLAND_DISPLAY'):
        monkeypatch.delenv(variable, raising=False)
    assert resolve_mode(ViewerChoice()) == 'web'  # headless: the web viewer
    for mode in ('web', 'auto'):  # a file sink would replace the served stream
        with pytest.raises(ViewerError, match='cannot also save'):
            resolve_mode(ViewerChoice(mode=mode, save=Path('x.rrd')))
    # --save alone, live or replay: only the file
    assert _mode(build_parser().parse_args(['--save', 'x.rrd'])) == 'none'
    assert _mode(build_parser().parse_args(['bag', '--save', 'x.rrd'])) == 'none'
    assert _mode(build_parser().parse_args(['--connect', 'rerun+http://h:1/proxy'])) == \
        'connect'
    with pytest.raises(ViewerError, match='needs a URL'):
        resolve_mode(ViewerChoice(mode='connect'))
    with pytest.raises(ViewerError, match='log nowhere'):
        resolve_mode(ViewerChoice(mode='none'))
    with pytest.raises(ViewerError, match='not one of'):
        resolve_mode(ViewerChoice(mode='window'))
    assert web_viewer_url('lab-pc', 9090, 9876) == \
        'http://lab-pc:9090/?url=rerun%2Bhttp%3A%2F%2Flab-pc%3A9876%2Fproxy'
    done = subprocess.run([VIEW, '--viewer', 'web', '--save', 'x.rrd'], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and 'cannot also save' in done.stderr


def test_view_core_needs_neither_rclpy_nor_torch():
    """Replay runs where evaluation runs: no rclpy (only view_node imports it), no torch."""
    code = ('import sys; import eval_monitor.view.cli, eval_monitor.view.replay, '
            'eval_monitor.view.scene, eval_monitor.view.viewer; '
            'print(sorted(m for m in ("rclpy", "torch", "lerobot") if m in sys.modules))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'


def test_plan_starts_the_view_only_when_asked():
    import importlib.metadata

    from so101_driver.bringup import plan as bringup

    assert 'so101_view' not in {s.name for s in bringup.plan(bringup.parse_args({}))}
    for hardware in ('sim', 'real'):
        args = bringup.parse_args({'view': 'true', 'hardware': hardware, 'policy': 'none'})
        spec = next(s for s in bringup.plan(args) if s.name == 'so101_view')
        assert spec.package == 'eval_monitor' and spec.params_files[0].name == 'view.yaml'
        assert spec.overrides.get('use_sim_time', False) == (hardware == 'sim')
        params = bringup.check_config_files([spec])['so101_view']
        assert params['viewer'] == 'auto' and list(params['cameras']) == ['front', 'handeye']
    scripts = {ep.name for ep in importlib.metadata.distribution('eval_monitor').entry_points
               if ep.group == 'console_scripts'}
    assert {'so101_view', 'so101-view'} <= scripts
    with pytest.raises(bringup.BringupError, match='true, false'):
        bringup.parse_args({'view': 'yes'})


def test_view_node_logs_what_it_receives_over_dds(ros_context, spinner, tmp_path):
    """The live node, on real DDS, draws each topic it is sent into its recording."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, String

    from eval_monitor.metrics import EvalEvent, EventKind
    from eval_monitor.view.view_node import ViewNode
    from so101_driver import qos
    from so101_driver.eval_topics import SimTruth
    from so101_driver.images import numpy_to_image
    from so101_driver.ros_io import diag_status, joint_state_msg, time_msg, trajectory_msg
    from trajectory_msgs.msg import JointTrajectory

    rrd = tmp_path / 'live.rrd'
    node = ViewNode(context=ros_context, parameter_overrides=[
        Parameter('viewer', value='none'), Parameter('save_path', value=str(rrd)),
        Parameter('image_rate_hz', value=0.0), Parameter('model_rate_hz', value=0.0)])
    spinner.add(node)
    probe = rclpy.create_node('view_probe', context=ros_context)
    pubs = {
        'joint_states': probe.create_publisher(JointState, 'joint_states', qos.STREAM_PUB),
        'traj': probe.create_publisher(JointTrajectory, 'joint_trajectory', qos.COMMAND),
        'override': probe.create_publisher(Bool, 'teleop/override', qos.LATCHED),
        'events': probe.create_publisher(String, 'eval/events', qos.COMMAND),
        'truth': probe.create_publisher(String, 'sim/truth', qos.STREAM_PUB),
        'status': probe.create_publisher(DiagnosticArray, 'policy/status', qos.STREAM_PUB),
        'front': probe.create_publisher(Image, 'cameras/front/image_raw', qos.STREAM_PUB),
    }
    wait_for(lambda: all(p.get_subscription_count() for p in pubs.values()), timeout=20,
             message='the view node subscribing to every topic')
    q = np.array([0.1, -0.4, 0.5, 0.3, 0.0, 0.6])
    status = DiagnosticArray(status=[diag_status('pi05_policy: policy', 0, 'running', '',
                                                 {'state': 'running', 'total_ms': 42.0})])
    wanted = {'joint_states': 5, 'chunks/policy': 1, 'override': 1, 'events': 1, 'truth': 1,
              'policy_status': 1, 'cameras/front': 1}

    def publish_missing():
        logged = node.logged()
        if logged.get('joint_states', 0) < 5:
            pubs['joint_states'].publish(joint_state_msg(time_msg(1.0), q))
        if logged.get('joint_states') and not logged.get('chunks/policy'):
            pubs['traj'].publish(trajectory_msg(np.array([q, q + 0.05]), np.array([0.2, 0.6]),
                                                None))
        if not logged.get('override'):
            pubs['override'].publish(Bool(data=False))
        if not logged.get('events'):
            pubs['events'].publish(String(data=EvalEvent(EventKind.GRASP_SUCCESS, 1.0, 1,
                                                         {'gripper_rad': 0.3}).to_json()))
        if not logged.get('truth'):
            pubs['truth'].publish(String(data=SimTruth(1.0, (0.2, 0.0, 0.015), False, False,
                                                       False).to_json()))
        if not logged.get('policy_status'):
            pubs['status'].publish(status)
        if not logged.get('cameras/front'):
            pubs['front'].publish(numpy_to_image(np.full((8, 8, 3), 90, np.uint8), 'rgb8'))
        return all(logged.get(k, 0) >= n for k, n in wanted.items())

    wait_for(publish_missing, timeout=30, interval=0.1, message=f'the view logging {wanted}')
    logged = node.logged()
    spinner.remove(node)
    node.destroy_node()  # closes the recording: the file gets its footer
    probe.destroy_node()
    rows, columns = rrd_rows(rrd)
    assert rows['plots/joints', 'Scalars'] == logged['joint_states']
    assert rows['robot/joints', 'Transform3D'] == 6 * logged['robot']
    assert rows['world/chunks/policy', 'LineStrips3D'] == logged['chunks/policy']
    assert rows['cameras/front', 'Image'] == logged['cameras/front']
    assert rows['log/events', 'TextLog'] == logged['events']
    assert rows['world/cube', 'Boxes3D'] == logged['truth']
    assert rows['plots/policy/latency/total', 'Scalars'] == logged['policy_status']
    assert column(columns, 'plots/policy/latency/total', 'Scalars:scalars')[0] == [42.0]


@pytest.mark.slow
def test_demo_view_file_records_the_run(tmp_path):
    """``so101 demo --view file``: the view node runs beside the demo's nodes and leaves
    <run>/view.rrd with the arm, both cameras and the monitor's events."""
    run = tmp_path / 'demo'
    done = subprocess.run([str(Path(sys.executable).parent / 'so101'), 'demo', '--episodes',
                           '1', '--view', 'file', '--run-dir', str(run)], capture_output=True,
                          text=True, timeout=400, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'rerun: recording to' in done.stdout
    rows, _ = rrd_rows(run / 'view.rrd')
    events = [json.loads(line) for line in
              (run / 'report' / 'events.jsonl').read_text().splitlines() if line.strip()]
    for entity, archetype in (('robot/joints', 'Transform3D'), ('cameras/front', 'Image'),
                              ('cameras/handeye', 'Image'), ('plots/joints', 'Scalars'),
                              ('world/chunks/policy', 'LineStrips3D'),
                              ('world/cube', 'Boxes3D')):
        assert rows[entity, archetype] > 0, (entity, archetype)
    # every event the monitor published while the view ran (the report may add the ones
    # that closing open spans at the end makes, which were never published)
    assert 0 < rows['log/events', 'TextLog'] <= len(events)
