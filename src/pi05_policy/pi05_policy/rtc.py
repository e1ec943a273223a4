"""Real-Time Chunking (chunk mode ``rtc``): LeRobot's RTC, fed with the node's chunk timing.

Two chunks of a flow-matching policy (pi05, pi0, smolvla) are independent samples, so where
one replaces the other the setpoint jumps. LeRobot's RTC (``lerobot.policies.rtc``, after
Physical Intelligence's "Real-Time Execution of Action Chunking Flow Policies") samples the
next chunk as an inpainting of the part of the current one that is still to run: with
``config.rtc_config = RTCConfig(...)`` the policy's ``predict_action_chunk(batch,
inference_delay=d, prev_chunk_left_over=L)`` guides every denoising step
(``RTCProcessor.denoise_step``) towards ``L``, with prefix weights 1 for the first ``d``
actions (they run while the model computes, so the new chunk must agree with them), then
decaying (``prefix_attention_schedule``) to 0 at ``execution_horizon``, with the guidance
capped at ``max_guidance_weight``. That guidance is LeRobot's code; nothing of it is here.

What is here is the bookkeeping LeRobot's own rollout engine
(``lerobot/rollout/inference/rtc.py``) does with its ``ActionQueue`` and ``LatencyTracker``,
in the node's time base instead of a queue popped once per control tick:

* **Leftover.** Each published chunk's actions are kept in the model's action space (before
  the postprocessor, as ``ActionQueue.original_queue``). Action ``k`` of a chunk observed at
  ``t_obs`` is due at ``t_obs + k / fps`` (``chunking``), and the next chunk's action ``i``
  at ``t_obs' + i / fps``. The leftover handed to the model is the previous chunk from
  ``t_obs'`` on, on the new chunk's grid: fractional index ``(t_obs' - t_obs) * fps + i``,
  linear between actions (as the arm's executor interpolates between knots); when the stamps
  fall on one grid that is exactly ``actions[j:]``, LeRobot's ``get_left_over``. The
  observation stamp is the inference's time origin here (its action 0), so "not yet executed
  when the inference starts" means due at or after ``t_obs'``.
* **Delay.** LeRobot's rule: ``d = ceil(max latency / control period)``. The latency is what
  the chunk timing drops: from the observation stamp to the moment the new chunk can take
  over (ready + ``min_lead_s``), so ``d`` counts the new chunk's actions that are due before
  it arrives. The maximum is over the last ``LATENCY_WINDOW`` inferences (LeRobot's tracker
  keeps its maximum since start, so one cold first call would pin ``d`` for good), and ``d``
  is bounded by the chunk's length.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

#: Inferences whose latency makes up the "recent maximum" of the delay rule.
LATENCY_WINDOW = 10
#: ``prefix_attention_schedule`` values (``lerobot.configs.RTCAttentionSchedule``).
SCHEDULES = ('LINEAR', 'EXP', 'ONES', 'ZEROS')


def refusal(policy_type: str) -> str:
    """Why chunk mode rtc cannot serve a policy type (node start, parameter change)."""
    return (f'chunk_mode rtc needs a policy whose LeRobot config has rtc_config (pi05, pi0, '
            f'smolvla, ...); this checkpoint is {policy_type!r}, which samples no flow and '
            'takes no prev_chunk_left_over. Use chunk_mode async or sync.')


@dataclass(frozen=True)
class RtcSettings:
    """``RTCConfig``'s tunables (node parameters ``rtc_*``); defaults: ``lerobot_defaults()``."""

    execution_horizon: int  # actions of the leftover the guidance reaches (weights -> 0)
    max_guidance_weight: float  # cap of the guidance weight per denoising step
    prefix_attention_schedule: str  # LINEAR, EXP, ONES or ZEROS: weights from d to the horizon

    def __post_init__(self):
        schedule = str(self.prefix_attention_schedule).upper()
        object.__setattr__(self, 'prefix_attention_schedule', schedule)
        if schedule not in SCHEDULES:
            raise ValueError(f'rtc prefix_attention_schedule must be one of {list(SCHEDULES)}, '
                             f'got {self.prefix_attention_schedule!r}')
        if int(self.execution_horizon) < 1:
            raise ValueError(f'rtc execution_horizon must be >= 1, got {self.execution_horizon}')
        if not (math.isfinite(self.max_guidance_weight) and self.max_guidance_weight > 0):
            raise ValueError('rtc max_guidance_weight must be positive, got '
                             f'{self.max_guidance_weight}')

    @classmethod
    def lerobot_defaults(cls) -> RtcSettings:
        """The defaults of this LeRobot's ``RTCConfig`` (read, not copied)."""
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        config = RTCConfig()
        return cls(execution_horizon=config.execution_horizon,
                   max_guidance_weight=config.max_guidance_weight,
                   prefix_attention_schedule=config.prefix_attention_schedule.value)

    def to_lerobot(self):
        """``RTCConfig(enabled=True, ...)`` for ``PreTrainedConfig.rtc_config``."""
        from lerobot.configs import RTCAttentionSchedule
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        return RTCConfig(enabled=True, execution_horizon=int(self.execution_horizon),
                         max_guidance_weight=float(self.max_guidance_weight),
                         prefix_attention_schedule=RTCAttentionSchedule(
                             self.prefix_attention_schedule))


