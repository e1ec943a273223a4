"""Benchmark: the MuJoCo cell's speed (so101_driver.sim.cell), in-process, no ROS.

1. physics + control without rendering: ``SimCell.step`` (ArmController goal at 100 Hz,
   5 physics steps of 2 ms) with the arm holding, and with the scripted expert running
   pick-and-place episodes (contacts, IK, chunk submission): sim seconds per wall second;
2. rendering of both cameras (front + handeye) at 224x224 and 640x480 with the sim's cheap
   settings (no shadows, reflections, multisampling): ms per frame and frames per second.

Prints the figures and writes bench/results/bench_sim.json. Needs MUJOCO_GL=egl (or
osmesa) for (2); without it the render figures are skipped.

    MUJOCO_GL=egl .venv/bin/python bench/bench_sim.py [--seconds 20] [--frames 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from so101_driver.sim.cell import CAMERA_NAMES, SimCell, SimConfig
from so101_driver.sim.renderer import SimRenderer
from so101_driver.sim.expert import ExpertConfig, ScriptedExpert, run_episodes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results' / 'bench_sim.json'


def physics_rate(sim_seconds: float) -> dict:
    cell = SimCell(SimConfig(seed=0))
    start = time.perf_counter()
    cell.run(sim_seconds)
    wall = time.perf_counter() - start
    return {'sim_s': sim_seconds, 'wall_s': wall, 'real_time_factor': sim_seconds / wall,
            'control_ticks_per_s': cell.counters.ticks / wall}


def expert_rate(episodes: int) -> dict:
    cell = SimCell(SimConfig(seed=0))
    expert = ScriptedExpert(ExpertConfig(seed=0))
    start = time.perf_counter()
    outcomes = run_episodes(cell, expert, episodes)
    wall = time.perf_counter() - start
    return {'episodes': episodes, 'successes': sum(o.value == 'success' for o in outcomes),
            'sim_s': cell.time, 'wall_s': wall, 'real_time_factor': cell.time / wall,
            'wall_s_per_episode': wall / episodes}


def render_rate(width: int, height: int, frames: int) -> dict:
    cell = SimCell(SimConfig(seed=0))
    cell.run(0.2)
    renderer = SimRenderer(cell, width, height)
    try:
        for camera in CAMERA_NAMES:  # warm up (shader compilation, buffers)
            renderer.render(camera)
        per_camera = {}
        for camera in CAMERA_NAMES:
            times = []
            for _ in range(frames):
                cell.step()
                start = time.perf_counter()
                renderer.render(camera)
                times.append(time.perf_counter() - start)
            per_camera[camera] = {'ms_p50': 1e3 * float(np.median(times)),
                                  'ms_mean': 1e3 * float(np.mean(times))}
    finally:
        renderer.close()
    both = sum(v['ms_mean'] for v in per_camera.values())
    return {'width': width, 'height': height, 'frames_per_camera': frames,
            'cameras': per_camera, 'ms_both_cameras': both,
            'camera_pairs_per_s': 1e3 / both}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=20.0, help='sim seconds of holding')
    parser.add_argument('--episodes', type=int, default=5, help='expert episodes')
    parser.add_argument('--frames', type=int, default=30, help='frames per camera per size')
    args = parser.parse_args(argv)

    results = {'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                           'mujoco_gl': os.environ.get('MUJOCO_GL', '')}}
    results['physics_hold'] = physics_rate(args.seconds)
    print(f'physics + control (holding): {results["physics_hold"]["real_time_factor"]:.0f}x '
          f'real time ({results["physics_hold"]["control_ticks_per_s"]:.0f} ticks/s)')
    results['physics_expert'] = expert_rate(args.episodes)
    e = results['physics_expert']
    print(f'physics + control + expert ({e["successes"]}/{e["episodes"]} successes): '
          f'{e["real_time_factor"]:.0f}x real time, {e["wall_s_per_episode"]:.2f} s/episode')
    if os.environ.get('MUJOCO_GL') in ('egl', 'osmesa'):
        results['render'] = []
        for width, height in ((224, 224), (640, 480)):
            r = render_rate(width, height, args.frames)
            results['render'].append(r)
            cams = ', '.join(f'{c} {v["ms_p50"]:.0f} ms' for c, v in r['cameras'].items())
            print(f'render {width}x{height}: {cams}; both {r["ms_both_cameras"]:.0f} ms '
                  f'= {r["camera_pairs_per_s"]:.1f} pairs/s')
    else:
        print('render: skipped (set MUJOCO_GL=egl)')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {RESULTS.relative_to(ROOT)}')
    return results


if __name__ == '__main__':
    main()
