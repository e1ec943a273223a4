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
import threading
import time
from collections.abc import Sequence
from pathlib import Path

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


def node_command(spec: NodeSpec, namespace: str, workdir: Path,
                 params: dict | None = None) -> list[str]:
    """The argv that starts ``spec`` as ``ros2 run`` + ``--ros-args`` would.

    ``params`` (the node's YAML sections merged with its overrides, ``check_config_files``)
    go in one params file keyed by the node's full name: a section keyed by the bare name, as
    the suite's YAML files are, would not reach a node under ``namespace``.
    """
    cmd = [executable(spec.executable), '--ros-args', '-r', f'__node:={spec.name}']
    if namespace:
        cmd += ['-r', f'__ns:=/{namespace}']
    if params is None:
        params = bringup.check_config_files([spec])[spec.name]
    if params:
        cmd += ['--params-file', str(bringup.write_params_file(spec, namespace, params, workdir))]
    return cmd


class ProcessGroup:
    """Child processes started together and stopped together.

    Each child runs in its own process group, so a Ctrl-C at the terminal reaches only the
    ``so101`` process, which then sends every child exactly one SIGINT: a node is never
    interrupted a second time while it closes (a bag's metadata, the arm's torque-off). A child
    still running after ``grace_s`` gets SIGTERM, and SIGKILL ``kill_s`` later. Further Ctrl-Cs
    while the group stops are ignored (the stop says so and how long it may take).
    """

    def __init__(self, grace_s: float = 10.0, kill_s: float = 5.0):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.grace_s = grace_s
        self.kill_s = kill_s

    def start(self, name: str, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(list(cmd), process_group=0, **kwargs)
        self.procs.append((name, proc))
        return proc

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        """SIGINT once to each running child (last started first), then escalate."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self._ignore_interrupt) if in_main else None
        try:
            for _, proc in reversed(self.procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for sig, wait_s in ((signal.SIGTERM, self.grace_s), (signal.SIGKILL, self.kill_s)):
                deadline = time.monotonic() + wait_s
                for name, proc in self.procs:
                    try:
                        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        print(f'[so101] {name} still running {wait_s:.0f} s after '
                              f'{"SIGINT" if sig == signal.SIGTERM else "SIGTERM"}; sending '
                              f'{sig.name}', file=sys.stderr, flush=True)
                        proc.send_signal(sig)
            for _, proc in self.procs:
                proc.wait()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)

    def _ignore_interrupt(self, signum, frame) -> None:
        print(f'[so101] stopping: every node got one SIGINT; waiting up to {self.grace_s:.0f} s '
              f'before SIGTERM (+{self.kill_s:.0f} s before SIGKILL)', file=sys.stderr, flush=True)


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

    def check(self, spec: NodeSpec, given: dict, timeout: float = 30.0, attempts: int = 3,
              alive=lambda: True) -> tuple[list[str], list[str]]:
        """Wait until ``spec``'s node answers, then list its unknown keys.

        Returns ``(problems, warnings)``. A misspelt key is a problem (the run would silently
        ignore it). A node that is slow to come up or whose reply is lost (a loaded machine,
        a dropped DDS sample) is asked again, up to ``attempts`` times; if it still does not
        answer, that is a warning and the session goes on: the check is a convenience, not a
        reason to end a healthy run. ``alive()`` false (the process exited) ends the wait.
        """
        from rcl_interfaces.srv import ListParameters

        client = self.node.create_client(ListParameters,
                                         f'{self.prefix}/{spec.name}/list_parameters')
        files = ', '.join(str(p) for p in spec.params_files) or '(no YAML)'
        try:
            for _ in range(attempts):
                deadline = time.monotonic() + timeout
                while not client.wait_for_service(timeout_sec=0.5):
                    if not alive() or time.monotonic() > deadline:
                        break
                if not alive():
                    return [], []  # the caller reports the exit code
                if not client.service_is_ready():
                    continue
                future = client.call_async(ListParameters.Request())
                self.executor.spin_until_future_complete(future, timeout_sec=timeout)
                if future.result() is not None:
                    return [f'{files}: parameter {key!r} is not declared by node {spec.name}'
                            for key in bringup.unknown_keys(given,
                                                            future.result().result.names)], []
                client.remove_pending_request(future)
            return [], [f'node {spec.name} did not answer list_parameters in {attempts} tries '
                        f'of {timeout:.0f} s; its parameters ({files}) were not checked']
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def confine_discovery(hardware: bringup.Hardware) -> str:
    """Keep a simulated or emulated bring-up on this host unless the user chose otherwise.

    Any process on the DDS domain can publish trajectories, raise the override or end
    episodes. A sim or emulator session has no reason to be reachable from the network, so
    ``ROS_AUTOMATIC_DISCOVERY_RANGE`` defaults to ``LOCALHOST`` for it (and for every child);
    a value the user exported (``SUBNET`` for a policy on another host) is kept. Returns the
    range in effect ('' for rmw's default)."""
    if hardware in (bringup.Hardware.SIM, bringup.Hardware.EMULATED):
        os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    return os.environ.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '')


def start_nodes(args: bringup.BringupArgs, group: ProcessGroup, workdir: Path,
                check: bool = True, extra_overrides: dict[str, dict] | None = None,
                popen_for=lambda name: {}) -> list[NodeSpec]:
    """Start the nodes of ``args``'s plan one after the other, each once the previous one
    answers (so the monitor and recorder are up before the sim's first episode mark), and
    check each one's parameter keys. ``extra_overrides``: node name -> parameters on top
    of the YAML; ``popen_for(name)``: extra ``subprocess.Popen`` arguments (a log file)."""
    specs = [dataclasses.replace(s, overrides=s.overrides | (extra_overrides or {}).get(
        s.name, {})) for s in bringup.plan(args)]
    scope = confine_discovery(args.hardware)
    print(f'[so101] DDS discovery: ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID", "0")}, '
          f'ROS_AUTOMATIC_DISCOVERY_RANGE={scope or "(rmw default: SUBNET)"}', flush=True)
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
            proc = group.start(spec.name, node_command(spec, args.namespace, workdir,
                                                       given[spec.name]),
                               **popen_for(spec.name))
            if checker is None:
                continue
            if proc.poll() is not None:
                raise BringupError(f'{spec.name} exited with code {proc.returncode} at start')
            problems, warnings = checker.check(spec, given[spec.name],
                                               alive=lambda: proc.poll() is None)
            for warning in warnings:
                print(f'[so101] warning: {warning}', file=sys.stderr, flush=True)
            if problems:
                raise BringupError('configuration problems:\n  ' + '\n  '.join(problems))
    finally:
        if checker is not None:
            checker.close()
    return specs
