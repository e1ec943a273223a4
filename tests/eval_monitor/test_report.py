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
                 'episodes.png', 'attempts.png'):
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
    assert page.count('data:image/png;base64,') == 3, 'all three plots must be embedded'
    assert 'href="gripper.png"' in page


@pytest.mark.parametrize('name', ['gripper.png', 'episodes.png', 'attempts.png'])
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


def test_reference_failure_analysis_is_in_the_report(reference_run):
    run, _ = reference_run
    text = (run / 'report.md').read_text()
    section = text.split('## Failure analysis', 1)[1].split('\n## ', 1)[0]
    # 54 attempts: 41 misses, 4 slips (drops right after the grasp), 9 places; the first
    # grasps of episodes 3 (placed) and 7 (slipped) were made during an intervention: by
    # operator. Episodes 3 and 7 failed with no failed attempt at their end: timed out
    assert '| missed | 41 | 41/54 = 75.9% |' in section, section
    assert '| slipped | 3 | 3/54 = 5.6% |' in section, section
    assert '| placed | 8 | 8/54 = 14.8% |' in section, section
    assert '| by operator | 2 | 2/54 = 3.7% |' in section, section
    assert '| success | 7 | 7/9 = 77.8% |' in section, section
    assert '| timed out | 2 | 2/9 = 22.2% |' in section, section
    assert '| 3 | timed out | missed | 6 |' in section, section
    assert '| 7 | timed out | slipped | 6 |' in section, section
    assert '| successful (placed) | 9 | 1.000 |' in section, section
    assert '![' in section and 'attempts.png' in section
    data = json.loads((run / 'summary.json').read_text())
    assert data['failure_analysis']['episode_classes']['timed_out'] == 2
    page = (run / 'report.html').read_text()
    assert '<h2>Failure analysis</h2>' in page and 'href="attempts.png"' in page


def test_sim_report_has_drop_rates_mismatches_and_truth_validation(tmp_path):
    from tests.eval_monitor.test_analysis import disagreeing_stream, every_class_stream

    for name, (stream, expect) in {
        'agree': (every_class_stream(), ('| Drop precision | 3/3 = 100.0% | 43.9–100.0% |',
                                         '| Drop recall | 3/3 = 100.0% |',
                                         '| Mismatches (grasp FP / FN, drop FP / FN) | 0 / 0, '
                                         '0 / 0 |', 'for 8/8 = 100.0% of the attempts')),
        'disagree': (disagreeing_stream()[0], ('| Drop precision | 0/1 = 0.0% | 0.0–79.3% |',
                                               '| Grasp success recall | 2/3 = 66.7% |',
                                               '| Mismatches (grasp FP / FN, drop FP / FN) | '
                                               '1 / 1, 1 / 1 |',
                                               'for 0/4 = 0.0% of the attempts')),
    }.items():
        run = write_run_dir(tmp_path / name, stream.engine, stream.engine.summary())
        text = (run / 'report.md').read_text()
        truth = text.split('## Detector vs simulation truth', 1)[1].split('\n## ', 1)[0]
        analysis = text.split('## Failure analysis', 1)[1].split('\n## ', 1)[0]
        for line in expect:
            assert line in truth or line in analysis, (name, line, truth, analysis)
        assert '| Detected outcome \\ truth |' in analysis, analysis
        assert (run / 'attempts.png').read_bytes().startswith(PNG_MAGIC)
        page = (run / 'report.html').read_text()
        assert '<td>Drop recall</td>' in page and 'href="attempts.png"' in page


def test_old_summary_without_the_new_keys_still_reports(tmp_path):
    from eval_monitor.metrics import Summary
    from tests.eval_monitor.test_analysis import every_class_stream

    stream = every_class_stream()
    data = stream.engine.summary().to_dict()
    data.pop('failure_analysis')
    for key in ('drop_precision', 'drop_recall', 'mismatches'):
        data['truth_agreement'].pop(key)
    run = write_run_dir(tmp_path / 'old', stream.engine, Summary.from_dict(data))
    text = (run / 'report.md').read_text()
    assert '| Drop precision | — |  |' in text and '## Failure analysis' not in text, text
    assert not (run / 'attempts.png').exists()
