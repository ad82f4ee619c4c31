"""The one statistical rule behind every study's verdicts (spirals, images, UCI, NAS).

Per-seed (or per-split) numbers become a verdict on one of the paper's claims as follows.

* A difference between two methods on the same seeds or splits: a **paired t-test**, two-sided.
  Effect = mean of the paired differences a - b; 95% CI from the t distribution with n - 1 df;
  n = number of pairs.
* A change between grid points (independent samples): **Welch's t-test**, two-sided.
  Effect = mean(a) - mean(b) (the same "a - b" convention as the paired test: pass the new grid
  point as `a` to read the change from `b`); 95% CI with the Welch-Satterthwaite df.
* A single estimate with its standard error and df (e.g. a least-squares slope): the same t-test
  on (estimate, se, df).
* A claim that something does *not* change: an **equivalence test, TOST**, against a margin m in
  the claim's units, chosen before looking at the results. Its p-value is the larger of the two
  one-sided p's (H0: effect <= -m and H0: effect >= m); it is below 5% exactly when the 90% CI
  lies inside (-m, m). Both the 90% CI (the one TOST corresponds to) and the 95% CI are reported.

Verdicts, at 5%, on Holm-Bonferroni-adjusted p-values within each table (one p-value per claim):

* directional claim ("A > B", effect a - b expected positive; or "A < B"): the two-sided t-test.
  **reproduced** when significant with the effect in the paper's direction, **contradicted** when
  significant the other way, **not resolved** otherwise.
* no-change claim with margin m: **reproduced** when the TOST is significant (the difference is
  within +-m); **contradicted** when the difference is significantly *outside* the margin, i.e. the
  95% CI lies entirely above m or entirely below -m (excludes all of [-m, m]); its p-value is
  2 * min(P(T > (effect - m) / se), P(T < (effect + m) / se)), capped at 1 (for m -> 0 this is
  the plain two-sided p). **not resolved** otherwise. The two outcomes exclude each other (a 90%
  CI inside (-m, m) cannot sit inside a 95% CI that is outside [-m, m]); the claim's p-value is
  the smaller of the two, and the verdict goes to the side it came from.

Degenerate inputs: fewer than two values per sample (three points for a slope), NaN or infinite
values raise ValueError. Zero variance (all paired differences identical, both Welch samples
constant, points exactly on a line) gives se = 0: a nonzero effect has t = +-inf, p = 0 and the CI
[effect, effect]; a zero effect (identical numbers) has t = 0, p = 1 and the CI [0, 0]. TOST with
se = 0 is decided by the effect alone: p = 0 when |effect| < m, else 1; likewise p_outside = 0 when
|effect| > m, else 1.

Pure functions, numpy/float in, frozen dataclasses out, no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

ALPHA = 0.05
REPRODUCED, CONTRADICTED, NOT_RESOLVED = "reproduced", "contradicted", "not resolved"
GREATER, LESS, NO_CHANGE = "greater", "less", "no change"


@dataclasses.dataclass(frozen=True)
class TTest:
    """A two-sided t-test of an effect against 0, with the intervals the verdicts and tables need."""

    test: str  # "paired t", "Welch t", "t on an estimate", "OLS slope t"
    effect: float
    se: float
    df: float
    n: tuple[int, ...]  # (pairs,) | (n_a, n_b) | (points,) | () when an estimate came without one
    t: float
    p: float  # two-sided
    ci95: tuple[float, float]
    ci90: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Equivalence:
    """TOST of a difference against +-margin, and the test that it lies outside the margin."""

    difference: TTest
    margin: float
    p: float  # TOST: max(p_lower, p_upper); < ALPHA exactly when ci90 is inside (-margin, margin)
    p_lower: float  # one-sided, H0: effect <= -margin
    p_upper: float  # one-sided, H0: effect >= margin
    p_outside: float  # H0: |effect| <= margin; < ALPHA exactly when ci95 excludes [-margin, margin]

    @property
    def effect(self) -> float:
        return self.difference.effect

    @property
    def ci95(self) -> tuple[float, float]:
        return self.difference.ci95

    @property
    def ci90(self) -> tuple[float, float]:
        return self.difference.ci90

    @property
    def n(self) -> tuple[int, ...]:
        return self.difference.n


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper and the test of it: `expect` is GREATER or LESS (the sign the paper
    claims for a TTest's effect, e.g. "A > B" with effect a - b is GREATER), or NO_CHANGE for an
    Equivalence."""

    name: str
    result: TTest | Equivalence
    expect: str

    def __post_init__(self) -> None:
        if self.expect == NO_CHANGE:
            if not isinstance(self.result, Equivalence):
                raise TypeError(f"claim {self.name!r}: a no-change claim needs an Equivalence (tost(...)), "
                                f"not {type(self.result).__name__}")
        elif self.expect in (GREATER, LESS):
            if not isinstance(self.result, TTest):
                raise TypeError(f"claim {self.name!r}: a directional claim needs a TTest, "
                                f"not {type(self.result).__name__}")
        else:
            raise ValueError(f"claim {self.name!r}: expect must be {GREATER!r}, {LESS!r} or {NO_CHANGE!r}, "
                             f"not {self.expect!r}")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A claim's verdict after Holm within its table: the p it turned on (`test` names which), and
    that p Holm-adjusted."""

    claim: Claim
    verdict: str  # REPRODUCED | CONTRADICTED | NOT_RESOLVED
    test: str  # "t" (directional), "TOST" or "outside margin" (no-change)
    p: float
    p_holm: float


def _sample(x: ArrayLike, name: str, minimum: int = 2) -> np.ndarray:
    """A finite 1-D float sample of at least `minimum` values, or a ValueError that says what is wrong."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size < minimum:
        raise ValueError(f"{name} has {arr.size} value(s); the test needs at least {minimum}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values: {arr}")
    return arr


