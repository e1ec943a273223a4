"""Offline evaluation: ``so101-eval BAG -o RUN_DIR`` reads a recorded bag and feeds it, in
log-time order, through the same :class:`~eval_monitor.feeder.EngineFeeder` as the live
monitor node, so the same messages give the same numbers. No rclpy here: offline evaluation
runs on any machine with the bag. The same pass collects the latency topics
(``policy/status``, ``diagnostics``, ``joint_trajectory``, ``joint_states``) for
:mod:`eval_monitor.latency`: the report's Latency section and summary.json's ``latency``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from eval_monitor.bag import BagReader
from eval_monitor.feeder import EngineFeeder, EvalTopic, detector_config
from eval_monitor.latency import LatencyCollector, LatencyReport
from eval_monitor.metrics import DetectorConfig, MetricEngine


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
    latency: LatencyReport | None = None


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
    latency = LatencyCollector(namespace)
    last = None
    for name, _, log_time, msg in reader.messages(topics={*by_name, *latency.topics}):
        latency.feed(name, log_time, msg)
        topic = by_name.get(name)
        if topic is not None:
            last = log_time / 1e9
            feeder.feed(topic, msg, last)
    if last is not None:
        engine.finish(last)
    missing = feeder.missing_topics()
    skipped = list(reader.problems) + feeder.skipped
    summary = engine.summary(missing_topics=missing, skipped=skipped)
    latency_report = latency.report()
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
                                meta=meta, latency=latency_report)
    return OfflineResult(engine, summary, written,
                         {t.value: feeder.received[t] for t in EvalTopic}, missing, skipped,
                         latency_report)


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
    latency = result.latency
    if latency is not None and latency.unavailable:
        print(f'latency: unavailable ({latency.unavailable})')
    elif latency is not None:
        for key in LATENCY_HEADLINE:
            stage = latency.stage(key)
            if stage is not None and stage.n:
                print(f'latency {stage.label}: p50 {stage.p50_ms:.1f} ms, p95 '
                      f'{stage.p95_ms:.1f} ms ({stage.n} chunks)')
    print(f'run directory: {result.run_dir}')


#: Summary counts printed by so101-eval (rates follow).
HEADLINE = ('episodes', 'episode_successes', 'grasp_attempts', 'grasp_successes', 'drops',
            'places', 'interventions', 'mean_intervention_s', 'mean_time_to_success_s')
#: Latency stages printed by so101-eval (the report has them all).
LATENCY_HEADLINE = ('image_to_publish', 'publish_to_applied', 'first_point_to_motion')


if __name__ == '__main__':
    sys.exit(main())
