"""The house by folder: packages by concept, layered imports, small pieces (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

import guardrails as gr

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "guardrails"
PLUGINS = ROOT / "plugins" / "guardrails_plugins"

# What each part of the core may import, bottom to top (the shared top-level modules are
# importable from everywhere and are left out). A package not listed imports none.
LAYERS: dict[str, set[str]] = {
    "ledger": {"blobs"},
    "rollout": {"blobs", "ledger", "stats"},
    "gate": {"blobs", "canary", "ledger", "sandbox", "stats"},
    "plugin": {"canary", "chain", "gate"},
    "_config": {"blobs", "canary", "gate", "ledger", "plugin", "rollout", "sandbox"},
    "guard": {"_config", "blobs", "canary", "chain", "gate", "ledger", "plugin", "rollout",
              "sandbox", "stats"},
    "canary": {"blobs"},
    "report": {"_config", "blobs", "canary", "gate", "guard", "ledger", "rollout", "stats"},
}
SHARED = {"_canonical", "_client", "_decision", "_errors", "_messages", "_telemetry", "_threads"}
PACKAGES = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").exists())


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _part(path: Path) -> str:
    """The package (or top-level module) of the core a file belongs to."""
    rel = path.relative_to(CORE).parts
    return rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, str]]:
    """(imported core part, imported module path below it) for every relative import."""
    found = []
    nested = len(path.relative_to(CORE).parts) > 1
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level and node.module:
            if nested and node.level == 1:
                continue  # within its own package
            head, _, rest = node.module.partition(".")
            found.append((head, rest))
    return found


def test_every_package_has_a_docstring_saying_what_it_owns() -> None:
    """Each sub-package of the core opens with a module docstring of at least one sentence."""
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((CORE / name / "__init__.py").read_text()))
        assert doc and len(doc) > 40, name


@pytest.mark.parametrize("part", [*sorted(LAYERS), "blobs", "chain", "sandbox", "stats"])
def test_a_part_of_the_core_imports_only_what_sits_below_it(part: str) -> None:
    """No part imports a package above it in the layering of docs/architecture.md."""
    allowed = LAYERS.get(part, set()) | SHARED | {"_errors"}
    files = [p for p in _modules(CORE) if _part(p) == part]
    assert files, part
    wrong = {(str(p.relative_to(ROOT)), head) for p in files for head, _ in _imports(p)
             if head != part and head not in allowed}
    assert wrong == set()


def test_no_module_imports_another_packages_private_modules() -> None:
    """Across packages, imports go through the owning package's public names."""
    wrong = [(str(p.relative_to(ROOT)), f"{head}.{rest}") for p in _modules(CORE)
             for head, rest in _imports(p) if rest and rest.startswith("_")]
    for path in _modules(PLUGINS):
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("guardrails.") and any(
                    part.startswith("_") for part in module.split(".")[1:]):
                wrong.append((str(path.relative_to(ROOT)), module))
    assert wrong == []


def test_no_function_over_60_lines_and_no_class_over_400() -> None:
    """Small composable pieces: the limits of the house style hold in the whole core."""
    too_long = []
    for path in _modules(CORE):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = (60 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                     else 400 if isinstance(node, ast.ClassDef) else None)
            if limit and node.end_lineno - node.lineno + 1 > limit:  # type: ignore[operator]
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert too_long == []


def test_the_architecture_page_names_only_packages_that_exist() -> None:
    """Every `guardrails/NAME/` and plugin folder docs/architecture.md names is a real package,
    and every core package is named there."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`guardrails/(\w+)/`", text))
    assert named == set(PACKAGES)
    for folder in re.findall(r"`guardrails_plugins/(\w+)/`", text):
        assert (PLUGINS / folder / "__init__.py").exists(), folder


def test_the_update_path_is_the_stage_list_in_order() -> None:
    """A guard's stages are the documented list; approval sits in it only when configured."""
    names = [getattr(s, "__name__", "") for s in gr.Guard(canaries=[
        gr.CanaryCase(id="a", input="x", expect="y")]).stages]
    assert names == ["validate", "static_checks", "sandbox", "canary", "decision", "promotion"]
    with_approval = gr.Guard(canaries=[gr.CanaryCase(id="a", input="x", expect="y")],
                             approval=gr.ApprovalPolicy())
    assert "approval" in [getattr(s, "__name__", "") for s in with_approval.stages]


@pytest.mark.parametrize(("old", "new"), [
    ("guardrails_plugins.openai_adapter", "guardrails_plugins.adapters.openai"),
    ("guardrails_plugins.pii", "guardrails_plugins.policies.pii"),
    ("guardrails_plugins.invariants", "guardrails_plugins.checks.invariants"),
    ("guardrails_plugins.demo_digits", "guardrails_plugins.demos.digits"),
])
def test_a_moved_plugin_path_still_imports_with_a_warning_naming_the_new_one(
        old: str, new: str) -> None:
    """The 0.1 module paths resolve to the new modules and say where they went."""
    import importlib
    import sys

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message)
               for w in caught)


def test_the_deprecated_drift_budget_plugin_builds_the_core_check_with_a_warning() -> None:
    """`[[policies]] plugin = "drift_budget"` still works, warns, and measures like the
    constraint that replaces it."""
    with pytest.warns(DeprecationWarning, match=r"\[constraints\] drift_budget"):
        (check,) = gr.load_plugin("drift_budget").build({"budget": 0.2}).checks
    constraint = gr.FrozenConstraints(drift_budget=0.2).drift_check()
    assert constraint is not None
    anchor, candidate = {"p": "abcdefghij"}, {"p": "abcdefghXY"}
    expected = constraint.measure(anchor, candidate, None)
    assert [f.passed for f in check.measure(anchor, candidate, None)] == [  # type: ignore[attr-defined]
        f.passed for f in expected] == [True]
