"""The report every conformance suite returns, and the runner they share.

A check is a callable ``check(subject, **options)`` that raises :class:`ConformanceError` when
the subject breaks the contract. :func:`run_checks` runs a ``{name: check}`` table on one
subject and collects a :class:`ConformanceReport`; a check that crashes counts as failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConformanceError", "ConformanceReport", "require", "run_checks"]


class ConformanceError(AssertionError):
    """A subject (optimizer, rule, task, preprocessor) failed one or more conformance checks."""


@dataclass
class ConformanceReport:
    """Outcome of a suite: ``passed`` names, ``failed`` ``{name: reason}``, ``skipped`` names."""

    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [
            f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
        ]
        lines += [f"  FAILED {k}: {v}" for k, v in self.failed.items()]
        return "\n".join(lines)


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConformanceError` with ``message`` unless ``cond``."""
    if not cond:
        raise ConformanceError(message)


def run_checks(
    checks: Mapping[str, Callable[..., None]],
    subject: Any,
    skip: tuple[str, ...] = (),
    options: Mapping[str, Any] | None = None,
) -> ConformanceReport:
    """Run each of ``checks`` on ``subject`` with ``options``, skipping the names in ``skip``.

    Raises:
        ValueError: ``skip`` names a check that is not in ``checks``.
    """
    unknown = set(skip) - set(checks)
    if unknown:
        raise ValueError(
            f"unknown checks in skip: {sorted(unknown)}; available: {', '.join(checks)}"
        )
    report = ConformanceReport()
    for name, check in checks.items():
        if name in skip:
            report.skipped.append(name)
            continue
        try:
            check(subject, **(options or {}))
        except ConformanceError as exc:
            report.failed[name] = str(exc)
        except Exception as exc:  # the subject crashing a check is a failure of that check
            report.failed[name] = f"{type(exc).__name__}: {exc}"
        else:
            report.passed.append(name)
    return report
