"""The import contract ([tool.importlinter] in pyproject.toml): kept by the code, and live.

A contract that a typo or a renamed package quietly empties would pass forever, so each one
is also run on a copy of the code with one violation planted, and must break there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("reconcile", "jobs", "reports", "sandbox")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(cwd: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    for contract in contracts:
        args += ["--contract", contract]
    # The copy under test comes first on the path, ahead of the installed (editable) project.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_code_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# contract id -> (module changed, the module it then imports inside a function: a lazy
# import counts as much as one at the top); None plants a new module placed in no layer.
VIOLATIONS: dict[str, tuple[str, str | None]] = {
    "product-layers": ("reports/errors.py", "jobs.runner"),
    "reconcile-layers": ("reconcile/state/audit.py", "reconcile.listing.resume"),
    "reconcile-layers-exhaustive": ("reconcile/unplaced.py", None),
    "commands-on-top": ("jobs/summary.py", "jobs.commands.support"),
    "no-sandbox-in-product": ("reconcile/logs.py", "sandbox.demo"),
    "pure-rules": ("reconcile/rules/cards.py", "reconcile.errors"),
    "acyclic": ("reconcile/listing/parts.py", "reconcile.listing.walk"),
    # The sandbox is held to it too: the store bringing back its history step.
    "acyclic-sandbox": ("sandbox/store.py", "sandbox.history"),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_each_contract_breaks_on_a_planted_violation(case: str, tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    contract = case.removesuffix("-exhaustive").removesuffix("-sandbox")
    assert lint_imports(tmp_path, contract).returncode == 0, "kept before the change"
    module, imported = VIOLATIONS[case]
    code = "X = 1\n" if imported is None else f"def _f() -> None:\n    import {imported}\n"
    with (tmp_path / module).open("a") as file:
        file.write("\n\n" + code)
    result = lint_imports(tmp_path, contract)
    assert result.returncode != 0, result.stdout
    assert "1 broken" in result.stdout, result.stdout + result.stderr
