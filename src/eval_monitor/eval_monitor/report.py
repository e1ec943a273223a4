"""Run reports: events.jsonl, summary.json, report.md, report.html and PNG plots.

The sim truth agreement and failure analysis sections and the per-episode attempt timeline
(``attempts.png``) come from :mod:`eval_monitor.report_analysis`.

From a bag (``so101 eval``) the report also has a Latency section (``eval_monitor.latency``:
percentiles per stage, camera to command to servo to motion), ``latency.png``, the per-chunk
stamps in ``latency.csv`` and a ``latency`` entry in summary.json.

The Markdown tables are meant to be pasted into papers (``| Metric | Value | 95% CI |``);
the HTML page holds the same content with the plots embedded (and linked). A metric that
could not be measured shows as ``n/a (reason)``, never as 0. Plots use matplotlib's
object API on the Agg canvas (no pyplot state, safe from any thread, no display).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from eval_monitor.metrics import (METRIC_LABELS, EvalEvent, EventKind, Metric, MetricEngine,
                                  Summary)
from eval_monitor.report_analysis import (TIMELINE_CAPTION, TIMELINE_PNG, analysis_section,
                                          plot_timeline, truth_section)

if TYPE_CHECKING:
    from eval_monitor.latency import LatencyReport

EVENTS_FILE = 'events.jsonl'
SUMMARY_FILE = 'summary.json'
REPORT_MD = 'report.md'
REPORT_HTML = 'report.html'
GRIPPER_PNG = 'gripper.png'
EPISODES_PNG = 'episodes.png'
LATENCY_PNG = 'latency.png'
LATENCY_CSV = 'latency.csv'

_NONE = '—'


# ----------------------------------------------------------------------------------------
# content model shared by the Markdown and HTML renderers
@dataclasses.dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclasses.dataclass
class Section:
    title: str
    paragraphs: list[str] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    images: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (file, caption)


def _md_cell(text: str) -> str:
    return str(text).replace('|', '\\|').replace('\n', ' ')


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    """Markdown document: ``# title`` then one ``##`` per section."""
    lines = [f'# {title}', '']
    for section in sections:
        lines += [f'## {section.title}', '']
        for para in section.paragraphs:
            lines += [para, '']
        for table in section.tables:
            lines.append('| ' + ' | '.join(_md_cell(h) for h in table.header) + ' |')
            lines.append('|' + '|'.join('---' for _ in table.header) + '|')
            for row in table.rows:
                lines.append('| ' + ' | '.join(_md_cell(c) for c in row) + ' |')
            lines.append('')
        for file, caption in section.images:
            lines += [f'![{caption}]({file})', '']
    return '\n'.join(lines).rstrip() + '\n'


def render_html(title: str, sections: Sequence[Section], image_dir: Path | None = None) -> str:
    """Standalone HTML page; images embedded as data URIs (and linked to their files)."""
    esc = html.escape
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           f'<title>{esc(title)}</title>',
           '<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}'
           'table{border-collapse:collapse;margin:1em 0}'
           'th,td{border:1px solid #999;padding:.25em .6em;text-align:left}'
           'th{background:#eee}img{max-width:100%}</style>',
           '</head><body>', f'<h1>{esc(title)}</h1>']
    for section in sections:
        out.append(f'<h2>{esc(section.title)}</h2>')
        out += [f'<p>{esc(p)}</p>' for p in section.paragraphs]
        for table in section.tables:
            out.append('<table><thead><tr>' + ''.join(f'<th>{esc(h)}</th>' for h in table.header)
                       + '</tr></thead><tbody>')
            for row in table.rows:
                out.append('<tr>' + ''.join(f'<td>{esc(str(c))}</td>' for c in row) + '</tr>')
            out.append('</tbody></table>')
        for file, caption in section.images:
            src = esc(file)
            path = (image_dir / file) if image_dir is not None else None
            if path is not None and path.is_file():
                src = 'data:image/png;base64,' + base64.b64encode(path.read_bytes()).decode()
            out.append(f'<figure><a href="{esc(file)}"><img src="{src}" alt="{esc(caption)}">'
                       f'</a><figcaption>{esc(caption)}</figcaption></figure>')
    out.append('</body></html>')
    return '\n'.join(out) + '\n'


# ----------------------------------------------------------------------------------------
# formatting
def metric_label(key: str) -> str:
    """Human label of a metric name (the name itself if it is not a :class:`Metric`)."""
    try:
        return METRIC_LABELS[Metric(key)]
    except ValueError:
        return key


