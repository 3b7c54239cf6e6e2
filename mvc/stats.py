"""Summary statistics for evaluations: mean and spread over folds, paired bootstrap tests.

numpy only (imported inside functions so ``import mvc`` stays light), seeded so that the
same inputs always give the same interval and p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_RESAMPLES = 10_000
DEFAULT_ALPHA = 0.05
# Resamples are drawn in chunks of at most this many index values, so memory stays
# ~ 32 MB whatever the number of examples.
_CHUNK_VALUES = 4_000_000


@dataclass(frozen=True)
class PairedTest:
    """A paired bootstrap comparison of two per-example score lists (``a`` minus ``b``).

    ``significant`` is ``p_value < alpha``; the percentile interval then excludes 0.
    """

    difference: float  # mean of a - b over the examples
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    alpha: float
    resamples: int
    significant: bool


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value).

    Raises:
        ValueError: ``values`` is empty.
    """
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> PairedTest:
    """Paired bootstrap of the mean difference ``a - b`` over the same examples.

    The examples are resampled with replacement ``resamples`` times; the interval is
    the ``alpha/2`` and ``1 - alpha/2`` percentiles of the resampled mean differences,
    and the two-sided p-value is twice the smaller tail mass on either side of 0
    (add-one smoothed, so it is never exactly 0). Identical scores give p = 1.

    Args:
        a, b: per-example scores of two versions, in the same example order.
        resamples: number of bootstrap resamples.
        alpha: significance level (the interval is ``1 - alpha``).
        seed: seed of the random generator (same inputs + seed = same result).

    Returns:
        The :class:`PairedTest`.

    Raises:
        ValueError: the lists differ in length, are empty, or hold non-finite values.
    """
    import numpy as np

    xa = np.asarray(a, dtype=np.float64).ravel()
    xb = np.asarray(b, dtype=np.float64).ravel()
    if xa.size != xb.size:
        raise ValueError(f"the per-example lists differ in length ({xa.size} vs {xb.size})")
    if xa.size == 0:
        raise ValueError("the per-example lists are empty")
    diff = xa - xb
    if not np.isfinite(diff).all():
        raise ValueError("the per-example lists hold non-finite values")
    if not 0 < alpha < 1 or resamples < 1:
        raise ValueError("alpha must lie in (0, 1) and resamples be >= 1")
    n = diff.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diff[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    below = (np.count_nonzero(means <= 0) + 1) / (resamples + 1)
    above = (np.count_nonzero(means >= 0) + 1) / (resamples + 1)
    p_value = float(min(1.0, 2 * min(below, above)))
    return PairedTest(
        difference=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        p_value=p_value,
        n=int(n),
        alpha=alpha,
        resamples=resamples,
        significant=p_value < alpha,
    )


__all__ = ["DEFAULT_ALPHA", "DEFAULT_RESAMPLES", "PairedTest", "mean_std", "paired_bootstrap"]
