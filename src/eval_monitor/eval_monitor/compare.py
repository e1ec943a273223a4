"""so101-compare: two or more evaluation runs side by side.

``so101-compare RUN_DIR RUN_DIR [...] -o OUT_DIR [--names ACT Pi0.5]`` reads each run's
summary.json (written by so101-eval or the monitor's save_report) and writes
``comparison.md``, ``comparison.html``, ``comparison.json`` and ``comparison.png``.
For every metric: each run's value with its 95% CI, and for each run after the first the
absolute change, the relative change (both against the first run) and the p-value of the
difference: Fisher's exact test for proportions (with Barnard's exact test beside it while
the samples are small), the Poisson E-test for interventions per episode (see
:mod:`eval_monitor.stats`). Absolute changes of proportions are in percentage points (pp).

A summary.json may also hold published figures without counts, e.g.
``{"title": "ACT (paper)", "rates": {"grasp_success": {"rate": 0.222}}}``: values and
changes are shown, intervals and p-values are n/a.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from eval_monitor.metrics import METRIC_LABELS, Metric, Summary
from eval_monitor.report import SUMMARY_FILE, Section, Table, render_html, render_markdown
from eval_monitor.stats import (Rate, RateKind, change, compare_rates, format_p,
                                format_percent, format_signed_percent)

COMPARISON_MD = 'comparison.md'
COMPARISON_HTML = 'comparison.html'
COMPARISON_JSON = 'comparison.json'
COMPARISON_PNG = 'comparison.png'

#: Compared rates and the kind of each (decides formatting and test).
RATE_KINDS: dict[Metric, RateKind] = {
    Metric.EPISODE_SUCCESS: RateKind.PROPORTION,
    Metric.GRASP_SUCCESS: RateKind.PROPORTION,
    Metric.DROPS_PER_GRASP: RateKind.PROPORTION,
    Metric.INTERVENTIONS_PER_EPISODE: RateKind.PER_UNIT,
}
#: Compared plain values (no interval, no test): metric -> Summary attribute.
VALUE_METRICS: dict[Metric, str] = {
    Metric.MEAN_INTERVENTION_S: 'mean_intervention_s',
    Metric.MEAN_TIME_TO_SUCCESS_S: 'mean_time_to_success_s',
}


class RunDirError(ValueError):
    """A run directory that cannot be compared; the message names the path and the problem."""


def load_run(run_dir: Path) -> Summary:
    """The Summary in ``run_dir/summary.json``; RunDirError naming what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunDirError(f'{run_dir}: no such run directory')
    if not run_dir.is_dir():
        raise RunDirError(f'{run_dir}: not a directory (expected a run directory holding '
                          f'{SUMMARY_FILE})')
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        raise RunDirError(f'{run_dir}: missing {SUMMARY_FILE} (expected {path}, written by '
                          'so101-eval or the monitor\'s save_report)')
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f'{path}: not a readable JSON summary ({err})') from err
    if not isinstance(data, dict):
        raise RunDirError(f'{path}: expected a JSON object, got {type(data).__name__}')
    if not isinstance(data.get('rates', {}), dict):
        raise RunDirError(f'{path}: field "rates" must be an object')
    try:
        return Summary.from_dict(data)
    except (TypeError, ValueError) as err:
        raise RunDirError(f'{path}: {err}') from err


@dataclasses.dataclass(frozen=True)
class RunValue:
    """One run's value of one metric: a Rate when counts exist, else a bare value."""

    value: float | None
    rate: Rate | None = None
    unavailable: str | None = None  # reason when the run cannot give the metric

    def text(self, kind: RateKind | None) -> str:
        if self.unavailable is not None:
            return f'n/a ({self.unavailable})'
        if self.rate is not None:
            return self.rate.format_value()
        if self.value is None:
            return 'n/a'
        if kind is RateKind.PROPORTION:
            return format_percent(self.value)
        if kind is RateKind.PER_UNIT:
            return f'{self.value:.2f}'
        return f'{self.value:.1f} s'

    def ci_text(self) -> str:
        return self.rate.format_ci() if self.rate is not None else 'n/a'


