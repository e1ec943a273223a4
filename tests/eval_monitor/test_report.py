"""Run reports: the reference evaluation's files, tables, n/a reasons and plots."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from eval_monitor.metrics import EvalEvent, EventKind, MetricEngine
from eval_monitor.report import write_run_dir
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
from tests.eval_monitor.test_metrics import reference_stream

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
    stream = reference_stream()
    engine = stream.engine
    run = write_run_dir(tmp_path_factory.mktemp('ref') / 'pi05_run', engine, engine.summary(),
                        title='Pi0.5 reference evaluation', meta={'policy': 'pi05'})
    return run, engine


def test_run_dir_holds_every_file(reference_run):
    run, _ = reference_run
    for name in ('events.jsonl', 'summary.json', 'report.md', 'report.html', 'gripper.png',
                 'episodes.png'):
        path = run / name
        assert path.is_file() and path.stat().st_size > 0, f'expected a non-empty {path}'


def test_events_jsonl_has_one_event_per_line(reference_run):
    run, engine = reference_run
    lines = (run / 'events.jsonl').read_text().splitlines()
    events = [EvalEvent.from_json(line) for line in lines]
    assert events == engine.events
    assert sum(e.kind is EventKind.GRASP_ATTEMPT for e in events) == 54


def test_summary_json_holds_the_reference_rates_title_and_meta(reference_run):
    run, _ = reference_run
    data = json.loads((run / 'summary.json').read_text())
    assert data['rates']['episode_success']['text'] == '7/9 = 77.8%'
    assert data['rates']['grasp_success']['text'] == '13/54 = 24.1%'
    assert data['rates']['interventions_per_episode']['text'] == '2/9 = 0.22'
    assert data['title'] == 'Pi0.5 reference evaluation' and data['meta'] == {'policy': 'pi05'}


def test_report_md_has_the_paper_tables(reference_run):
    run, _ = reference_run
    text = (run / 'report.md').read_text()
    assert '| Metric | Value | 95% CI |' in text, text[:500]
    assert '| Episode success | 7/9 = 77.8% | 45.3–93.7% |' in text, text
    assert '| Grasp success | 13/54 = 24.1% | 14.6–36.9% |' in text, text
    assert '| Interventions per episode | 2/9 = 0.22 | 0.03–0.80 |' in text, text
    assert '| Episode | Success |' in text
    episode_rows = [line for line in text.splitlines() if line.startswith('| 3 | no |')]
    assert len(episode_rows) == 1, 'episode 3 failed and must be listed once'
    assert '![' in text and 'gripper.png' in text


def test_report_html_has_the_same_tables_and_embedded_plots(reference_run):
    run, _ = reference_run
    page = (run / 'report.html').read_text()
    assert page.count('<table>') >= 2, 'expected the metrics and per-episode tables'
    assert '<td>13/54 = 24.1%</td>' in page
    assert page.count('data:image/png;base64,') == 2, 'both plots must be embedded'
    assert 'href="gripper.png"' in page


@pytest.mark.parametrize('name', ['gripper.png', 'episodes.png'])
def test_plots_are_valid_png_images(reference_run, name):
    run, _ = reference_run
    data = (run / name).read_bytes()
    assert data.startswith(PNG_MAGIC), f'{name} is not a PNG'
    image = imread(run / name)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300, image.shape
    assert np.ptp(image[..., :3]) > 0.2, f'{name} looks blank'


def test_unavailable_metrics_show_as_na_with_reason_never_zero(tmp_path):
    engine = MetricEngine()
    engine.episode(EpisodeMark(EpisodeEvent.START, 1.0))
    engine.episode(EpisodeMark(EpisodeEvent.END, 9.0, True))
    summary = engine.summary(missing_topics=['joint_states'], skipped=['bag_1.mcap: truncated'])
    run = write_run_dir(tmp_path / 'run', engine, summary)
    text = (run / 'report.md').read_text()
    assert '| Grasp success | n/a (topic joint_states missing from the recording) |  |' \
        in text, text
    assert '| Grasp attempts | 0 |' not in text
    assert 'bag_1.mcap: truncated' in text
    assert (run / 'gripper.png').read_bytes().startswith(PNG_MAGIC)
    html_page = (run / 'report.html').read_text()
    assert 'n/a (topic joint_states missing from the recording)' in html_page


def test_sim_truth_agreement_and_open_episode_are_reported(tmp_path):
    from tests.eval_monitor.test_metrics import GRIP_NM, Stream

    s = Stream().stay(0.2).truth(False).start()
    s.grasp().truth(True).stay(0.5, GRIP_NM).truth(True).open().truth(False, in_bowl=True)
    s.end(True).start().override(True).stay(1.0).finish()
    run = write_run_dir(tmp_path / 'sim', s.engine, s.engine.summary())
    text = (run / 'report.md').read_text()
    assert '## Detector vs simulation truth' in text, text
    assert '| Grasp success precision | 1/1 = 100.0% |' in text, text
    assert '| 2 | open (no end mark) |' in text, text
    assert 'episode 2 has no end mark' in text, text
