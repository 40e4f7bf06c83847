"""The pipe protocol between the parent and a sandbox child: frames of pickles.

Parent to child: ordinary pickles (the parent is trusted). Child to parent:
decoded by an unpickler that resolves no globals, so a child sends data,
never code.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import types
from typing import Any

from .._errors import ConfigError

_MiB = 1024 * 1024
_HEADER = struct.Struct(">Q")

_PLAIN_GLOBALS = frozenset({("builtins", "complex")})
"""The one global a plain value needs: ``complex`` pickles as a call to it."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return complex
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


def _loads_plain(data: bytes) -> Any:
    """Decode a pickle holding only plain values; anything else raises ``UnpicklingError``."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class _ClientPickler(pickle.Pickler):
    """Pickles the client and notes every class or function it needs from ``__main__``.

    The child is a fresh interpreter that does not run the parent's main
    script, so those would fail to load there; better to say so in the parent.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.from_main: list[str] = []
        self.modules: set[str] = set()
        """Every module a class or function of the client comes from (the template preloads them)."""

    def persistent_id(self, obj: Any) -> None:
        kind = obj if isinstance(obj, type | types.FunctionType) else type(obj)
        module = getattr(kind, "__module__", None)
        if module == "__main__":
            self.from_main.append(getattr(kind, "__qualname__", repr(kind)))
        elif isinstance(module, str):
            self.modules.add(module)
        return None


def _pickle_client(client: Any) -> tuple[bytes, frozenset[str]]:
    """The pickled client and the modules it needs; ``ConfigError`` when it cannot be sent."""
    name = type(client).__qualname__
    buffer = io.BytesIO()
    pickler = _ClientPickler(buffer)
    try:
        pickler.dump(client)
    except Exception as exc:
        raise ConfigError(
            f"the {name} client cannot be pickled for the process sandbox "
            f"({type(exc).__name__}: {exc}); use sandbox=\"inline\" or make the client "
            "picklable (module-level classes and functions, no lambdas, locks or open "
            "connections, or a __reduce__ that rebuilds them)") from None
    if pickler.from_main:
        raise ConfigError(
            f"the {name} client needs {', '.join(sorted(set(pickler.from_main)))} from __main__, "
            "which the sandbox child cannot import; move it to an importable module or use "
            "sandbox=\"inline\"")
    return buffer.getvalue(), frozenset(pickler.modules)


def _read_exact(fd: int, size: int) -> bytes | None:
    """Blocking read of exactly ``size`` bytes (child side); ``None`` on end of file."""
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, _MiB))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


