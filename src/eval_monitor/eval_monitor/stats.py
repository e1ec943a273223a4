"""Statistics of the evaluation: intervals of rates, changes between runs, significance tests.

Conventions (documented once, used by the engine, the reports and the comparison):

* A *proportion* (episode success, grasp success, drops per held grasp) is ``k`` successes
  out of ``n`` trials with a Wilson score interval (Wilson 1927, no continuity correction;
  the same numbers as ``scipy.stats.binomtest(k, n).proportion_ci(method='wilson')``).
* A *rate per unit* (interventions per episode) is ``k`` events over an exposure of ``n``
  units with the exact Poisson (Garwood 1936) interval from the chi-square quantiles::

      lower = chi2.ppf(alpha / 2, 2k) / 2n        (0 when k == 0)
      upper = chi2.ppf(1 - alpha / 2, 2k + 2) / 2n

  It treats the events as a Poisson count, which is what "interventions per episode"
  means when an episode can hold more than one; no bootstrap (deterministic, and it works
  for the small counts an evaluation has).
* A rate without trials or exposure (``n == 0``) has no value and no interval: ``value``,
  ``ci_low`` and ``ci_high`` are ``None`` (never NaN, so summaries stay valid JSON), and it
  formats as ``0/0 (n/a)``.
* ``change(before, after)`` gives ``(after - before, (after - before) / before)``; the
  relative change is ``None`` when the baseline is zero (undefined, not infinite).
* ``compare_rates`` tests two proportions with Fisher's exact test (two-sided) and, when
  the two samples together hold at most ``barnard_max_n`` trials (Barnard's test costs
  ~0.4 s at n = 400 on one core and grows fast beyond), Barnard's exact test (two-sided,
  pooled); two rates per unit with the E-test for two Poisson means
  (``scipy.stats.poisson_means_test``, Krishnamoorthy & Thomson 2004). A test that cannot
  run (a run without trials) reports ``None``.

Serialised form of a rate (``Rate.to_dict``), as summary.json and comparison.json hold it::

    {"k": 7, "n": 9, "rate": 0.778, "ci95": [0.453, 0.937], "method": "wilson",
     "confidence": 0.95, "text": "7/9 = 77.8%"}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

from scipy import stats as sps

#: Confidence level of every interval in the reports.
DEFAULT_CONFIDENCE = 0.95
#: Largest total number of trials for which Barnard's exact test is run.
DEFAULT_BARNARD_MAX_N = 400


class RateKind(str, Enum):
    """What a rate is, which decides its interval and its test."""

    PROPORTION = 'wilson'  # k successes of n trials: Wilson interval, Fisher/Barnard tests
    PER_UNIT = 'garwood'  # k events over n units: Garwood (Poisson) interval, E-test


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f'confidence must lie in (0, 1), got {confidence}')
    return float(sps.norm.ppf(0.5 + confidence / 2.0))


def _check_proportion_counts(successes: int, n: int) -> None:
    """Raise ValueError unless ``0 <= successes <= n``."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f'need 0 <= successes <= n, got successes={successes}, n={n}')


def wilson_interval(successes: int, n: int,
                    confidence: float = DEFAULT_CONFIDENCE) -> tuple[float | None, float | None]:
    """Wilson score interval of ``successes`` out of ``n`` trials; ``(None, None)`` if n == 0.

    Closed form (Wilson 1927): with ``p = successes / n`` and ``z`` the two-sided normal
    quantile of ``confidence``::

        centre = (p + z^2 / 2n) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)

    The bounds are clipped to [0, 1] (they only leave it by rounding at p = 0 or 1).
    """
    _check_proportion_counts(successes, n)
    z = _z(confidence)
    if n == 0:
        return None, None
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def garwood_interval(count: int, exposure: float,
                     confidence: float = DEFAULT_CONFIDENCE) -> tuple[float | None, float | None]:
    """Exact Poisson interval of ``count`` events per unit over ``exposure`` units.

    ``(None, None)`` when the exposure is zero. See the module docstring for the formula.
    """
    if count < 0 or exposure < 0:
        raise ValueError(f'need count >= 0 and exposure >= 0, got count={count}, '
                         f'exposure={exposure}')
    _z(confidence)  # validates the level
    if exposure == 0:
        return None, None
    alpha = 1.0 - confidence
    low = 0.0 if count == 0 else float(sps.chi2.ppf(alpha / 2.0, 2 * count)) / 2.0
    high = float(sps.chi2.ppf(1.0 - alpha / 2.0, 2 * count + 2)) / 2.0
    return low / exposure, high / exposure


