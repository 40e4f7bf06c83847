"""Plugin specs and the entry-point registry (group ``guardrails.plugins``).

The core knows plugins only through this registry, never by importing one.
Imports ``chain``, ``canary``, ``gate`` and the shared modules.
"""

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
