"""mvc.stats: mean/std over folds and the seeded paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from mvc.stats import mean_std, paired_bootstrap


def test_mean_std_uses_the_sample_std_and_zero_for_one_value():
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        mean_std([])


def test_identical_scores_give_no_gap_and_p_one():
    scores = np.random.default_rng(0).integers(0, 2, 300)
    test = paired_bootstrap(scores, scores)
    assert (test.difference, test.ci_low, test.ci_high, test.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not test.significant and test.n == 300


def test_a_real_gap_is_significant_and_its_interval_excludes_zero():
    rng = np.random.default_rng(1)
    a = (rng.random(500) < 0.9).astype(int)
    b = np.where(rng.random(500) < 0.25, 0, a)  # b gets a quarter of a's answers wrong
    test = paired_bootstrap(a, b)
    assert test.difference == pytest.approx((a - b).mean())
    assert 0 < test.ci_low < test.difference < test.ci_high
    assert test.p_value < 0.001 and test.significant
    flipped = paired_bootstrap(b, a)
    assert flipped.difference == -test.difference and flipped.ci_high < 0 and flipped.significant


def test_two_samples_of_the_same_quality_are_not_significant():
    rng = np.random.default_rng(2)
    truth = rng.random(400) < 0.8
    a = (truth ^ (rng.random(400) < 0.05)).astype(int)
    b = (truth ^ (rng.random(400) < 0.05)).astype(int)
    test = paired_bootstrap(a, b)
    assert test.ci_low <= 0 <= test.ci_high and test.p_value > 0.05 and not test.significant


def test_the_same_seed_gives_the_same_answer():
    rng = np.random.default_rng(3)
    a, b = rng.random(200), rng.random(200)
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5).ci_low != paired_bootstrap(a, b, seed=6).ci_low


def test_many_examples_are_resampled_in_chunks():
    rng = np.random.default_rng(4)
    a = rng.normal(0.02, 1, 100_000)
    b = np.zeros(100_000)
    test = paired_bootstrap(a, b, resamples=200)
    assert test.ci_low < 0.02 < test.ci_high and test.resamples == 200


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1, 0, 1], [1, 0], "differ in length"),
        ([], [], "empty"),
        ([1.0, float("nan")], [1.0, 0.0], "non-finite"),
    ],
)
def test_bad_per_example_lists(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b)
