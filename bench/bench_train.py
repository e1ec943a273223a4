"""Benchmark: seconds per training step and peak memory of each recipe (``so101 train``).

Each recipe of ``config/train/`` is resolved by ``so101 train``'s own code (dataset check,
``--set`` overrides, LeRobot's loader and presets) and trained for a few steps by LeRobot's
``lerobot-train`` in a child process, one per recipe, so each peak is its own:

* **CPU, reduced models** (always): ``act_so101`` with a narrow transformer (the ResNet-18
  backbone stays, random weights) and ``pi05_so101`` as LeRobot's pi05 code with small widths
  (``pi05_policy.tiny_checkpoints.reduced_pi05_architecture``, applied in the child around
  ``lerobot_train.main``) and random weights, both with the recipe's batch size, precision and
  gradient checkpointing. The dataset is a synthetic two-camera bag converted by
  ``so101 dataset`` at 30 fps with images resized to 96x128, so a CPU step stays short.
  These figures say what the pipeline costs here, not what a real model costs.
* **GPU, real-size Pi0.5** (only where CUDA is available): ``pi05_so101`` as it stands
  (gemma_2b + gemma_300m expert, bf16, gradient checkpointing, batch 8) from random weights
  (``lerobot/pi05_base`` has the same architecture; its weights change nothing in the time),
  on 480x640 images as the reference recorded. Elsewhere: "not measured: no GPU".

Seconds per step is LeRobot's own per-step timing (``updt_s`` + ``data_s`` of its log line,
``log_freq=1``), median over the steps after the first (which pays for warm-up). Peak memory:
the child's maximum resident set (CPU) and ``torch.cuda.max_memory_allocated`` (GPU).
Anchor: the reference fine-tune took 2-3 h for 3000 steps on an A100 80 GB, about
2.4-3.6 s per step. The offline tokenizer of ``tiny_checkpoints`` stands in for PaliGemma's
(the Hub is not reachable here). Prints the figures and writes bench/results/bench_train.json.

    .venv/bin/python bench/bench_train.py [--steps 6] [--recipes act_so101 pi05_so101]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('WANDB_MODE', 'disabled')

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results' / 'bench_train.json'
REFERENCE_S_PER_STEP = (2.4, 3.6)  # A100 80 GB, 2-3 h for 3000 steps
CPU_IMAGE_SIZE = '96x128'
#: LeRobot settings that make each recipe a reduced model for the CPU (beside device=cpu).
REDUCED = {
    'act_so101': ['policy.pretrained_backbone_weights=null', 'policy.dim_model=64',
                  'policy.n_heads=2', 'policy.dim_feedforward=128',
                  'policy.n_encoder_layers=1', 'policy.n_vae_encoder_layers=1'],
    'pi05_so101': ['policy.pretrained_path=null', 'policy.max_state_dim=8',
                   'policy.max_action_dim=8', 'policy.tokenizer_max_length=48',
                   'policy.image_resolution=[56, 56]', 'policy.chunk_size=20',
                   'policy.n_action_steps=20'],
}
#: For every run: a few steps, everything in the main process, nothing saved.
COMMON = ['num_workers=0', 'log_freq=1', 'save_checkpoint=false']
STEP_LINE = re.compile(r'\bupdt_s:([\d.]+) data_s:([\d.]+)')


def make_dataset(tmp: Path, image_size: str | None) -> Path:
    """A synthetic 4 s two-camera bag (bench_dataset's scene) -> ``so101 dataset``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_dataset import generate_bag

    from pi05_policy.dataset.cli import main as dataset_main

    bag = tmp / f'bag_{image_size or "full"}'
    if not bag.exists():
        generate_bag(bag, 4.0, jpeg=False)
    root = tmp / f'dataset_{image_size or "full"}'
    argv = [str(bag), '--root', str(root), '--policy-params',
            str(ROOT / 'config' / 'pi05_policy.yaml'), '--image-tolerance', '0.05']
    if image_size:
        argv += ['--image-size', image_size]
    with contextlib.redirect_stdout(sys.stderr):
        if dataset_main(argv) != 0:
            sys.exit('bench_train: so101 dataset failed (see above)')
    return root


def prepare(recipe: str, dataset: Path, output: Path, overrides: list[str], tmp: Path) -> Path:
    """The config file ``so101 train`` would hand to lerobot-train (checked and resolved)."""
    from pi05_policy.train.cli import build_parser, prepare as train_prepare

    argv = ['--recipe', recipe, '--dataset', str(dataset), '--output', str(output)]
    for item in overrides:
        argv += ['--set', item]
    args = build_parser().parse_args(argv)
    folder = tmp / f'config_{output.name}'
    folder.mkdir()
    with contextlib.redirect_stdout(sys.stderr):
        config_file, _ = train_prepare(args, folder)
    return config_file


def child(config_file: Path, reduced: bool, report: Path, threads: int | None) -> None:
    """Inside the child: lerobot-train on ``config_file``; peak memory to ``report``."""
    import torch

    from lerobot.scripts import lerobot_train

    from pi05_policy.tiny_checkpoints import ReducedPi05, reduced_pi05_architecture

    if threads:
        torch.set_num_threads(threads)
    sys.argv = ['lerobot-train', f'--config_path={config_file}']
    context = reduced_pi05_architecture(ReducedPi05()) if reduced else contextlib.nullcontext()
    t0 = time.perf_counter()
    with context:
        lerobot_train.main()
    figures = {'wall_s': time.perf_counter() - t0, 'torch_threads': torch.get_num_threads(),
               'max_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        figures['cuda_max_allocated_gb'] = torch.cuda.max_memory_allocated() / 2**30
    report.write_text(json.dumps(figures))


def measure(name: str, recipe: str, dataset: Path, overrides: list[str], tmp: Path,
            tokenizer_home: Path, reduced_pi05: bool, threads: int | None) -> dict:
    output = tmp / f'run_{name}'
    config_file = prepare(recipe, dataset, output, [*COMMON, *overrides], tmp)
    report = tmp / f'{name}.json'
    command = [sys.executable, str(Path(__file__).resolve()), '--child', str(config_file),
               '--report', str(report)] + (['--reduced-pi05'] if reduced_pi05 else []) \
        + (['--threads', str(threads)] if threads else [])
    t0 = time.perf_counter()
    # the pi05 processor loads the tokenizer by its Hub name: a folder of that name in cwd
    done = subprocess.run(command, capture_output=True, text=True, cwd=tokenizer_home)
    wall = time.perf_counter() - t0
    log = done.stdout + done.stderr
    if done.returncode != 0 or not report.is_file():
        print(log[-4000:], file=sys.stderr)
        return {'error': f'lerobot-train exit {done.returncode}'}
    steps = [(float(u), float(d)) for u, d in STEP_LINE.findall(log)]
    if not steps:
        print(log[-4000:], file=sys.stderr)
        return {'error': 'no step lines in the lerobot-train log'}
    later = steps[1:] or steps  # the first step pays for warm-up
    figures = json.loads(report.read_text())
    return {
        'steps_logged': len(steps),
        's_per_step_median': round(statistics.median(u + d for u, d in later), 4),
        's_per_step_first': round(sum(steps[0]), 4),
        'update_s_median': round(statistics.median(u for u, _ in later), 4),
        'data_s_median': round(statistics.median(d for _, d in later), 4),
        'process_wall_s': round(wall, 1),
        'peak_rss_mb': round(figures['max_rss_mb'], 0),
        'torch_threads': figures['torch_threads'],
        **({'cuda_max_allocated_gb': round(figures['cuda_max_allocated_gb'], 2)}
           if 'cuda_max_allocated_gb' in figures else {}),
        'overrides': overrides,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=6, help='training steps per run')
    parser.add_argument('--gpu-steps', type=int, default=10, help='steps of the GPU run')
    parser.add_argument('--recipes', nargs='+', default=list(REDUCED), choices=list(REDUCED))
    parser.add_argument('--threads', type=int, help='torch CPU threads of each training '
                        'process (default: torch\'s own, one per core; on a machine whose '
                        'cores are busy with other work, fewer threads than cores avoids '
                        'oversubscription)')
    parser.add_argument('--child', type=Path, help=argparse.SUPPRESS)
    parser.add_argument('--report', type=Path, help=argparse.SUPPRESS)
    parser.add_argument('--reduced-pi05', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.reduced_pi05, args.report, args.threads)
        return

    import torch

    from pi05_policy.tiny_checkpoints import PALIGEMMA_TOKENIZER, build_offline_tokenizer

    results: dict = {'cpu_count': os.cpu_count(), 'machine': platform.machine(),
                     'torch': torch.__version__, 'steps': args.steps,
                     'reference_s_per_step_a100': list(REFERENCE_S_PER_STEP),
                     'load_average_1min_at_start': round(os.getloadavg()[0], 2), 'runs': {}}
    with tempfile.TemporaryDirectory(prefix='bench_train_') as tmp:
        tmp = Path(tmp)
        home = tmp / 'tokenizer_home'
        build_offline_tokenizer(home / PALIGEMMA_TOKENIZER)
        dataset = make_dataset(tmp, CPU_IMAGE_SIZE)
        for recipe in args.recipes:
            name = f'{recipe}_reduced_cpu'
            overrides = [f'steps={args.steps}', 'policy.device=cpu', *REDUCED[recipe]]
            figures = measure(name, recipe, dataset, overrides, tmp, home,
                              reduced_pi05=recipe == 'pi05_so101', threads=args.threads)
            figures['images'] = CPU_IMAGE_SIZE
            results['runs'][name] = figures
            print(f'{name:26s} ' + (figures.get('error') or
                  f'{figures["s_per_step_median"]:.3f} s/step (update '
                  f'{figures["update_s_median"]:.3f} + data {figures["data_s_median"]:.3f}; '
                  f'first step {figures["s_per_step_first"]:.2f} s), peak RSS '
                  f'{figures["peak_rss_mb"]:.0f} MB, batch 8, {args.steps} steps, '
                  f'{figures["torch_threads"]} torch threads'))
        name = 'pi05_so101_full_gpu'
        if torch.cuda.is_available() and 'pi05_so101' in args.recipes:
            full = make_dataset(tmp, None)
            figures = measure(name, 'pi05_so101', full,
                              [f'steps={args.gpu_steps}', 'policy.pretrained_path=null'],
                              tmp, home, reduced_pi05=False, threads=None)
            figures['gpu'] = torch.cuda.get_device_name(0)
            results['runs'][name] = figures
            print(f'{name:26s} ' + (figures.get('error') or
                  f'{figures["s_per_step_median"]:.3f} s/step, CUDA peak '
                  f'{figures["cuda_max_allocated_gb"]:.1f} GB ({figures["gpu"]}); reference '
                  f'A100: {REFERENCE_S_PER_STEP[0]}-{REFERENCE_S_PER_STEP[1]} s/step'))
        else:
            results['runs'][name] = {'not_measured': 'no GPU'}
            print(f'{name:26s} not measured: no GPU (reference A100 80 GB: '
                  f'{REFERENCE_S_PER_STEP[0]}-{REFERENCE_S_PER_STEP[1]} s/step, 2-3 h for '
                  '3000 steps)')
    results['load_average_1min_at_end'] = round(os.getloadavg()[0], 2)
    print(f'load average (1 min) {results["load_average_1min_at_start"]} at the start, '
          f'{results["load_average_1min_at_end"]} at the end, on {os.cpu_count()} CPUs')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + '\n')
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
