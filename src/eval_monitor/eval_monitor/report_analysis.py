"""Report sections for the sim truth agreement and the failure analysis, and the per-episode
attempt timeline plot (``attempts.png``).

Read from a :class:`~eval_monitor.metrics.Summary` alone (``truth_agreement``,
``failure_analysis``), so an old summary.json without them gives no section. Sections are
returned as plain ``(title, paragraphs, tables, images)`` tuples, tables as ``(header,
rows)``; :mod:`eval_monitor.report` turns them into its own sections (this module does not
import it). The plot uses matplotlib's object API on the Agg canvas, like report.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from eval_monitor.metrics import Summary
from eval_monitor.metrics.analysis import (ATTEMPT_CLASSES, EPISODE_CLASSES, FAILED, OUTCOMES,
                                           TRUTH_CLASSES)
from eval_monitor.stats import Rate

TIMELINE_PNG = 'attempts.png'
TIMELINE_CAPTION = ('Attempts per episode, coloured by class; interventions shaded; the '
                    'episode end marked success / failure')

#: (title, paragraphs, [(header, rows)], [(file, caption)])
SectionSpec = tuple[str, list[str], list[tuple[list[str], list[list[str]]]],
                    list[tuple[str, str]]]

_NONE = '—'

#: Marker and colour of each attempt class on the timeline.
CLASS_STYLE = {
    'placed': ('o', 'tab:green'),
    'missed': ('x', 'tab:red'),
    'slipped': ('v', 'tab:pink'),
    'dropped_in_transport': ('v', 'darkred'),
    'released_outside_bowl': ('s', 'tab:purple'),
    'held_at_end': ('D', 'tab:gray'),
    'by_operator': ('*', 'tab:blue'),
}


def _label(name: str) -> str:
    return name.replace('_', ' ')


def _rate_cells(data: dict | None) -> list[str]:
    if not data or data.get('k') is None or data.get('n') is None:
        return [_NONE, '']
    r = Rate.from_dict(data)
    return [r.format_value(), r.format_ci()]


def _share_rows(counts: dict, names: Sequence[str]) -> list[list[str]]:
    total = sum(int(counts.get(c, 0)) for c in names)
    rows = []
    for name in names:
        k = int(counts.get(name, 0))
        rows.append([_label(name), str(k), *_rate_cells(Rate.proportion(k, total).to_dict())])
    return rows


def truth_section(summary: Summary) -> SectionSpec | None:
    """Detector vs simulation truth: grasp and drop precision / recall with Wilson CIs."""
    ta = summary.truth_agreement
    if not ta:
        return None
    rows = []
    for key, label in (('precision', 'Grasp success precision'),
                       ('recall', 'Grasp success recall'),
                       ('drop_precision', 'Drop precision'), ('drop_recall', 'Drop recall')):
        rows.append([label, *_rate_cells(ta.get(key))])
    rows.append(['Drops (detected / truth)',
                 f'{ta.get("detected_drops")} / {ta.get("truth_drops")}', ''])
    mism = ta.get('mismatches')
    if mism is not None:

        def missed(key: str) -> int:
            data = ta.get(key) or {}
            return int(data.get('n', 0)) - int(data.get('k', 0))

        rows.append(['Mismatches (grasp FP / FN, drop FP / FN)',
                     f'{missed("precision")} / {missed("recall")}, {missed("drop_precision")} '
                     f'/ {missed("drop_recall")}', 'stamps: summary.json '
                     'truth_agreement.mismatches'])
    return ('Detector vs simulation truth', [str(ta.get('note', ''))],
            [(['Measure', 'Value', '95% CI'], rows)], [])


def analysis_section(summary: Summary,
                     images: Sequence[tuple[str, str]] = ()) -> SectionSpec | None:
    """Failure analysis: attempt and episode classes, failed episodes, openings, truth."""
    fa = summary.failure_analysis
    if not fa:
        return None
    paragraphs = [
        f'{fa.get("attempts_counted", 0)} counted attempts, classified from the monitor\'s own '
        'events (gripper, episodes, override): placed; missed (failed grasp); slipped (drop '
        f'within {fa.get("slip_window_s")} s of the success decision); dropped in transport '
        '(later; the jaws closed to empty-closed, at once or after the grip relaxed); '
        'released outside the bowl (later; the jaws opened to the open threshold and the cube '
        'did not land in the bowl); held at end (the episode ended with the cube held); by '
        'operator (made during an intervention). A failed episode\'s cause is its last '
        'attempt\'s outcome when that failed, else timed out; rescued by operator: a success '
        'with an intervention before its place.']
    tables = [(['Attempt class', 'Count', 'Share', '95% CI'],
               _share_rows(fa.get('attempt_classes', {}), ATTEMPT_CLASSES)),
              (['Episode class', 'Count', 'Share', '95% CI'],
               _share_rows(fa.get('episode_classes', {}), EPISODE_CLASSES))]
    failed = [r for r in fa.get('episodes', []) if not r.get('success')]
    if failed:
        tables.append((['Failed episode', 'Cause', 'Last failed attempt', 'Attempts',
                        'Duration (s)', 'Interventions'],
                       [[str(r['episode']), _label(str(r['cause'])),
                         _label(r['last_failed_attempt']) if r.get('last_failed_attempt')
                         else _NONE, str(r.get('attempts')), f'{r.get("duration_s", 0.0):.1f}',
                         str(len(r.get('interventions', [])))] for r in failed]))
    opening = fa.get('opening', {})

    def open_row(label: str, data: dict | None) -> list[str]:
        data = data or {}
        median = data.get('median_rad')
        return [label, str(data.get('n', 0)), _NONE if median is None else f'{median:.3f}']

    rows = [open_row('successful (placed)', opening.get('successful')),
            open_row('failed (' + ', '.join(_label(c) for c in FAILED) + ')',
                     opening.get('failed'))]
    rows += [open_row(_label(c), opening.get('by_outcome', {}).get(c)) for c in OUTCOMES]
    tables.append((['Gripper opening before the attempt', 'Attempts', 'Median (rad)'], rows))
    truth = fa.get('truth')
    if truth:
        value, ci = _rate_cells(truth.get('agreement'))
        paragraphs.append(f'Sim truth validation: outcome agrees with truth for {value} of the '
                          f'attempts (95% CI {ci}). {truth.get("note", "")}')
        classes = truth.get('classes', list(TRUTH_CLASSES))
        confusion = truth.get('confusion', {})
        tables.append((['Detected outcome \\ truth', *(_label(c) for c in classes)],
                       [[_label(o), *(str(confusion.get(o, {}).get(c, 0)) for c in classes)]
                        for o in OUTCOMES]))
    return 'Failure analysis', paragraphs, tables, list(images)


def plot_timeline(path: Path, summary: Summary) -> Path:
    """One row per episode: attempts (x = s since episode start) by class, interventions
    shaded, the episode's end marked success (green) or failure (red)."""
    fa = summary.failure_analysis or {}
    episodes = fa.get('episodes', [])
    attempts = fa.get('attempts', [])
    rows = [(str(r['episode']), r) for r in episodes]
    if not rows and attempts:
        rows = [('stream', None)]
    height = min(30.0, 1.8 + 0.3 * len(rows))
    fig = Figure(figsize=(12, max(3.0, height)), layout='constrained')
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, 'no attempts' if fa else 'no failure analysis (no gripper data)',
                ha='center', va='center', transform=ax.transAxes)
        fig.savefig(path, dpi=100)
        return path
    index = {label: y for y, (label, _) in enumerate(rows)}
    for y, (_, row) in enumerate(rows):
        if row is None:
            continue
        spans = [(s, e - s) for s, e in row.get('interventions', [])]
        if spans:
            ax.broken_barh(spans, (y - 0.4, 0.8), color='tab:orange', alpha=0.3, lw=0)
        ax.plot([0.0, row['duration_s']], [y, y], color='0.8', lw=1, zorder=1)
        ok = row.get('success')
        ax.scatter([row['duration_s']], [y], marker='|', s=300, lw=3, zorder=2,
                   color='tab:green' if ok else 'tab:red')
    for cls in ATTEMPT_CLASSES:
        marker, color = CLASS_STYLE[cls]
        pts = [(a['seconds'], index.get(str(a['episode']) if episodes else 'stream'))
               for a in attempts if a['class'] == cls]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, marker=marker, color=color, s=45, zorder=3,
                       label=f'{_label(cls)} ({len(pts)})')
    ax.scatter([], [], marker='|', color='tab:green', s=200, lw=3, label='episode end: success')
    ax.scatter([], [], marker='|', color='tab:red', s=200, lw=3, label='episode end: failure')
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel('seconds since episode start' if episodes else 'seconds since stream start')
    ax.set_ylabel('episode')
    ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.0, 1.0))
    ax.set_title('Grasp attempts per episode; orange: interventions')
    fig.savefig(path, dpi=100)
    return path
