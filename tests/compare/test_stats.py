"""Student-t quantiles and confidence intervals (optizoo.compare.stats) against independent values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from optizoo.compare.stats import (
    Interval,
    format_interval,
    mean_ci,
    mean_ci_along,
    paired_difference,
    quartiles_along,
    student_t_cdf,
    t_quantile,
)

# Two-sided 95% critical values t_{0.975, df} from a printed t table (3 decimals).
T_TABLE_975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    9: 2.262,
    10: 2.228,
    19: 2.093,
    29: 2.045,
    30: 2.042,
    60: 2.000,
    120: 1.980,
}


@pytest.mark.parametrize(("df", "expected"), sorted(T_TABLE_975.items()))
def test_t_quantile_matches_printed_table(df: int, expected: float) -> None:
    # the table is rounded to 3 decimals: tolerance half a unit in the last place
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_tends_to_normal() -> None:
    # Φ^{-1}(0.975) = 1.959964; t_{0.975, 1e6} differs by ~ (z^3 + z)/(4 df) ≈ 1.4e-6
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=5e-6)


def test_t_quantile_general_path_against_closed_form_cdf_df4() -> None:
    # df = 4 goes through the incomplete-beta inversion; its CDF has a closed form:
    # F(t) = ½ + ⅜ · (t/s) · (1 − t²/(12 s²)) with s² = 1 + t²/4
    for p in (0.55, 0.8, 0.9, 0.975, 0.995, 0.9999):
        t = t_quantile(p, 4)
        s2 = 1 + t * t / 4
        f = 0.5 + 3 / 8 * (t / math.sqrt(s2)) * (1 - t * t / (12 * s2))
        assert f == pytest.approx(p, abs=1e-12)


def test_t_quantile_symmetry_and_closed_forms() -> None:
    for df in (1, 2, 3.5, 7, 40):
        for p in (0.6, 0.9, 0.99):
            assert t_quantile(1 - p, df) == pytest.approx(-t_quantile(p, df), rel=1e-12)
    assert t_quantile(0.5, 5) == 0.0
    # df = 1 is the Cauchy distribution, df = 2 has t = (2p−1)/√(2p(1−p))
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    assert t_quantile(0.9, 2) == pytest.approx(0.8 / math.sqrt(2 * 0.9 * 0.1), rel=1e-12)


def test_t_quantile_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    worst = 0.0
    for df in (1, 2, 3, 4, 5, 7, 9, 10, 19, 29, 49, 99, 199, 1000, 0.5, 2.5, 12.3):
        for p in (0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 0.9999, 1e-6, 0.025):
            ours, ref = t_quantile(p, df), float(stats.t.ppf(p, df))
            worst = max(worst, abs(ours - ref) / abs(ref))
            # CDF as well, at the reference quantile
            assert student_t_cdf(ref, df) == pytest.approx(p, rel=1e-9, abs=1e-14)
    # relative 1e-9: both are double-precision inversions of the same function
    assert worst < 1e-9


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_t_quantile_rejects_bad_probability(bad: float) -> None:
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(bad, 5)


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan])
def test_t_quantile_rejects_bad_df(bad: float) -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.9, bad)


def test_mean_ci_two_points_by_hand() -> None:
    # x = (1, 3): mean 2, s = √2, s/√n = 1, half = t_{0.975,1} · 1 = tan(0.475π)
    iv = mean_ci([1.0, 3.0])
    assert iv.mean == 2.0
    assert iv.half_width == pytest.approx(math.tan(0.475 * math.pi), rel=1e-12)
    assert (iv.low, iv.high) == pytest.approx((2 - iv.half_width, 2 + iv.half_width))


def test_mean_ci_matches_textbook_formula() -> None:
    x = np.array([0.3, 1.7, 0.9, 2.2, 1.1, 0.4, 1.3, 0.8, 1.9, 1.0])
    iv = mean_ci(x, 0.95)
    # independent: table value t_{0.975, 9} = 2.262 (3 decimals) → relative tolerance 3e-4
    expected = 2.262 * x.std(ddof=1) / math.sqrt(x.size)
    assert iv.mean == pytest.approx(x.mean())
    assert iv.half_width == pytest.approx(expected, rel=3e-4)
    assert iv.n == 10 and iv.n_nonfinite == 0


def test_interval_coverage_by_simulation() -> None:
    # 4000 samples of size 5 from N(1, 2²): the fraction of 95% intervals covering 1 is a
    # binomial proportion with sd √(.95·.05/4000) ≈ 0.0034; allow 4 sd.
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(5, 4000))
    mean, half = mean_ci_along(x, axis=0)
    covered = np.abs(mean - 1.0) <= half
    assert abs(covered.mean() - 0.95) < 4 * 0.0034


def test_mean_ci_along_matches_mean_ci() -> None:
    rng = np.random.default_rng(1)
    x = rng.exponential(size=(7, 5))
    mean, half = mean_ci_along(x, axis=0, confidence=0.9)
    for j in range(5):
        iv = mean_ci(x[:, j], 0.9)
        assert mean[j] == pytest.approx(iv.mean) and half[j] == pytest.approx(iv.half_width)


def test_nonfinite_samples_are_reported_not_dropped() -> None:
    iv = mean_ci([1.0, math.inf, 2.0])
    assert iv.n_nonfinite == 1 and math.isinf(iv.mean) and math.isnan(iv.half_width)
    assert format_interval(iv) == "diverged (1/3)"
    single = mean_ci([4.0])
    assert single.mean == 4.0 and math.isnan(single.half_width)
    assert format_interval(single) == "4"


def test_paired_difference_is_ci_of_differences() -> None:
    a, b = np.array([1.0, 2.0, 3.5, 4.0]), np.array([0.5, 2.5, 3.0, 3.0])
    assert paired_difference(a, b) == mean_ci(a - b)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference(a, b[:3])


def test_quartiles_match_numpy_and_sort_nan_last() -> None:
    x = np.arange(20.0).reshape(5, 4)
    q1, med, q3 = quartiles_along(x, axis=0)
    np.testing.assert_allclose(q1, np.percentile(x, 25, axis=0))
    np.testing.assert_allclose(med, np.median(x, axis=0))
    np.testing.assert_allclose(q3, np.percentile(x, 75, axis=0))
    y = np.array([1.0, 2.0, 3.0, np.nan, 4.0])  # a diverged run counts as the worst
    assert quartiles_along(y)[1] == 3.0


def test_format_and_dict() -> None:
    iv = Interval(0.07612, 0.00421, 10)
    assert format_interval(iv) == "0.0761 ± 0.0042"
    d = iv.to_dict()
    assert d["mean"] == 0.07612 and d["low"] == pytest.approx(0.07191) and d["n"] == 10
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)
