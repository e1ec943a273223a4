"""Benchmark: offline evaluation speed and recorder write rate.

1. Offline evaluation of a generated one-hour bag (100 Hz joint states with a grasp cycle,
   3 Hz policy trajectories, override edges, episode marks): messages per second through
   ``eval_monitor.offline.evaluate_bag`` (reader + engine, no report), and the ratio to a plain
   ``mcap`` read of the same file that only iterates decoded messages (target < 2x).
2. Recorder: a real ``so101_recorder`` process records two 640x480 rgb8 streams at 30 fps
   for ~10 s; sustained write rate and messages published vs recorded (target: no drops).

Prints the figures and writes bench/results/bench_eval.json.

    .venv/bin/python bench/bench_eval.py [--hours 1.0] [--record-seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results' / 'bench_eval.json'
JOINTS = ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']
T0 = 1_700_000_000.0
REPEATS = 2  # timed runs of each reader (best counts)


def gripper_angle(t: float) -> float:
    """A 20 s grasp cycle: open, close on a cube, hold, close fully (a drop), open."""
    phase = t % 20.0
    if phase < 4.0:
        return 0.8
    if phase < 4.5:
        return 0.8 - (phase - 4.0) / 0.5 * 0.7  # to 0.10 rad: a cube between the jaws
    if phase < 9.0:
        return 0.10
    if phase < 9.3:
        return 0.10 - (phase - 9.0) / 0.3 * 0.27  # to -0.17 rad: empty-closed, a drop
    if phase < 12.0:
        return -0.17
    if phase < 12.5:
        return -0.17 + (phase - 12.0) / 0.5 * 0.97
    return 0.8


def generate_bag(path: Path, seconds: float) -> dict[str, int]:
    """One-hour evaluation bag; returns messages per topic."""
    from builtin_interfaces.msg import Duration, Time
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
    from std_msgs.msg import Bool, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from eval_monitor.bag import BagWriter

    counts = {'/joint_states': 0, '/joint_trajectory': 0, '/teleop/override': 0,
              '/eval/episode': 0}
    rng = random.Random(1)
    state = JointState(name=JOINTS)
    trajectory = JointTrajectory(joint_names=JOINTS, points=[
        JointTrajectoryPoint(positions=[0.1] * 6, time_from_start=Duration(nanosec=k * 33_333_333))
        for k in range(1, 51)])
    episode_s, intervention_every_s = 360.0, 300.0
    with BagWriter(path) as writer:
        for name, type_name in (('/joint_states', 'sensor_msgs/msg/JointState'),
                                ('/joint_trajectory', 'trajectory_msgs/msg/JointTrajectory'),
                                ('/teleop/override', 'std_msgs/msg/Bool'),
                                ('/eval/episode', 'std_msgs/msg/String')):
            writer.add_topic(name, type_name)

        def put(topic: str, msg, t: float) -> None:
            writer.write(topic, serialize_message(msg), int(t * 1e9))
            counts[topic] += 1

        for k in range(int(seconds * 100)):
            t_rel = k / 100
            t = T0 + t_rel
            if k % int(episode_s * 100) == 0:
                if k:
                    put('/eval/episode', String(data=EpisodeMark(
                        EpisodeEvent.END, t, success=rng.random() < 0.7).to_json()), t)
                put('/eval/episode', String(data=EpisodeMark(EpisodeEvent.START, t).to_json()), t)
            phase = t_rel % intervention_every_s
            if phase == 100.0 or phase == 120.0:
                put('/teleop/override', Bool(data=phase == 100.0), t)
            stamp = Time(sec=int(t), nanosec=int(round((t - int(t)) * 1e9)) % 1_000_000_000)
            state.header.stamp = stamp
            state.position = [0.1, -0.2, 0.3, 0.4, 0.0, gripper_angle(t_rel)]
            state.velocity = [0.0] * 6
            state.effort = [0.0] * 5 + [0.3 if state.position[5] < 0.3 else 0.0]
            put('/joint_states', state, t)
            if k % 33 == 0:
                trajectory.header.stamp = stamp
                put('/joint_trajectory', trajectory, t)
        end = T0 + seconds
        put('/eval/episode', String(data=EpisodeMark(EpisodeEvent.END, end, success=True)
                                    .to_json()), end)
    return counts


def plain_mcap_read(bag: Path) -> tuple[int, float]:
    """Iterate every decoded message with the plain mcap reader: (count, seconds)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    start = time.perf_counter()
    count = 0
    for file in sorted(bag.glob('*.mcap')):
        with open(file, 'rb') as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            for _ in reader.iter_decoded_messages():
                count += 1
    return count, time.perf_counter() - start