def _figure(summary: Summary, metric: Metric) -> RunValue:
    reason = summary.unavailable.get(metric.value)
    if reason is not None:
        return RunValue(None, unavailable=reason)
    if metric in VALUE_METRICS:
        return RunValue(getattr(summary, VALUE_METRICS[metric]))
    data = summary.rates.get(metric.value)
    if not data:
        return RunValue(None, unavailable='not in the summary')
    if data.get('k') is not None and data.get('n') is not None:
        rate = Rate.from_dict({**data, 'method': RATE_KINDS[metric].value})
        return RunValue(rate.value, rate)
    value = data.get('rate')
    return RunValue(None if value is None else float(value))


def _abs_text(value: float | None, kind: RateKind | None) -> str:
    if value is None:
        return 'n/a'
    if kind is RateKind.PROPORTION:
        return f'{100.0 * value:+.1f} pp'
    if kind is RateKind.PER_UNIT:
        return f'{value:+.2f}'
    return f'{value:+.1f} s'


def compare_summaries(summaries: Sequence[Summary], names: Sequence[str]) -> dict[str, Any]:
    """The comparison as JSON-able data: per metric, each run's value and the changes."""
    if len(summaries) < 2:
        raise ValueError(f'need at least two runs to compare, got {len(summaries)}')
    if len(names) != len(summaries):
        raise ValueError(f'{len(names)} names for {len(summaries)} runs')
    metrics = []
    for metric in (*RATE_KINDS, *VALUE_METRICS):
        kind = RATE_KINDS.get(metric)
        figures = [_figure(s, metric) for s in summaries]
        base = figures[0]
        entry: dict[str, Any] = {'metric': metric.value, 'label': METRIC_LABELS[metric],
                                 'kind': kind.value if kind else 'value', 'runs': [],
                                 'changes': []}
        for name, fig in zip(names, figures, strict=True):
            entry['runs'].append({'name': name, 'value': fig.value, 'text': fig.text(kind),
                                  'ci95': list(fig.rate.ci) if fig.rate and fig.rate.ci
                                  else None,
                                  'rate': fig.rate.to_dict() if fig.rate else None,
                                  'unavailable': fig.unavailable})
        for name, fig in zip(names[1:], figures[1:], strict=True):
            absolute = relative = p = barnard = None
            test = None
            if base.value is not None and fig.value is not None:
                absolute, relative = change(base.value, fig.value)
            if base.rate is not None and fig.rate is not None:
                result = compare_rates(base.rate, fig.rate)
                p, barnard, test = result.p_value, result.barnard_p, result.test
            entry['changes'].append({
                'run': name, 'vs': names[0], 'absolute': absolute, 'relative': relative,
                'absolute_text': _abs_text(absolute, kind),
                'relative_text': format_signed_percent(relative),
                'p_value': p, 'barnard_p': barnard, 'test': test})
        metrics.append(entry)
    return {'runs': list(names), 'baseline': names[0], 'metrics': metrics}


def comparison_sections(comparison: dict, image: str | None = None) -> list[Section]:
    names = comparison['runs']
    values = Table(['Metric', *names],
                   [[m['label'], *(r['text'] for r in m['runs'])] for m in comparison['metrics']])
    cis = Table(['Metric', *(f'{n} 95% CI' for n in names)],
                [[m['label'], *('n/a' if r['ci95'] is None else
                                Rate.from_dict(r['rate']).format_ci() for r in m['runs'])]
                 for m in comparison['metrics'] if m['kind'] != 'value'])
    rows = []
    for m in comparison['metrics']:
        for c in m['changes']:
            p = format_p(c['p_value'])
            if c['p_value'] is not None:
                p += f' ({c["test"]})'
            barnard = format_p(c['barnard_p']) if c['barnard_p'] is not None else 'n/a'
            rows.append([m['label'], f'{c["run"]} vs {c["vs"]}', c['absolute_text'],
                         c['relative_text'], p, barnard])
    changes = Table(['Metric', 'Runs', 'Absolute change', 'Relative change', 'p-value',
                     'Barnard p'], rows)
    sections = [
        Section('Values', paragraphs=['95% CIs: Wilson for proportions, exact Poisson '
                                      '(Garwood) for rates per episode.'],
                tables=[values, cis]),
        Section('Changes', paragraphs=[f'Against the first run, {names[0]}; absolute changes '
                                       'of proportions in percentage points (pp).'],
                tables=[changes]),
    ]
    if image:
        sections.append(Section('Plot', images=[(image, 'Rates with 95% CIs per run')]))
    return sections


