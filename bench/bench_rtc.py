"""Seams between action chunks in sync, async and rtc mode, at 0-300 ms of extra model delay.

The reduced Pi0.5 (LeRobot's pi05 code at small widths, 50-action chunks, 10 denoising steps
like the real one) runs through ``PolicyRuntime``; its chunks are timed and scheduled by
``chunking`` (``time_chunk``, ``ChunkScheduler``) and, in rtc mode, continued by LeRobot's
Real-Time Chunking through ``rtc.RtcPlanner``; the arm's own ``ArmController`` executes them
at 100 Hz, closed loop (the policy observes the setpoint the arm reached). Time is simulated:
an inference started at ``t`` delivers its chunk at ``t + base + injected delay``, where
``base`` is the median wall time of that inference path (plain or RTC-guided) measured before
the cases, so the injected 100-300 ms cost no waiting and other processes on the machine do
not move the timing; the model time of every chunk is still measured and reported.

Modes: ``sync``, ``async`` and ``rtc`` with LeRobot's default ``execution_horizon`` (10),
plus ``rtc_h20`` (horizon 20, ``--execution-horizon``): at 300 ms the delay in steps passes
10. The arm's first-point check (``max_jump``) is opened so that every seam is measured
rather than refused; the seams the arm's default would refuse are counted.

Per case (delay, mode), over every seam (a chunk replacing the one being executed):

* ``seam_jump_rad``: max over joints of |new chunk's first executed point - the old plan at
  that time| (the executor blends it in over one action period, so this is the step the
  setpoint takes that the old chunk would not have); ``seam_jump_rel``: the same divided by
  the chunk's own median step-to-step motion;
* ``jerk``: third difference of the executed 100 Hz setpoint (rad/s^3, max over joints),
  p95 over the run, and within 100 ms of the seams;
* ``gaps``: seams where the new chunk came after the old one had ended (the arm held), and
  their total time;
* ``model_ms_p50``: the model's own time per chunk (what RTC's guided denoising costs).

Random weights give chunks that jump as much inside a chunk as between two chunks, so by
default the model is first trained briefly (``--train-steps``) on expert demonstrations of
the simulated cell (``so101_driver.sim``: SimCell + ScriptedExpert, the same expert as the
demo) with LeRobot's own ``PI05Policy.forward`` loss; ``--train-steps 0`` keeps the random
weights.

Then the policy node itself runs the same model in rtc mode over DDS beside a fake robot
(wall clock, a 640x480 camera) and the stage stamps of its chunks (``policy/status``: image
capture, joint state, inference start/end, publish, first point due) give camera-to-command
latency percentiles. Prints the tables and writes ``bench/results/bench_rtc.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'bench' / 'results' / 'bench_rtc.json'
CALIBRATION = ROOT / 'config' / 'calibration' / 'so101_demo.json'
FPS = 30.0  # control rate of the (simulated) training data
TICK = 0.01  # the arm's control period (100 Hz)
CHUNK = 50  # Pi0.5's chunk
DENOISING_STEPS = 10  # Pi0.5's num_inference_steps
IMAGE_SHAPE = (3, 96, 128)
IMAGE_RESOLUTION = 28  # SigLIP input of the reduced model: 2x2 patches, cheap to train
PROMPT_TOKENS = 32  # "Task: ..., State: <8 bins>;\nAction: " fits
TRAIN_LR = 2e-3
CAMERAS = ('front',)  # one camera: the expert needs no picture, a second only costs time
DELAYS_MS = (0, 100, 200, 300)
TARGET_RATIO = 1 / 3  # rtc seam jump p50 at most a third of async's
#: The arm's check of a trajectory's first point against where it is (ExecutorConfig.max_jump):
#: opened so that every seam is measured rather than refused (a briefly trained model picks a
#: grasp orientation per sample, up to pi/2 of wrist_roll apart); how many seams the arm's
#: default (ARM_MAX_JUMP) would have refused is counted.
BENCH_MAX_JUMP = math.pi
ARM_MAX_JUMP = 0.35
WARM_CHUNKS = 6  # the node's first chunks, while torch warms up: not in its latency figures


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer seams (15 per case)')
    parser.add_argument('--seams', type=int, default=None, help='seams per case (default 40, '
                        '--quick 15)')
    parser.add_argument('--train-steps', type=int, default=None, help='training steps on '
                        'the simulated expert first (default 1200; 0: random weights)')
    parser.add_argument('--execution-horizon', type=int, nargs='+', default=[0, 20],
                        help='rtc_execution_horizon of each rtc variant (0: LeRobot\'s '
                        'default; default: 0 20)')
    parser.add_argument('--node-chunks', type=int, default=None, help='chunks of the node '
                        'over DDS for the stage stamps (default 40, --quick 15)')
    parser.add_argument('--model-dir', type=Path, default=None, help='keep the trained model '
                        'here and reuse it when it is there already (same --train-steps)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.seams = args.seams or (15 if args.quick else 40)
    args.node_chunks = args.node_chunks or (15 if args.quick else 40)
    if args.train_steps is None:
        args.train_steps = 1200
    return args


# ---------------------------------------------------------------- the model and its training

def expert_demonstrations(episodes: int, seed: int = 0):
    """(states, action chunks) in LeRobot units from the scripted expert in the sim cell:
    every 1/FPS the expert's setpoint and its setpoints of the next CHUNK periods. The state
    is the setpoint, not the lagging physical joints, because the bench's arm reaches its
    goal every tick: what the policy sees there is what it saw in training."""
    from so101_driver.feetech.calibration import ArmCalibration, load_calibration, so101_norm_modes
    from so101_driver.sim.cell import SimCell, SimConfig
    from so101_driver.sim.expert import ExpertConfig, ScriptedExpert, run_episodes

    calibration = ArmCalibration(load_calibration(CALIBRATION))
    modes = so101_norm_modes(True)
    times, setpoints, episodes_of = [], [], []

    class Recording(SimCell):
        def step(self):
            super().step()
            if self.counters.ticks % max(1, round(1 / (FPS * self.dt))) == 0:
                setpoint = self.controller.executor.setpoint(self.time)
                if setpoint is not None:
                    times.append(self.time)
                    setpoints.append(setpoint)
                    episodes_of.append(self.counters.resets)

    cell = Recording(SimConfig(seed=seed))
    run_episodes(cell, ScriptedExpert(ExpertConfig(seed=seed)), episodes)
    to_lerobot = lambda q: calibration.radians_to_lerobot(q, modes)  # noqa: E731
    actions = np.stack([to_lerobot(q) for q in setpoints]).astype(np.float32)
    episode = np.array(episodes_of)
    # windows inside one episode (a reset moves the arm home at once: no expert motion)
    starts = np.array([s for s in range(len(actions) - CHUNK)
                       if episode[s] == episode[s + CHUNK - 1]])
    chunks = np.stack([actions[s:s + CHUNK] for s in starts])
    return actions[starts], chunks, float(times[-1] - times[0])


def joint_stats(values: np.ndarray) -> dict:
    import torch

    v = torch.as_tensor(values.reshape(-1, values.shape[-1]), dtype=torch.float32)
    q = lambda p: torch.quantile(v, p, dim=0)  # noqa: E731
    return {'mean': v.mean(0), 'std': v.std(0).clamp_min(1e-3), 'min': v.min(0).values,
            'max': v.max(0).values, 'q01': q(0.01), 'q10': q(0.1), 'q50': q(0.5),
            'q90': q(0.9), 'q99': q(0.99)}


def build_model(workdir: Path, train_steps: int, log) -> tuple[Path, Path, dict]:
    """The reduced Pi0.5, normalised with the expert data's statistics, trained briefly."""
    import contextlib
    import shutil

    import torch
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors

    from pi05_policy.tiny_checkpoints import (
        DEMO_TASK,
        PALIGEMMA_TOKENIZER,
        ReducedPi05,
        _features,
        _save,
        build_offline_tokenizer,
        reduced_pi05_architecture,
    )

    torch.manual_seed(0)
    t0 = time.perf_counter()
    states, chunks, span = expert_demonstrations(episodes=6 if train_steps else 1)
    log(f'[bench] expert demonstrations: {len(states)} samples ({span:.0f} s of the sim cell) '
        f'in {time.perf_counter() - t0:.1f} s')
    tokenizer = build_offline_tokenizer(workdir / 'tokenizer')
    inputs, outputs = _features(CAMERAS, IMAGE_SHAPE)
    config = PI05Config(input_features=inputs, output_features=outputs, device='cpu',
                        chunk_size=CHUNK, n_action_steps=CHUNK,
                        num_inference_steps=DENOISING_STEPS,
                        image_resolution=(IMAGE_RESOLUTION, IMAGE_RESOLUTION),
                        max_state_dim=8, max_action_dim=8, tokenizer_max_length=PROMPT_TOKENS)
    arch = ReducedPi05()
    with reduced_pi05_architecture(arch):
        policy = PI05Policy(config)
    stats = {'observation.state': joint_stats(states), 'action': joint_stats(chunks)}
    staging = workdir / '.tokenizer_staging'
    shutil.copytree(tokenizer, staging / PALIGEMMA_TOKENIZER)
    with contextlib.chdir(staging):
        pre, post = make_pi05_pre_post_processors(config, stats)
    shutil.rmtree(staging)
    training = {'steps': train_steps, 'samples': int(len(states)), 'demo_s': span}
    if train_steps:
        training.update(train(policy, pre, states, chunks, train_steps, DEMO_TASK, log))
    folder = _save(workdir / 'pretrained_model', policy, pre, post)
    arch.save(folder)
    return folder, tokenizer, training


