"""``pi05_policy``: a LeRobot policy (Pi0.5, ACT, ...) as a ROS 2 node publishing chunks.

Subscribes to ``cameras/<name>/image_raw`` (or ``.../compressed``), ``joint_states``,
``policy/task`` (latched) and ``teleop/override`` (latched); publishes each action chunk as
one ``JointTrajectory`` on ``joint_trajectory`` and its state on ``policy/status``.

Callbacks only store the newest message (and, for task and override, apply it); the model
is loaded and run in one worker thread, so no callback ever waits for inference. The worker
loop: assess the inputs (watchdog, task, override) -> ask ``chunking.ChunkScheduler``
whether an inference is due -> convert images and state -> ``runtime.PolicyRuntime.infer``
-> ``chunking.time_chunk`` (drops actions whose time passed during inference) ->
``so101_driver.ros_io.trajectory_msg`` -> publish. Every stage is timed and reported, and
every chunk's stage stamps (``pi05_policy.stamps``) go out in ``policy/status`` right after it.

Chunk modes (``chunk_mode``): ``sync``, ``async`` and ``rtc`` (``chunking``); ``auto`` (the
default) is ``rtc`` for a policy whose LeRobot config has ``rtc_config`` (pi05, pi0,
smolvla) and ``async`` otherwise; ``rtc`` with another policy fails at start. For such a
policy LeRobot's RTC is installed at load (``rtc_*`` parameters, LeRobot's defaults), so the
mode can change at runtime; in ``rtc`` each inference gets the unexecuted part of the current
chunk and the delay from ``pi05_policy.rtc.RtcPlanner``.

While ``teleop/override`` is true nothing is published and the scheduler is reset (an
inference in flight is thrown away); after the hand-back the policy starts afresh from the
current state. An image or joint state older than its limit (node clock, so ``use_sim_time``
is honoured) stops commanding — the arm finishes at most the chunk it has, then holds — and
``policy/status`` says which input is stale.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory

from pi05_policy.chunking import ChunkingConfig, ChunkMode, ChunkScheduler, time_chunk
from pi05_policy.node_params import AUTO_MODE, declare_parameters
from pi05_policy.rtc import RtcPlanner, RtcRequest, RtcSettings, refusal
from pi05_policy.runtime import (
    CheckpointError,
    Device,
    DType,
    NonFiniteActions,
    Observation,
    PolicyRuntime,
    RuntimeConfig,
    parse_cameras,
)
from pi05_policy.stamps import ChunkStamps, StampHistory
from so101_driver import qos
from so101_driver.guard import GuardedNode
from so101_driver.feetech.calibration import CalibrationError
from so101_driver.images import ImageError, compressed_to_rgb, image_to_rgb
from so101_driver.joints import measured_positions, package_root
from so101_driver.ros_io import diag_status, run_node, to_seconds, trajectory_msg

#: diagnostic levels as ints (``so101_driver.ros_io.diag_status`` takes an int)
OK, WARN, ERROR = (DiagnosticStatus.OK[0], DiagnosticStatus.WARN[0], DiagnosticStatus.ERROR[0])
STAGES = ('image_conversion', 'preprocess', 'model', 'postprocess', 'publish')


class PolicyState(str, Enum):
    """What the node is doing; ``policy/status`` carries it as ``state``."""

    LOADING = 'loading'
    ERROR = 'error'  # the model could not be loaded
    WAITING = 'waiting_for_inputs'  # no image or joint state yet
    NO_TASK = 'no_task'
    OVERRIDE = 'override'  # the operator is in control
    STALE = 'stale_input'  # watchdog: an input is too old
    RUNNING = 'running'


LEVELS = {PolicyState.RUNNING: OK, PolicyState.OVERRIDE: OK, PolicyState.LOADING: OK,
          PolicyState.ERROR: ERROR}


@dataclass
class Stamped:
    """A message with its time (header stamp, or receipt time when unstamped), node clock."""

    msg: object
    stamp: float


def config_path(value: str) -> Path:
    """A path parameter: as given if it exists (or is absolute), else under the suite's config/."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or not value:
        return path
    candidate = package_root() / 'config' / path
    return candidate if candidate.exists() else path



