"""Child processes of ``so101 up`` and ``so101 demo``: how a node is started (as ``ros2 run``
with ``--ros-args`` would), the group that starts and stops them together, and the check of
each running node's declared parameters against the YAML it was given."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from so101_driver.bringup import plan as bringup
from so101_driver.bringup.plan import BringupError, NodeSpec


def executable(name: str) -> str:
    """Path of a console script: next to this Python first (the venv), then PATH."""
    here = Path(sys.executable).parent
    found = shutil.which(name, path=f'{here}{os.pathsep}{os.environ.get("PATH", "")}')
    if found is None:
        raise BringupError(f'executable {name!r} not found next to {sys.executable} or on '
                           'PATH; run scripts/bootstrap.sh (make env) first')
    return found


def node_command(spec: NodeSpec, namespace: str, workdir: Path) -> list[str]:
    """The argv that starts ``spec`` as ``ros2 run`` + ``--ros-args`` would."""
    cmd = [executable(spec.executable), '--ros-args', '-r', f'__node:={spec.name}']
    if namespace:
        cmd += ['-r', f'__ns:=/{namespace}']
    for path in spec.params_files:
        cmd += ['--params-file', str(path)]
    if spec.overrides:  # a params file keeps the types (a task string stays a string)
        extra = workdir / f'{spec.name}.overrides.yaml'
        extra.write_text(yaml.safe_dump({spec.name: {'ros__parameters': spec.overrides}}))
        cmd += ['--params-file', str(extra)]
    return cmd


class ProcessGroup:
    """Child processes started together and stopped together (SIGINT, then SIGTERM/KILL)."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(list(cmd), **kwargs)
        self.procs.append((name, proc))
        return proc

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs if p.poll() is not None]

    def stop(self, timeout: float = 10.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()


class ParameterChecker:
    """Waits for each started node and compares its declared parameters with the YAML.

    rclpy ignores overrides of undeclared parameters silently, so a misspelt key in a YAML
    file would otherwise have no effect at all; asking the running node is exact.
    """

    def __init__(self, namespace: str):
        import rclpy

        self._rclpy = rclpy
        self.prefix = f'/{namespace}' if namespace else ''
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node('so101_up_checker', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def check(self, spec: NodeSpec, given: dict, timeout: float = 30.0) -> list[str]:
        """Wait until ``spec``'s node answers, then list its unknown keys (as messages)."""
        from rcl_interfaces.srv import ListParameters

        client = self.node.create_client(ListParameters,
                                         f'{self.prefix}/{spec.name}/list_parameters')
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return [f'node {spec.name} did not come up within {timeout:.0f} s']
            future = client.call_async(ListParameters.Request())
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
            if future.result() is None:
                return [f'node {spec.name} did not answer list_parameters']
            files = ', '.join(str(p) for p in spec.params_files)
            return [f'{files}: parameter {key!r} is not declared by node {spec.name}'
                    for key in bringup.unknown_keys(given, future.result().result.names)]
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def start_nodes(args: bringup.BringupArgs, group: ProcessGroup, workdir: Path,
                check: bool = True, extra_overrides: dict[str, dict] | None = None,
                popen_for=lambda name: {}) -> list[NodeSpec]:
    """Start the nodes of ``args``'s plan one after the other, each once the previous one
    answers (so the monitor and recorder are up before the sim's first episode mark), and
    check each one's parameter keys. ``extra_overrides``: node name -> parameters on top
    of the YAML; ``popen_for(name)``: extra ``subprocess.Popen`` arguments (a log file)."""
    specs = [dataclasses.replace(s, overrides=s.overrides | (extra_overrides or {}).get(
        s.name, {})) for s in bringup.plan(args)]
    given = bringup.check_config_files(specs)
    if args.rviz:
        print('[so101] rviz:=true needs a ROS 2 install (ros2 launch so101_driver '
              'so101.launch.py rviz:=true); skipped', file=sys.stderr)
    for cmd in bringup.processes(args):
        group.start(cmd[0], [executable(cmd[0]), *cmd[1:]], **popen_for(cmd[0]))
    if args.hardware is bringup.Hardware.EMULATED:
        deadline = time.monotonic() + 15.0
        while not bringup.EMULATOR_PORT.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    checker = ParameterChecker(args.namespace) if check else None
    try:
        for spec in specs:
            group.start(spec.name, node_command(spec, args.namespace, workdir),
                        **popen_for(spec.name))
            problems = checker.check(spec, given[spec.name]) if checker else []
            if problems:
                raise BringupError('configuration problems:\n  ' + '\n  '.join(problems))
    finally:
        if checker is not None:
            checker.close()
    return specs
