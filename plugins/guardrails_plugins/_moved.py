"""The 0.1 import paths of the built-in plugins, kept working until 0.3.

A finder on ``sys.meta_path`` answers ``import guardrails_plugins.pii`` (and
the other flat 0.1 paths) with the module at its new home, after a
``DeprecationWarning`` that names that home. No file per old path is needed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

MOVED = {
    "pii": "policies.pii", "deny_list": "policies.deny_list", "regex": "policies.regex",
    "size_limit": "policies.size_limit", "json_schema": "policies.json_schema",
    "rate_limit": "policies.rate_limit",
    "invariants": "checks.invariants", "drift_budget": "checks.drift_budget",
    "update_rate_limit": "checks.update_rate_limit", "provenance": "checks.provenance",
    "openai_adapter": "adapters.openai", "openai_testing": "adapters.openai_testing",
    "langchain_adapter": "adapters.langchain", "langchain_testing": "adapters.langchain_testing",
    "dspy_adapter": "adapters.dspy", "sklearn_adapter": "adapters.sklearn",
    "river_adapter": "adapters.river", "demo_digits": "demos.digits",
}
"""Old module name under ``guardrails_plugins`` -> its module path since 0.2."""

_PACKAGE = __name__.rpartition(".")[0]


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.target}; import it from there "
                      "(the old path goes away in 0.3)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed; the old name only points at it."""


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves the 0.1 module paths of ``guardrails_plugins`` to their new homes."""

    def find_spec(self, fullname: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(f"{_PACKAGE}.{MOVED[name]}"))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
