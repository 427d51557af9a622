"""Former location of the task and preprocessor conformance checks; use :mod:`optizoo.testing`.

Kept so that ``from optizoo.testing_tasks import check_task`` keeps working.
"""

from __future__ import annotations

from optizoo.testing.preprocessors import (
    PREPROCESSOR_CHECKS,
    check_preprocessor,
    run_preprocessor_check,
)
from optizoo.testing.tasks import TASK_CHECKS, check_task, run_task_check

__all__ = [
    "PREPROCESSOR_CHECKS",
    "TASK_CHECKS",
    "check_preprocessor",
    "check_task",
    "run_preprocessor_check",
    "run_task_check",
]