class PolicyNode(GuardedNode):
    """Policy node: images + joint states + task -> joint-trajectory chunks."""

    def __init__(self, **kwargs):
        super().__init__('pi05_policy', **kwargs)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        declare_parameters(self)
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self.cameras = parse_cameras(list(p('cameras')))
        self.runtime = PolicyRuntime(RuntimeConfig(
            checkpoint=p('checkpoint'), calibration_file=config_path(p('calibration_file')),
            cameras=self.cameras, use_degrees=p('use_degrees'), device=Device(p('device')),
            dtype=DType(p('dtype')), compile=p('compile'), tokenizer_path=p('tokenizer_path'),
            limit_margin=p('limit_margin'), model_loader=p('model_loader')))
        self.rtc_settings = None
        if self.runtime.info.supports_rtc:  # installed at load, so any mode may be chosen later
            self.rtc_settings = RtcSettings(
                execution_horizon=p('rtc_execution_horizon'),
                max_guidance_weight=p('rtc_max_guidance_weight'),
                prefix_attention_schedule=p('rtc_prefix_attention_schedule'))
            self.runtime.enable_rtc(self.rtc_settings)
        self.chunking = self._chunking_config()  # rtc without rtc_config: CheckpointError
        self.scheduler = ChunkScheduler(self.chunking)
        self.rtc = RtcPlanner(self.chunking.fps)
        self.stamps = StampHistory()
        self.last_rtc: RtcRequest | None = None
        self.max_image_age = p('max_image_age_s')
        self.max_state_age = p('max_state_age_s')

        self._lock = threading.Lock()  # inputs, task, override, scheduler, counters
        self._images: dict[str, Stamped] = {}
        self._joint_state: Stamped | None = None
        self._task = p('task').strip()
        self._override = False
        self._state = PolicyState.LOADING
        self._reason = f'loading {self.runtime.info.policy_type} from {self.runtime.info.folder}'
        self.counters = {'inferences': 0, 'chunks_published': 0, 'nonfinite_chunks': 0,
                         'chunks_all_past': 0, 'actions_dropped_past': 0, 'clipped_values': 0,
                         'tasks_refused': 0, 'inference_errors': 0, 'stale_results_dropped': 0,
                         'rtc_guided_chunks': 0, 'rtc_delay_beyond_horizon': 0}
        self.last_problem = ''
        #: per-chunk stage timings (seconds), newest last; read by the benchmark
        self.latency_history: deque[dict[str, float]] = deque(maxlen=500)

        self.pub_trajectory = self.create_publisher(JointTrajectory, 'joint_trajectory',
                                                    qos.COMMAND)
        self.pub_status = self.create_publisher(DiagnosticArray, 'policy/status', qos.STREAM_PUB)
        compressed = p('use_compressed')
        for name in self.cameras:
            topic = f'cameras/{name}/image_raw' + ('/compressed' if compressed else '')
            self.create_subscription(CompressedImage if compressed else Image, topic,
                                     lambda m, n=name: self._on_image(n, m),
                                     qos.STREAM_SUB if compressed else qos.IMAGE_SUB)
        self.create_subscription(JointState, 'joint_states', self._on_joint_state,
                                 qos.STREAM_SUB)
        self.create_subscription(String, 'policy/task', self._on_task, qos.LATCHED)
        self.create_subscription(Bool, 'teleop/override', self._on_override, qos.LATCHED)
        self.create_timer(1.0 / p('status_rate_hz'), self.publish_status)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._worker = threading.Thread(target=self._work, name='pi05_policy_inference',
                                        daemon=True)
        self._worker.start()

    # -- parameters ------------------------------------------------------------------
    def _chunking_config(self, **changes) -> ChunkingConfig:
        p = lambda name: changes.get(name, self.get_parameter(name).value)  # noqa: E731
        mode = str(p('chunk_mode')).strip().lower()
        supports_rtc = self.runtime.info.supports_rtc
        if mode == AUTO_MODE:
            mode = ChunkMode.RTC if supports_rtc else ChunkMode.ASYNC
        elif mode not in {m.value for m in ChunkMode}:
            raise ValueError(f'chunk_mode {mode!r} is not one of '
                             f'{[AUTO_MODE, *(m.value for m in ChunkMode)]}')
        elif ChunkMode(mode) is ChunkMode.RTC and not supports_rtc:
            raise CheckpointError(refusal(self.runtime.info.policy_type))
        return ChunkingConfig(fps=p('control_fps'), mode=ChunkMode(mode),
                              async_threshold=p('async_threshold'), min_lead_s=p('min_lead_s'),
                              max_actions=p('max_actions_per_chunk'))

    def _reset_chunks(self) -> None:
        """Forget the chunk being executed (under the lock): scheduler and RTC leftover."""
        self.scheduler.reset()
        self.rtc.forget_chunk()

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {q.name: q.value for q in params}
        try:
            config = self._chunking_config(**changes)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        with self._lock:
            self.chunking = config
            self.scheduler.config = config
            self.max_image_age = changes.get('max_image_age_s', self.max_image_age)
            self.max_state_age = changes.get('max_state_age_s', self.max_state_age)
        return SetParametersResult(successful=True)

    # -- callbacks (store and return) ------------------------------------------------
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp(self, header) -> float:
        stamp = to_seconds(header.stamp)
        return stamp if stamp > 0 else self.now()

    def _on_image(self, name: str, msg: Image | CompressedImage):
        item = Stamped(msg, self._stamp(msg.header))
        with self._lock:
            self._images[name] = item

    def _on_joint_state(self, msg: JointState):
        item = Stamped(msg, self._stamp(msg.header))
        with self._lock:
            self._joint_state = item

    def _on_task(self, msg: String):
        task = msg.data.strip()
        with self._lock:
            if not task:
                self.counters['tasks_refused'] += 1
                self.last_problem = ('empty task refused: publish a language instruction on '
                                     'policy/task' + (f' (keeping {self._task!r})'
                                                      if self._task else ''))
            elif task != self._task:
                self._task = task
                self._reset_chunks()  # the old chunk answered another instruction
                self.last_problem = ''
        if not task:
            self.get_logger().warning(self.last_problem)
        else:
            self.get_logger().info(f'task: {task!r}')

    def _on_override(self, msg: Bool):
        with self._lock:
            if bool(msg.data) == self._override:
                return
            self._override = bool(msg.data)
            self._reset_chunks()  # on: nothing more to publish; off: start afresh
        self.get_logger().info('operator override ' + ('on: policy paused' if msg.data
                                                        else 'off: policy resumes'))

    # -- worker ----------------------------------------------------------------------
    def _work(self):
        try:
            self.runtime.load()
        except Exception as err:  # noqa: BLE001 - reported, the node stays up to say why
            self._set_state(PolicyState.ERROR, f'loading the checkpoint failed: {err}')
            self.get_logger().error(self._reason)
            return
        self._set_state(PolicyState.WAITING, 'model loaded')
        self.get_logger().info(f'{self.runtime.info.policy_type} loaded from '
                               f'{self.runtime.info.folder} on {self.runtime.device}')
        while not self._stop.is_set() and self.context.ok():
            try:
                ran = self.step()
            except RCLError:  # the context was shut down under us
                if self.context.ok():
                    raise
                return
            if not ran:
                self._stop.wait(min(0.01, 0.25 / self.chunking.fps))

    def _assess(self, now: float) -> tuple[PolicyState, str]:
        """Can the policy command the arm now? Called under the lock."""
        if now <= 0:
            return PolicyState.WAITING, 'clock not started (use_sim_time without /clock?)'
        if self._override:
            return PolicyState.OVERRIDE, 'operator override active: publishing nothing'
        if not self._task:
            return PolicyState.NO_TASK, self.last_problem or 'no task: publish one on policy/task'
        missing = [f'cameras/{n}' for n in self.cameras if n not in self._images]
        if self._joint_state is None:
            missing.append('joint_states')
        if missing:
            return PolicyState.WAITING, f'waiting for {missing}'
        age = now - self._joint_state.stamp
        if age > self.max_state_age:
            return PolicyState.STALE, (f'joint_states is {age:.3f} s old (limit '
                                       f'{self.max_state_age} s): not commanding')
        for name, item in self._images.items():
            age = now - item.stamp
            if age > self.max_image_age:
                return PolicyState.STALE, (f'image cameras/{name} is {age:.3f} s old (limit '
                                           f'{self.max_image_age} s): not commanding')
        return PolicyState.RUNNING, 'commanding'

    def step(self) -> bool:
        """One pass of the worker loop; True if an inference ran."""
        with self._lock:
            now = self.now()
            state, reason = self._assess(now)
            if state is not PolicyState.RUNNING:
                if self._state is PolicyState.RUNNING:
                    self._reset_chunks()
            elif not self.scheduler.due(now):
                state = None
            else:
                token = self.scheduler.start()
                images = dict(self._images)
                joints = self._joint_state
                task = self._task
                rtc = (self.rtc.request(joints.stamp)
                       if self.chunking.mode is ChunkMode.RTC else None)
        if state is None:
            return False
        self._set_state(state, reason)
        if state is not PolicyState.RUNNING:
            return False
        self._infer_and_publish(token, images, joints, task, rtc, now)
        return True

    def _infer_and_publish(self, token: int, images: dict[str, Stamped], joints: Stamped,
                           task: str, rtc: RtcRequest | None, started: float) -> None:
        t0 = time.perf_counter()
        try:
            rgb = {name: (compressed_to_rgb(item.msg) if isinstance(item.msg, CompressedImage)
                          else image_to_rgb(item.msg)) for name, item in images.items()}
            position = joint_positions(joints.msg)
        except (ImageError, ValueError) as err:
            self._drop(token, 'inference_errors', f'bad input: {err}')
            return
        t1 = time.perf_counter()
        try:
            result = self.runtime.infer(Observation(images=rgb, joint_positions=position,
                                                    task=task), rtc=rtc)
        except NonFiniteActions as err:
            self._drop(token, 'nonfinite_chunks', f'chunk dropped: {err}')
            return
        except Exception as err:  # noqa: BLE001 - keep the node alive, report the cause
            self._drop(token, 'inference_errors', f'inference failed: {err!r}')
            return
        t2 = time.perf_counter()
        with self._lock:
            self.counters['inferences'] += 1
            self.counters['clipped_values'] += result.clipped
            now = self.now()
            # what the chunk timing drops: observation stamp to when this chunk can take over
            self.rtc.record_latency(now + self.chunking.min_lead_s - joints.stamp)
            self._note_rtc(rtc)
            state, reason = self._assess(now)
            chunk = time_chunk(result.positions, joints.stamp, now, self.chunking)
            if state is not PolicyState.RUNNING or not self.scheduler.finish(token, chunk):
                self.counters['stale_results_dropped'] += 1
                if state is PolicyState.RUNNING:  # reset by override/task meanwhile
                    return
                self._reset_chunks()
                return
            if chunk is None:
                self.counters['chunks_all_past'] += 1
                self.counters['actions_dropped_past'] += len(result.positions)
                self.last_problem = (f'every action of a {len(result.positions)}-action chunk '
                                     f'was due before it was ready ({t2 - t0:.3f} s inference)')
                return
            msg = trajectory_msg(chunk.positions, chunk.time_from_start, chunk.start)
            published = self.now()
            self.pub_trajectory.publish(msg)
            self.rtc.record_chunk(joints.stamp, result.model_actions[:chunk.length])
            self.stamps.add(ChunkStamps(
                seq=self.counters['chunks_published'],
                images={name: item.stamp for name, item in images.items()}, state=joints.stamp,
                inference_start=started, inference_end=now, publish=published,
                first_point=chunk.first))
            self.counters['chunks_published'] += 1
            self.counters['actions_dropped_past'] += chunk.dropped
        t3 = time.perf_counter()
        timings = {'image_conversion': t1 - t0, **result.timings, 'publish': t3 - t2,
                   'total': t3 - t0,
                   'overhead': (t3 - t0) - result.timings.get('model', 0.0)}
        self.latency_history.append(timings)
        self.publish_status()  # every chunk's stamps reach policy/status (and so the bags)

    def _note_rtc(self, rtc: RtcRequest | None) -> None:
        """Count what an rtc inference was given (under the lock)."""
        self.last_rtc = rtc
        if rtc is None or rtc.prev_chunk_left_over is None:
            return
        self.counters['rtc_guided_chunks'] += 1
        horizon = self.rtc_settings.execution_horizon
        if rtc.inference_delay >= horizon:
            self.counters['rtc_delay_beyond_horizon'] += 1
            self.last_problem = (f'rtc: inference delay {rtc.inference_delay} steps >= '
                                 f'rtc_execution_horizon {horizon}: the first actions the new '
                                 'chunk executes are not guided; raise rtc_execution_horizon')

    def _drop(self, token: int, counter: str, message: str) -> None:
        with self._lock:
            self.counters[counter] += 1
            self.last_problem = message
            self.scheduler.finish(token, None)
        self.get_logger().warning(message, throttle_duration_sec=2.0)

    def _set_state(self, state: PolicyState, reason: str) -> None:
        with self._lock:
            changed = state is not self._state
            self._state, self._reason = state, reason
        if changed:
            if state is not PolicyState.RUNNING:
                self.runtime.reset()
            self.get_logger().info(f'state {state.value}: {reason}')
            self.publish_status()

    # -- status ----------------------------------------------------------------------
    @property
    def state(self) -> PolicyState:
        return self._state

    def publish_status(self):
        with self._lock:
            state, reason = self._state, self._reason
            values = {'state': state.value, 'reason': reason,
                      'policy_type': self.runtime.info.policy_type,
                      'chunk_mode': self.chunking.mode.value, 'task': self._task,
                      'last_problem': self.last_problem, **self.counters,
                      **self.guard_values(), 'last_rejected_message': self.last_rejection,
                      **self.stamps.values(), **self._rtc_values()}
            history = list(self.latency_history)
        for stage in (*STAGES, 'total', 'overhead'):
            last = history[-1].get(stage) if history else None
            mean = np.mean([h[stage] for h in history[-50:]]) if history else None
            values[f'{stage}_ms'] = '' if last is None else f'{last * 1e3:.2f}'
            values[f'{stage}_mean_ms'] = '' if mean is None else f'{mean * 1e3:.2f}'
        level = LEVELS.get(state, WARN)
        if level == OK and self.counters['nonfinite_chunks']:
            level = WARN
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [diag_status(f'{self.get_name()}: policy', level, reason,
                                  str(self.runtime.info.folder), values)]
        self.pub_status.publish(msg)

    def _rtc_values(self) -> dict[str, str]:
        """The last rtc inference's delay, leftover and latency ('' outside rtc)."""
        rtc, settings = self.last_rtc, self.rtc_settings
        leftover = None if rtc is None else rtc.prev_chunk_left_over
        return {'rtc_execution_horizon': '' if settings is None else
                str(settings.execution_horizon),
                'rtc_inference_delay': '' if rtc is None else str(rtc.inference_delay),
                'rtc_leftover_steps': '' if rtc is None else
                str(0 if leftover is None else len(leftover)),
                'rtc_latency_max_ms': '' if rtc is None else f'{rtc.latency_max_s * 1e3:.2f}'}

    def destroy_node(self):
        self._stop.set()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=10.0)
        return super().destroy_node()


def joint_positions(msg: JointState) -> np.ndarray:
    """Positions in ``JOINT_NAMES`` order from a JointState in any order; ValueError for one
    that is no measurement (a joint missing, ragged, NaN/inf, beyond a turn): Pi0.5 turns
    even a NaN state into a finite chunk, so such a state must never reach the model."""
    return measured_positions(msg.name, msg.position)


def main(args=None):
    run_node(PolicyNode, 'pi05_policy', (CheckpointError, CalibrationError, ValueError), args=args)


if __name__ == '__main__':
    main()
