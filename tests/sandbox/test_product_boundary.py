"""The product (reconcile, jobs, reports) never imports the sandbox: not at the top of a
module, not inside a function, not under TYPE_CHECKING, not by name through importlib.
The sandbox reaches the CLI through the `stripe_reconcile.commands` entry points instead."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("reconcile", "jobs", "reports")
FORBIDDEN = "sandbox"


def _is_forbidden(module: str) -> bool:
    return module == FORBIDDEN or module.startswith(FORBIDDEN + ".")


def sandbox_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of the sandbox package anywhere in `source`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if _is_forbidden(node.module):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                name in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _is_forbidden(first.value)
            ):
                found.append((node.lineno, first.value))
    return found


def test_the_check_finds_every_kind_of_import() -> None:
    source = (
        "from __future__ import annotations\n"
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "import sandboxed_thing\n"
        "if TYPE_CHECKING:\n"
        "    from sandbox.store import SandboxStore\n"
        "def run() -> None:\n"
        "    import sandbox.runner as runner\n"
        "    from sandbox import demo\n"
        "    importlib.import_module('sandbox.seed')\n"
        "    __import__('sandbox')\n"
        "    from . import sandbox_like\n"
    )
    assert sandbox_imports(source) == [
        (6, "sandbox.store"),
        (8, "sandbox.runner"),
        (9, "sandbox"),
        (10, "sandbox.seed"),
        (11, "sandbox"),
    ]


def test_no_product_module_imports_the_sandbox() -> None:
    files = [path for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 50  # the walk found the product
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in sandbox_imports(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
