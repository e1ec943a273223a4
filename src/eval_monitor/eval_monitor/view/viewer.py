"""Where a view's recording goes: a spawned native viewer, rerun's web viewer served from this
process (a headless lab PC: open the printed URL from any browser that reaches it), a viewer
already running elsewhere, and/or an ``.rrd`` file. No rclpy here.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import rerun as rr

from eval_monitor.view.style import blueprint

APPLICATION_ID = 'so101'
MODES = ('auto', 'spawn', 'web', 'connect', 'none')


class ViewerError(ValueError):
    """An impossible viewer choice; the message says what is possible."""


@dataclass(frozen=True)
class ViewerChoice:
    """``mode``: auto (spawn with a display, else web), spawn, web, connect (to
    ``connect_url``) or none (``save`` only)."""

    mode: str = 'auto'
    save: Path | None = None
    connect_url: str = ''
    web_port: int = 9090
    grpc_port: int = 9876
    memory_limit: str = '1GiB'  # what the served gRPC buffer keeps (oldest data goes first)
    cameras: tuple[str, ...] = ('front', 'handeye')


def has_display() -> bool:
    """Whether a native viewer window can open here."""
    return sys.platform in ('darwin', 'win32') or bool(
        os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def resolve_mode(choice: ViewerChoice) -> str:
    """The mode ``choice`` comes to (``auto`` decided here), or why it cannot work."""
    if choice.mode not in MODES:
        raise ViewerError(f'viewer {choice.mode!r} is not one of {", ".join(MODES)}')
    mode = choice.mode
    if mode == 'auto':
        mode = 'spawn' if has_display() else 'web'
    if mode == 'connect' and not choice.connect_url:
        raise ViewerError('viewer connect needs a URL (rerun+http://HOST:9876/proxy)')
    if mode == 'none' and choice.save is None:
        raise ViewerError('viewer none without a file to save to would log nowhere')
    if mode == 'web' and choice.save is not None:
        # rerun's in-process server is a sink of its own; a file sink would replace it
        raise ViewerError('the web viewer cannot also save to a file: use --save FILE alone '
                          '(then `rerun --serve-web FILE`), or spawn/connect a viewer')
    return mode


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (rerun's own gRPC server, on a port in
    use, logs an error from its thread and leaves the caller waiting instead of raising)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(('0.0.0.0', port))
        except OSError:
            return False
    return True


def web_viewer_url(host: str, web_port: int, grpc_port: int) -> str:
    """The address that opens rerun's web viewer on this host's gRPC stream."""
    source = f'rerun+http://{host}:{grpc_port}/proxy'
    return f'http://{host}:{web_port}/?url={quote(source, safe="")}'


def open_recording(name: str, choice: ViewerChoice) -> tuple[rr.RecordingStream, str]:
    """A recording stream connected as ``choice`` says, and a line telling the user where
    to look (the web viewer's URL on a headless machine)."""
    mode = resolve_mode(choice)
    rec = rr.RecordingStream(APPLICATION_ID)
    layout = blueprint(choice.cameras)
    sinks = []
    where = []
    if mode == 'spawn':
        viewer = shutil.which('rerun', path=os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get('PATH', '')]))
        rr.spawn(port=choice.grpc_port, connect=False, executable_path=viewer,
                 hide_welcome_screen=True, recording=rec)
        sinks.append(rr.GrpcSink(f'rerun+http://127.0.0.1:{choice.grpc_port}/proxy'))
        where.append(f'rerun viewer spawned (port {choice.grpc_port})')
    elif mode == 'connect':
        sinks.append(rr.GrpcSink(choice.connect_url))
        where.append(f'rerun: streaming to {choice.connect_url}')
    elif mode == 'web':
        busy = [p for p in (choice.grpc_port, choice.web_port) if not port_free(p)]
        if busy:
            raise ViewerError(f'port(s) {busy} in use (another so101 view or rerun viewer?); '
                              'choose others (--grpc-port/--web-port, or the grpc_port/'
                              'web_port parameters)')
        rec.serve_grpc(grpc_port=choice.grpc_port, server_memory_limit=choice.memory_limit)
        rr.serve_web_viewer(web_port=choice.web_port, open_browser=False)
        host = socket.gethostname()
        where.append(f'rerun web viewer: {web_viewer_url(host, choice.web_port, choice.grpc_port)}'
                     f' (on this machine: '
                     f'{web_viewer_url("localhost", choice.web_port, choice.grpc_port)})')
    if choice.save is not None:
        Path(choice.save).parent.mkdir(parents=True, exist_ok=True)
        sinks.append(rr.FileSink(str(choice.save)))
        where.append(f'rerun: recording to {choice.save}')
    if sinks:
        rec.set_sinks(*sinks)
    # the layout is sent once the sinks exist, not given to serve_grpc/set_sinks: with
    # default_blueprint= rerun 0.33 can deadlock (it holds the GIL while a server thread
    # frees the layout's numpy buffers; 3 of 10 web starts hung here). A viewer one connects
    # to keeps its own layout active.
    rec.send_blueprint(layout, make_active=mode != 'connect', make_default=True)
    rec.send_recording_name(name)
    return rec, '; '.join(where)


def close_recording(rec: rr.RecordingStream) -> None:
    """Flush everything and close the sinks (a saved file gets its footer here)."""
    rec.flush()
    rec.disconnect()