def train(policy, preprocessor, states, chunks, steps: int, task: str, log) -> dict:
    """LeRobot's flow-matching loss (``PI05Policy.forward``) on the demonstrations, Adam."""
    import torch

    rng = np.random.default_rng(0)
    gray = torch.full((3, *IMAGE_SHAPE[1:]), 0.5)  # the expert needs no picture to move
    optimizer = torch.optim.AdamW(policy.parameters(), lr=TRAIN_LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.1, total_iters=steps)
    policy.train()
    t0, losses = time.perf_counter(), []
    for step in range(steps):
        index = rng.integers(0, len(states), 16)
        batch = {'observation.state': torch.from_numpy(states[index]),
                 'action': torch.from_numpy(chunks[index]), 'task': [task] * len(index),
                 **{f'observation.images.{name}': gray.expand(len(index), -1, -1, -1)
                    for name in CAMERAS}}
        loss, _ = policy.forward(preprocessor(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            log(f'[bench] train step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.4f}')
    policy.eval()
    return {'loss_first': float(np.mean(losses[:20])), 'loss_last': float(np.mean(losses[-20:])),
            'train_s': time.perf_counter() - t0}


def load_runtime(checkpoint: Path, tokenizer: Path, horizon: int | None):
    from pi05_policy.rtc import RtcSettings
    from pi05_policy.runtime import REDUCED_PI05_LOADER, PolicyRuntime, RuntimeConfig

    settings = RtcSettings.lerobot_defaults()
    if horizon:
        settings = RtcSettings(horizon, settings.max_guidance_weight,
                               settings.prefix_attention_schedule)
    runtime = PolicyRuntime(RuntimeConfig(
        checkpoint=checkpoint, calibration_file=CALIBRATION,
        cameras={name: name for name in CAMERAS}, device='cpu',
        tokenizer_path=str(tokenizer), model_loader=REDUCED_PI05_LOADER, rtc=settings))
    runtime.load()
    return runtime, settings


# -------------------------------------------------------------------------------- one case

@dataclass
class Case:
    delay_ms: int
    mode: str
    seams: list[float] = field(default_factory=list)
    seams_rel: list[float] = field(default_factory=list)
    seam_times: list[float] = field(default_factory=list)
    gaps: int = 0
    rejected: int = 0  # chunks the arm refused (first point too far from where it is)
    over_arm_jump: int = 0  # accepted, but the arm's default max_jump would have refused them
    gap_s: float = 0.0
    model_s: list[float] = field(default_factory=list)
    delays: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    setpoints: list[np.ndarray] = field(default_factory=list)  # executed, every tick
    setpoint_times: list[float] = field(default_factory=list)


def run_case(runtime, delay_ms: int, mode: str, seams: int, frames: dict,
             base_s: dict[bool, float]) -> Case:
    """One closed-loop run on the simulated clock until ``seams`` seams were executed."""
    from pi05_policy.chunking import ChunkingConfig, ChunkMode, ChunkScheduler, time_chunk
    from pi05_policy.rtc import RtcPlanner
    from pi05_policy.runtime import Observation, command_limits
    from pi05_policy.tiny_checkpoints import DEMO_TASK
    from so101_driver.arm.trajectory import (
        ArmController,
        CommandSource,
        ExecutorConfig,
        Outcome,
        Trajectory,
    )
    from so101_driver.joints import JOINT_NAMES

    config = ChunkingConfig(fps=FPS, mode=ChunkMode(mode), async_threshold=0.5, min_lead_s=0.01)
    scheduler, planner = ChunkScheduler(config), RtcPlanner(FPS)
    controller = ArmController(ExecutorConfig(limits=command_limits(runtime.calibration),
                                              max_jump=BENCH_MAX_JUMP))
    from so101_driver.sim.cell import HOME

    present = np.array(HOME, dtype=float)  # where the expert's demonstrations start
    controller.hold_present(present, 0.0)
    case = Case(delay_ms, mode)
    pending = None  # (ready time, token, t_obs, result)
    t, accepted = 0.0, 0
    while accepted <= seams:
        if pending is None and scheduler.due(t):
            rtc = planner.request(t) if config.mode is ChunkMode.RTC else None
            token = scheduler.start()
            result = runtime.infer(Observation(images=frames, joint_positions=present,
                                               task=DEMO_TASK), rtc=rtc)
            pending = (t + base_s[rtc is not None] + delay_ms / 1e3, token, t, result)
            case.model_s.append(result.timings['model'])
            if rtc is not None and rtc.prev_chunk_left_over is not None:
                case.delays.append(rtc.inference_delay)
        t += TICK
        if pending is not None and pending[0] <= t:  # the chunk arrives (at its ready time)
            ready, token, t_obs, result = pending
            pending = None
            planner.record_latency(ready + config.min_lead_s - t_obs)
            case.latencies.append(ready - t_obs)
            chunk = time_chunk(result.positions, t_obs, ready, config)
            scheduler.finish(token, chunk)
            if chunk is not None:
                executor = controller.executor
                old_end = executor.end_time()
                old = executor.setpoint(chunk.first)
                outcome, why = controller.on_trajectory(CommandSource.POLICY, Trajectory(
                    JOINT_NAMES, chunk.start, chunk.time_from_start, chunk.positions), ready,
                    present)
                if outcome is not Outcome.ACCEPTED:  # the arm keeps its plan, as on the robot
                    case.rejected += 1
                    if case.rejected > 4 * seams:
                        raise RuntimeError(f'{mode} @ {delay_ms} ms: the arm refuses every '
                                           f'chunk: {why}')
                else:
                    planner.record_chunk(t_obs, result.model_actions[:chunk.length])
                    case.over_arm_jump += bool(accepted) and bool(np.any(
                        np.abs(chunk.positions[0] - present) > ARM_MAX_JUMP))
                if outcome is Outcome.ACCEPTED and accepted:  # a seam: it replaces the old one
                    jump = float(np.max(np.abs(chunk.positions[0] - old)))
                    motion = np.median(np.max(np.abs(np.diff(result.positions, axis=0)), axis=1))
                    case.seams.append(jump)
                    case.seams_rel.append(jump / max(float(motion), 1e-6))
                    case.seam_times.append(ready)
                    if old_end is not None and old_end < ready:
                        case.gaps += 1
                        case.gap_s += ready - old_end
                accepted += outcome is Outcome.ACCEPTED
        goal = controller.goal(t, present)
        if goal is not None:
            present = goal  # the servos reach their goal within a tick
        if accepted:
            case.setpoints.append(present.copy())
            case.setpoint_times.append(t)
    return case


def figures(case: Case) -> dict:
    sp, times = np.array(case.setpoints), np.array(case.setpoint_times)
    jerk = np.max(np.abs(np.diff(sp, n=3, axis=0)), axis=1) / TICK ** 3
    centre = times[1:-2] + TICK / 2  # the middle of the four setpoints of each difference
    seams = np.array(case.seam_times)
    near = jerk[np.min(np.abs(centre[:, None] - seams[None, :]), axis=1) <= 0.1] if len(
        seams) else []
    pct = lambda v, q: float(np.percentile(v, q)) if len(v) else None  # noqa: E731
    return {'delay_ms': case.delay_ms, 'mode': case.mode, 'seams': len(case.seams),
            'seam_jump_rad_p50': pct(case.seams, 50), 'seam_jump_rad_p95': pct(case.seams, 95),
            'seam_jump_rel_p50': pct(case.seams_rel, 50),
            'seam_jump_rel_p95': pct(case.seams_rel, 95),
            'jerk_p95': pct(jerk, 95), 'seam_jerk_p95': pct(near, 95),
            'gaps': case.gaps, 'gap_s': case.gap_s, 'rejected': case.rejected,
            'over_arm_max_jump': case.over_arm_jump,
            'model_ms_p50': pct(np.array(case.model_s) * 1e3, 50),
            'latency_ms_p50': pct(np.array(case.latencies) * 1e3, 50),
            'inference_delay_p50': pct(case.delays, 50)}


def fake_robot(stop, domain: str) -> None:
    """A child process publishing what the arm and a camera would: joint states at 100 Hz
    (the sim's home pose), a 640x480 rgb8 image at 30 Hz, the task (latched)."""
    os.environ['ROS_DOMAIN_ID'] = domain
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from pi05_policy.tiny_checkpoints import DEMO_TASK
    from so101_driver import qos
    from so101_driver.images import numpy_to_image
    from so101_driver.ros_io import joint_state_msg
    from so101_driver.sim.cell import HOME

    rclpy.init()
    node = Node('bench_rtc_robot')
    state = node.create_publisher(JointState, 'joint_states', qos.STREAM_PUB)
    image = node.create_publisher(Image, 'cameras/front/image_raw', qos.STREAM_PUB)
    task = node.create_publisher(String, 'policy/task', qos.LATCHED)
    frame = np.full((480, 640, 3), 128, np.uint8)
    node.create_timer(0.01, lambda: state.publish(joint_state_msg(
        node.get_clock().now().to_msg(), np.array(HOME))))
    node.create_timer(1 / 30, lambda: image.publish(numpy_to_image(
        frame, stamp=node.get_clock().now().to_msg())))
    task.publish(String(data=DEMO_TASK))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown()


def node_latency(checkpoint: Path, tokenizer: Path, chunks: int, mode: str = 'auto') -> dict:
    """The policy node itself over DDS, spun as its ``main()`` spins it (one thread), beside a
    fake robot in another process (wall clock): the stage stamps of its chunks as
    ``policy/status`` reports them, p50/p95 over the chunks after the first WARM_CHUNKS
    (torch warming up)."""
    import multiprocessing
    import random

    domain = os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 100)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from pi05_policy.policy_node import PolicyNode
    from pi05_policy.runtime import REDUCED_PI05_LOADER
    from pi05_policy.stamps import INTERVALS

    spawn = multiprocessing.get_context('spawn')
    stop = spawn.Event()
    robot = spawn.Process(target=fake_robot, args=(stop, domain), daemon=True)
    robot.start()
    rclpy.init()
    executor = SingleThreadedExecutor()
    node = None
    try:
        params = {'checkpoint': str(checkpoint), 'tokenizer_path': str(tokenizer),
                  'calibration_file': str(CALIBRATION), 'model_loader': REDUCED_PI05_LOADER,
                  'cameras': list(CAMERAS), 'control_fps': FPS, 'device': 'cpu',
                  'max_state_age_s': 2.0, 'max_image_age_s': 2.0, 'chunk_mode': mode}
        node = PolicyNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        deadline = time.monotonic() + 300
        while len(node.stamps) < chunks + WARM_CHUNKS and time.monotonic() < deadline:
            if node.state.value == 'error' or not robot.is_alive():
                raise RuntimeError('the node could not load the checkpoint or the fake robot '
                                   'died (see the log)')
            time.sleep(0.05)
        rows = [c.intervals() for c in node.stamps.chunks()[WARM_CHUNKS:]]
        if not rows:
            raise RuntimeError(f'the node published no chunks in {mode} mode')
        models = [h['model'] for h in list(node.latency_history)[WARM_CHUNKS:]]
        out = {'chunks': len(rows), 'chunk_mode': node.chunking.mode.value,
               'rtc_guided_chunks': node.counters['rtc_guided_chunks'],
               'rtc_inference_delay_last': None if node.last_rtc is None
               else node.last_rtc.inference_delay,
               'model_ms_p50': float(np.percentile(models, 50)) * 1e3}
        for name in INTERVALS:
            ms = np.array([r[name] for r in rows]) * 1e3
            out[f'{name}_ms_p50'] = float(np.percentile(ms, 50))
            out[f'{name}_ms_p95'] = float(np.percentile(ms, 95))
        return out
    finally:
        executor.shutdown(timeout_sec=2)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        stop.set()
        robot.join(timeout=5)
        if robot.is_alive():
            robot.terminate()


def warm_up(runtime, frames) -> dict[bool, float]:
    """Run both paths (plain, RTC-guided) until torch is warm; their median wall times."""
    from pi05_policy.rtc import RtcRequest
    from pi05_policy.runtime import Observation
    from pi05_policy.tiny_checkpoints import DEMO_TASK
    from so101_driver.sim.cell import HOME

    obs = Observation(images=frames, joint_positions=np.array(HOME), task=DEMO_TASK)
    walls = {False: [], True: []}
    for i in range(16):
        t0 = time.perf_counter()
        chunk = runtime.infer(obs).model_actions
        t1 = time.perf_counter()
        runtime.infer(obs, rtc=RtcRequest(3, chunk[5:], 5.0, 0.1))
        if i >= 6:  # the first calls of a fresh torch are slow
            walls[False].append(t1 - t0)
            walls[True].append(time.perf_counter() - t1)
    return {guided: float(np.median(w)) for guided, w in walls.items()}


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.manual_seed(0)
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    workdir = args.model_dir or Path(tempfile.mkdtemp(prefix='bench_rtc_'))
    saved = workdir / 'training.json'
    if saved.is_file() and json.loads(saved.read_text())['steps'] == args.train_steps:
        checkpoint, tokenizer = workdir / 'pretrained_model', workdir / 'tokenizer'
        training = json.loads(saved.read_text())
        print(f'[bench] reusing the model in {workdir}')
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint, tokenizer, training = build_model(workdir, args.train_steps, print)
        saved.write_text(json.dumps(training) + '\n')
    frames = {n: np.full((IMAGE_SHAPE[1], IMAGE_SHAPE[2], 3), 128, np.uint8) for n in CAMERAS}
    default_horizon = None
    variants = []  # (mode label, chunk mode, runtime, execution horizon, base latency)
    for horizon in args.execution_horizon:
        runtime, settings = load_runtime(checkpoint, tokenizer, horizon)
        base_s = warm_up(runtime, frames)
        print(f'[bench] inference wall time (median): {base_s[False] * 1e3:.1f} ms plain, '
              f'{base_s[True] * 1e3:.1f} ms RTC-guided (horizon {settings.execution_horizon})')
        if default_horizon is None:  # the first: sync and async use it too (no RTC kwargs)
            default_horizon = settings.execution_horizon
            variants += [('sync', 'sync', runtime, None, base_s),
                         ('async', 'async', runtime, None, base_s)]
        label = 'rtc' if settings.execution_horizon == default_horizon else (
            f'rtc_h{settings.execution_horizon}')
        variants.append((label, 'rtc', runtime, settings.execution_horizon, base_s))
    cases = []
    for delay_ms in DELAYS_MS:
        for label, mode, runtime, horizon, base_s in variants:
            case = figures(run_case(runtime, delay_ms, mode, args.seams, frames, base_s))
            case.update(mode=label, execution_horizon=horizon,
                        base_latency_ms=base_s[mode == 'rtc'] * 1e3)
            cases.append(case)
            print(f"[bench] {delay_ms:3d} ms {label:7s}: seam p50 "
                  f"{case['seam_jump_rad_p50']:.4f} rad ({case['seam_jump_rel_p50']:.2f} x the "
                  f"chunk's step), gaps {case['gaps']}, model {case['model_ms_p50']:.0f} ms")
    print('[bench] the policy node in rtc mode over DDS: stage stamps')
    latency = node_latency(checkpoint, tokenizer, args.node_chunks)
    verdicts = {}
    for delay_ms in DELAYS_MS:
        by_mode = {c['mode']: c for c in cases if c['delay_ms'] == delay_ms}
        base = max(by_mode['async']['seam_jump_rad_p50'], 1e-9)
        verdicts[str(delay_ms)] = {
            label: {'rtc_over_async_seam_p50': c['seam_jump_rad_p50'] / base,
                    'met': c['seam_jump_rad_p50'] / base <= TARGET_RATIO and c['gaps'] == 0}
            for label, c in by_mode.items() if label.startswith('rtc')}
    result = {
        'cases': cases, 'node_latency': latency, 'target': {'rtc_over_async_seam_p50_max': TARGET_RATIO,
                                   'rtc_gaps': 0, 'by_delay': verdicts},
        'model': 'pi05 reduced-size (LeRobot pi05 code, small widths), '
                 + (f'trained {args.train_steps} steps on the simulated expert'
                    if args.train_steps else 'random weights'),
        'training': training, 'chunk_actions': CHUNK, 'denoising_steps': DENOISING_STEPS,
        'control_fps': FPS, 'arm_rate_hz': 1 / TICK, 'async_threshold': 0.5,
        'bench_max_jump_rad': BENCH_MAX_JUMP, 'arm_max_jump_rad': ARM_MAX_JUMP,
        'rtc': {'execution_horizons': [c for c in args.execution_horizon],
                'lerobot_execution_horizon': default_horizon,
                'max_guidance_weight': settings.max_guidance_weight,
                'prefix_attention_schedule': settings.prefix_attention_schedule},
        'quick': args.quick, 'seams_per_case': args.seams,
        'wall_s': time.perf_counter() - t_start,
        'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                    'load_1min_start': load_start, 'load_1min_end': os.getloadavg()[0],
                    'torch': torch.__version__, 'threads': torch.get_num_threads()},
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'  written to {args.out}')


