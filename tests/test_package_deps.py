"""rosdep-complete packages: every import of a package is declared in its package.xml with its
rosdep key, or listed in README as a pip-only dependency.

`rosdep install --from-paths src --ignore-src` can only install what package.xml declares; an
import that is neither declared nor documented is a machine that fails at the first run.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('so101_driver', 'eval_monitor', 'pi05_policy')

#: Import name -> rosdep key, for imports whose rosdep key is not the import name. ROS
#: packages (rclpy, *_msgs, launch, ...) are their own key.
ROSDEP_KEYS = {
    'numpy': 'python3-numpy',
    'yaml': 'python3-yaml',
    'serial': 'python3-serial',
    'cv2': 'python3-opencv',
    'scipy': 'python3-scipy',
    'matplotlib': 'python3-matplotlib',
}
ROS_PACKAGES = {'rclpy', 'launch', 'launch_ros', 'ament_index_python', 'rcl_interfaces',
                'rosidl_parser', 'builtin_interfaces', 'std_msgs', 'std_srvs', 'sensor_msgs',
                'trajectory_msgs', 'diagnostic_msgs', 'geometry_msgs', 'visualization_msgs',
                'rosgraph_msgs', 'cv_bridge'}
#: What the launch files start that is not imported: must be declared too.
LAUNCHED = {'so101_driver': {'robot_state_publisher', 'rviz2'}}


def _sources(package: str) -> list[Path]:
    files = [p for p in (ROOT / 'src' / package / package).rglob('*.py')]
    if package == 'so101_driver':  # it installs the launch files
        files += sorted((ROOT / 'launch').glob('*.py'))
    return files


def _import_roots(files: list[Path]) -> set[str]:
    roots: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(a.name.split('.')[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots.add((node.module or '').split('.')[0])
    return roots - set(sys.stdlib_module_names) - {'__future__'}


def _declared(package: str) -> set[str]:
    root = ET.parse(ROOT / 'src' / package / 'package.xml').getroot()
    return {e.text.strip() for e in root if e.tag in ('depend', 'exec_depend') and e.text}


def _pip_only() -> dict[str, str]:
    """``{import name: package}`` from README's table of dependencies rosdep cannot install."""
    text = (ROOT / 'README.md').read_text()
    section = text.split('Dependencies rosdep cannot install', 1)[1].split('\n\n', 2)[1]
    rows = re.findall(r'^\| `(\w+)` \| .+? \| (\w+) \|$', section, re.M)
    assert rows, 'README lists no pip-only dependencies'
    return dict(rows)


@pytest.mark.parametrize('package', PACKAGES)
def test_every_import_is_declared_or_documented_as_pip_only(package):
    pip_only = _pip_only()
    declared = _declared(package)
    undeclared = []
    for root in sorted(_import_roots(_sources(package))):
        if root in PACKAGES:
            key = root  # a sibling package of the workspace
        elif root in pip_only:
            assert pip_only[root] == package, \
                f'README lists {root} under {pip_only[root]}, but {package} imports it'
            continue
        elif root in ROSDEP_KEYS:
            key = ROSDEP_KEYS[root]
        elif root in ROS_PACKAGES:
            key = root
        else:
            undeclared.append(f'{root} (no rosdep key known to this test and not in README)')
            continue
        if key != package and key not in declared:
            undeclared.append(f'{root}: exec_depend {key} missing')
    for executable_pkg in LAUNCHED.get(package, ()):
        if executable_pkg not in declared:
            undeclared.append(f'{executable_pkg} (started by the launch files)')
    assert not undeclared, f'src/{package}/package.xml: ' + '; '.join(undeclared)


def test_pip_only_table_names_only_real_imports():
    used = set().union(*(_import_roots(_sources(p)) for p in PACKAGES))
    stale = sorted(set(_pip_only()) - used)
    assert not stale, f'README lists pip-only imports nothing imports: {stale}'


def test_evaluation_declares_no_policy_side():
    assert not {'pi05_policy', 'lerobot'} & _declared('eval_monitor')