def plot_comparison(path: Path, comparison: dict) -> Path:
    """Bar chart with CI error bars: proportions (%) left, interventions per episode right."""
    names = comparison['runs']
    by_kind = {'wilson': [], 'garwood': []}
    for m in comparison['metrics']:
        if m['kind'] in by_kind:
            by_kind[m['kind']].append(m)
    fig = Figure(figsize=(11, 4), layout='constrained')
    axes = fig.subplots(1, 2, width_ratios=[3, 1])
    for ax, metrics, scale, ylabel in ((axes[0], by_kind['wilson'], 100.0, 'percent'),
                                       (axes[1], by_kind['garwood'], 1.0, 'per episode')):
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for i, m in enumerate(metrics):
                run = m['runs'][j]
                if run['value'] is None:
                    continue
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(scale * run['value'])
                ci = run['ci95']
                lo.append(0.0 if ci is None else scale * (run['value'] - ci[0]))
                hi.append(0.0 if ci is None else scale * (ci[1] - run['value']))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=name)
        ax.set_xticks(range(len(metrics)), [m['label'] for m in metrics], fontsize='small')
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize='small')
    axes[0].set_title('Rates (95% Wilson CI)')
    axes[1].set_title('Interventions (95% CI)')
    fig.savefig(path, dpi=100)
    return path


def write_comparison(out_dir: Path, summaries: Sequence[Summary], names: Sequence[str],
                     run_dirs: Sequence[Path] = ()) -> dict:
    """Write comparison.md/.html/.json/.png into out_dir; returns the comparison data."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison = compare_summaries(summaries, names)
    comparison['run_dirs'] = [str(p) for p in run_dirs]
    (out_dir / COMPARISON_JSON).write_text(json.dumps(comparison, indent=2) + '\n')
    plot_comparison(out_dir / COMPARISON_PNG, comparison)
    title = 'Comparison: ' + ' vs '.join(names)
    sections = comparison_sections(comparison, COMPARISON_PNG)
    (out_dir / COMPARISON_MD).write_text(render_markdown(title, sections))
    (out_dir / COMPARISON_HTML).write_text(render_html(title, sections, out_dir))
    return comparison


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='so101-compare',
        description='Compare evaluation runs (directories holding summary.json) side by side; '
                    'changes are against the first run.')
    parser.add_argument('runs', nargs='+', type=Path, metavar='RUN_DIR',
                        help='run directories (at least two); the first is the baseline')
    parser.add_argument('-o', '--out', required=True, type=Path, metavar='OUT_DIR',
                        help='where comparison.md/.html/.json/.png are written')
    parser.add_argument('--names', nargs='+', metavar='NAME',
                        help='display names, one per run (default: each summary\'s title, '
                             'else the directory name)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error(f'need at least two RUN_DIRs to compare, got {len(args.runs)}')
    if args.names is not None and len(args.names) != len(args.runs):
        parser.error(f'--names gives {len(args.names)} names for {len(args.runs)} runs')
    try:
        summaries = [load_run(path) for path in args.runs]
    except RunDirError as err:
        print(f'so101-compare: error: {err}', file=sys.stderr)
        return 2
    names = args.names or [s.title or p.resolve().name for s, p in zip(summaries, args.runs,
                                                                       strict=True)]
    comparison = write_comparison(args.out, summaries, names, args.runs)
    for m in comparison['metrics']:
        values = ', '.join(f'{r["name"]} {r["text"]}' for r in m['runs'])
        changes = ', '.join(f'{c["run"]}: {c["absolute_text"]} ({c["relative_text"]})'
                            for c in m['changes'])
        print(f'{m["label"]}: {values}; {changes}')
    print(f'so101-compare: wrote {args.out / COMPARISON_MD}, {COMPARISON_HTML}, '
          f'{COMPARISON_JSON}, {COMPARISON_PNG}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
