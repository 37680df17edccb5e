"""Importing a library without the optional extras it would load on its own.

Some libraries probe for optional packages when first imported (the Stripe SDK for its
async HTTP clients, structlog for rich): when those are installed, a run pays for
importing them before its first request, though it never uses them. `import_without`
marks them absent (`None` in `sys.modules`, which makes their import raise ImportError)
for the library's first import only, and takes the marks away at once: a later import of
an extra (the progress bar's rich, the sandbox's aiohttp) works as usual.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

__all__ = ["import_without"]


def import_without(module: str, absent: Iterable[str]) -> None:
    """Import `module` (if not imported yet) as if the `absent` packages were not
    installed; packages already imported stay what they are."""
    if module in sys.modules:
        return
    marked = [name for name in absent if name not in sys.modules]
    for name in marked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        importlib.import_module(module)
    finally:
        for name in marked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
