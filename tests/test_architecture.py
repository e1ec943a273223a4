"""The layout keeps its shape: modules small enough to read, no import cycles, cores without
rclpy, and parts that import only what their room may.

Read from the source (``ast``), so nothing is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / 'src'
PACKAGES = ('so101_driver', 'eval_monitor', 'pi05_policy')
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every Python module of the three packages."""
    found = {}
    for package in PACKAGES:
        root = SRC / package
        for path in sorted((root / package).rglob('*.py')):
            parts = path.relative_to(root).with_suffix('').parts
            if parts[-1] == '__init__':
                parts = parts[:-1]
            found['.'.join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Suite modules that ``name`` imports anywhere in its body (lazy imports too)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == '__init__.py'
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split('.') if is_package else name.split('.')[:-1]
                base = base[:len(base) - node.level + 1]
                module = '.'.join([*base, node.module] if node.module else base)
            else:
                module = node.module or ''
            targets.add(module)
            targets.update(f'{module}.{alias.name}' for alias in node.names)
    return {t for t in targets if t in MODULES and t != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_module_list_is_the_real_tree():
    assert 'so101_driver.feetech.bus' in MODULES and 'eval_monitor.feeder' in MODULES
    assert len(MODULES) > 40


@pytest.mark.parametrize('name', sorted(MODULES))
def test_no_module_over_500_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, (f'{MODULES[name].relative_to(SRC)} has {lines} lines; split it '
                                f'along its seams (at most {MAX_LINES})')


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _find_cycle({'a': {'b'}, 'b': set(), 'c': {'a'}}) is None


def test_no_import_cycles():
    # A package's __init__ that re-exports its modules is an edge package -> module only; a
    # module importing a sibling by its full name does not import the package's __init__ names.
    cycle = _find_cycle(GRAPH)
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def _reaches(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for child in GRAPH[todo.pop()]:
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def test_evaluation_side_never_imports_the_policy_side():
    offenders = {name: sorted(t for t in GRAPH[name] if t.startswith('pi05_policy'))
                 for name in MODULES if name.startswith('eval_monitor')}
    assert not {k: v for k, v in offenders.items() if v}


def test_driver_never_imports_evaluation_or_policy():
    offenders = {name: sorted(t for t in GRAPH[name] if not t.startswith('so101_driver'))
                 for name in MODULES if name.startswith('so101_driver')}
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize('core', ['so101_driver.feetech', 'so101_driver.arm.trajectory',
                                  'so101_driver.cameras.camera', 'so101_driver.teleop.leader',
                                  'so101_driver.sim.cell', 'so101_driver.sim.expert',
                                  'eval_monitor.metrics', 'eval_monitor.feeder',
                                  'eval_monitor.offline', 'pi05_policy.runtime',
                                  'pi05_policy.chunking'])
def test_cores_do_not_import_rclpy(core):
    """At import time: a core imports (and so needs) no rclpy. A function may import it
    lazily where it handles rclpy's own objects (the bag writer serialises rclpy messages)."""
    for name in [n for n in MODULES if n == core or n.startswith(core + '.')]:
        for module in {name, *_reaches(name)}:
            roots = _top_level_import_roots(MODULES[module])
            assert 'rclpy' not in roots, f'{module} (reached from {name}) imports rclpy'


def _top_level_import_roots(path: Path) -> set[str]:
    """First names of what a module imports when it is imported (not inside functions)."""
    roots: set[str] = set()
    todo = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            roots.update(a.name.split('.')[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            roots.add((node.module or '').split('.')[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return roots
