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