def bench_offline(hours: float, workdir: Path) -> dict:
    from eval_monitor.offline import evaluate_bag

    bag = workdir / 'hour'
    start = time.perf_counter()
    counts = generate_bag(bag, hours * 3600.0)
    generate_s = time.perf_counter() - start
    total = sum(counts.values())
    size_mb = sum(f.stat().st_size for f in bag.glob('*.mcap')) / 1e6
    # Alternate the two, best of REPEATS each: the machine is shared, so single runs vary.
    plain_runs, offline_runs = [], []
    for _ in range(REPEATS):
        plain_count, seconds = plain_mcap_read(bag)
        plain_runs.append(seconds)
        start = time.perf_counter()
        result = evaluate_bag(bag)
        offline_runs.append(time.perf_counter() - start)
    plain_s, offline_s = min(plain_runs), min(offline_runs)
    start = time.perf_counter()
    from eval_monitor.report import write_run_dir

    write_run_dir(workdir / 'run', result.engine, result.summary, title='bench')
    report_s = time.perf_counter() - start
    fed = sum(result.received.values())
    assert plain_count == total == fed, (plain_count, total, fed)
    return {
        'bag_hours': hours, 'messages': total, 'messages_per_topic': counts,
        'bag_mb': round(size_mb, 1), 'generate_s': round(generate_s, 1),
        'plain_mcap_read_s': round(plain_s, 2),
        'plain_mcap_msgs_per_s': round(total / plain_s),
        'offline_eval_s': round(offline_s, 2), 'offline_msgs_per_s': round(total / offline_s),
        'offline_vs_plain_read': round(offline_s / plain_s, 2),
        'runs_s': {'plain': [round(x, 2) for x in plain_runs],
                   'offline': [round(x, 2) for x in offline_runs]},
        'report_write_s': round(report_s, 2),
        'events': len(result.engine.events), 'skipped': result.skipped,
    }


