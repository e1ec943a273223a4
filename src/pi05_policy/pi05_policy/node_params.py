"""The ``pi05_policy`` node's parameters: names, defaults, ranges and descriptions.

One place for what ``ros2 param describe`` shows and ``config/pi05_policy.yaml`` sets; the
``rtc_*`` defaults are read from LeRobot's ``RTCConfig``, so they follow LeRobot.
"""

from __future__ import annotations

from rcl_interfaces.msg import IntegerRange, ParameterDescriptor

from pi05_policy.rtc import SCHEDULES, RtcSettings
from so101_driver.ros_io import float_range

AUTO_MODE = 'auto'  # chunk_mode: rtc where the policy supports it, else async


def declare_parameters(node) -> None:
    """Declare every parameter of the policy node on ``node`` (an rclpy Node)."""

    def declare(name, default, description, read_only=True, **ranges):
        node.declare_parameter(name, default, ParameterDescriptor(
            description=description, read_only=read_only, **ranges))

    declare('checkpoint', '', 'pretrained_model/ folder of a LeRobot checkpoint '
            '(config.json, model.safetensors, policy_pre/postprocessor files)')
    declare('calibration_file', '', 'LeRobot calibration JSON of the arm (joint units of '
            'the training data)')
    declare('cameras', ['front', 'handeye'], 'ROS cameras to use, "name" or '
            '"name:image_key": cameras/<name>/image_raw -> observation.images.<image_key>')
    declare('use_compressed', False, 'Subscribe to cameras/<name>/image_raw/compressed '
            '(JPEG/PNG, for links between machines)')
    declare('use_degrees', True, 'Body joints in degrees (LeRobot 0.6.1 SO-101 default); '
            'false: -100..100 (older datasets)')
    declare('task', '', 'Initial language instruction (policy/task replaces it)')
    declare('device', 'auto', 'Torch device: auto, cuda, cpu or mps')
    declare('dtype', 'auto', 'Model precision for pi0/pi05: auto (checkpoint), float32, '
            'bfloat16')
    declare('compile', False, 'torch.compile the model (slow first chunk)')
    declare('tokenizer_path', '', 'Local tokenizer folder replacing the checkpoint\'s Hub '
            'tokenizer (machines without the Hugging Face cache)')
    declare('model_loader', '', '"package.module:function" that builds the model '
            '(empty: LeRobot\'s from_pretrained); reduced-size test checkpoints need '
            'pi05_policy.tiny_checkpoints:load_reduced_pi05')
    declare('limit_margin', 0.0, 'Clip actions this far inside the joint limits (rad)',
            floating_point_range=float_range(0, 0.5))
    declare('control_fps', 30.0, 'Control rate of the training data: action k is for '
            't_obs + k / control_fps', floating_point_range=float_range(1, 1000))
    declare('chunk_mode', AUTO_MODE, 'sync: infer when the chunk is used up; async: infer '
            'when less than async_threshold of a chunk remains; rtc: async plus LeRobot\'s '
            'Real-Time Chunking (pi05/pi0/smolvla); auto: rtc where the policy has it, '
            'else async', read_only=False)
    declare('async_threshold', 0.5, 'async/rtc: fraction of a chunk left that triggers the '
            'next inference', read_only=False, floating_point_range=float_range(0.01, 1))
    rtc = RtcSettings.lerobot_defaults()
    declare('rtc_execution_horizon', rtc.execution_horizon, 'rtc: actions of the leftover '
            'the guidance reaches (weights fall to 0 there); keep it above the inference '
            'delay in steps', integer_range=[IntegerRange(from_value=1, to_value=1000,
                                                          step=1)])
    declare('rtc_max_guidance_weight', rtc.max_guidance_weight, 'rtc: cap of the guidance '
            'weight per denoising step', floating_point_range=float_range(1e-3, 1e3))
    declare('rtc_prefix_attention_schedule', rtc.prefix_attention_schedule, 'rtc: how the '
            f'leftover weights fall from the delay to the horizon: {", ".join(SCHEDULES)}')
    declare('max_actions_per_chunk', 0, 'Use at most this many actions of a chunk '
            '(0: all)', read_only=False,
            integer_range=[IntegerRange(from_value=0, to_value=1000, step=1)])
    declare('min_lead_s', 0.01, 'Actions due sooner than this after publishing are dropped',
            read_only=False, floating_point_range=float_range(0, 1))
    declare('max_image_age_s', 0.5, 'Watchdog: stop commanding when an image is older',
            read_only=False, floating_point_range=float_range(0.01, 60))
    declare('max_state_age_s', 0.25, 'Watchdog: stop commanding when the joint state is '
            'older', read_only=False, floating_point_range=float_range(0.01, 60))
    declare('status_rate_hz', 2.0, 'policy/status publish rate',
            floating_point_range=float_range(0.1, 50))