def _variance(x: np.ndarray) -> float:
    """Sample variance (ddof 1), exactly 0 for identical values (np.var can leave rounding residue)."""
    return 0.0 if np.all(x == x[0]) else float(np.var(x, ddof=1))


def _interval(effect: float, se: float, df: float, level: float) -> tuple[float, float]:
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return (effect - half, effect + half)


def _ttest(test: str, effect: float, se: float, df: float, n: tuple[int, ...]) -> TTest:
    """Every t-test here reduces to (effect, se, df); se = 0 is decided by the effect alone."""
    if se > 0:
        t = effect / se
        p = float(min(1.0, 2 * stats.t.sf(abs(t), df)))
    elif effect != 0:
        t, p = float(np.copysign(np.inf, effect)), 0.0
    else:
        t, p = 0.0, 1.0
    return TTest(test, float(effect), float(se), float(df), n, float(t), p,
                 _interval(effect, se, df, 0.95), _interval(effect, se, df, 0.90))


def paired_t(a: ArrayLike, b: ArrayLike) -> TTest:
    """Paired two-sided t-test of a - b over the same seeds or splits (the pairing removes the
    seed-to-seed variation both methods share)."""
    a, b = _sample(a, "a"), _sample(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}")
    d = a - b
    n = d.size
    return _ttest("paired t", float(d.mean()), float(np.sqrt(_variance(d) / n)), n - 1, (n,))


def welch_t(a: ArrayLike, b: ArrayLike) -> TTest:
    """Welch's two-sided t-test of mean(a) - mean(b) for independent samples (grid points trained
    on different seeds), not assuming equal variances."""
    a, b = _sample(a, "a"), _sample(b, "b")
    va, vb = _variance(a) / a.size, _variance(b) / b.size
    se2 = va + vb
    # Welch-Satterthwaite; with both samples constant the df is unused (se = 0), so the pooled one.
    df = se2**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se2 > 0 else a.size + b.size - 2
    return _ttest("Welch t", float(a.mean() - b.mean()), float(np.sqrt(se2)), float(df), (a.size, b.size))


def estimate_t(estimate: float, se: float, df: float, n: int | None = None) -> TTest:
    """Two-sided t-test of an estimate given with its standard error and df (a regression
    coefficient, a drift), so that such estimates get the same tests and intervals as samples."""
    values = np.array([estimate, se, df], dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"estimate, se and df must be finite, got {estimate}, {se}, {df}")
    if se < 0 or df <= 0:
        raise ValueError(f"need se >= 0 and df > 0, got se={se}, df={df}")
    return _ttest("t on an estimate", float(estimate), float(se), float(df), () if n is None else (int(n),))


