"""optizoo plugin module (entry point ``inn`` in the group ``optizoo``).

Heavy imports (torch, the network) happen inside the hook, so ``optizoo plugins`` stays fast.
"""

from __future__ import annotations

from typing import Any

import optizoo


@optizoo.hookimpl
def optizoo_tasks() -> dict[str, Any]:
    """``inn-gaussian``: an invertible network trained with supervised + two MMD losses."""
    from optizoo_inn.task import GaussianINNTask

    return {"inn-gaussian": GaussianINNTask}
