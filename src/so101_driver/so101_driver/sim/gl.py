"""Choose MuJoCo's OpenGL backend before ``mujoco`` is imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported; unset it means GLFW,
which needs a display, so on a headless machine the cameras silently did not render
(``rendering unavailable``) and a policy waited for images forever. When the user has not
chosen, :func:`choose_backend` probes, in a child process (a failed GL init can abort the
process that tries it), the offscreen backends in order: EGL (GPU or Mesa's llvmpipe), then
OSMesa (software), then GLFW where a display exists, and sets the first that renders.
"""

from __future__ import annotations

import os
import subprocess
import sys

#: Backends probed when MUJOCO_GL is unset, best first.
CANDIDATES = ('egl', 'osmesa', 'glfw')

_PROBE = ('import mujoco\n'
          'm = mujoco.MjModel.from_xml_string("<mujoco><worldbody><light/></worldbody>'
          '</mujoco>")\n'
          'r = mujoco.Renderer(m, 8, 8); d = mujoco.MjData(m); r.update_scene(d); r.render()\n')

#: (backend, how it was chosen) once decided in this process.
chosen: tuple[str, str] | None = None


def _renders(backend: str, timeout_s: float = 30.0) -> bool:
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend in ('egl', 'osmesa'):
        env['PYOPENGL_PLATFORM'] = backend
    try:
        done = subprocess.run([sys.executable, '-c', _PROBE], env=env, timeout=timeout_s,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_backend(candidates: tuple[str, ...] = CANDIDATES) -> tuple[str, str]:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) to a backend that renders, unless the
    user set it. Returns ``(backend, how)``; backend ``''`` when none works (physics still
    runs; the node then says rendering is unavailable)."""
    global chosen
    if chosen is not None:
        return chosen
    given = os.environ.get('MUJOCO_GL', '').strip()
    if given:
        chosen = (given, 'MUJOCO_GL')
        return chosen
    if 'mujoco' in sys.modules:  # too late to choose: mujoco already read the variable
        chosen = ('glfw', 'default (mujoco was imported before the backend was chosen)')
        return chosen
    for backend in candidates:
        if backend == 'glfw' and not os.environ.get('DISPLAY'):
            continue
        if _renders(backend):
            os.environ['MUJOCO_GL'] = backend
            if backend in ('egl', 'osmesa'):
                os.environ.setdefault('PYOPENGL_PLATFORM', backend)
            chosen = (backend, f'probed: first that renders of {", ".join(candidates)}')
            return chosen
    chosen = ('', f'none of {", ".join(candidates)} renders here')
    return chosen
