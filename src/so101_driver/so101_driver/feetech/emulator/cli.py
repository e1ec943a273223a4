"""The ``so101-servo-emulator`` command line: serve an emulated bus until a signal."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from so101_driver.feetech import control_table as ct
from so101_driver.feetech.emulator.server import EmulatorServer
from so101_driver.feetech.emulator.servo import EmulatorConfig, parse_error_bits


def _id_list(text: str) -> tuple[int, ...]:
    try:
        ids = tuple(int(t) for t in text.replace(' ', '').split(',') if t)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected comma-separated servo ids like 1,2,3, '
                                         f'got {text!r}') from None
    if not ids:
        raise argparse.ArgumentTypeError('expected at least one servo id')
    return ids


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'expected a fraction between 0 and 1, got {text!r}')
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f'expected a number >= 0, got {text!r}')
    return value


def _error_bits(text: str) -> tuple[int, int]:
    sid, sep, names = text.partition(':')
    try:
        if not sep:
            raise ValueError('missing ":"')
        return int(sid), parse_error_bits(names.split('|'))
    except ValueError as err:
        known = '|'.join(f.name.lower() for f in ct.ErrorBit)
        raise argparse.ArgumentTypeError(f'expected ID:NAME[|NAME] with NAME in {known}, got '
                                         f'{text!r} ({err})') from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='so101-servo-emulator',
        description='Serve an emulated Feetech STS3215 bus on a pseudo-terminal; point the '
                    'so101_arm port parameter at the printed path.')
    parser.add_argument('--ids', type=_id_list, default=(1, 2, 3, 4, 5, 6),
                        help='servo ids, comma-separated (default 1,2,3,4,5,6)')
    parser.add_argument('--calibration', metavar='FILE',
                        help='LeRobot calibration JSON: preload homing offsets and limits')
    parser.add_argument('--silent-id', type=int, action='append', default=[], metavar='ID',
                        help='a servo id that never answers (repeatable)')
    parser.add_argument('--corrupt', type=_fraction, default=0.0, metavar='FRACTION',
                        help='fraction of replies sent with a wrong checksum')
    parser.add_argument('--reply-delay-ms', type=_non_negative, default=0.0, metavar='MS',
                        help='delay before every reply')
    parser.add_argument('--error-bits', type=_error_bits, action='append', default=[],
                        metavar='ID:voltage|overheat',
                        help='error bits a servo reports (repeatable)')
    parser.add_argument('--speed', type=float, default=EmulatorConfig.speed,
                        metavar='TICKS_PER_S', help='max servo speed (default %(default)s)')
    parser.add_argument('--block-gripper', type=int, default=None, metavar='TICK',
                        help='an object blocks the gripper at this position')
    parser.add_argument('--gripper-id', type=int, default=EmulatorConfig.gripper_id,
                        help='id of the gripper servo (default %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the corruption RNG')
    parser.add_argument('--link', metavar='PATH',
                        help='serve at this path (a symlink) instead of a temporary one')
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    errors: dict[int, int] = {}
    for sid, bits in args.error_bits:
        errors[sid] = errors.get(sid, 0) | bits
    try:
        config = EmulatorConfig(ids=args.ids, speed=args.speed, gripper_id=args.gripper_id,
                                block_tick=args.block_gripper, silent_ids=tuple(args.silent_id),
                                corrupt_fraction=args.corrupt, reply_delay_ms=args.reply_delay_ms,
                                error_bits=errors, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    preload = None
    if args.calibration:
        from so101_driver.feetech.calibration import CalibrationError, load_calibration
        try:
            cal = load_calibration(args.calibration)
        except CalibrationError as err:
            parser.error(str(err))
        preload = {c.id: (c.homing_offset, c.range_min, c.range_max) for c in cal.values()}
        missing = sorted(set(preload) - set(config.ids))
        if missing:
            parser.error(f'--calibration {args.calibration} names servo ids {missing} that '
                         f'are not in --ids {",".join(map(str, config.ids))}')
    if args.link and os.path.exists(args.link) and not os.path.islink(args.link):
        parser.error(f'--link {args.link} exists and is not a symlink; refusing to replace it')
    server = EmulatorServer(config, args.link)
    if preload:
        server.load_calibration(preload)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        server._wake()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f'so101-servo-emulator: port {server.port}', flush=True)
    try:
        server.serve(should_stop=stop.is_set)
    finally:
        server.stop()
    print('so101-servo-emulator: stopped', file=sys.stderr, flush=True)
