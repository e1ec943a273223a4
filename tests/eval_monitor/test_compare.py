"""so101-compare: side-by-side tables, changes vs the first run, p-values, clear errors."""

import json

import pytest
from matplotlib.image import imread

from eval_monitor.compare import main
from eval_monitor.metrics import MetricEngine
from eval_monitor.report import write_run_dir
from tests.eval_monitor.test_metrics import reference_stream


def _published(path, title, grasp, interventions):
    """A run dir holding only published, rounded figures (no counts)."""
    path.mkdir()
    (path / 'summary.json').write_text(json.dumps({
        'title': title,
        'rates': {'grasp_success': {'rate': grasp},
                  'interventions_per_episode': {'rate': interventions}}}))
    return path


def _counted(path, title, **counts):
    """A run dir with counts: k/n per rate."""
    path.mkdir()
    rates = {name: {'k': k, 'n': n, 'method': 'garwood' if 'per_episode' in name else 'wilson'}
             for name, (k, n) in counts.items()}
    (path / 'summary.json').write_text(json.dumps({'title': title, 'rates': rates}))
    return path


def test_published_act_vs_pi05_figures_give_the_published_changes(tmp_path, capsys):
    act = _published(tmp_path / 'act', 'ACT', 0.222, 0.86)
    pi05 = _published(tmp_path / 'pi05', 'Pi0.5', 0.241, 0.22)
    out = tmp_path / 'cmp'
    assert main([str(act), str(pi05), '-o', str(out), '--names', 'ACT', 'Pi0.5']) == 0
    text = (out / 'comparison.md').read_text()
    assert '| Grasp success | ACT | Pi0.5 |' not in text  # header is per run, not per metric
    assert '| Metric | ACT | Pi0.5 |' in text, text
    assert '| Grasp success | 22.2% | 24.1% |' in text, text
    assert '| Grasp success | Pi0.5 vs ACT | +1.9 pp | +8.6% | n/a | n/a |' in text, text
    assert '| Interventions per episode | Pi0.5 vs ACT | -0.64 | -74.4% | n/a | n/a |' \
        in text, text
    data = json.loads((out / 'comparison.json').read_text())
    by_metric = {m['metric']: m for m in data['metrics']}
    assert round(100 * by_metric['interventions_per_episode']['changes'][0]['relative']) == -74
    assert '+8.6%' in capsys.readouterr().out


def test_counted_runs_get_intervals_and_p_values(tmp_path):
    act = _counted(tmp_path / 'act', 'ACT', grasp_success=(12, 54),
                   interventions_per_episode=(6, 7), episode_success=(5, 9))
    stream = reference_stream()
    pi05 = write_run_dir(tmp_path / 'pi05', stream.engine, stream.engine.summary(),
                         title='Pi0.5')
    out = tmp_path / 'cmp'
    assert main([str(act), str(pi05), '-o', str(out)]) == 0  # names from the titles
    text = (out / 'comparison.md').read_text()
    assert '| Grasp success | 12/54 = 22.2% | 13/54 = 24.1% |' in text, text
    assert '| Episode success | Pi0.5 vs ACT | +22.2 pp | +40.0% |' in text, text
    row = next(line for line in text.splitlines()
               if line.startswith('| Grasp success | Pi0.5 vs ACT'))
    assert 'Fisher' in row and '+8.3%' in row, row
    assert '| Drops per held grasp | n/a (not in the summary) |' in text, text
    data = json.loads((out / 'comparison.json').read_text())
    grasp = next(m for m in data['metrics'] if m['metric'] == 'grasp_success')
    assert 0.5 < grasp['changes'][0]['p_value'] <= 1.0, grasp['changes']
    assert grasp['runs'][1]['ci95'] == pytest.approx([0.1464, 0.3695], abs=1e-4)
    html_page = (out / 'comparison.html').read_text()
    assert '<td>13/54 = 24.1%</td>' in html_page and 'data:image/png;base64,' in html_page
    image = imread(out / 'comparison.png')
    assert image.ndim == 3 and image.shape[1] > 300, image.shape


def test_three_runs_compare_each_to_the_first(tmp_path):
    runs = [_published(tmp_path / n, n, g, i) for n, g, i in
            (('a', 0.2, 1.0), ('b', 0.3, 0.5), ('c', 0.1, 2.0))]
    out = tmp_path / 'cmp'
    assert main([*map(str, runs), '-o', str(out)]) == 0
    text = (out / 'comparison.md').read_text()
    assert '| Grasp success | b vs a | +10.0 pp | +50.0% |' in text, text
    assert '| Grasp success | c vs a | -10.0 pp | -50.0% |' in text, text


def test_missing_run_dir_is_named(tmp_path, capsys):
    good = _published(tmp_path / 'good', 'g', 0.2, 0.5)
    missing = tmp_path / 'nope'
    assert main([str(good), str(missing), '-o', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and 'no such run directory' in err, err
    assert not (tmp_path / 'out').exists(), 'nothing must be written on error'


def test_run_dir_without_summary_names_the_missing_file(tmp_path, capsys):
    good = _published(tmp_path / 'good', 'g', 0.2, 0.5)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert main([str(good), str(empty), '-o', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert str(empty / 'summary.json') in err and 'missing summary.json' in err, err


def test_invalid_summary_json_is_named(tmp_path, capsys):
    good = _published(tmp_path / 'good', 'g', 0.2, 0.5)
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'summary.json').write_text('{not json')
    assert main([str(good), str(bad), '-o', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert str(bad / 'summary.json') in err and 'JSON' in err, err


def test_names_must_match_the_runs(tmp_path, capsys):
    a = _published(tmp_path / 'a', 'a', 0.2, 0.5)
    b = _published(tmp_path / 'b', 'b', 0.3, 0.5)
    with pytest.raises(SystemExit) as exc:
        main([str(a), str(b), '-o', str(tmp_path / 'out'), '--names', 'only-one'])
    assert exc.value.code == 2
    assert '1 names for 2 runs' in capsys.readouterr().err


def test_a_single_run_is_refused(tmp_path, capsys):
    a = _published(tmp_path / 'a', 'a', 0.2, 0.5)
    with pytest.raises(SystemExit):
        main([str(a), '-o', str(tmp_path / 'out')])
    assert 'at least two' in capsys.readouterr().err


def test_engine_summary_without_episodes_compares_as_unavailable(tmp_path):
    a = write_run_dir(tmp_path / 'a', MetricEngine(), MetricEngine().summary(), title='A')
    b = _published(tmp_path / 'b', 'B', 0.3, 0.5)
    out = tmp_path / 'cmp'
    assert main([str(a), str(b), '-o', str(out)]) == 0
    text = (out / 'comparison.md').read_text()
    assert '| Grasp success | n/a (no joint_states messages) | 30.0% |' in text, text
