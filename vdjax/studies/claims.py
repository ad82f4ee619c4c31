"""Verdict tables: each claim tested by the one rule of `vdjax.studies.stats`, Holm-corrected
within its table, and rendered the same way on every results page (spirals, images, UCI, NAS).

The margins of the no-change claims are fixed here, in each claim's units, from what the claim
says; `RULE` and `margins_markdown` state them once for every table to refer to.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from vdjax.studies import stats
from vdjax.studies.stats import GREATER, NO_CHANGE, Claim, Equivalence, TTest, Verdict

# ---------------------------------------------------------------------------- margins
# Chosen from the words of each claim and the paper's presentation, not adjusted to make a verdict
# come out; MARGINS gives each one's reason, and README renders them (`margins_markdown`).

PRUNING_MARGIN = 0.01  # nats per test point: "pruning costs nothing"
STABLE_LL_MARGIN = 0.05  # nats per test point: "test performance stays stable", "matches"
DEPTH_MARGIN = 1.0  # blocks: "d_opt stays stable", "oscillates around 11"
COMPETITIVE_MARGIN = 0.1  # nats per test point: "competitive with a deep ensemble"

MARGINS: tuple[tuple[float, str, str, str], ...] = (  # (value, unit, claims, why this size)
    (PRUNING_MARGIN, "nats", "pruning costs nothing (spirals, images)",
     "a likelihood ratio within 1% per test point: far below any difference the paper's figures resolve, "
     "above float noise"),
    (STABLE_LL_MARGIN, "nats", "test LL stable as D grows (spirals); the LDN matches grid search (NAS)",
     "between networks trained separately, the size of the paper's error bars (one std over 6 repeats; the "
     "spirals test LL varies by about 0.05 nats from seed to seed at the main setting): a change inside it "
     "cannot be seen in its figures"),
    (DEPTH_MARGIN, "blocks", "d stable as D grows; d oscillates around 11 (spirals)",
     "depth is an integer: a change of less than one block leaves the pruned network the same size"),
    (COMPETITIVE_MARGIN, "nats", "competitive with a deep ensemble (DUN, UCI)",
     "no worse by more than the largest standard errors of published UCI regression tables (Boston, yacht), "
     "the resolution at which they rank methods"),
)

RULE = (
    "One rule (`vdjax.studies.stats`) for the spirals, the images, the UCI "
    "suite and the NAS comparison. A difference between two methods on the same seeds or splits: a paired "
    "t-test. A change between grid points (different networks): Welch's t-test. A per-seed statistic against "
    "0 (a rank correlation, a speed-up): the one-sample t-test. A drift across a grid: the "
    "least-squares slope of every seed's value on the grid variable, times the grid's span, with its t-test. "
    "A claim that something does *not* change: an equivalence test (TOST) against a margin fixed in the "
    "claim's units (below); a claim that A is *no worse* than B (\"competitive\"): the t-test that A − B "
    "exceeds −margin. A claim about every point of a grid (\"at all depths\") is judged at its least "
    "favourable point (an intersection–union test); a contradiction, which any one point can give, is "
    "Bonferroni-corrected over the points. Every table shows the effect, its 95% confidence interval, n and "
    "the t-test's p, and for a no-change claim the TOST p and the p that the difference lies outside the "
    "margin. **reproduced**: significant at 5% in the paper's direction, or equivalent within the margin; "
    "**contradicted**: significant the other way, or outside the margin; **not resolved**: neither. The "
    "p-values are Holm-corrected within each table. A claim that needs grid points not run yet is **not "
    "resolved: grid incomplete**, one resting on a d_opt that q does not identify **not resolved: d_opt not "
    "identified**, each shown outside the correction; a study whose networks did not learn gets **no verdict "
    "(not learnt)**, never a finding."
)
RULE_REFERENCE = "the rule: README, \"How a verdict is reached\""


def margins_markdown() -> str:
    """The margins of the no-change claims, each with the claims it serves and its reason."""
    lines = ["| margin | claims | why this size |", "|---|---|---|"]
    lines += [f"| ±{value:g} {unit} | {used} | {why} |" for value, unit, used, why in MARGINS]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- tests built from the rule


def one_sample(values: ArrayLike) -> TTest:
    """The t-test of a mean against 0 (per-seed statistics such as a rank correlation or a
    speed-up): the paired test of the values against zeros, labelled as what it is."""
    v = np.asarray(values, np.float64)
    return dataclasses.replace(stats.paired_t(v, np.zeros_like(v)), test="one-sample t")


def not_worse(result: TTest, margin: float) -> TTest:
    """The directional test of "A is no worse than B by more than `margin`": `result`'s effect
    (a - b) shifted by +margin, tested against 0 with the same se, df, n and label."""
    shifted = stats.estimate_t(result.effect + margin, result.se, result.df)
    return dataclasses.replace(shifted, test=result.test, n=result.n)


def _one_sided(r: TTest, expect: str) -> float:
    """P(T >= t) in the claim's direction: large where the point is unfavourable to the claim."""
    return float(sps.t.sf((1 if expect == GREATER else -1) * r.t, r.df))


