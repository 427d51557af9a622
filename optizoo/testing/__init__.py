"""Conformance suites: the contracts an optimizer, update rule, task or preprocessor must keep.

Each suite has a ``check_*`` function that raises :class:`ConformanceError` listing the failed
checks, a ``run_*_check(name, subject)`` for one check, and a ``{name: check}`` table to
parametrize pytest over. Importing this package imports nothing heavier than torch and the
base classes, so a plugin's tests can use it on their own. Guide: ``docs/plugins.md``.

    from optizoo.testing import check_optimizer, check_preprocessor, check_rule, check_task
    from optizoo.testing import check_clients  # DCP, hooks, torch.compile, FSDP2
"""

from __future__ import annotations

from optizoo.testing.clients import (
    CLIENT_CHECKS,
    check_clients,
    check_compiled_step,
    check_dcp_round_trip,
    check_fsdp2_step,
    check_fsdp2_steps,
    check_hooks,
)
from optizoo.testing.optimizers import (
    CHECKS,
    CORE_CHECKS,
    LEARNED_CHECKS,
    check_optimizer,
    run_check,
    run_conformance,
)
from optizoo.testing.preprocessors import (
    PREPROCESSOR_CHECKS,
    check_preprocessor,
    run_preprocessor_check,
)
from optizoo.testing.report import ConformanceError, ConformanceReport, run_checks
from optizoo.testing.rules import RULE_CHECKS, check_rule, run_rule_check
from optizoo.testing.tasks import TASK_CHECKS, check_task, run_task_check

__all__ = [
    "CHECKS",
    "CLIENT_CHECKS",
    "CORE_CHECKS",
    "LEARNED_CHECKS",
    "PREPROCESSOR_CHECKS",
    "RULE_CHECKS",
    "TASK_CHECKS",
    "ConformanceError",
    "ConformanceReport",
    "check_clients",
    "check_compiled_step",
    "check_dcp_round_trip",
    "check_fsdp2_step",
    "check_fsdp2_steps",
    "check_hooks",
    "check_optimizer",
    "check_preprocessor",
    "check_rule",
    "check_task",
    "run_check",
    "run_checks",
    "run_conformance",
    "run_preprocessor_check",
    "run_rule_check",
    "run_task_check",
]