def _fmt_seconds(value: float | None) -> str:
    return _NONE if value is None else f'{value:.1f} s'


def _fmt_count(value: Any) -> str:
    return _NONE if value is None else str(value)


def metric_rows(summary: Summary) -> list[list[str]]:
    """Rows ``[metric, value, 95% CI]`` of the headline table; n/a (reason) when unavailable."""
    rows: list[list[str]] = []

    def unavailable(metric: Metric) -> str | None:
        reason = summary.unavailable.get(metric.value)
        return None if reason is None else f'n/a ({reason})'

    def count(metric: Metric, value: Any) -> None:
        rows.append([METRIC_LABELS[metric], unavailable(metric) or _fmt_count(value), ''])

    def rate(metric: Metric) -> None:
        text = unavailable(metric)
        if text is not None:
            rows.append([METRIC_LABELS[metric], text, ''])
            return
        data = summary.rates.get(metric.value)
        r = summary.rate(metric)
        if r is not None:
            rows.append([METRIC_LABELS[metric], r.format_value(), r.format_ci()])
        elif data and data.get('rate') is not None:  # a published figure without counts
            rows.append([METRIC_LABELS[metric], f'{data["rate"]:.3g}', 'n/a (no counts)'])
        else:
            rows.append([METRIC_LABELS[metric], 'n/a (not in the summary)', ''])

    def seconds(metric: Metric, value: float | None, why_none: str) -> None:
        text = unavailable(metric)
        rows.append([METRIC_LABELS[metric],
                     text or (_fmt_seconds(value) if value is not None else f'n/a ({why_none})'),
                     ''])

    count(Metric.EPISODES, summary.episodes)
    rate(Metric.EPISODE_SUCCESS)
    count(Metric.GRASP_ATTEMPTS, summary.grasp_attempts)
    rate(Metric.GRASP_SUCCESS)
    count(Metric.DROPS, summary.drops)
    rate(Metric.DROPS_PER_GRASP)
    count(Metric.PLACES, summary.places)
    count(Metric.INTERVENTIONS, summary.interventions)
    rate(Metric.INTERVENTIONS_PER_EPISODE)
    seconds(Metric.MEAN_INTERVENTION_S, summary.mean_intervention_s, 'no intervention')
    seconds(Metric.MEAN_TIME_TO_SUCCESS_S, summary.mean_time_to_success_s,
            'no successful episode')
    return rows


EPISODE_HEADER = ['Episode', 'Success', 'Duration (s)', 'Grasp attempts', 'Grasp successes',
                  'Drops', 'Places', 'Interventions', 'Intervention time (s)', 'Note']


def episode_rows(summary: Summary) -> list[list[str]]:
    """Per-episode rows, then an 'outside episodes' row when anything happened outside."""
    rows = []
    for row in summary.per_episode:
        if row.get('open'):
            success = 'open (no end mark)'
        else:
            success = 'yes' if row.get('success') else 'no'
        note = row.get('note') or ''
        if row.get('held_at_end'):
            note = (note + '; ' if note else '') + 'held at end'
        duration = row.get('duration_s')
        rows.append([str(row['episode']), success,
                     _NONE if duration is None else f'{duration:.1f}',
                     *(_fmt_count(row.get(k)) for k in ('grasp_attempts', 'grasp_successes',
                                                        'drops', 'places', 'interventions')),
                     _NONE if row.get('intervention_s') is None
                     else f'{row["intervention_s"]:.1f}', note])
    outside = summary.outside_episodes
    keys = ('grasp_attempts', 'grasp_successes', 'drops', 'places', 'interventions')
    if outside and any(outside.get(k) for k in keys):
        rows.append(['outside episodes', _NONE, _NONE,
                     *(_fmt_count(outside.get(k)) for k in keys),
                     _NONE if outside.get('intervention_s') is None
                     else f'{outside["intervention_s"]:.1f}', 'not in the rates'])
    return rows


