"""The public API: one flat, sorted, complete export list."""

from __future__ import annotations

import inspect

import guardrails as gr


def _private(module: str) -> bool:
    """A module of guardrails whose path has a private part (``guardrails.ledger._sqlite``)."""
    parts = module.split(".")
    return parts[0] == "guardrails" and any(part.startswith("_") for part in parts[1:])


def test_every_exported_name_exists() -> None:
    """Every name in guardrails.__all__ is an attribute of the package."""
    missing = [name for name in gr.__all__ if not hasattr(gr, name)]
    assert missing == []


def test_all_is_sorted_and_unique() -> None:
    """__all__ is sorted (case-sensitive, as ruff's isort-style sort) and has no duplicates."""
    assert list(gr.__all__) == sorted(set(gr.__all__))


def test_every_public_name_imported_from_a_private_module_is_exported() -> None:
    """Each public class or function defined in a private guardrails module and imported in
    __init__ is listed in __all__."""
    unlisted = [
        name
        for name, value in vars(gr).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and _private(getattr(value, "__module__", ""))
        and name not in gr.__all__
    ]
    assert unlisted == []


def test_exported_names_come_from_private_modules() -> None:
    """Every exported class or function is defined in a private guardrails module."""
    public_modules = sorted(
        {
            getattr(gr, name).__module__
            for name in gr.__all__
            if inspect.isclass(getattr(gr, name)) or inspect.isfunction(getattr(gr, name))
        }
    )
    assert all(_private(module) for module in public_modules), public_modules


def test_package_is_typed() -> None:
    """The package ships a py.typed marker so type checkers use its annotations."""
    from importlib.resources import files

    assert files("guardrails").joinpath("py.typed").is_file()


def _loaded_after(code: str) -> set[str]:
    """Module names a fresh interpreter has loaded after running ``code``."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_package_loads_none_of_its_parts() -> None:
    """`import guardrails` is cheap: no sub-package, pydantic or OpenTelemetry until a name is used."""
    loaded = _loaded_after("import guardrails")
    assert {m for m in loaded if m.startswith("guardrails.")} == set()
    assert not loaded & {"pydantic", "opentelemetry", "structlog"}


def test_a_lazily_loaded_name_is_the_object_its_module_defines() -> None:
    """`gr.X` and `from guardrails import X` give the very object the owning module exports."""
    from guardrails import SQLiteLedger
    from guardrails.ledger import SQLiteLedger as owned

    assert SQLiteLedger is owned is gr.SQLiteLedger
    assert set(gr.__all__) <= set(dir(gr))


def test_an_unknown_name_is_an_attribute_error() -> None:
    """A name the package does not export raises AttributeError, as for any module."""
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Gaurd'"):
        _ = gr.Gaurd  # type: ignore[attr-defined]


def test_the_version_and_help_of_the_command_line_load_no_configuration() -> None:
    """`guardrails --version` and `--help` import click, not the configuration or the ledger."""
    for flag in ("--version", "--help"):
        loaded = _loaded_after(
            "import contextlib, io\nfrom guardrails._cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main([{flag!r}])\n    except SystemExit:\n        pass")
        assert not loaded & {"guardrails._config", "guardrails.ledger", "pydantic"}, flag