def least_favourable(results: Sequence[TTest | Equivalence], expect: str) -> tuple[int, TTest | Equivalence]:
    """A claim about every point of a grid, judged at the point least favourable to it: it holds
    everywhere only if it holds there (intersection-union, no correction needed), while a
    contradiction, which any one of the k points can give, has its p multiplied by k."""
    k = len(results)
    if expect == NO_CHANGE:
        i = max(range(k), key=lambda j: results[j].p)
        return i, dataclasses.replace(results[i], p_outside=min(1.0, k * min(r.p_outside for r in results)))
    i = max(range(k), key=lambda j: _one_sided(results[j], expect))
    r = results[i]
    against = r.effect < 0 if expect == GREATER else r.effect > 0
    return i, dataclasses.replace(r, p=min(1.0, k * r.p)) if against else r


# ---------------------------------------------------------------------------- tables


@dataclasses.dataclass(frozen=True)
class Row:
    """One claim of a verdict table: where it is, what the paper says, our numbers in words, and
    its test. `blocked` (e.g. "not resolved: grid incomplete") is the verdict where the test may
    not be judged: its numbers are still shown, outside the Holm correction. `shown` is what the
    table shows when it differs from the tested result (a no-worse claim shows a - b, not the
    shifted effect), `margin` the margin of such a claim."""

    figure: str
    paper: str
    ours: str
    claim: Claim | None = None
    blocked: str = ""
    shown: TTest | Equivalence | None = None
    margin: str = ""


HEADER = ["figure", "the paper", "ours", "test", "n", "effect", "95% CI", "margin (90% CI)", "p", "TOST p / outside p",
          "Holm p", "verdict"]
ALIGN = ["---", "---", "---", "---", "---:", "---:", "---", "---", "---:", "---", "---:", "---"]


def judge(rows: Sequence[Row]) -> list[Verdict | None]:
    """Each row's verdict, Holm within the table over the rows that are tested (None: blocked or
    untested)."""
    tested = [i for i, r in enumerate(rows) if r.claim is not None and not r.blocked]
    found = stats.verdicts([rows[i].claim for i in tested])
    out: list[Verdict | None] = [None] * len(rows)
    for i, v in zip(tested, found):
        out[i] = v
    return out


def _cells(row: Row, verdict: Verdict | None) -> list[str]:
    result = row.shown or (row.claim.result if row.claim else None)
    if result is None:
        return ["–"] * (len(HEADER) - 4) + [f"**{row.blocked}**"]
    c = stats.cells(result)
    if isinstance(result, Equivalence):
        test = f"TOST on {result.difference.test}"
        margin = f"{c['margin']} ({c['90% CI']})"
        p = stats.cells(result.difference)["p"]
        tost = f"{stats.cells(result)['p']} / {format(result.p_outside, '.2g')}"
    else:
        test, margin, p, tost = result.test, row.margin or "–", c["p"], "–"
        if row.claim is not None and row.claim.result is not result:  # a no-worse claim: the shifted test's p
            p = stats.cells(row.claim.result)["p"]
    holm = stats.cells(verdict)["Holm p"] if verdict else "–"
    word = verdict.verdict if verdict else row.blocked
    return [test, c["n"], c["effect"], c["95% CI"], margin, p, tost, holm, f"**{word}**"]


def table(rows: Sequence[Row], first: str = "figure", said: str = "the paper") -> str:
    """The verdict table of `rows`, with the Holm correction stated under it. `first` and `said`
    name the first two columns; a text column empty in every row (the paper, ours) is left out."""
    verdicts = judge(rows)
    cells = [[row.figure, row.paper, row.ours, *_cells(row, v)] for row, v in zip(rows, verdicts)]
    keep = [j for j in range(len(HEADER)) if j not in (1, 2) or any(c[j] for c in cells)]
    header = [first, said, *HEADER[2:]]
    lines = ["| " + " | ".join(header[j] for j in keep) + " |", "|" + "|".join(ALIGN[j] for j in keep) + "|"]
    lines += ["| " + " | ".join(c[j] for j in keep) + " |" for c in cells]
    tested = sum(v is not None for v in verdicts)
    untested = len(rows) - tested
    note = (f"Holm-corrected over the {tested} judged claim{'s' if tested != 1 else ''} of this table" if tested
            else "No claim of this table is judged")
    note += f"; {untested} shown without a verdict from its test" if tested and untested else ""
    return "\n".join(lines) + f"\n\n{note} ({RULE_REFERENCE}).\n"


def tally(rows: Sequence[Row]) -> dict[str, int]:
    """How many rows of a table got each verdict word (after Holm within the table)."""
    words = [v.verdict if v else r.blocked for r, v in zip(rows, judge(rows))]
    order = [stats.REPRODUCED, stats.CONTRADICTED, stats.NOT_RESOLVED, *dict.fromkeys(words)]
    return {w: words.count(w) for w in dict.fromkeys(order) if w in words}