def build_sections(summary: Summary, images: Sequence[tuple[str, str]] = ()) -> list[Section]:
    """The report's content, shared by report.md and report.html."""
    sections = []
    if summary.meta:
        sections.append(Section('Run', tables=[Table(
            ['Field', 'Value'], [[str(k), str(v)] for k, v in summary.meta.items()])]))
    scope = ('Counts and rates cover the completed episodes; 95% CIs are Wilson intervals for '
             'proportions and exact Poisson (Garwood) intervals for rates per episode.'
             if summary.scope == 'episodes' else
             'No episode marks: counts cover the whole stream; per-episode metrics are '
             'unavailable.')
    sections.append(Section('Metrics', paragraphs=[scope], tables=[Table(
        ['Metric', 'Value', '95% CI'], metric_rows(summary))]))
    if summary.per_episode or summary.outside_episodes:
        rows = episode_rows(summary)
        if rows:
            sections.append(Section('Per episode', tables=[Table(EPISODE_HEADER, rows)]))
    timeline = [im for im in images if im[0] == TIMELINE_PNG]
    for spec in (truth_section(summary), analysis_section(summary, timeline)):
        if spec is not None:
            title, paragraphs, tables, section_images = spec
            sections.append(Section(title, paragraphs, [Table(h, r) for h, r in tables],
                                    section_images))
    images = [im for im in images if im[0] != TIMELINE_PNG]
    issues = [[metric_label(k), f'n/a ({v})'] for k, v in summary.unavailable.items()]
    paragraphs = []
    if summary.missing_topics:
        paragraphs.append('Missing topics: ' + ', '.join(summary.missing_topics))
    if summary.skipped:
        paragraphs.append('Skipped (could not be read): ' + '; '.join(summary.skipped))
    paragraphs += list(summary.notes)
    problems = summary.input.get('problems') if summary.input else None
    if problems:
        paragraphs.append('Input problems: ' + '; '.join(f'{k} ({v}×)'
                                                         for k, v in problems.items()))
    out_of_order = summary.input.get('out_of_order') if summary.input else None
    if out_of_order:
        paragraphs.append('Ignored out-of-order messages: ' + ', '.join(
            f'{k} {v}' for k, v in out_of_order.items()))
    if issues or paragraphs:
        sections.append(Section('Data issues', paragraphs=paragraphs,
                                tables=[Table(['Metric', 'Status'], issues)] if issues else []))
    det = summary.detector
    if det:
        cfg = det.get('config', {})
        rows = [['Empty-closed angle', f'{det.get("empty_closed_rad", 0.0):.4f} rad '
                 f'({det.get("empty_closed_source", "")})'],
                ['Grasp signal', 'gripper angle + effort' if det.get('effort_used')
                 else 'gripper angle only']]
        rows += [[k, str(v)] for k, v in cfg.items()]
        sections.append(Section('Detector settings', tables=[Table(['Setting', 'Value'], rows)]))
    if images:
        sections.append(Section('Plots', images=list(images)))
    return sections


# ----------------------------------------------------------------------------------------
# plots
_MARKS = {
    EventKind.GRASP_ATTEMPT: ('o', 'tab:gray', 'attempt'),
    EventKind.GRASP_SUCCESS: ('^', 'tab:green', 'grasp success'),
    EventKind.GRASP_FAILED: ('x', 'tab:red', 'failed grasp'),
    EventKind.DROP: ('v', 'darkred', 'drop'),
    EventKind.PLACE: ('s', 'tab:blue', 'place'),
}


def intervention_spans(events: Sequence[EvalEvent]) -> list[tuple[float, float]]:
    """(start, end) of each intervention, from its end event (which carries start_stamp)."""
    return [(float(ev.data['start_stamp']), ev.stamp) for ev in events
            if ev.kind is EventKind.INTERVENTION_END and 'start_stamp' in ev.data]


def plot_gripper(path: Path, engine: MetricEngine) -> Path:
    """Gripper angle over time, grasp/drop/place marks, interventions shaded."""
    stamps, angles = engine.gripper_trace
    events = engine.events
    fig = Figure(figsize=(12, 4), layout='constrained')
    ax = fig.add_subplot()
    t0 = float(stamps[0]) if len(stamps) else min((ev.stamp for ev in events), default=0.0)
    for start, end in intervention_spans(events):
        ax.axvspan(start - t0, end - t0, color='tab:orange', alpha=0.25, lw=0)
    for ev in events:
        if ev.kind is EventKind.EPISODE_START:
            ax.axvline(ev.stamp - t0, color='k', lw=0.6, ls='--')
        elif ev.kind is EventKind.EPISODE_END:
            ax.axvline(ev.stamp - t0, color='tab:green' if ev.data.get('success') else 'tab:red',
                       lw=0.8)
    if len(stamps):
        ax.plot(stamps - t0, angles, lw=0.8, color='k', label='gripper')
        for kind, (marker, color, label) in _MARKS.items():
            pts = [(ev.stamp - t0, float(ev.data['gripper_rad'])) for ev in events
                   if ev.kind is kind and ev.data.get('gripper_rad') is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, marker=marker, color=color, label=label, zorder=3, s=30)
        cfg = engine.config
        ax.axhline(engine.empty_closed_rad, color='tab:red', lw=0.5, ls=':',
                   label='empty-closed')
        ax.axhline(cfg.open_rad, color='tab:blue', lw=0.5, ls=':', label='open threshold')
        ax.legend(loc='upper right', fontsize='small', ncols=4)
    else:
        ax.text(0.5, 0.5, 'no gripper data (joint_states)', ha='center', va='center',
                transform=ax.transAxes)
    ax.set_xlabel(f'time (s) from {t0:.3f}')
    ax.set_ylabel('gripper angle (rad)')
    ax.set_title('Gripper angle; orange: interventions; vertical lines: episode start/end')
    fig.savefig(path, dpi=100)
    return path


