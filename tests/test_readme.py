"""The README's set-up commands: exactly two, both install torch==2.13.0 first, and CI runs the
test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_exactly_two_setup_commands_installing_pinned_torch_first():
    cmds = _setup_commands()
    assert len(cmds) == 2
    for cmd in cmds:
        assert cmd.startswith("pip install torch==2.13.0 && ")
        assert "\n" not in cmd


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = _setup_commands()[1]
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci
    assert "set -euo pipefail" in ci


def test_main_job_uses_a_shipped_optimizer():
    import optizoo

    main = _setup_commands()[0]
    names = {p["name"] for p in optizoo.list_pretrained()}
    used = re.search(r"--optimizers (.*?) --", main).group(1).split()
    assert any(u in names or u == "lstm" for u in used), (used, names)


def test_main_job_runs_and_writes_its_figure(tmp_path, capsys):
    """The main job's ``optizoo compare`` command, shortened (steps, problems, grid), runs as
    written: a misspelt option, task argument or optimizer spec fails here."""
    import shlex

    from optizoo.cli import main as cli_main

    main = _setup_commands()[0]
    argv = shlex.split(main.split("&& ")[-1])
    assert argv[:2] == ["optizoo", "compare"]
    args = argv[1:]
    short = {
        "--steps": "5",
        "--problems": "2",
        "--tune-problems": "1",
        "--plot": str(tmp_path / "f.png"),
    }
    for i, a in enumerate(args):
        if a in short:
            args[i + 1] = short[a]
    rc = cli_main([*args, "--grid", "1e-3,1e-2", "--quiet"])
    assert rc in (0, None)
    out = capsys.readouterr().out
    for spec in ("lstm", "adam", "adamw:lr=0.001,weight_decay=0.01"):
        assert f"| {spec} |" in out
    assert (tmp_path / "f.png").stat().st_size > 0