def slope_t(x: ArrayLike, y: ArrayLike) -> TTest:
    """Least-squares slope of y on x, tested against 0 (se from the residuals, n - 2 df): the drift
    of a quantity across a grid, for `tost(slope_t(grid, values), margin)` on "it does not drift"."""
    x, y = _sample(x, "x", 3), _sample(y, "y", 3)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.size} and {y.size}")
    if np.all(x == x[0]):
        raise ValueError("x is constant: no slope to estimate")
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    residuals = y - y.mean() - slope * xc
    n = x.size
    se = float(np.sqrt(float(residuals @ residuals) / (n - 2) / sxx))
    return _ttest("OLS slope t", slope, se, n - 2, (n,))


def tost(result: TTest, margin: float) -> Equivalence:
    """Two one-sided tests that the effect of `result` lies within +-margin (a paired, Welch,
    estimate or slope t-test), and the test that it lies outside: the no-change half of the rule."""
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be finite and > 0 (chosen before looking), got {margin}")
    e, se, df, m = result.effect, result.se, result.df, float(margin)
    if se > 0:
        p_lower = float(stats.t.sf((e + m) / se, df))
        p_upper = float(stats.t.cdf((e - m) / se, df))
        p_outside = float(min(1.0, 2 * min(stats.t.sf((e - m) / se, df), stats.t.cdf((e + m) / se, df))))
    else:
        p_lower, p_upper = float(e <= -m), float(e >= m)
        p_outside = float(abs(e) <= m)
    return Equivalence(result, m, max(p_lower, p_upper), p_lower, p_upper, p_outside)


def holm(pvalues: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order: the k-th smallest of m is
    multiplied by m - k + 1, then made non-decreasing in that order and capped at 1. Controls the
    chance of any false verdict in a table without Bonferroni's loss of power."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p-values must be 1-D, got shape {p.shape}")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p}")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return adjusted


def _claim_p(claim: Claim) -> tuple[float, str]:
    """The one p-value a claim contributes to its table's Holm correction, and the test it came from."""
    r = claim.result
    if isinstance(r, Equivalence):
        return (r.p, "TOST") if r.p <= r.p_outside else (r.p_outside, "outside margin")
    return r.p, "t"


def verdicts(claims: Sequence[Claim]) -> list[Verdict]:
    """The verdict on each claim of one table, at ALPHA on Holm-adjusted p-values within the table
    (so adding claims to a table can only make each verdict harder to reach)."""
    if not claims:
        return []
    raw = [_claim_p(c) for c in claims]
    adjusted = holm([p for p, _ in raw])
    out = []
    for claim, (p, test), p_holm in zip(claims, raw, adjusted):
        word = NOT_RESOLVED
        if p_holm < ALPHA:
            if test == "TOST":
                word = REPRODUCED
            elif test == "outside margin":
                word = CONTRADICTED
            else:
                word = REPRODUCED if (claim.result.effect > 0) == (claim.expect == GREATER) else CONTRADICTED
        out.append(Verdict(claim, word, test, p, float(p_holm)))
    return out


def _num(x: float, fmt: str) -> str:
    return format(x + 0.0, fmt)  # + 0.0 turns -0.0 into 0.0, so no "-0" cells


def cells(item: TTest | Equivalence | Verdict, fmt: str = ".3g", p_fmt: str = ".2g") -> dict[str, str]:
    """One result as the cells of a verdict table, in column order: effect, 95% CI "[lo, hi]",
    (for a TOST: 90% CI, margin), n ("10", or "10+10" for Welch), p; a Verdict adds its Holm p,
    the test its p came from, and the verdict. `fmt` formats effects and intervals, `p_fmt` p's."""
    verdict = item if isinstance(item, Verdict) else None
    result = verdict.claim.result if verdict else item
    row = {"effect": _num(result.effect, fmt),
           "95% CI": f"[{_num(result.ci95[0], fmt)}, {_num(result.ci95[1], fmt)}]"}
    if isinstance(result, Equivalence):
        row["90% CI"] = f"[{_num(result.ci90[0], fmt)}, {_num(result.ci90[1], fmt)}]"
        row["margin"] = f"±{_num(result.margin, fmt)}"
    row["n"] = "+".join(str(k) for k in result.n)
    row["p"] = _num(verdict.p if verdict else result.p, p_fmt)
    if verdict:
        row["Holm p"] = _num(verdict.p_holm, p_fmt)
        row["test"] = verdict.test
        row["verdict"] = verdict.verdict
    return row