def print_table(result: dict) -> None:
    print(f"\nchunk seams, {result['model']}\n  {result['chunk_actions']}-action chunks at "
          f"{result['control_fps']:.0f} Hz, arm executor at {result['arm_rate_hz']:.0f} Hz, "
          f"rtc {result['rtc']}\n")
    print(f"  {'delay':>6} {'mode':<8}{'seam p50':>9}{'p95':>8}{'rel p50':>8}{'jerk p95':>10}"
          f"{'at seams':>10}{'gaps':>5}{'model':>7}{'d':>4}{'>max_jump':>10}{'refused':>8}")
    for c in result['cases']:
        d = '' if c['inference_delay_p50'] is None else f"{c['inference_delay_p50']:.0f}"
        print(f"  {c['delay_ms']:4d}ms {c['mode']:<8}{c['seam_jump_rad_p50']:9.4f}"
              f"{c['seam_jump_rad_p95']:8.4f}{c['seam_jump_rel_p50']:8.2f}{c['jerk_p95']:10.0f}"
              f"{c['seam_jerk_p95']:10.0f}{c['gaps']:5d}{c['model_ms_p50']:5.0f}ms{d:>4}"
              f"{c['over_arm_max_jump']:10d}{c['rejected']:8d}")
    print('  (seams in rad; rel: over the chunk\'s own step; jerk rad/s^3; model: ms per chunk; '
          f'd: rtc delay in steps; >max_jump: seams over the arm\'s {ARM_MAX_JUMP} rad check; '
          f'refused: chunks over the bench\'s {BENCH_MAX_JUMP:.2f} rad)\n')
    for delay, by_label in result['target']['by_delay'].items():
        for label, v in by_label.items():
            print(f"  {delay:>4} ms {label:<8}: seam p50 / async's = "
                  f"{v['rtc_over_async_seam_p50']:.2f} ({'met' if v['met'] else 'NOT met'}: "
                  f"<= {TARGET_RATIO:.2f} and no gaps)")
    n = result['node_latency']
    print(f"\n  policy node, rtc over DDS, {n['chunks']} chunks (policy/status stage stamps, "
          'ms p50 / p95):')
    from pi05_policy.stamps import INTERVALS

    for name in INTERVALS:
        print(f"    {name:<24}{n[f'{name}_ms_p50']:8.1f}{n[f'{name}_ms_p95']:8.1f}")
    m = result['machine']
    print(f"  wall {result['wall_s']:.0f} s, load {m['load_1min_start']:.2f} at the start, "
          f"{m['load_1min_end']:.2f} at the end")


if __name__ == '__main__':
    main()
