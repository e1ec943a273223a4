"""``so101``: the suite's one command, for machines with or without a ROS 2 install.

Subcommands:
  up [name:=value ...]   start the nodes ``launch/so101.launch.py`` would start, from the same
                         YAML files (``bringup.plan`` is the shared plan); Ctrl-C stops
  demo [--episodes N]    the simulated cell with the scripted expert, monitor and recorder
  eval / compare         offline evaluation of a bag / side-by-side comparison of runs
  dataset                bags -> LeRobot dataset (demonstrations and interventions)
  console                the operator console
  view [BAG]             the suite in rerun: a bag replayed, or the live topics
  emulator               the STS3215 bus emulator
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from so101_driver.bringup import plan as bringup
from so101_driver.bringup.demo import cmd_demo
from so101_driver.bringup.plan import BringupError
from so101_driver.bringup.processes import ProcessGroup, executable, start_nodes


def up_usage() -> str:
    """``so101 up --help``: the launch arguments as ``ros2 launch ... --show-args`` lists them."""
    lines = ['usage: so101 up [name:=value ...]', '',
             'Start the nodes of launch/so101.launch.py from the same plan and YAML files; '
             'Ctrl-C stops them.', '', 'arguments:']
    for name, arg in bringup.ARGUMENTS.items():
        valid = f" (one of: {', '.join(arg.choices)})" if arg.choices else ''
        lines.append(f"  {name}:=  {arg.description}{valid}; default '{arg.default}'")
    return '\n'.join(lines)


def cmd_up(argv: Sequence[str]) -> int:
    if any(a in ('-h', '--help') for a in argv):
        print(up_usage())
        return 0
    args = bringup.parse_args(bringup.parse_assignments(argv))
    group = ProcessGroup()
    with tempfile.TemporaryDirectory(prefix='so101_up_') as tmp:
        try:
            specs = start_nodes(args, group, Path(tmp))
            print(f'[so101] up: {", ".join(s.name for s in specs)} running; Ctrl-C stops',
                  flush=True)
            while not group.exited():
                time.sleep(0.2)
            for name, code in group.exited():
                print(f'[so101] {name} exited with code {code}; stopping the rest',
                      file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            group.stop()


def _passthrough(script: str):
    def run(argv: Sequence[str]) -> int:
        return subprocess.call([executable(script), *argv])
    return run


COMMANDS = {
    'up': (cmd_up, 'start the suite\'s nodes (same plan and YAML as the launch file)'),
    'eval': (_passthrough('so101-eval'), 'evaluate a recorded bag into a run directory'),
    'compare': (_passthrough('so101-compare'), 'compare two or more run directories'),
    'emulator': (_passthrough('so101-servo-emulator'), 'serve an emulated STS3215 bus'),
    'dataset': (_passthrough('so101-dataset'), 'convert bags into a LeRobot dataset'),
    'train': (_passthrough('so101-train'), 'train a policy with a recipe of config/train/ '
              '(LeRobot\'s lerobot-train)'),
    'console': (_passthrough('so101-console'), 'operator console: episodes, override, counters'),
    'latency': (_passthrough('so101-latency'), 'per-chunk latency of a bag, camera to motion'),
    'bag-reindex': (_passthrough('so101-bag-reindex'), 'rebuild a killed recording\'s index and '
                    'metadata.yaml'),
    'view': (_passthrough('so101-view'), 'rerun view: replay a bag (--save FILE.rrd) or show '
             'the live topics'),
    'demo': (cmd_demo, 'simulated cell + expert + monitor + recorder, N episodes, then the '
             'evaluation table'),
}


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through finally: children are stopped


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    commands = COMMANDS
    if not argv or argv[0] in ('-h', '--help') or argv[0] not in commands:
        parser = argparse.ArgumentParser(prog='so101', description=__doc__.splitlines()[0])
        parser.add_argument('command', choices=sorted(commands),
                            help='; '.join(f'{k}: {v[1]}' for k, v in sorted(commands.items())))
        parser.parse_args(argv[:1] or ['--help'])
    try:
        return commands[argv[0]][0](argv[1:])
    except BringupError as err:
        print(f'so101 {argv[0]}: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
