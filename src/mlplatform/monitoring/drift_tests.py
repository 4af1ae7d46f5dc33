"""Two-sample tests, distances and multiple-testing corrections for drift checks: numbers in, numbers out."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import integrate, linalg, stats
from scipy.spatial.distance import jensenshannon

Counts = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]

# Below this many values on either side a p-value comes from permutations (exact up to Monte-Carlo error)
# instead of an asymptotic distribution, whose approximation is poor for small or sparse tables.
PERMUTATION_BELOW = 1000
PERMUTATIONS = 1999
# Proportions below this are raised to it before PSI's logarithm, so empty bins give a finite PSI.
PSI_EPSILON = 1e-4
# Cells of a large-sample categorical table need this expected count in the smaller sample for chi-square.
MIN_EXPECTED = 5.0


@dataclass(frozen=True, slots=True)
class TestResult:
    test: str
    statistic: float
    p_value: float


def quadratic_form_sf(x: float, weights: Floats) -> float:
    """P(sum_k w_k X_k > x) for independent chi-square(1) X_k and weights w_k >= 0 (Imhof 1961).

    The integral runs on [0, a] as an ordinary integral and on [a, inf) as two Fourier integrals (QAWF), which
    stays accurate to about 1e-10 with one weight or a hundred. Far in the tail a Chernoff bound, which is an
    upper bound and so keeps the test valid, replaces it.
    """
    lam = np.sort(weights[weights > 1e-12])[::-1]
    if lam.size == 0:
        return 0.0 if x > 0 else 1.0
    if lam.size == 1:
        return float(stats.chi2.sf(x / lam[0], 1))
    t = 1.0 / (4.0 * lam[0])
    log_bound = -t * x - 0.5 * float(np.sum(np.log1p(-2.0 * t * lam)))
    if log_bound < math.log(1e-12):
        return math.exp(log_bound)
    half_x = 0.5 * x

    @functools.lru_cache(maxsize=4096)
    def phase_envelope(u: float) -> tuple[float, float]:
        lu = lam * u
        return 0.5 * float(np.arctan(lu).sum()), math.exp(-0.25 * float(np.log1p(lu * lu).sum())) / u

    def near(u: float) -> float:
        if u == 0.0:
            return 0.5 * float(lam.sum()) - half_x
        phase, envelope = phase_envelope(u)
        return math.sin(phase - half_x * u) * envelope

    def sin_phase(u: float) -> float:
        phase, envelope = phase_envelope(u)
        return math.sin(phase) * envelope

    def cos_phase(u: float) -> float:
        phase, envelope = phase_envelope(u)
        return math.cos(phase) * envelope

    a = 1.0 / float(lam[0])
    head = float(integrate.quad(near, 0.0, a, limit=200)[0])
    cos_part = integrate.quad(sin_phase, a, np.inf, weight="cos", wvar=half_x)[0]
    sin_part = integrate.quad(cos_phase, a, np.inf, weight="sin", wvar=half_x)[0]
    p = 0.5 + float(head + cos_part - sin_part) / math.pi
    return min(1.0, max(0.0, p), math.exp(log_bound))


def _permutation_draws(reference: Counts, current: Counts, rng: np.random.Generator, draws: int) -> Counts:
    """Current-sample counts per cell under random relabelling of the pooled sample, given pooled counts."""
    pooled = (reference + current).astype(np.int64)
    return rng.multivariate_hypergeometric(pooled, int(current.sum()), size=draws, method="marginals")


def _mc_p_value(observed: float, simulated: Floats) -> float:
    # Counting the observed table among the draws makes the p-value valid for any number of draws.
    return float((1 + np.count_nonzero(simulated >= observed * (1 - 1e-12))) / (simulated.size + 1))


def anderson_darling(reference: Counts, current: Counts, rng: np.random.Generator) -> TestResult:
    """Two-sample Anderson-Darling test on ordered cells (binned values; ties are cells of their own).

    A^2 = nm/N * sum_j w_j (F_ref - F_cur)^2 at each cell boundary j, w_j = dH_j / (H_j (1 - H_j)), H the
    pooled distribution and dH_j the pooled mass around boundary j. Given the pooled counts the vector of ECDF
    differences has covariance N/(N-1) (min(H_i, H_j) - H_i H_j), so A^2 is asymptotically a weighted sum of
    chi-square(1) with weights the eigenvalues of that covariance times w: exact for ties, for any binning.
    Small samples use permutations.
    """
    nonempty = (reference + current) > 0  # empty cells change nothing but would repeat a boundary
    reference, current = reference[nonempty], current[nonempty]
    n, m = int(reference.sum()), int(current.sum())
    big_n = n + m
    pooled = reference + current
    if pooled.size < 2:
        return TestResult("anderson_darling", 0.0, 1.0)
    cum_pooled = np.cumsum(pooled)[:-1].astype(np.float64)
    h = cum_pooled / big_n  # strictly increasing inside (0, 1)
    weights = (pooled[:-1] + pooled[1:]) / (2.0 * big_n) / (h * (1.0 - h))
    scale = n * m / big_n

    def statistic(cum_current: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        diff = (cum_pooled - cum_current) / n - cum_current / m
        return np.asarray(scale * (diff * diff) @ weights, dtype=np.float64)

    observed = float(statistic(np.cumsum(current)[:-1].astype(np.float64)))
    if min(n, m) < PERMUTATION_BELOW:
        draws = _permutation_draws(reference, current, rng, PERMUTATIONS)
        simulated = statistic(np.cumsum(draws, axis=1)[:, :-1].astype(np.float64))
        return TestResult("anderson_darling_permutation", observed, _mc_p_value(observed, simulated))
    eigen = _bridge_eigenvalues(h, weights) * (big_n / (big_n - 1))
    return TestResult("anderson_darling", observed, quadratic_form_sf(observed, eigen))


def _bridge_eigenvalues(points: Floats, weights: Floats) -> Floats:
    """Eigenvalues of W^1/2 S W^1/2, S_ij = min(t_i, t_j) - t_i t_j (a Brownian bridge at 0 < t_1 < ... < 1).

    S^-1 is tridiagonal (the bridge is Markov), so these are the reciprocals of the eigenvalues of the
    tridiagonal W^-1/2 S^-1 W^-1/2: O(k^2) instead of a dense O(k^3) decomposition.
    """
    gaps = np.diff(np.concatenate([[0.0], points, [1.0]]))
    diagonal = (1.0 / gaps[:-1] + 1.0 / gaps[1:]) / weights
    off = -1.0 / gaps[1:-1] / np.sqrt(weights[:-1] * weights[1:])
    inverse = linalg.eigvalsh_tridiagonal(diagonal, off, lapack_driver="stemr")
    return np.asarray(1.0 / inverse[inverse > 0], dtype=np.float64)


def _pearson(reference: Counts, current: Counts) -> float:
    n, m = int(reference.sum()), int(current.sum())
    pooled = (reference + current).astype(np.float64)
    keep = pooled > 0
    dev = current[keep] - m * pooled[keep] / (n + m)
    return float(np.sum(dev * dev / pooled[keep]) * (n + m) ** 2 / (n * m))


def _pool_sparse(reference: Counts, current: Counts) -> tuple[Counts, Counts]:
    """Merge the rarest cells (by pooled count) until each expects MIN_EXPECTED in the smaller sample."""
    pooled = reference + current
    smaller = min(int(reference.sum()), int(current.sum()))
    need = MIN_EXPECTED * (pooled.sum()) / smaller
    order = np.argsort(pooled, kind="stable")
    sorted_pooled = pooled[order]
    # Rare cells go to one "other" cell; keep moving the next rarest in while "other" is still too small.
    split = int(np.searchsorted(sorted_pooled, need, side="left"))
    while split < order.size and 0 < sorted_pooled[:split].sum() < need:
        split += 1
    keep, rare = order[split:], order[:split]
    ref = np.append(reference[keep], reference[rare].sum())
    cur = np.append(current[keep], current[rare].sum())
    return ref, cur


def chi_square(reference: Counts, current: Counts, rng: np.random.Generator) -> TestResult:
    """Two-sample test of category proportions: Pearson's statistic on the 2 x L table.

    Small samples: permutation p-value on the full table (valid with any number of sparse levels). Large
    samples: chi-square after merging levels too rare for the approximation into one cell.
    """
    n, m = int(reference.sum()), int(current.sum())
    observed = _pearson(reference, current)
    if np.count_nonzero(reference + current) < 2:
        return TestResult("chi_square", 0.0, 1.0)
    if min(n, m) < PERMUTATION_BELOW:
        draws = _permutation_draws(reference, current, rng, PERMUTATIONS)
        pooled = (reference + current).astype(np.float64)
        keep = pooled > 0
        dev = draws[:, keep] - m * pooled[keep] / (n + m)
        simulated = np.sum(dev * dev / pooled[keep], axis=1) * (n + m) ** 2 / (n * m)
        return TestResult("chi_square_permutation", observed, _mc_p_value(observed, simulated))
    ref, cur = _pool_sparse(reference, current)
    cells = int(np.count_nonzero(ref + cur))
    if cells < 2:
        return TestResult("chi_square", 0.0, 1.0)
    statistic = _pearson(ref, cur)
    return TestResult("chi_square", statistic, float(stats.chi2.sf(statistic, cells - 1)))


def missing_rate(ref_missing: int, ref_rows: int, cur_missing: int, cur_rows: int) -> TestResult:
    """Fisher's exact test of equal missing rates: exact at every size, conservative when counts are small."""
    table = [[ref_missing, ref_rows - ref_missing], [cur_missing, cur_rows - cur_missing]]
    if ref_missing + cur_missing == 0 or ref_missing + cur_missing == ref_rows + cur_rows:
        return TestResult("fisher_exact", 0.0, 1.0)
    difference = cur_missing / cur_rows - ref_missing / ref_rows
    return TestResult("fisher_exact", difference, float(stats.fisher_exact(table).pvalue))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control under any dependence)."""
    k = len(p_values)
    order = sorted(range(k), key=lambda i: p_values[i])
    adjusted = [0.0] * k
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def psi(reference: Counts, current: Counts) -> float:
    """Population stability index, sum (q - p) ln(q / p), proportions floored at PSI_EPSILON."""
    p = np.maximum(reference / max(int(reference.sum()), 1), PSI_EPSILON)
    q = np.maximum(current / max(int(current.sum()), 1), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(reference: Counts, current: Counts) -> float:
    """Jensen-Shannon distance (square root of the divergence, base 2): 0 identical, 1 disjoint."""
    if reference.sum() == 0 or current.sum() == 0:
        return 0.0
    return float(jensenshannon(reference.astype(np.float64), current.astype(np.float64), base=2.0))


def wasserstein_from_quantiles(reference_quantiles: Floats, current_sorted: Floats) -> float:
    """W1 between the reference, given as quantiles at probabilities (i + 1/2)/k, and a sorted sample."""
    k = reference_quantiles.size
    probs = (np.arange(k) + 0.5) / k
    current_quantiles = np.quantile(current_sorted, probs, method="inverted_cdf")
    return float(np.mean(np.abs(current_quantiles - reference_quantiles)))
