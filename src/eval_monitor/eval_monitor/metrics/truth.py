"""Sim ground truth: held spans, drops and bowl entries, and the detector held against them.

:class:`TruthLog` keeps what the ``sim/truth`` stream says over the whole stream: the spans
in which the cube was ``held``, the stamps of ``dropped`` reports and of the cube entering
the bowl. :meth:`TruthLog.agreement` gives the summary's ``truth_agreement`` (precision and
recall of detected grasp successes and drops) and :meth:`TruthLog.attempt_class` the truth
class of one attempt for the failure analysis. The one truth definition both use is in the
package docstring ("Sim truth agreement").
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from eval_monitor.metrics.detector import Hold
from eval_monitor.stats import Rate
from so101_driver.eval_topics import SimTruth

#: A ``dropped`` report this near (s) the end of a held span is that span's drop.
DROP_WINDOW_S = 0.2
#: A detected drop and a truth drop this near (s) each other are the same drop (in the sim
#: cell a slipping cube leaves the pads up to ~0.95 s before the jaws reach empty-closed).
MATCH_WINDOW_S = 1.5
#: At most this many stamps are listed per kind of mismatch.
MAX_MISMATCHES = 50


@dataclass(frozen=True)
class TruthSpan:
    """One truth ``held`` span and how it ended (package docstring, "Sim truth agreement")."""

    start: float  # first truth message with held (lift-off)
    end: float  # first truth message without held (or where the stream / summary ended)
    ended: str  # 'dropped', 'not_in_bowl' (both truth drops), 'placed' or 'held_at_end'
    drop: float | None  # a truth drop's stamp: the dropped report or the span end; else None
    report: float | None = None  # the dropped report this span took (also when placed anyway)

    @property
    def duration(self) -> float:
        return self.end - self.start


class TruthLog:
    """Sim truth over the whole stream: ``held`` spans, ``dropped`` and bowl-entry stamps."""

    def __init__(self) -> None:
        self.seen = False
        self.held_start: float | None = None
        self.held: list[tuple[float, float]] = []  # closed spans (start, end)
        self.drops: list[float] = []  # stamps of dropped reports
        self.bowl_entries: list[float] = []  # stamps where in_bowl became true
        self._in_bowl = False
        self._finished_open: tuple[float, float] | None = None  # span closed by finish()

    def observe(self, t: float, truth: SimTruth) -> None:
        self.seen = True
        grasped = bool(truth.held)
        if grasped and self.held_start is None:
            self.held_start = t
        elif not grasped and self.held_start is not None:
            self.held.append((self.held_start, t))
            self.held_start = None
        if truth.dropped:
            self.drops.append(t)
        if truth.in_bowl and not self._in_bowl:
            self.bowl_entries.append(t)
        self._in_bowl = bool(truth.in_bowl)

    def finish(self, t: float) -> None:
        """End of stream: a span still held ends here."""
        if self.held_start is not None:
            span = (self.held_start, max(t, self.held_start))
            self.held.append(span)
            self._finished_open = span
            self.held_start = None

    # ------------------------------------------------------------------------------------
    def spans(self, end_default: float, episode_ends: Sequence[float] = (),
              place_window_s: float = 1.5,
              drop_window_s: float = DROP_WINDOW_S) -> list[TruthSpan]:
        """Every held span (one still open ends at ``end_default``) and how it ended.

        A span followed by the cube entering the bowl within ``place_window_s`` is
        ``placed`` (also when a ``dropped`` report came with it: let go just outside the
        bowl's radius, it rolled in). Else a ``dropped`` report belongs to the span whose
        end is nearest, within ``drop_window_s`` (one report per span): ``dropped``. Else a
        span still held at the
        stream end is ``held_at_end``; one with an episode end inside it or up to
        ``drop_window_s`` after it (the sim's reset lets go of the cube) is ``held_at_end``;
        any other is ``not_in_bowl``, a drop too.
        """
        raw = [(s, e, (s, e) == self._finished_open) for s, e in self.held]
        if self.held_start is not None:
            raw.append((self.held_start, max(end_default, self.held_start), True))
        ends = sorted(episode_ends)
        out = []
        used: set[int] = set()
        for start, end, is_open in raw:
            report = None
            lo = bisect.bisect_left(self.drops, end - drop_window_s)
            hi = bisect.bisect_right(self.drops, end + drop_window_s)
            near = [j for j in range(lo, hi) if j not in used]
            i = bisect.bisect_left(self.bowl_entries, end)
            # the cube in the bowl soon after: placed, even when it was let go just outside
            # the bowl's radius (a dropped report) and rolled in, as the detector decides
            placed = (not is_open and i < len(self.bowl_entries)
                      and self.bowl_entries[i] - end <= place_window_s)
            if near:
                best = min(near, key=lambda j: abs(self.drops[j] - end))
                used.add(best)
                report = self.drops[best]
                if not placed:
                    out.append(TruthSpan(start, end, 'dropped', report, report))
                    continue
            k = bisect.bisect_left(ends, start)  # an episode ended while held, or just after
            at_boundary = k < len(ends) and ends[k] <= end + drop_window_s
            if is_open:
                out.append(TruthSpan(start, end, 'held_at_end', None))
            elif placed:
                out.append(TruthSpan(start, end, 'placed', None, report))
            elif at_boundary:
                out.append(TruthSpan(start, end, 'held_at_end', None))
            else:
                out.append(TruthSpan(start, end, 'not_in_bowl', end))
        return out

    def agreement(self, holds: Sequence[Hold], detected_drops: Sequence[float],
                  end_default: float, truth_hold_s: float, episode_ends: Sequence[float] = (),
                  place_window_s: float = 1.5, match_window_s: float = MATCH_WINDOW_S,
                  drop_window_s: float = DROP_WINDOW_S) -> dict:
        """Detected grasp successes and drops vs truth (package docstring, "Sim truth
        agreement"); holds and spans still open end at ``end_default``."""
        spans = self.spans(end_default, episode_ends, place_window_s, drop_window_s)
        detected = [(h.start, h.end if h.end is not None else max(end_default, h.success),
                     h.success) for h in holds]

        def overlaps(a0: float, a1: float, span: TruthSpan) -> bool:
            return a0 <= span.end and span.start <= a1

        real = [span for span in spans if span.duration >= truth_hold_s]
        grasp_fp = [success for start, end, success in detected
                    if not any(overlaps(start, end, span) for span in spans)]
        grasp_fn = [span.start for span in real
                    if not any(overlaps(start, end, span) for start, end, _ in detected)]
        counted = sorted(span.drop for span in real if span.drop is not None)
        short = sum(1 for span in spans
                    if span.drop is not None and span.duration < truth_hold_s)
        attached = {span.report for span in spans if span.report is not None}
        unattached = [d for d in self.drops if d not in attached]
        truth_drops = sorted([span.drop for span in spans if span.drop is not None]
                             + unattached)
        found = sorted(detected_drops)
        pairs = match_stamps(found, truth_drops, match_window_s)
        matched_found = {i for i, _ in pairs}
        matched_truth = {truth_drops[j] for _, j in pairs}
        drop_fp = [d for i, d in enumerate(found) if i not in matched_found]
        drop_fn = [t for t in counted if t not in matched_truth]
        return {
            'scope': 'whole stream',
            'truth_hold_s': truth_hold_s,
            'match_window_s': match_window_s,
            'drop_window_s': drop_window_s,
            'detected_grasp_successes': len(detected),
            'truth_held_spans': len(real),
            'precision': Rate.proportion(len(detected) - len(grasp_fp), len(detected)).to_dict(),
            'recall': Rate.proportion(len(real) - len(grasp_fn), len(real)).to_dict(),
            'detected_drops': len(found),
            'truth_drops': len(truth_drops),
            'truth_drops_counted': len(counted),
            'truth_drops_excluded': {'short_hold': short, 'no_held_span': len(unattached)},
            'drop_precision': Rate.proportion(len(found) - len(drop_fp), len(found)).to_dict(),
            'drop_recall': Rate.proportion(len(counted) - len(drop_fn), len(counted)).to_dict(),
            'mismatches': {
                'grasp_false_positives': grasp_fp[:MAX_MISMATCHES],
                'grasp_false_negatives': grasp_fn[:MAX_MISMATCHES],
                'drop_false_positives': drop_fp[:MAX_MISMATCHES],
                'drop_false_negatives': drop_fn[:MAX_MISMATCHES],
            },
            'note': (
                'truth held grasp: a sim truth held span lasting at least settle_s + hold_s '
                f'({truth_hold_s:g} s, the detector\'s time from the jaws at rest to a '
                'success); truth drop: the end of a held span with a dropped report within '
                f'{drop_window_s} s, or without the cube in the bowl within place_window_s '
                '(not at an episode end). A detected grasp success is a true positive when '
                'its hold (attempt to hold end) overlaps a truth held span of any length (the '
                'cube was in both jaws off the table); recall counts the truth held grasps '
                'overlapped by a detected hold. A detected drop is a true positive when it is '
                f'paired with a truth drop within {match_window_s} s (one to one, most '
                'pairs); drop recall counts the truth drops of truth held grasps that are '
                f'paired. Truth drops of shorter spans ({short}) are left out of drop recall: '
                'the detector calls a grasp lost that soon a failed grasp, not a drop. '
                'Mismatch stamps: grasp false positives at their grasp_success event, false '
                'negatives at the truth span start, drops at the drop event / truth drop.'),
        }

    @staticmethod
    def attempt_class(spans: Sequence[TruthSpan], window: tuple[float, float],
                      lifted_s: float, truth_hold_s: float, slip_window_s: float) -> str:
        """The truth class of the attempt owning ``window`` (package docstring, "Failure
        analysis"): the first held span of at least ``lifted_s`` starting in the window, and
        how it ended. ``spans`` are :meth:`spans`' output (sorted by start)."""
        span = None
        for k in range(bisect.bisect_left(spans, window[0], key=lambda s: s.start), len(spans)):
            if spans[k].start >= window[1]:
                break
            if spans[k].duration >= lifted_s:
                span = spans[k]
                break
        if span is None:
            return 'missed'
        if span.drop is not None:
            # the detector decides a success at most truth_hold_s after lift-off; a slip is
            # lost within slip_window_s of that
            slipped = span.duration <= truth_hold_s + slip_window_s
            return 'slipped' if slipped else 'lost_outside_bowl'
        return span.ended  # placed or held_at_end


def match_stamps(a: Sequence[float], b: Sequence[float], window: float) -> list[tuple[int, int]]:
    """One-to-one index pairs (i, j) of two sorted stamp lists with ``|a[i] - b[j]| <=
    window``: in time order, each ``a[i]`` takes the earliest unpaired ``b[j]`` in reach
    (for one window width this gives the most pairs)."""
    pairs = []
    j = 0
    for i, x in enumerate(a):
        while j < len(b) and b[j] < x - window:
            j += 1  # too early for this stamp, and so for every later one
        if j < len(b) and b[j] <= x + window:
            pairs.append((i, j))
            j += 1
    return pairs