def format_percent(value: float | None, digits: int = 1) -> str:
    """``0.7777 -> '77.8%'``; ``None -> 'n/a'``."""
    return 'n/a' if value is None else f'{100.0 * value:.{digits}f}%'


def format_signed_percent(value: float | None, digits: int = 1) -> str:
    """Relative change with its sign: ``0.0856 -> '+8.6%'``; ``None -> 'n/a'``."""
    return 'n/a' if value is None else f'{100.0 * value:+.{digits}f}%'


def format_p(value: float | None) -> str:
    """p-value for tables: three significant digits, ``< 0.001`` below that; None -> 'n/a'."""
    if value is None:
        return 'n/a'
    return '< 0.001' if value < 0.001 else f'{value:.3g}'


@dataclass(frozen=True)
class Rate:
    """A proportion or a rate per unit, with its interval (see :class:`RateKind`)."""

    k: int  # successes (proportion) or events (per unit)
    n: int  # trials (proportion) or units of exposure, e.g. episodes (per unit)
    kind: RateKind  # decides interval and test
    value: float | None  # k / n; None when n == 0
    ci_low: float | None  # lower bound of the interval; None when n == 0
    ci_high: float | None  # upper bound of the interval; None when n == 0
    confidence: float = DEFAULT_CONFIDENCE  # confidence level of the interval

    @classmethod
    def proportion(cls, successes: int, n: int,
                   confidence: float = DEFAULT_CONFIDENCE) -> Rate:
        """``successes / n`` with its Wilson interval."""
        low, high = wilson_interval(successes, n, confidence)
        return cls(successes, n, RateKind.PROPORTION, successes / n if n else None,
                   low, high, confidence)

    @classmethod
    def per_unit(cls, count: int, exposure: int,
                 confidence: float = DEFAULT_CONFIDENCE) -> Rate:
        """``count / exposure`` events per unit with its Garwood interval."""
        low, high = garwood_interval(count, exposure, confidence)
        return cls(count, exposure, RateKind.PER_UNIT, count / exposure if exposure else None,
                   low, high, confidence)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rate:
        """Rebuild from ``to_dict()`` output (recomputes value and interval from the counts)."""
        try:
            kind = RateKind(data.get('method', RateKind.PROPORTION.value))
            k, n = int(data['k']), int(data['n'])
        except KeyError as err:
            raise ValueError(f'rate {data!r} lacks field {err}') from err
        confidence = float(data.get('confidence', DEFAULT_CONFIDENCE))
        if kind is RateKind.PROPORTION:
            return cls.proportion(k, n, confidence)
        return cls.per_unit(k, n, confidence)

    @property
    def ci(self) -> tuple[float, float] | None:
        """``(low, high)``, or None without trials."""
        return None if self.ci_low is None else (self.ci_low, self.ci_high)

    def format_value(self, digits: int = 1) -> str:
        """``'7/9 = 77.8%'`` (proportion), ``'2/9 = 0.22'`` (per unit), ``'0/0 (n/a)'``."""
        if self.value is None:
            return f'{self.k}/{self.n} (n/a)'
        if self.kind is RateKind.PROPORTION:
            return f'{self.k}/{self.n} = {format_percent(self.value, digits)}'
        return f'{self.k}/{self.n} = {self.value:.{digits + 1}f}'

    def format_ci(self, digits: int = 1) -> str:
        """``'45.3–93.7%'`` (proportion), ``'0.03–0.80'`` (per unit), ``'n/a'``."""
        if self.ci_low is None:
            return 'n/a'
        if self.kind is RateKind.PROPORTION:
            return f'{100.0 * self.ci_low:.{digits}f}–{100.0 * self.ci_high:.{digits}f}%'
        return f'{self.ci_low:.{digits + 1}f}–{self.ci_high:.{digits + 1}f}'

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (see the module docstring), with the formatted text for readers."""
        return {'k': self.k, 'n': self.n, 'rate': self.value,
                'ci95': None if self.ci_low is None else [self.ci_low, self.ci_high],
                'method': self.kind.value, 'confidence': self.confidence,
                'text': self.format_value()}


def change(before: float, after: float) -> tuple[float, float | None]:
    """``(absolute, relative)`` change from ``before`` to ``after``.

    ``absolute = after - before``; ``relative = absolute / before``, ``None`` when
    ``before == 0``. Example (DESIGN.md reference): interventions per episode 0.86 -> 0.22
    gives ``(-0.64, -0.744)``, i.e. -74%; grasp success 0.222 -> 0.241 gives +8.6%.
    """
    absolute = after - before
    relative = absolute / before if before != 0 else None
    return absolute, relative


@dataclass(frozen=True)
class RateComparison:
    """Two rates side by side: change from ``baseline`` to ``other`` and significance."""

    baseline: Rate  # the reference rate (first run)
    other: Rate  # the rate compared with it
    absolute: float | None  # other.value - baseline.value (fraction / per unit, not percent)
    relative: float | None  # absolute / baseline.value; None if undefined
    p_value: float | None  # main test: Fisher (proportions) or E-test (per unit)
    test: str  # name of the main test
    barnard_p: float | None = None  # Barnard's exact test for proportions; None if skipped

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {'baseline': self.baseline.to_dict(), 'other': self.other.to_dict(),
                'absolute': self.absolute, 'relative': self.relative,
                'p_value': self.p_value, 'test': self.test, 'barnard_p': self.barnard_p}


def contingency(a: Rate, b: Rate) -> list[list[int]]:
    """2x2 table with one column per sample: ``[[succ_a, succ_b], [fail_a, fail_b]]``."""
    return [[a.k, b.k], [a.n - a.k, b.n - b.k]]


FISHER = 'Fisher exact (two-sided)'
E_TEST = 'Poisson E-test (two-sided)'


def compare_rates(baseline: Rate, other: Rate,
                  barnard_max_n: int = DEFAULT_BARNARD_MAX_N) -> RateComparison:
    """Change from ``baseline`` to ``other`` and the p-value(s) of the difference.

    Proportions: Fisher's exact test, plus Barnard's when ``n_a + n_b <= barnard_max_n``.
    Rates per unit: the E-test for two Poisson means. Both rates must be of one kind.
    """
    if baseline.kind is not other.kind:
        raise ValueError(f'cannot compare a {baseline.kind.name} rate with a '
                         f'{other.kind.name} rate')
    test = FISHER if baseline.kind is RateKind.PROPORTION else E_TEST
    if baseline.value is None or other.value is None:
        return RateComparison(baseline, other, None, None, None, test)
    absolute, relative = change(baseline.value, other.value)
    if baseline.kind is RateKind.PER_UNIT:
        p = compare_event_rates(baseline.k, baseline.n, other.k, other.n)
        return RateComparison(baseline, other, absolute, relative, p, test)
    table = contingency(baseline, other)
    fisher_p = min(1.0, float(sps.fisher_exact(table).pvalue))
    barnard_p = None
    if baseline.n + other.n <= barnard_max_n:
        barnard_p = min(1.0, float(sps.barnard_exact(table).pvalue))
    return RateComparison(baseline, other, absolute, relative, fisher_p, test, barnard_p)


def compare_event_rates(count_a: int, exposure_a: int, count_b: int,
                        exposure_b: int) -> float | None:
    """p-value that two event rates per unit (e.g. interventions per episode) are equal.

    Uses the E-test for two Poisson means (``scipy.stats.poisson_means_test``); ``None``
    when either exposure is zero.
    """
    if exposure_a <= 0 or exposure_b <= 0:
        return None
    result = sps.poisson_means_test(count_a, exposure_a, count_b, exposure_b)
    return min(1.0, float(result.pvalue))
