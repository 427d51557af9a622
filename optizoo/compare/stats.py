"""Small statistics for comparing optimizers: means with Student-t confidence intervals.

scipy is not a dependency, so the Student t quantile is computed here from the regularized
incomplete beta function (continued fraction, evaluated by the modified Lentz method) and inverted
by bisection followed by Newton steps. It agrees with ``scipy.stats.t.ppf`` to about 1e-10
(see ``tests/compare/test_stats.py``).

Conventions: a confidence interval for the mean of ``n`` samples ``x`` is
``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard deviation (``ddof=1``).
Non-finite samples (diverged runs) make the mean non-finite; they are never dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Interval",
    "format_interval",
    "mean_ci",
    "mean_ci_along",
    "paired_difference",
    "quartiles_along",
    "student_t_cdf",
    "t_quantile",
]

_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(
        f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})"
    )


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _check_df(df: float) -> float:
    if not (isinstance(df, (int, float)) and math.isfinite(df) and df > 0):
        raise ValueError(f"degrees of freedom must be a positive finite number, got {df!r}")
    return float(df)


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t distribution with ``df`` degrees of freedom."""
    df = _check_df(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def _t_pdf(t: float, df: float) -> float:
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))


def t_quantile(p: float, df: float) -> float:
    """Inverse CDF of Student's t: the ``t`` with ``P(T <= t) = p``.

    Args:
        p: probability in ``(0, 1)``.
        df: degrees of freedom, ``> 0`` (need not be an integer).

    Exact closed forms for ``df`` 1 and 2. Otherwise, for ``p < 0.75`` the central equation
    ``½·I_{t²/(df+t²)}(½, df/2) = p − ½`` and for larger ``p`` the tail equation
    ``½·I_{df/(df+t²)}(df/2, ½) = 1 − p`` is solved by bisection on the incomplete beta's argument
    (each form is accurate where the other cancels), then polished with Newton steps on ``t``.
    """
    df = _check_df(df)
    if not (isinstance(p, (int, float)) and 0.0 < p < 1.0):
        raise ValueError(f"p must be a probability strictly between 0 and 1, got {p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if df == 1.0:
        return 1.0 / math.tan(math.pi * (1.0 - p))  # = tan(π(p - ½)), accurate as p → 1
    if df == 2.0:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    a = df / 2.0
    if p < 0.75:
        # central form: P(|T| < t) = I_y(1/2, df/2), y = t^2/(df+t^2), increasing in t
        target, first, second = 2.0 * p - 1.0, 0.5, a

        def to_t(u: float) -> float:
            return math.sqrt(df * u / (1.0 - u)) if u < 1.0 else math.inf

        def residual(t: float) -> float:
            return 0.5 * _betainc(0.5, a, t * t / (df + t * t)) - (p - 0.5)

    else:
        # tail form: P(|T| > t) = I_x(df/2, 1/2), x = df/(df+t^2), decreasing in t
        target, first, second = 2.0 * (1.0 - p), a, 0.5

        def to_t(u: float) -> float:
            return math.sqrt(df * (1.0 - u) / u) if u > 0.0 else math.inf

        def residual(t: float) -> float:
            return (1.0 - p) - 0.5 * _betainc(a, 0.5, df / (df + t * t))

    lo, hi = 0.0, 1.0  # bisection on u in (0, 1); I_u(first, second) is increasing in u
    for _ in range(1100):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _betainc(first, second, mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    t = to_t(0.5 * (lo + hi))
    for _ in range(3):  # Newton on the CDF polishes what bisection in u left
        dens = _t_pdf(t, df) if math.isfinite(t) else 0.0
        if dens <= 0.0:
            break
        t_new = t - residual(t) / dens
        if not math.isfinite(t_new) or t_new <= 0.0:
            break
        t = t_new
    return t


@dataclass(frozen=True)
class Interval:
    """A sample mean with a confidence interval.

    Attributes:
        mean: the sample mean (non-finite if any sample is).
        half_width: ``t · s/√n``; ``nan`` when ``n < 2`` or a sample is non-finite.
        n: number of samples.
        confidence: the interval's coverage, e.g. ``0.95``.
        n_nonfinite: samples that were ``inf``/``nan`` (diverged runs).
    """

    mean: float
    half_width: float
    n: int
    confidence: float = 0.95
    n_nonfinite: int = 0

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def to_dict(self) -> dict[str, float | int]:
        def clean(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "mean": clean(self.mean),
            "half_width": clean(self.half_width),
            "low": clean(self.low),
            "high": clean(self.high),
            "n": self.n,
            "confidence": self.confidence,
            "n_nonfinite": self.n_nonfinite,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Interval:
        """The inverse of :meth:`to_dict` (``low``/``high`` are recomputed, not read).

        A ``null`` mean is a non-finite one (at least one diverged sample); a ``null``
        half-width is ``nan``. Raises ``ValueError`` naming the first bad field.
        """
        if not isinstance(data, Mapping) or "mean" not in data:
            raise ValueError(
                f"an interval is a dict with 'mean', 'half_width', 'n' (Interval.to_dict), got "
                f"{type(data).__name__}{'' if not isinstance(data, Mapping) else ' without mean'}"
            )

        def number(key: str, missing: float) -> float:
            value = data.get(key)
            if value is None:
                return missing
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"interval {key!r} must be a number or null, got {value!r}")
            return float(value)

        n, bad = data.get("n", 0), data.get("n_nonfinite", 0)
        for key, value in (("n", n), ("n_nonfinite", bad)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"interval {key!r} must be an int >= 0, got {value!r}")
        mean = number("mean", math.inf)
        confidence = number("confidence", 0.95)
        return cls(
            mean=mean,
            half_width=number("half_width", math.nan),
            n=n,
            confidence=confidence,
            n_nonfinite=bad if math.isfinite(mean) or bad else 1,
        )


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float in (0, 1), e.g. 0.95; got {confidence!r}")
    return confidence


def mean_ci(values: np.ndarray | list[float], confidence: float = 0.95) -> Interval:
    """Mean of 1-D ``values`` with a two-sided Student-t confidence interval."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = int(x.size)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    bad = int((~np.isfinite(x)).sum())
    mean = float(x.mean())
    if n < 2 or bad:
        return Interval(mean, math.nan, n, confidence, bad)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sem
    return Interval(mean, half, n, confidence, bad)


def mean_ci_along(
    values: np.ndarray, axis: int = 0, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Means and CI half-widths along ``axis`` (e.g. over problems of a ``[problems, steps]`` curve).

    Returns ``(mean, half_width)`` with ``axis`` removed; half-width is ``nan`` where ``n < 2``.
    """
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[axis]
    with np.errstate(invalid="ignore", over="ignore"):
        mean = x.mean(axis=axis)
        if n < 2:
            return mean, np.full_like(mean, np.nan)
        sem = x.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, t_quantile(0.5 + confidence / 2.0, n - 1) * sem


def quartiles_along(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """25th, 50th and 75th percentiles along ``axis`` (linear interpolation; ``inf`` sorts last)."""
    x = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # interpolating between two inf gives nan: an inf
        q = np.percentile(np.where(np.isnan(x), np.inf, x), [25, 50, 75], axis=axis)
    q = np.where(np.isnan(q), np.inf, q)
    return q[0], q[1], q[2]


def paired_difference(
    a: np.ndarray | list[float], b: np.ndarray | list[float], confidence: float = 0.95
) -> Interval:
    """Mean of ``a - b`` over paired samples (same problems) with its confidence interval.

    An interval entirely below zero says ``a`` is lower than ``b`` at that confidence.
    """
    xa = np.asarray(a, dtype=np.float64).reshape(-1)
    xb = np.asarray(b, dtype=np.float64).reshape(-1)
    if xa.shape != xb.shape:
        raise ValueError(f"paired samples need equal lengths, got {xa.size} and {xb.size}")
    with np.errstate(invalid="ignore"):
        return mean_ci(xa - xb, confidence)


def format_interval(iv: Interval, digits: int = 3) -> str:
    """``"0.0761 ± 0.0042"`` style text; ``"diverged (k/n)"`` when a sample is non-finite."""
    if iv.n_nonfinite:
        return f"diverged ({iv.n_nonfinite}/{iv.n})"
    if math.isnan(iv.half_width):
        return f"{iv.mean:.{digits}g}"
    return f"{iv.mean:.{digits}g} ± {iv.half_width:.2g}"
