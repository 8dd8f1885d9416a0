"""Analysis (ledger -> metrics -> capacity, recovery, sizing) and renderers (HTML, Markdown, JSON, JUnit).

The runner's entry point is ``mailstorm.reports.build(run_dir) -> mailstorm.reports.builder.Verdict``
(``.passed``).
Imported lazily so ``import mailstorm.reports.spec`` (the scenario model does) stays light: no numpy, scipy or
matplotlib until a report is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailstorm.reports.builder import Verdict, build

__all__ = ["Verdict", "build"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("mailstorm.reports.builder"), name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
