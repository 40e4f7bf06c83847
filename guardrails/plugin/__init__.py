"""Plugin specs and the entry-point registry (group ``guardrails.plugins``).

The core knows plugins only through this registry, never by importing one.
Imports ``chain``, ``canary``, ``gate`` and the shared modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time __getattr__ loads them
    from ._registry import (
        PLUGIN_GROUP,
        Plugin,
        PluginError,
        PluginInfo,
        PluginParts,
        PluginSettings,
        RuntimePolicySettings,
        apply_on_error,
        fitting_adapters,
        installed_plugins,
        load_plugin,
        merge_parts,
    )

_LAZY: dict[str, str] = {
    "PLUGIN_GROUP": "._registry",
    "Plugin": "._registry",
    "PluginError": "._registry",
    "PluginInfo": "._registry",
    "PluginParts": "._registry",
    "PluginSettings": "._registry",
    "RuntimePolicySettings": "._registry",
    "apply_on_error": "._registry",
    "fitting_adapters": "._registry",
    "installed_plugins": "._registry",
    "load_plugin": "._registry",
    "merge_parts": "._registry",
}
"""Where each lazily loaded name lives (module relative to this package)."""

__all__ = [
    "PLUGIN_GROUP",
    "Plugin",
    "PluginError",
    "PluginInfo",
    "PluginParts",
    "PluginSettings",
    "RuntimePolicySettings",
    "apply_on_error",
    "fitting_adapters",
    "installed_plugins",
    "load_plugin",
    "merge_parts",
]


def __getattr__(name: str) -> Any:
    # PEP 562: a name's module is imported on first use, so importing this package costs
    # only what is used.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
