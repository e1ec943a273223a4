"""Offline evaluation (``so101-eval BAG -o RUN_DIR``) and the message-to-engine mapping.

:class:`EngineFeeder` turns one message of an evaluation topic into a
:class:`~eval_monitor.metrics.MetricEngine` call. The live monitor node and the offline
evaluation both use it, so the same messages give the same numbers. Which time each message
gets (the one thing that could differ between live and offline):

- ``joint_states`` and trajectories: their ``header.stamp`` (a trajectory with a zero stamp
  means "on receipt", so it gets the receive time);
- ``eval/episode`` and ``sim/truth``: the ``stamp`` inside the JSON payload (publisher's clock);
- ``teleop/override`` (std_msgs/Bool has no stamp): the receive time. Live that is the
  monitor's node clock in the callback, offline the bag's log time, which the recorder sets
  to its node clock on receipt; the two differ by the delivery latency difference between
  the two subscribers (well under a millisecond on one host).

Messages are fed in arrival order live and in log-time (receive) order offline, which is the
same order. No rclpy here: offline evaluation runs on any machine with the bag.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from so101_driver.eval_topics import EpisodeMark, PayloadError, SimTruth

from eval_monitor.bag import BagReader
from eval_monitor.metrics import DetectorConfig, EpisodeOrderError, EvalEvent, MetricEngine

#: At most this many unusable messages are described one by one in ``skipped``.
MAX_SKIPPED_NOTES = 50


class EvalTopic(str, Enum):
    """Topics the engine is fed from (relative names, DESIGN.md)."""

    JOINT_STATES = 'joint_states'
    OVERRIDE = 'teleop/override'
    EPISODE = 'eval/episode'
    TRUTH = 'sim/truth'
    TRAJECTORY = 'joint_trajectory'
    TELEOP_TRAJECTORY = 'teleop/joint_trajectory'


#: Topics whose absence makes metrics unavailable: reported as missing when nothing came.
#: sim/truth exists only in simulation and the trajectories are only counted, so their
#: absence is normal and not reported.
REQUIRED_TOPICS = (EvalTopic.JOINT_STATES, EvalTopic.OVERRIDE, EvalTopic.EPISODE)


def stamp_seconds(stamp: Any) -> float:
    """Seconds of a ``builtin_interfaces/Time`` (rclpy or decoded from a bag)."""
    return stamp.sec + stamp.nanosec * 1e-9


class EngineFeeder:
    """Feed messages of the evaluation topics to one engine, counting and noting what fails.

    Not thread safe: the caller serialises calls (the node holds a lock).
    """

    def __init__(self, engine: MetricEngine) -> None:
        self.engine = engine
        self.received: Counter[EvalTopic] = Counter()  # messages per topic, usable or not
        self._notes: list[str] = []
        self._unnoted = 0

    @property
    def skipped(self) -> list[str]:
        """Messages that could not be used, described (for ``Summary.skipped``)."""
        more = [f'... and {self._unnoted} more unusable messages'] if self._unnoted else []
        return self._notes + more

    def missing_topics(self) -> list[str]:
        """Required topics from which nothing was received."""
        return [t.value for t in REQUIRED_TOPICS if not self.received[t]]

    def note(self, text: str) -> None:
        if len(self._notes) < MAX_SKIPPED_NOTES:
            self._notes.append(text)
        else:
            self._unnoted += 1

    def feed(self, topic: EvalTopic, msg: Any, receive_time: float) -> list[EvalEvent]:
        """Feed one message (rclpy message or one decoded from a bag); returns its events.

        ``receive_time`` in seconds: node clock at the callback live, log time offline.
        """
        self.received[topic] += 1
        if topic is EvalTopic.JOINT_STATES:
            stamp = stamp_seconds(msg.header.stamp) or receive_time
            return self.engine.joint_state(stamp, list(msg.name), list(msg.position),
                                           list(msg.velocity) or None, list(msg.effort) or None)
        if topic is EvalTopic.OVERRIDE:
            return self.engine.override(receive_time, bool(msg.data))
        if topic in (EvalTopic.TRAJECTORY, EvalTopic.TELEOP_TRAJECTORY):
            stamp = stamp_seconds(msg.header.stamp) or receive_time
            source = 'teleop' if topic is EvalTopic.TELEOP_TRAJECTORY else 'policy'
            return self.engine.trajectory(stamp, source)
        try:
            if topic is EvalTopic.EPISODE:
                return self.mark(EpisodeMark.from_json(msg.data))
            return self.engine.truth(SimTruth.from_json(msg.data))
        except PayloadError as exc:
            self.note(f'{topic.value} at {receive_time:.3f} s: {exc}')
            return []

    def mark(self, mark: EpisodeMark) -> list[EvalEvent]:
        """Feed an episode mark; an out-of-order one is noted and ignored."""
        try:
            return self.engine.episode(mark)
        except EpisodeOrderError as exc:
            self.note(f'eval/episode {mark.event.value} mark at {mark.stamp:.3f} s '
                      f'(source {mark.source}) ignored: {exc}')
            return []


# ---------------------------------------------------------------------------------------------
# Detector configuration from parameters / YAML
# ---------------------------------------------------------------------------------------------


def detector_defaults() -> dict[str, Any]:
    """``{field: default}`` of the DetectorConfig fields settable from parameters/YAML.

    Booleans, numbers, strings and number lists (ROS parameter types); a number-tuple field
    whose default is None (``bowl_center_xy``) maps to None: unset.
    """
    defaults: dict[str, Any] = {}
    example = DetectorConfig()
    for item in dataclasses.fields(DetectorConfig):
        value = getattr(example, item.name)
        if isinstance(value, bool | int | float | str):
            defaults[item.name] = value
        elif value is None and 'tuple[float' in str(item.type):
            defaults[item.name] = None
        elif isinstance(value, list | tuple) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            defaults[item.name] = [float(v) for v in value]
    return defaults


def detector_config(values: dict[str, Any]) -> DetectorConfig:
    """DetectorConfig from ``{field: value}`` (None: default); unknown fields, wrong types and
    values DetectorConfig refuses raise ValueError naming the field."""
    defaults = detector_defaults()
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ValueError(f'unknown detector setting(s) {unknown}; known: {sorted(defaults)}')
    kwargs = {}
    for name, value in values.items():
        if value is None:
            continue
        default = defaults[name]
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError('expected true or false')
            elif isinstance(default, int | float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise TypeError('expected a number')
                value = type(default)(value)
            elif isinstance(default, str):
                value = str(value)
            else:  # number list or tuple
                value = tuple(float(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f'detector setting {name}: {exc}, got {value!r}') from exc
        kwargs[name] = value
    return DetectorConfig(**kwargs)


def detector_values_from_params_file(path: Path, node_name: str = 'eval_monitor') -> dict:
    """The ``detector`` settings of ``node_name`` in a ROS parameters YAML (``config/eval.yaml``).

    Accepts ``{node_name: {ros__parameters: {detector: {...}}}}`` (also under ``/**``).
    """
    try:
        document = yaml.safe_load(Path(path).read_text(encoding='utf-8')) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f'cannot read parameters file {path}: {exc}') from exc
    values: dict[str, Any] = {}
    for key in ('/**', node_name, f'/{node_name}'):
        section = (document.get(key) or {}).get('ros__parameters') or {}
        detector = section.get('detector') or {}
        values.update({k: v for k, v in detector.items()})
        values.update({k.split('.', 1)[1]: v for k, v in section.items()
                       if k.startswith('detector.')})
    return values


# ---------------------------------------------------------------------------------------------
# Offline evaluation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OfflineResult:
    engine: MetricEngine
    summary: Any  # metrics.Summary
    run_dir: Path | None
    received: dict[str, int]  # messages fed per topic (relative name)
    missing_topics: list[str]
    skipped: list[str]


def topic_name(namespace: str, topic: EvalTopic) -> str:
    """Absolute bag topic of a relative evaluation topic under ``namespace``."""
    namespace = '/' + namespace.strip('/')
    return f'{namespace.rstrip("/")}/{topic.value}'


def evaluate_bag(bag: str | Path, run_dir: str | Path | None = None,
                 config: DetectorConfig | None = None, namespace: str = '/',
                 title: str = '') -> OfflineResult:
    """Run the engine over a bag in log-time order; write the run directory when given.

    Raises ``FileNotFoundError`` when there is no bag at ``bag``; damaged parts are skipped
    and listed, never raised.
    """
    reader = BagReader(bag)
    engine = MetricEngine(config)
    feeder = EngineFeeder(engine)
    by_name = {topic_name(namespace, t): t for t in EvalTopic}
    last = None
    for name, _, log_time, msg in reader.messages(topics=by_name):
        last = log_time / 1e9
        feeder.feed(by_name[name], msg, last)
    if last is not None:
        engine.finish(last)
    missing = feeder.missing_topics()
    skipped = list(reader.problems) + feeder.skipped
    summary = engine.summary(missing_topics=missing, skipped=skipped)
    written = None
    if run_dir is not None:
        from eval_monitor.report import write_run_dir

        meta = {
            'source': 'bag', 'bag': str(Path(bag).resolve()), 'namespace': namespace,
            'messages': {t.value: feeder.received[t] for t in EvalTopic},
            'missing_topics': missing, 'evaluated_at': time.strftime('%Y-%m-%d %H:%M:%S'),
        }
        written = write_run_dir(Path(run_dir), engine, summary,
                                title=title or f'Offline evaluation of {Path(bag).name}',
                                meta=meta)
    return OfflineResult(engine, summary, written,
                         {t.value: feeder.received[t] for t in EvalTopic}, missing, skipped)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='so101-eval',
        description='Evaluate a recorded bag (rosbag2 MCAP directory or one .mcap file) with '
                    'the same metric engine as the live monitor and write a run directory '
                    '(events.jsonl, summary.json, report.md/.html, plots).')
    parser.add_argument('bag', type=Path, help='bag directory or .mcap file')
    parser.add_argument('-o', '--output', type=Path, required=True, help='run directory to write')
    parser.add_argument('--namespace', default='/',
                        help='namespace the evaluation topics were recorded under (default /)')
    parser.add_argument('--title', default='', help='report title')
    parser.add_argument('--params-file', type=Path,
                        help='ROS parameters YAML (e.g. config/eval.yaml): the eval_monitor '
                             'node\'s detector.* settings are used, as live')
    parser.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                        help='override one detector setting (YAML value), repeatable')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``so101-eval``: exit 0 when a report was written (skipped parts are listed in it),
    2 when the bag or the settings cannot be used."""
    args = _parse_args(argv)
    try:
        values = detector_values_from_params_file(args.params_file) if args.params_file else {}
        for item in args.set:
            name, sep, text = item.partition('=')
            if not sep:
                raise ValueError(f'--set {item!r}: expected FIELD=VALUE')
            values[name.strip()] = yaml.safe_load(text)
        config = detector_config(values)
        result = evaluate_bag(args.bag, args.output, config, args.namespace, args.title)
    except (FileNotFoundError, ValueError) as exc:
        print(f'so101-eval: {exc}', file=sys.stderr)
        return 2
    _print_result(result)
    return 0


def _print_result(result: OfflineResult) -> None:
    counts = ', '.join(f'{topic} {count}' for topic, count in result.received.items() if count)
    print(f'messages: {counts or "none"}')
    for topic in result.missing_topics:
        print(f'missing topic: {topic} (its metrics are marked unavailable)')
    for line in result.skipped:
        print(f'skipped: {line}')
    summary = result.summary
    for name in HEADLINE:
        value = getattr(summary, name)
        if value is not None:
            print(f'{name}: {value:.3f}' if isinstance(value, float) else f'{name}: {value}')
    for name, rate in summary.rates.items():
        print(f'{name}: {rate.get("text") or rate}')
    for name, reason in summary.unavailable.items():
        print(f'{name}: unavailable ({reason})')
    print(f'run directory: {result.run_dir}')


#: Summary counts printed by so101-eval (rates follow).
HEADLINE = ('episodes', 'episode_successes', 'grasp_attempts', 'grasp_successes', 'drops',
            'places', 'interventions', 'mean_intervention_s', 'mean_time_to_success_s')


if __name__ == '__main__':
    sys.exit(main())
