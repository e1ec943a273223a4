"""Per-stage latency of the pi05_policy node, and its overhead beyond the model's own time.

Runs the real node in-process over DDS: a fake robot publishes two 640x480 rgb8 cameras
(30 fps) and joint states (100 Hz) and the task; the node loads a checkpoint through its
normal path and publishes chunks. For each chunk the node times image conversion,
preprocessing (LeRobot's processor pipeline + unit conversion), the model, postprocessing
(LeRobot's unnormaliser + radians + clipping) and publishing; overhead = total - model.

Default: the reduced-size Pi0.5 (LeRobot's pi05 code, small widths; loaded with the node's
``model_loader`` ``pi05_policy.tiny_checkpoints:load_reduced_pi05``) on CPU. ``--full`` builds
the real-size Pi0.5 (random weights, ``paligemma_variant=gemma_2b``, bf16) — meant for a GPU
host: ``--full --device cuda [--compile]``. Without CUDA that fails at once, saying so.

Prints the figures and writes ``bench/results/bench_policy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'bench' / 'results' / 'bench_policy.json'
STAGES = ('image_conversion', 'preprocess', 'model', 'postprocess', 'publish', 'total',
          'overhead')
OVERHEAD_TARGET_MS = 5.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--full', action='store_true',
                        help='real-size Pi0.5 (gemma_2b, gemma_300m expert, random weights, bf16)')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda', 'mps'], default='auto')
    parser.add_argument('--compile', action='store_true', help='torch.compile the model')
    parser.add_argument('--dtype', choices=['auto', 'float32', 'bfloat16'], default=None,
                        help='model precision (default: bfloat16 with --full, else auto)')
    parser.add_argument('--chunks', type=int, default=30, help='chunks measured')
    parser.add_argument('--warmup', type=int, default=3, help='chunks ignored first')
    parser.add_argument('--out', type=Path, default=RESULTS)
    return parser.parse_args(argv)


def check_device(args) -> None:
    """Fail before building anything when the requested device is not there."""
    import torch

    if args.device == 'cuda' and not torch.cuda.is_available():
        sys.exit(f'bench_policy: --device cuda requested but torch {torch.__version__} sees no '
                 'CUDA device (torch.cuda.is_available() is False). Run it on a GPU host, or '
                 'drop --device cuda for the CPU figures.')
    if args.full and args.device not in ('cuda', 'cpu'):
        if not torch.cuda.is_available():
            sys.exit('bench_policy: --full needs a GPU (--device cuda); this machine has no '
                     'CUDA. The real-size Pi0.5 takes minutes per chunk on a CPU; pass '
                     '--device cpu explicitly to do that anyway.')


def build_checkpoint(args, workdir: Path) -> tuple[Path, Path]:
    """(pretrained_model folder, tokenizer folder) for the benchmark."""
    from pi05_policy.tiny_checkpoints import build_offline_tokenizer, build_tiny_pi05

    tokenizer = build_offline_tokenizer(workdir / 'tokenizer')
    if not args.full:
        return build_tiny_pi05(workdir, tokenizer, image_shape=(3, 480, 640)), tokenizer
    return build_full_pi05(workdir, tokenizer), tokenizer


def build_full_pi05(workdir: Path, tokenizer: Path) -> Path:
    """The real-size Pi0.5 (LeRobot defaults: gemma_2b, 224 px, 50-action chunks, 10 steps)."""
    import contextlib
    import shutil

    import torch
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors

    from pi05_policy.tiny_checkpoints import PALIGEMMA_TOKENIZER, _features, _save, dataset_stats

    torch.manual_seed(0)
    inputs, outputs = _features(('front', 'handeye'), (3, 480, 640))
    config = PI05Config(input_features=inputs, output_features=outputs, device='cpu',
                        paligemma_variant='gemma_2b', dtype='bfloat16')
    t0 = time.perf_counter()
    policy = PI05Policy(config)
    print(f'[bench] real-size Pi0.5 built in {time.perf_counter() - t0:.0f} s '
          f'({sum(p.numel() for p in policy.parameters()) / 1e9:.2f} B parameters)')
    staging = workdir / '.tokenizer_staging'
    shutil.copytree(tokenizer, staging / PALIGEMMA_TOKENIZER)
    with contextlib.chdir(staging):
        pre, post = make_pi05_pre_post_processors(config, dataset_stats())
    return _save(workdir / 'pretrained_model', policy, pre, post)


def run(args) -> dict:
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import rclpy
    import torch
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from pi05_policy.policy_node import PolicyNode
    from pi05_policy.runtime import REDUCED_PI05_LOADER
    from pi05_policy.tiny_checkpoints import DEMO_TASK
    from so101_driver import qos
    from so101_driver.images import numpy_to_image
    from so101_driver.ros_io import joint_state_msg

    workdir = Path(tempfile.mkdtemp(prefix='bench_policy_'))
    checkpoint, tokenizer = build_checkpoint(args, workdir)
    dtype = args.dtype or ('bfloat16' if args.full else 'auto')

    class FakeRobot(Node):
        def __init__(self):
            super().__init__('bench_fake_robot')
            self.pub_state = self.create_publisher(JointState, 'joint_states', qos.STREAM_PUB)
            self.pub_img = {n: self.create_publisher(Image, f'cameras/{n}/image_raw',
                                                     qos.STREAM_PUB) for n in ('front', 'handeye')}
            self.pub_task = self.create_publisher(String, 'policy/task', qos.LATCHED)
            self.create_subscription(JointTrajectory, 'joint_trajectory', self._on_traj,
                                     qos.COMMAND)
            self.frames = {n: np.random.default_rng(i).integers(0, 255, (480, 640, 3), np.uint8)
                           for i, n in enumerate(self.pub_img)}
            self.received = 0
            self.create_timer(0.01, lambda: self.pub_state.publish(
                joint_state_msg(self.get_clock().now().to_msg(), np.zeros(6))))
            self.create_timer(1 / 30, self._images)
            self.pub_task.publish(String(data=DEMO_TASK))

        def _images(self):
            stamp = self.get_clock().now().to_msg()
            for name, pub in self.pub_img.items():
                pub.publish(numpy_to_image(self.frames[name], stamp=stamp))

        def _on_traj(self, _msg):
            self.received += 1

    rclpy.init()
    executor = MultiThreadedExecutor(num_threads=3)
    node = robot = None
    try:
        robot = FakeRobot()
        params = {'checkpoint': str(checkpoint), 'tokenizer_path': str(tokenizer),
                  'calibration_file': str(ROOT / 'config' / 'calibration' / 'so101_demo.json'),
                  'device': args.device, 'dtype': dtype, 'compile': args.compile,
                  # the reduced model needs its test loader; the real-size one LeRobot's own
                  'model_loader': '' if args.full else REDUCED_PI05_LOADER,
                  # async with threshold 1: the next inference starts as soon as a chunk is out
                  'chunk_mode': 'async', 'async_threshold': 1.0,
                  'max_state_age_s': 5.0, 'max_image_age_s': 5.0}
        t0 = time.perf_counter()
        node = PolicyNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        executor.add_node(robot)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        want = args.chunks + args.warmup
        deadline = time.monotonic() + (3600 if args.full else 600)
        while len(node.latency_history) < want and time.monotonic() < deadline:
            if node.state.value == 'error':
                raise RuntimeError('the node could not load the checkpoint (see its log)')
            time.sleep(0.01)
        records = list(node.latency_history)[args.warmup:want]
        if len(records) < args.chunks:
            raise RuntimeError(f'only {len(records)} chunks measured before the deadline')
        wall = time.perf_counter() - t0
        n_params = sum(p.numel() for p in node.runtime.policy.parameters())
        figures = {}
        for stage in STAGES:
            ms = np.array([r[stage] for r in records]) * 1e3
            figures[stage] = {'mean': float(ms.mean()), 'p50': float(np.median(ms)),
                              'p95': float(np.percentile(ms, 95)), 'max': float(ms.max())}
        result = {
            'model': 'pi05 full-size (gemma_2b, random weights)' if args.full
            else 'pi05 reduced-size (LeRobot pi05 code, small widths, random weights)',
            'parameters': n_params, 'device': node.runtime.device, 'dtype': dtype,
            'compile': args.compile, 'cameras': 2, 'image_size': [480, 640],
            'chunk_actions': int(node.runtime.info.chunk_size or 0),
            'chunks_measured': len(records), 'warmup_chunks': args.warmup,
            'trajectories_received': robot.received, 'wall_s': wall,
            'stages_ms': figures, 'overhead_target_ms': OVERHEAD_TARGET_MS,
            'overhead_p50_within_target': figures['overhead']['p50'] < OVERHEAD_TARGET_MS,
            'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                        'torch': torch.__version__, 'threads': torch.get_num_threads(),
                        'cuda': torch.cuda.get_device_name(0) if torch.cuda.is_available()
                        else None},
        }
        return result
    finally:
        executor.shutdown(timeout_sec=2)
        for n in (node, robot):
            if n is not None:
                n.destroy_node()
        rclpy.try_shutdown()


def main(argv=None):
    args = parse_args(argv)
    check_device(args)
    result = run(args)
    print(f"\npi05_policy node, {result['model']}\n  {result['parameters'] / 1e6:.1f} M "
          f"parameters on {result['device']} ({result['dtype']}, compile={result['compile']}), "
          f"2 cameras 640x480, {result['chunk_actions']}-action chunks, "
          f"{result['chunks_measured']} chunks measured\n")
    print(f"  {'stage':<18}{'mean':>9}{'p50':>9}{'p95':>9}{'max':>9}   (ms)")
    for stage, f in result['stages_ms'].items():
        print(f"  {stage:<18}{f['mean']:9.2f}{f['p50']:9.2f}{f['p95']:9.2f}{f['max']:9.2f}")
    verdict = 'within' if result['overhead_p50_within_target'] else 'OVER'
    overhead = result['stages_ms']['overhead']['p50']
    print(f"\n  node overhead beyond the model (p50): {overhead:.2f} ms, {verdict} the "
          f"{OVERHEAD_TARGET_MS:.0f} ms target")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'  written to {args.out}')


if __name__ == '__main__':
    main()
