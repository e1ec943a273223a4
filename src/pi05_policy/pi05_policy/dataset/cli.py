"""The command line ``so101-dataset BAG... --root DIR``: options, policy parameters, summary.

Options can come from the policy node's parameters YAML, so a dataset is converted with the
same calibration, cameras, units and fps the node will run with.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pi05_policy.dataset.config import (
    ConversionConfig,
    DatasetError,
    ImageSource,
    MismatchAction,
    Segments,
)
from pi05_policy.dataset.conversion import ConversionResult, convert


def parse_cameras(entries: Iterable[str]) -> dict[str, str]:
    """The policy node's ``cameras`` syntax (``pi05_policy.runtime.parse_cameras``)."""
    from pi05_policy.runtime import parse_cameras as parse

    try:
        return parse(list(entries))
    except ValueError as err:
        raise DatasetError(str(err)) from err


def policy_params(path: Path, node: str = 'pi05_policy') -> dict[str, Any]:
    """calibration_file, cameras, use_degrees, use_compressed, control_fps of the policy node
    from its ROS parameters YAML (``config/pi05_policy.yaml``), so the dataset matches it."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding='utf-8')) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f'cannot read policy parameters {path}: {exc}') from exc
    values: dict[str, Any] = {}
    for key in ('/**', node, f'/{node}'):
        section = document.get(key) or {}
        values.update(section.get('ros__parameters') or {})
    out: dict[str, Any] = {}
    if values.get('calibration_file'):
        cal = Path(values['calibration_file']).expanduser()
        if not cal.is_absolute() and not cal.exists():
            cal = Path(path).parent / cal
        out['calibration_file'] = cal
    if values.get('cameras'):
        out['cameras'] = parse_cameras(values['cameras'])
    if 'use_degrees' in values:
        out['use_degrees'] = bool(values['use_degrees'])
    if values.get('use_compressed'):
        out['image_source'] = ImageSource.COMPRESSED
    if values.get('control_fps'):
        fps = float(values['control_fps'])
        if fps != round(fps):
            raise DatasetError(f'{path}: control_fps {fps} is not an integer; LeRobot datasets '
                               'need an integer fps')
        out['fps'] = int(round(fps))
    return out


def _image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected HEIGHTxWIDTH, e.g. 480x640, got {text!r}') \
            from None
    return h, w


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='so101-dataset',
        description='Convert rosbag2 MCAP bags of the SO-101 cell into a LeRobot dataset '
                    '(lerobot 0.6.1 format): episodes from eval/episode, frames at --fps, '
                    'state/action in the policy\'s units, camera images, the operator '
                    'intervention flag. A summary (skipped spans, episodes) is printed and '
                    'written to <root>.summary.json.')
    parser.add_argument('bags', nargs='+', type=Path, help='bag directories or .mcap files')
    parser.add_argument('--root', type=Path, required=True, help='dataset folder to create')
    parser.add_argument('--repo-id', default='local/so101',
                        help='dataset repo id written in the metadata (default local/so101)')
    parser.add_argument('--policy-params', type=Path,
                        help='the policy node\'s parameters YAML (config/pi05_policy.yaml): '
                             'calibration_file, cameras, use_degrees, use_compressed and '
                             'control_fps come from it; options given here win')
    parser.add_argument('--calibration', type=Path,
                        help='LeRobot calibration JSON of the arm (required without '
                             '--policy-params)')
    parser.add_argument('--use-degrees', action=argparse.BooleanOptionalAction, default=None,
                        help='body joints in degrees (default, LeRobot 0.6.1) or -100..100')
    parser.add_argument('--camera', action='append', dest='cameras', metavar='NAME[:KEY]',
                        help='ROS camera cameras/NAME/... -> observation.images.KEY, repeat '
                             'per camera (default: front and handeye)')
    parser.add_argument('--image-source', choices=[s.value for s in ImageSource],
                        help='raw, compressed, or auto (raw when recorded; default)')
    parser.add_argument('--fps', type=int, help='dataset frame rate (default 30)')
    parser.add_argument('--task', default='', help='task string for every frame (default: '
                        'policy/task from the bag)')
    parser.add_argument('--segments', choices=[s.value for s in Segments], default='whole',
                        help='whole episodes, only operator interventions, or autonomous '
                             'frames only (default whole)')
    parser.add_argument('--image-tolerance', type=float, default=0.1, metavar='S',
                        help='max age of the newest image at a frame (default 0.1 s)')
    parser.add_argument('--state-tolerance', type=float, default=0.05, metavar='S',
                        help='max age of the newest joint state at a frame (default 0.05 s)')
    parser.add_argument('--min-frames', type=int, default=2,
                        help='drop segments shorter than this (default 2)')
    parser.add_argument('--image-size', type=_image_size, metavar='HxW',
                        help='resize every image to HEIGHTxWIDTH')
    parser.add_argument('--no-video', dest='video', action='store_false',
                        help='store images (PNG in parquet) instead of video')
    parser.add_argument('--vcodec', default='libsvtav1',
                        help='video codec (default libsvtav1, LeRobot\'s)')
    parser.add_argument('--streaming-encoding', action=argparse.BooleanOptionalAction,
                        default=True,
                        help='video: feed frames straight to LeRobot\'s encoder threads '
                             '(default; several times faster) or stage them as PNG first')
    parser.add_argument('--max-jump', type=float, default=0.35,
                        help='the arm node\'s max_jump for the command replay (rad)')
    parser.add_argument('--limit-margin', type=float, default=0.0,
                        help='the arm node\'s limit_margin for the command replay (rad)')
    parser.add_argument('--on-calibration-mismatch', choices=[m.value for m in MismatchAction],
                        default='error', help='a bag whose calibration.json differs from the '
                                              'calibration: error (default) or skip the bag')
    parser.add_argument('--namespace', default='/', help='namespace of the recorded topics')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing LeRobot dataset at --root')
    parser.add_argument('--image-writer-threads', type=int, default=2,
                        help='LeRobot image writer threads (default 2)')
    parser.add_argument('--summary', type=Path, help='summary JSON path (default '
                                                     '<root>.summary.json)')
    return parser


def config_from_args(args: argparse.Namespace) -> ConversionConfig:
    values: dict[str, Any] = policy_params(args.policy_params) if args.policy_params else {}
    if args.calibration:
        values['calibration_file'] = args.calibration
    if 'calibration_file' not in values:
        raise DatasetError('no calibration: pass --calibration FILE (the arm\'s LeRobot '
                           'calibration JSON) or --policy-params config/pi05_policy.yaml')
    for option, name in (('use_degrees', 'use_degrees'), ('fps', 'fps')):
        if getattr(args, option) is not None:
            values[name] = getattr(args, option)
    if args.cameras:
        values['cameras'] = parse_cameras(args.cameras)
    if args.image_source:
        values['image_source'] = ImageSource(args.image_source)
    return ConversionConfig(
        bags=args.bags, root=args.root, repo_id=args.repo_id, task=args.task,
        segments=Segments(args.segments), image_tolerance_s=args.image_tolerance,
        state_tolerance_s=args.state_tolerance, min_frames=args.min_frames,
        image_size=args.image_size, video=args.video, vcodec=args.vcodec,
        streaming_encoding=args.streaming_encoding,
        max_jump=args.max_jump, limit_margin=args.limit_margin,
        on_calibration_mismatch=MismatchAction(args.on_calibration_mismatch),
        namespace=args.namespace, overwrite=args.overwrite,
        image_writer_threads=args.image_writer_threads, summary_path=args.summary, **values)


def print_summary(result: ConversionResult, out=None) -> None:
    out = out or sys.stdout
    s = result.summary
    d = s['dataset']
    print(f'dataset {d["repo_id"]} at {d["root"]}: {d["episodes"]} episodes, {d["frames"]} '
          f'frames at {d["fps"]} fps ({"video " + d["vcodec"] if d["video"] else "images"}), '
          f'segments={s["segments"]}', file=out)
    for bag in s['bags']:
        if 'skipped' in bag:
            print(f'skipped bag: {bag["skipped"]}', file=out)
            continue
        cams = ', '.join(f'{n} {c["topic"]} ({c["images"]} images)'
                         for n, c in bag['cameras'].items())
        print(f'bag {bag["path"]}: {len(bag["source_episodes"])} episodes, '
              f'{bag["joint_states"]} joint states, {cams}; {bag["clock"]}', file=out)
        for note in bag.get('notes', []):
            print(f'  note: {note}', file=out)
        if bag['replay'].get('rejected'):
            print(f'  replay rejected trajectories: {bag["replay"]["rejected"]}', file=out)
        if bag['out_of_calibrated_range']:
            print(f'  joint states outside the calibrated range (share): '
                  f'{bag["out_of_calibrated_range"]} - is this the arm\'s calibration?',
                  file=out)
    for e in s['episodes']:
        print(f'episode {e["index"]}: {e["frames"]} frames [{e["start_s"]:.3f}, '
              f'{e["end_s"]:.3f}) s, {e["kind"]}, {e["intervention_frames"]} intervention '
              f'frames (bag episode {e["source_episode"]}, success {e["success"]})', file=out)
    for span in s['skipped_spans']:
        print(f'skipped {span["frames"]} frames [{span["start_s"]:.3f}, {span["end_s"]:.3f}) s '
              f'of bag episode {span["source_episode"]}: {"; ".join(span["reasons"])}',
              file=out)
    if s['filtered_frames']:
        print(f'{s["filtered_frames"]} valid frames left out by --segments {s["segments"]}',
              file=out)
    print(f'summary: {result.summary_path}', file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """``so101-dataset``: 0 when the dataset was written, 2 for unusable input or options."""
    os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing here needs the Hub
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        result = convert(config)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f'so101-dataset: error: {exc}', file=sys.stderr)
        return 2
    print_summary(result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