def plot_episodes(path: Path, summary: Summary) -> Path:
    """Per-episode outcomes: grasp attempts/successes, drops, interventions; success marks."""
    rows = summary.per_episode
    fig = Figure(figsize=(max(6.0, 0.6 * len(rows) + 3), 3.5), layout='constrained')
    ax = fig.add_subplot()
    if rows:
        keys = [('grasp_attempts', 'attempts', 'tab:gray'),
                ('grasp_successes', 'grasp successes', 'tab:green'),
                ('drops', 'drops', 'darkred'), ('interventions', 'interventions', 'tab:orange')]
        width = 0.8 / len(keys)
        xs = list(range(len(rows)))
        for j, (key, label, color) in enumerate(keys):
            values = [row.get(key) or 0 for row in rows]
            ax.bar([x + (j - 1.5) * width for x in xs], values, width, label=label, color=color)
        labels = []
        for row in rows:
            mark = 'open' if row.get('open') else ('✓' if row.get('success') else '✗')
            labels.append(f'{row["episode"]}\n{mark}')
        ax.set_xticks(xs, labels)
        ax.set_xlabel('episode (✓ success, ✗ failure)')
        ax.set_ylabel('count')
        ax.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.0, 1.0))
    else:
        ax.text(0.5, 0.5, 'no episodes', ha='center', va='center', transform=ax.transAxes)
    ax.set_title('Per-episode outcomes')
    fig.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------------------------------
# latency
def latency_section(latency: LatencyReport) -> Section:
    """Stage table of ``eval_monitor.latency``; n/a (reason) for the whole or per stage."""
    from eval_monitor.latency import HEADER, table_rows

    if latency.unavailable:
        return Section('Latency', paragraphs=[f'n/a ({latency.unavailable})'])
    paragraphs = [
        f'{len(latency.chunks)} chunks. Each stamp is on its node\'s clock (sim time in '
        'simulation): the policy\'s for image capture (the image header) up to publish and '
        'first point due, the driver\'s for received and applied (first setpoint sent to the '
        'servos; driver records from ' + (', '.join(latency.reporters) or 'nobody') + '), '
        'the joint states\' for motion (first sample after the first point is due that moved '
        'toward the chunk). Between two hosts, publish → received includes the offset of '
        f'their clocks. Per-chunk stamps: {LATENCY_CSV}.', *latency.notes]
    return Section('Latency', paragraphs=paragraphs,
                   tables=[Table(HEADER, table_rows(latency))],
                   images=[(LATENCY_PNG, 'Per chunk: stages from image capture (stacked), first '
                            'point due and motion; percentiles per stage')])


_CHAIN = (('image_to_inference_start', 'image → inference start', 'tab:gray'),
          ('inference', 'inference', 'tab:blue'),
          ('inference_end_to_publish', 'end → publish', 'tab:cyan'),
          ('publish_to_received', 'publish → received', 'tab:orange'),
          ('received_to_applied', 'received → applied', 'tab:red'))


