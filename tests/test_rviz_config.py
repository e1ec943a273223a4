"""``config/so101.rviz`` against what rviz2 ships and what the suite publishes.

RViz loads a layout without complaint and then shows an empty panel for a display class it
does not know, a topic nobody publishes (or of another type), or a frame the URDF lacks;
nothing fails, the operator just sees nothing. These checks need no RViz: the class list
of rviz_default_plugins (``../shared/rviz_default_plugins.txt``), the README's topic table
(the suite's documented topics) and the URDF. ``tests/test_real_launch.py`` checks the same
layout in a running graph (publishers present, QoS compatible, namespaced).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from so101_driver.bringup import plan as bringup

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ROOT / 'config' / 'so101.rviz'
PLUGINS = ROOT.parent / 'shared' / 'rviz_default_plugins.txt'
URDF = ROOT / 'src' / 'so101_driver' / 'urdf' / 'so101.urdf'
#: Message type each display class subscribes with (rviz_default_plugins).
DISPLAY_TYPES = {
    'rviz_default_plugins/RobotModel': 'std_msgs/String',
    'rviz_default_plugins/Image': 'sensor_msgs/Image',
    'rviz_default_plugins/Camera': 'sensor_msgs/Image',
    'rviz_default_plugins/MarkerArray': 'visualization_msgs/MarkerArray',
    'rviz_default_plugins/Marker': 'visualization_msgs/Marker',
    'rviz_default_plugins/PointStamped': 'geometry_msgs/PointStamped',
    'rviz_default_plugins/Pose': 'geometry_msgs/PoseStamped',
}


def layout() -> dict:
    return yaml.safe_load(LAYOUT.read_text())


def walk(item, found: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Every (key, value) pair of a nested YAML document."""
    if isinstance(item, dict):
        for key, value in item.items():
            found.append((key, value))
            walk(value, found)
    elif isinstance(item, list):
        for value in item:
            walk(value, found)
    return found


def subscriptions() -> list[tuple[str, str, str]]:
    """(display name, class, topic) of every display that subscribes to a topic."""
    out = []
    for display in layout()['Visualization Manager']['Displays']:
        for key in ('Topic', 'Description Topic'):
            if isinstance(display.get(key), dict):
                out.append((display['Name'], display['Class'], display[key]['Value']))
    return out


def documented_topics() -> dict[str, str]:
    """README topic table: name pattern (regex, relative) -> message type."""
    rows = re.findall(r'^\| `([^`]+)` \| (\S+)', (ROOT / 'README.md').read_text(), re.M)
    table = {}
    for name, msg_type in rows:
        if '/' not in msg_type:  # a service or parameter table
            continue
        pattern = re.escape(name.lstrip('/')).replace(re.escape('<name>'), r'[a-z_]+')
        table[pattern] = msg_type
    assert table, 'README has no topic table of the form | `name` | pkg/Type | ...'
    return table


def test_every_class_is_one_rviz2_ships():
    if not PLUGINS.is_file():
        pytest.skip(f'{PLUGINS} (rviz_default_plugins class list) is absent')
    shipped = {line.strip() for line in PLUGINS.read_text().splitlines()
               if line.strip() and not line.startswith('#')}
    classes = {v for k, v in walk(layout(), []) if k == 'Class' and v}
    assert classes, 'no Class entries in the layout'
    assert classes <= shipped, f'classes rviz2 does not ship: {sorted(classes - shipped)}'


def test_every_display_topic_is_a_documented_topic_of_its_type():
    table = documented_topics()
    subs = subscriptions()
    assert {c for _, c, _ in subs} >= {'rviz_default_plugins/RobotModel',
                                       'rviz_default_plugins/Image',
                                       'rviz_default_plugins/MarkerArray'}
    for name, cls, topic in subs:
        assert cls in DISPLAY_TYPES, f'{name}: no known message type for {cls}'
        relative = topic.lstrip('/')
        matches = [t for pattern, t in table.items() if re.fullmatch(pattern, relative)]
        assert matches, f'display {name!r}: {topic} is not a topic of the suite (README table)'
        assert DISPLAY_TYPES[cls] in matches, \
            f'display {name!r}: {topic} is {matches}, {cls} reads {DISPLAY_TYPES[cls]}'


def test_frames_exist_in_the_urdf():
    links = {link.get('name') for link in ET.parse(URDF).getroot().iter('link')}
    frames = {v for k, v in walk(layout(), []) if k.endswith('Frame') and isinstance(v, str)}
    frames.discard('<Fixed Frame>')  # RViz's placeholder for the Fixed Frame
    assert layout()['Visualization Manager']['Global Options']['Fixed Frame'] in links
    assert frames <= links, f'frames not in {URDF.name}: {sorted(frames - links)}'
    monitor = yaml.safe_load((ROOT / 'config' / 'eval.yaml').read_text())
    markers_frame = monitor['eval_monitor']['ros__parameters']['frame_id']
    assert markers_frame in links, f'eval/markers frame {markers_frame} not in {URDF.name}'


@pytest.mark.parametrize('namespace', ['cell_a', '/robots/left/'])
def test_namespace_remaps_every_layout_topic_into_it(namespace):
    """RViz keeps absolute topic names, which a pushed namespace does not move: the launch
    file remaps each one (``bringup.rviz_remappings``), so RViz sees the namespaced arm."""
    remaps = dict(bringup.rviz_remappings(namespace, LAYOUT))
    prefix = '/' + namespace.strip('/')
    for name, _, topic in subscriptions():
        resolved = remaps.get(topic, topic if topic.startswith('/') else f'{prefix}/{topic}')
        assert resolved == f'{prefix}/{topic.lstrip("/")}', \
            f'display {name!r}: {topic} resolves to {resolved} under namespace {namespace}'
    assert bringup.rviz_remappings('', LAYOUT) == []


def test_launch_opens_this_layout():
    assert bringup.rviz_config().resolve() == LAYOUT.resolve()