@dataclass(frozen=True)
class RtcRequest:
    """What one inference hands to ``predict_action_chunk``."""

    inference_delay: int  # d, control steps
    prev_chunk_left_over: np.ndarray | None  # (n, action_dim), model space; None: no guidance
    leftover_start: float | None  # fractional index into the previous chunk of leftover[0]
    latency_max_s: float  # the recent maximum latency d came from (0 without a measurement)


class RtcPlanner:
    """Leftover and delay for the next inference, from the published chunks and latencies."""

    def __init__(self, fps: float, window: int = LATENCY_WINDOW):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f'fps must be positive, got {fps}')
        self.fps = fps
        self._latencies: deque[float] = deque(maxlen=max(1, int(window)))
        self._chunk: tuple[float, np.ndarray] | None = None  # (t_obs, model-space actions)
        self._chunk_length = 0  # actions of the last chunk the model returned

    @property
    def latencies(self) -> list[float]:
        return list(self._latencies)

    def delay(self) -> tuple[int, float]:
        """(d, recent maximum latency): ``ceil(max / period)``, at most a chunk's length."""
        if not self._latencies:
            return 0, 0.0
        worst = max(self._latencies)
        steps = math.ceil(worst * self.fps - 1e-9)
        if self._chunk_length:
            steps = min(steps, self._chunk_length)
        return max(0, steps), worst

    def leftover(self, observation_stamp: float) -> tuple[np.ndarray | None, float | None]:
        """The previous chunk from ``observation_stamp`` on, on the new chunk's grid."""
        if self._chunk is None:
            return None, None
        stamp, actions = self._chunk
        start = (observation_stamp - stamp) * self.fps
        if abs(start - round(start)) < 1e-6:
            start = float(round(start))
        if start < 0 or start > len(actions) - 1:  # clock went back, or the chunk is over
            return None, None
        index = start + np.arange(int(math.floor(len(actions) - 1 - start + 1e-9)) + 1)
        lower = np.minimum(np.floor(index).astype(int), len(actions) - 1)
        upper = np.minimum(lower + 1, len(actions) - 1)
        frac = (index - lower)[:, None]
        values = actions[lower] * (1.0 - frac) + actions[upper] * frac
        return values.astype(actions.dtype, copy=False), start

    def request(self, observation_stamp: float) -> RtcRequest:
        """What the inference observed at ``observation_stamp`` should get."""
        delay, worst = self.delay()
        leftover, start = self.leftover(observation_stamp)
        return RtcRequest(inference_delay=delay, prev_chunk_left_over=leftover,
                          leftover_start=start, latency_max_s=worst)

    def record_latency(self, seconds: float) -> None:
        """One inference's latency: observation stamp to the moment its chunk can take over."""
        if math.isfinite(seconds) and seconds >= 0:
            self._latencies.append(float(seconds))

    def record_chunk(self, observation_stamp: float, model_actions: np.ndarray) -> None:
        """A chunk was published: it is what the arm executes until the next one."""
        actions = np.array(model_actions, dtype=np.float32)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f'model actions must be (K, action_dim), got {actions.shape}')
        self._chunk = (float(observation_stamp), actions)
        self._chunk_length = len(actions)

    def forget_chunk(self) -> None:
        """The arm no longer executes the last chunk (override, stale input, new task)."""
        self._chunk = None
