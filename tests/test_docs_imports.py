"""Every import statement shown in ``docs/`` and the READMEs works in a fresh interpreter.

Each distinct ``import optizoo...`` / ``from optizoo... import ...`` line is run alone in its
own subprocess, so an import that only works after something else was imported (an import
cycle, a missing re-export) fails here. The line is taken verbatim from the page.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md", *ROOT.glob("plugins/*/README.md")])
IMPORT = re.compile(
    r"^\s*((?:from optizoo[\w.]* import [\w, ]+)|(?:import optizoo[\w.]*))\s*(?:#.*)?$"
)


def doc_imports() -> list[str]:
    found = set()
    for page in PAGES:
        for line in page.read_text(encoding="utf-8").splitlines():
            m = IMPORT.match(line)
            if m:
                found.add(m.group(1).strip().rstrip(","))
    return sorted(found)


def test_the_docs_show_imports() -> None:
    statements = doc_imports()
    assert "import optizoo" in statements
    assert any(s.startswith("from optizoo.testing import") for s in statements)


@pytest.mark.parametrize("statement", doc_imports())
def test_doc_import_works_in_a_fresh_interpreter(statement: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", statement], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, f"{statement!r} failed:\n{done.stderr[-2000:]}"


def test_the_old_conformance_module_still_imports_alone() -> None:
    """``optizoo.testing_tasks`` (the former home of check_task) imports without a cycle."""
    code = "from optizoo.testing_tasks import check_preprocessor, check_task; print(check_task)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