def plot_latency(path: Path, latency: LatencyReport) -> Path:
    """Top: each chunk's chain from its image capture (stacked ms), first point due and
    motion marked. Bottom: box plot per stage (whiskers 5-95 %)."""
    from eval_monitor.latency import STAGES, TOTALS, Stage

    stages = {s.key: s for s in (*STAGES, *TOTALS)}
    chunks = latency.chunks
    fig = Figure(figsize=(12, 7), layout='constrained')
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    if not chunks:
        for ax in (top, bottom):
            ax.text(0.5, 0.5, f'no chunks ({latency.unavailable})', ha='center', va='center',
                    transform=ax.transAxes)
        fig.savefig(path, dpi=100)
        return path
    xs = list(range(len(chunks)))
    base = [0.0] * len(chunks)
    for key, label, color in _CHAIN:
        heights = [1e3 * (c.interval(stages[key]) or 0.0) for c in chunks]
        top.bar(xs, heights, bottom=base, color=color, label=label, width=0.8)
        base = [b + h for b, h in zip(base, heights, strict=True)]
    marks = ((Stage('image_to_first_point', '', 'image', 'first_point'), 'first point due',
              '_', 'k'), (stages['image_to_motion'], 'motion', 'o', 'darkred'))
    for stage, label, marker, color in marks:
        pts = [(x, 1e3 * v) for x, c in zip(xs, chunks, strict=True)
               if (v := c.interval(stage)) is not None]
        if pts:
            top.scatter(*zip(*pts, strict=True), marker=marker, color=color, s=40, zorder=3,
                        label=label)
    top.set_xlabel('chunk (publish order)')
    top.set_ylabel('ms after image capture')
    top.legend(fontsize='small', loc='upper left', bbox_to_anchor=(1.0, 1.0))
    top.set_title('Latency per chunk, from the image it was computed from')
    measured = [s for s in latency.stages if s.n]
    data = []
    for s in measured:
        stage = stages.get(s.key)
        if stage is None:  # the wall-clock wait
            data.append([1e3 * c.wall_s for c in chunks if c.wall_s is not None])
        else:
            data.append([1e3 * v for c in chunks if (v := c.interval(stage)) is not None])
    if data:
        horizontal = ({'orientation': 'horizontal'} if 'orientation' in
                      inspect.signature(bottom.boxplot).parameters else {'vert': False})
        bottom.boxplot(data, whis=(5, 95), showfliers=False, **horizontal)
        bottom.set_yticks(range(1, len(measured) + 1),
                          [f'{s.label} (p50 {s.p50_ms:.1f}, p95 {s.p95_ms:.1f})'
                           for s in measured], fontsize='small')
        bottom.invert_yaxis()
    bottom.set_xlabel('ms')
    fig.savefig(path, dpi=100)
    return path


# ----------------------------------------------------------------------------------------
def write_run_dir(run_dir: Path, engine: MetricEngine, summary: Summary, title: str = '',
                  meta: dict | None = None, latency: LatencyReport | None = None) -> Path:
    """Write events.jsonl, summary.json, report.md, report.html and PNG plots into run_dir.

    ``title`` and ``meta`` (e.g. policy, checkpoint, bag path) are stored in summary.json
    too, so so101-compare can name the run. ``latency`` (from a bag) adds the Latency section,
    its plot, latency.csv and summary.json's ``latency``. Returns ``run_dir``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = dataclasses.replace(summary, title=title or summary.title or run_dir.name,
                                  meta={**summary.meta, **(meta or {})})
    with (run_dir / EVENTS_FILE).open('w') as f:
        for event in engine.events:
            f.write(event.to_json() + '\n')
    data = summary.to_dict()
    if latency is not None:
        data['latency'] = latency.to_dict()
    (run_dir / SUMMARY_FILE).write_text(json.dumps(data, indent=2) + '\n')
    plot_gripper(run_dir / GRIPPER_PNG, engine)
    plot_episodes(run_dir / EPISODES_PNG, summary)
    images = [(GRIPPER_PNG, 'Gripper angle with grasp, drop and place marks; interventions '
               'shaded'), (EPISODES_PNG, 'Per-episode outcomes')]
    if summary.failure_analysis:
        plot_timeline(run_dir / TIMELINE_PNG, summary)
        images.append((TIMELINE_PNG, TIMELINE_CAPTION))
    sections = build_sections(summary, images)
    if latency is not None:
        from eval_monitor.latency import write_csv

        if not latency.unavailable:
            write_csv(run_dir / LATENCY_CSV, latency)
            plot_latency(run_dir / LATENCY_PNG, latency)
        at = next((i for i, s in enumerate(sections) if s.title == 'Plots'), len(sections))
        sections.insert(at, latency_section(latency))
    (run_dir / REPORT_MD).write_text(render_markdown(summary.title, sections))
    (run_dir / REPORT_HTML).write_text(render_html(summary.title, sections, run_dir))
    return run_dir
