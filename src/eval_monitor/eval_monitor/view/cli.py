"""``so101-view`` (``so101 view``): a bag replayed into rerun, or the live topics.

    so101-view BAG [--save FILE.rrd]    replay a recorded bag (a viewer, or only the file)
    so101-view [--viewer web]           live: start the so101_view node on this DDS domain

With a bag, every message the view draws is logged at its log time; ``--save`` alone writes
the ``.rrd`` and exits (open it with ``rerun FILE.rrd``), otherwise a viewer is spawned (or
the web viewer served when there is no display, until Ctrl-C). Without a bag the
``so101_view`` node runs with these options as its parameters (``--save`` alone: recording
to the file until Ctrl-C); arguments after ``--ros-args`` go to it unchanged. Replay needs
no rclpy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from eval_monitor.view.viewer import MODES, ViewerChoice, ViewerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='so101-view', description=__doc__.splitlines()[0],
        epilog='Live: arguments after --ros-args go to the so101_view node.')
    parser.add_argument('bag', nargs='?', type=Path,
                        help='bag directory or .mcap file to replay (none: live)')
    parser.add_argument('--save', type=Path, default=None, metavar='FILE.rrd',
                        help='write the recording to this .rrd file (alone: only the file; '
                        'with --viewer spawn or connect: as well)')
    parser.add_argument('--viewer', choices=MODES, default=None,
                        help='auto: spawn a viewer with a display, else serve the web viewer '
                        '(default); spawn; web; connect (--connect URL); none (--save only)')
    parser.add_argument('--connect', default='', metavar='URL',
                        help='stream to a running viewer (rerun+http://HOST:9876/proxy)')
    parser.add_argument('--web-port', type=int, default=9090, help='web viewer port (9090)')
    parser.add_argument('--grpc-port', type=int, default=9876,
                        help='port of the gRPC stream the viewer reads (9876)')
    parser.add_argument('--memory-limit', default='1GiB',
                        help='what the served stream keeps for late viewers (1GiB)')
    parser.add_argument('--namespace', default='', help='namespace of the topics')
    parser.add_argument('--model-rate-hz', type=float, default=30.0,
                        help='robot model updates per second (0: every joint state; 30)')
    parser.add_argument('--image-rate-hz', type=float, default=None,
                        help='images per camera per second (0: all; default: all in a '
                        'replay, 10 live)')
    return parser


def _mode(opts) -> str:
    if opts.viewer:
        return opts.viewer
    if opts.connect:
        return 'connect'
    return 'none' if opts.save is not None else 'auto'


def cmd_replay(opts) -> int:
    from eval_monitor.bag import BagReader
    from eval_monitor.view.kinematics import viewer_urdf
    from eval_monitor.view.replay import cameras_in, replay
    from eval_monitor.view.scene import SceneLogger, SceneOptions
    from eval_monitor.view.viewer import close_recording, open_recording, resolve_mode

    try:
        cameras = cameras_in(BagReader(opts.bag), opts.namespace) or ('front', 'handeye')
    except FileNotFoundError as err:
        print(f'so101-view: {err}', file=sys.stderr)
        return 2
    choice = ViewerChoice(mode=_mode(opts), save=opts.save, connect_url=opts.connect,
                          web_port=opts.web_port, grpc_port=opts.grpc_port,
                          memory_limit=opts.memory_limit, cameras=cameras)
    mode = resolve_mode(choice)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='so101_view_') as folder:
        rec, where = open_recording(f'so101 {opts.bag.resolve().name}', choice)
        print(f'[so101-view] {where}', flush=True)
        scene = SceneLogger(rec, SceneOptions(
            urdf_path=str(viewer_urdf(Path(folder))), model_rate_hz=opts.model_rate_hz,
            image_rate_hz=opts.image_rate_hz or 0.0))
        result = replay(opts.bag, scene, opts.namespace)
        rec.flush()
        span = '' if result.first is None else f', {result.last - result.first:.1f} s of log time'
        counts = ', '.join(f'{topic} {n}' for topic, n in sorted(result.logged.items()))
        print(f'[so101-view] {opts.bag}: logged {counts or "nothing"}{span} in '
              f'{time.monotonic() - start:.1f} s', flush=True)
        for problem in result.problems[:10]:
            print(f'[so101-view] skipped: {problem}', file=sys.stderr)
        try:
            if mode == 'web':
                print('[so101-view] serving the web viewer; Ctrl-C stops', flush=True)
                while True:
                    time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        finally:
            close_recording(rec)
    if opts.save is not None:
        print(f'[so101-view] wrote {opts.save} ({opts.save.stat().st_size / 1e6:.1f} MB); '
              f'open it with: rerun {opts.save}')
    return 0


def live_arguments(opts, ros_args: Sequence[str]) -> list[str]:
    """rclpy arguments that give the so101_view node these options as parameters."""
    params = {'viewer': _mode(opts), 'connect_url': opts.connect, 'web_port': opts.web_port,
              'grpc_port': opts.grpc_port, 'memory_limit': opts.memory_limit,
              'save_path': str(opts.save or ''), 'model_rate_hz': float(opts.model_rate_hz),
              'image_rate_hz': float(10.0 if opts.image_rate_hz is None else opts.image_rate_hz)}
    args = ['so101-view', '--ros-args', '-r', '__node:=so101_view']
    if opts.namespace.strip('/'):
        args += ['-r', f'__ns:=/{opts.namespace.strip("/")}']
    for name, value in params.items():
        text = value if not isinstance(value, str) else f'"{value}"' if value else "''"
        args += ['-p', f'{name}:={text}']
    return args + [a for a in ros_args if a != '--ros-args']


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, ros_args = (argv[:argv.index('--ros-args')], argv[argv.index('--ros-args'):]) \
        if '--ros-args' in argv else (argv, [])
    opts = build_parser().parse_args(ours)
    try:
        if opts.bag is not None:
            return cmd_replay(opts)
        from eval_monitor.view.viewer import resolve_mode

        resolve_mode(ViewerChoice(mode=_mode(opts), save=opts.save, connect_url=opts.connect))
        from eval_monitor.view.view_node import main as node_main

        node_main(args=live_arguments(opts, ros_args))
        return 0
    except ViewerError as err:
        print(f'so101-view: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