def bench_recorder(seconds: float, workdir: Path, publisher_depth: int) -> dict:
    """Record two camera streams whose publishers keep ``publisher_depth`` samples."""
    import copy

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from so101_driver.qos import STREAM_PUB

    bag = workdir / f'images_{publisher_depth}'
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    topics = '[/cameras/front/image_raw,/cameras/handeye/image_raw]'
    recorder = subprocess.Popen(
        [sys.executable, '-m', 'eval_monitor.recorder_node', '--ros-args',
         '-p', f'output:={bag}', '-p', f'topics:={topics}', '-p', 'stats_period_s:=0.2'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(recorder.stdout), daemon=True)
    reader.start()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node('bench_cameras', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    qos = copy.copy(STREAM_PUB)
    qos.depth = publisher_depth
    publishers = [node.create_publisher(Image, f'/cameras/{name}/image_raw', qos)
                  for name in ('front', 'handeye')]
    frames = []
    for seed in range(4):
        pixels = np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        frames.append(Image(height=480, width=640, encoding='rgb8', step=640 * 3,
                            data=pixels.tobytes()))
    try:
        # Warm-up frames (frame_id 'warmup', not counted) until both streams reach the bag: a
        # reliable reader drops what arrives before it has matched the writer.
        deadline = time.monotonic() + 30.0
        while not any(line.startswith('[INFO]') and 'recorded:' in line and 'front' in line
                      and 'handeye' in line for line in log):
            for publisher in publishers:
                frames[0].header.frame_id = 'warmup'
                publisher.publish(frames[0])
            executor.spin_once(timeout_sec=0.1)
            if time.monotonic() > deadline:
                raise RuntimeError('recorder did not subscribe:\n' + ''.join(log))
        for frame in frames:
            frame.header.frame_id = 'camera'
        published = 0
        late = 0
        start = time.monotonic()
        for k in range(int(seconds * 30)):
            delay = start + k / 30 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late += 1
            for index, publisher in enumerate(publishers):
                frame = frames[(k + index) % len(frames)]
                frame.header.stamp = node.get_clock().now().to_msg()
                publisher.publish(frame)
                published += 1
        publish_s = time.monotonic() - start
        # Let the recorder write what is in flight (its periodic log says how many it wrote),
        # then stop it as a user would (Ctrl-C).
        def written() -> int:  # from the recorder's periodic log line
            counts = [int(line.split('recorded: ')[1].split()[0]) for line in log
                      if 'recorded: ' in line]
            return max(counts, default=0)

        settled, last = time.monotonic(), written()
        while time.monotonic() - settled < 2.0:  # until the count stops growing for 2 s
            time.sleep(0.1)
            if written() != last:
                settled, last = time.monotonic(), written()
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
    finally:
        if recorder.poll() is None:
            recorder.kill()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    import yaml

    from eval_monitor.bag import BagReader

    reader = BagReader(bag)
    recorded = sum(1 for *_, msg in reader.messages() if msg.header.frame_id == 'camera')
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    size_mb = sum(f.stat().st_size for f in bag.glob('*.mcap')) / 1e6
    return {
        'streams': 2, 'resolution': '640x480 rgb8', 'fps': 30, 'seconds': round(publish_s, 1),
        'publisher_qos': f'reliable keep-last {publisher_depth}',
        'published': published, 'recorded': recorded, 'dropped': published - recorded,
        'late_publish_ticks': late, 'bag_mb': round(size_mb, 1),
        'write_mb_per_s': round(size_mb / publish_s, 1),
        'warmup_frames_recorded': info['message_count'] - recorded,
        'bag_problems': reader.problems, 'recorder_exit_code': recorder.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hours', type=float, default=1.0, help='length of the generated bag')
    parser.add_argument('--record-seconds', type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(101, 200)))
    with tempfile.TemporaryDirectory(prefix='bench_eval_') as tmp:
        results = {'offline': bench_offline(args.hours, Path(tmp))}
        # The suite's camera publishers keep 10 samples (so101_driver.qos.STREAM_PUB); a
        # deeper history shows whether losses come from the recorder lagging past it.
        from so101_driver.qos import STREAM_PUB

        results['recorder'] = [bench_recorder(args.record_seconds, Path(tmp), depth)
                               for depth in (STREAM_PUB.depth, 100)]
    results['machine'] = {'cpus': os.cpu_count(), 'python': sys.version.split()[0],
                          'load_average_1min': round(os.getloadavg()[0], 2)}
    off = results['offline']
    print(f"offline: {off['messages']} messages ({off['bag_hours']} h, {off['bag_mb']} MB) in "
          f"{off['offline_eval_s']} s = {off['offline_msgs_per_s']} msg/s; plain mcap read "
          f"{off['plain_mcap_read_s']} s; ratio {off['offline_vs_plain_read']}x (target < 2x); "
          f"report {off['report_write_s']} s; generation {off['generate_s']} s")
    for rec in results['recorder']:
        print(f"recorder ({rec['publisher_qos']} publishers): {rec['published']} images "
              f"published, {rec['recorded']} recorded, {rec['dropped']} dropped, "
              f"{rec['write_mb_per_s']} MB/s over {rec['seconds']} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
