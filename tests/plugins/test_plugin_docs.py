"""docs/plugins.md documents every built-in plugin and every one of its settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import guardrails as gr

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text(encoding="utf-8")
BUILT_INS = ["pii", "deny_list", "regex", "size_limit", "json_schema", "rate_limit",
             "invariants", "drift_budget", "update_rate_limit", "provenance"]


def section(name: str) -> str:
    match = re.search(rf"^### `{re.escape(name)}` .*?(?=^### |\Z)", DOC, re.S | re.M)
    assert match is not None, f"docs/plugins.md has no section for {name!r}"
    return match.group(0)


@pytest.mark.parametrize("name", BUILT_INS)
def test_every_setting_of_a_built_in_is_in_its_reference_table(name: str) -> None:
    """Each settings field of the plugin appears as a row of its section's table."""
    text = section(name)
    for key in gr.load_plugin(name).settings.model_fields:
        assert f"| `{key}` |" in text, f"{name}: setting {key!r} is not documented"


def test_the_docs_name_every_registry_function() -> None:
    """The registry API table lists every public plugin name exported by guardrails."""
    for name in ("load_plugin", "installed_plugins", "merge_parts", "apply_on_error",
                 "PluginParts", "PluginInfo", "PluginError", "PLUGIN_GROUP"):
        assert f"`{name}" in DOC
