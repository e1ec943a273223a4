"""Statistics: intervals against published values and scipy, changes, tests of differences."""

import math

import pytest
from scipy import stats as sps

from eval_monitor.stats import (E_TEST, FISHER, Rate, RateKind, change, compare_rates,
                                format_p, format_percent, format_signed_percent,
                                garwood_interval, wilson_interval)


def test_wilson_matches_newcombe_1998_textbook_example():
    # Newcombe, Statistics in Medicine 17:857 (1998), example 81/263: 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662), (low, high)


@pytest.mark.parametrize('k, n', [(7, 9), (13, 54), (0, 10), (10, 10), (1, 1), (12, 54),
                                  (500, 1000)])
def test_wilson_matches_scipy_binomtest(k, n):
    expected = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method='wilson')
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected.low, abs=1e-9), (low, expected.low)
    assert high == pytest.approx(expected.high, abs=1e-9), (high, expected.high)


def test_wilson_at_other_confidence_matches_scipy():
    expected = sps.binomtest(13, 54).proportion_ci(confidence_level=0.9, method='wilson')
    assert wilson_interval(13, 54, 0.9) == pytest.approx((expected.low, expected.high))


def test_rate_without_trials_has_no_value_and_no_interval():
    rate = Rate.proportion(0, 0)
    assert (rate.value, rate.ci_low, rate.ci_high) == (None, None, None), rate
    assert rate.format_value() == '0/0 (n/a)' and rate.format_ci() == 'n/a'
    assert rate.to_dict()['ci95'] is None


@pytest.mark.parametrize('k, n', [(-1, 3), (4, 3), (1, -1)])
def test_impossible_counts_are_rejected(k, n):
    with pytest.raises(ValueError, match='successes'):
        wilson_interval(k, n)


def test_garwood_matches_exact_poisson_table_values():
    # exact 95% Poisson limits for 0 and 2 events (e.g. Ulm 1990 / Garwood 1936 tables)
    assert garwood_interval(0, 1) == pytest.approx((0.0, 3.689), abs=1e-3)
    assert garwood_interval(2, 1) == pytest.approx((0.2422, 7.2247), abs=1e-4)
    assert garwood_interval(2, 9) == pytest.approx((0.2422 / 9, 7.2247 / 9), abs=1e-4)
    assert garwood_interval(2, 0) == (None, None)


def test_reference_rates_format_as_published():
    assert Rate.proportion(7, 9).format_value() == '7/9 = 77.8%'
    assert Rate.proportion(13, 54).format_value() == '13/54 = 24.1%'
    per_episode = Rate.per_unit(2, 9)
    assert per_episode.format_value() == '2/9 = 0.22'
    assert per_episode.kind is RateKind.PER_UNIT
    assert Rate.proportion(7, 9).format_ci() == '45.3–93.7%'


def test_rate_dict_round_trip_and_shape():
    d = Rate.proportion(13, 54).to_dict()
    assert set(d) >= {'k', 'n', 'rate', 'ci95', 'method'}, d
    assert d['k'] == 13 and d['n'] == 54 and d['method'] == 'wilson'
    assert Rate.from_dict(d) == Rate.proportion(13, 54)
    assert Rate.from_dict(Rate.per_unit(2, 9).to_dict()) == Rate.per_unit(2, 9)


def test_change_of_the_published_act_vs_pi05_figures():
    absolute, relative = change(0.222, 0.241)
    assert format_signed_percent(relative) == '+8.6%', relative
    assert absolute == pytest.approx(0.019)
    absolute, relative = change(0.86, 0.22)
    assert round(100 * relative) == -74, relative
    assert absolute == pytest.approx(-0.64)
    assert change(0.0, 0.5) == (0.5, None)


def test_compare_proportions_uses_fisher_and_barnard():
    act, pi05 = Rate.proportion(12, 54), Rate.proportion(13, 54)
    result = compare_rates(act, pi05)
    assert result.test == FISHER
    expected = sps.fisher_exact([[12, 13], [42, 41]]).pvalue
    assert result.p_value == pytest.approx(expected)
    assert result.barnard_p == pytest.approx(sps.barnard_exact([[12, 13], [42, 41]]).pvalue)
    assert result.relative == pytest.approx(1 / 12)
    assert result.p_value > 0.5, 'one grasp more in 54 is no significant difference'


def test_clearly_different_proportions_are_significant():
    result = compare_rates(Rate.proportion(5, 50), Rate.proportion(40, 50))
    assert result.p_value < 1e-6, result


def test_barnard_is_skipped_for_large_samples():
    result = compare_rates(Rate.proportion(100, 300), Rate.proportion(120, 300),
                           barnard_max_n=400)
    assert result.barnard_p is None and result.p_value is not None, result


def test_compare_per_episode_rates_uses_the_poisson_e_test():
    result = compare_rates(Rate.per_unit(6, 7), Rate.per_unit(2, 9))
    assert result.test == E_TEST
    expected = sps.poisson_means_test(6, 7, 2, 9).pvalue
    assert result.p_value == pytest.approx(min(1.0, expected))
    assert result.relative == pytest.approx((2 / 9 - 6 / 7) / (6 / 7))


def test_compare_without_trials_gives_no_p_value():
    result = compare_rates(Rate.proportion(0, 0), Rate.proportion(3, 9))
    assert (result.absolute, result.relative, result.p_value) == (None, None, None)


def test_mixed_kinds_cannot_be_compared():
    with pytest.raises(ValueError, match='cannot compare'):
        compare_rates(Rate.proportion(1, 2), Rate.per_unit(1, 2))


def test_formatters():
    assert format_percent(None) == 'n/a' and format_percent(0.7777) == '77.8%'
    assert format_p(0.00001) == '< 0.001' and format_p(0.1234) == '0.123'
    assert format_p(None) == 'n/a'
    assert not math.isnan(Rate.proportion(0, 5).ci_low)
