"""The packages keep their import rules (the import-linter contracts in pyproject.toml), and only the commands
end the process or say `PROG: error:`."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "metarun"
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent))


def lint(src: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """lint-imports over the package found first on PYTHONPATH (grimp imports nothing; it reads the files)."""
    return subprocess.run([LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], capture_output=True,
                          text=True, cwd=tmp_path, env={"PYTHONPATH": str(src), "PATH": ""}, timeout=120)


@pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")
def test_the_import_contracts_hold(tmp_path):
    result = lint(ROOT / "src", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")
@pytest.mark.parametrize(("module", "line", "contract"), [
    ("report/stats.py", "import torch", "The report reads what runs wrote, without torch"),
    ("core/inner.py", "from metarun.run import rundir", "Layers: a package imports only the ones below it"),
    ("config/checks.py", "from metarun.models import Conv4", "The configuration loads without torch"),
])
def test_a_deliberate_violation_breaks_its_contract(tmp_path, module, line, contract):
    copy = tmp_path / "src" / "metarun"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "conf", "splits"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}\n")
    result = lint(tmp_path / "src", tmp_path)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def calls(tree: ast.AST) -> list[tuple[int, str]]:
    """The lines that end the process or print to standard error."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name in ("sys.exit", "exit", "quit", "os._exit"):
            found.append((node.lineno, name))
        if name == "print" and any(k.arg == "file" and "stderr" in ast.unparse(k.value) for k in node.keywords):
            found.append((node.lineno, "print(..., file=sys.stderr)"))
    return found


def test_only_the_commands_end_the_process_or_say_errors():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        if relative.parts[0] in ("commands", "__main__.py"):
            continue
        text = path.read_text()
        offenders += [f"{relative}:{line}: {what}" for line, what in calls(ast.parse(text))]
        offenders += [f"{relative}: says `: error:`" for _ in [1] if ": error:" in text]
    assert offenders == []


def test_the_check_sees_an_offender():
    tree = ast.parse("import sys\nprint('x', file=sys.stderr)\nsys.exit(2)\n")
    assert [what for _, what in calls(tree)] == ["print(..., file=sys.stderr)", "sys.exit"]
