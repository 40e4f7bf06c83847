"""A blob store checked against the states that reference it: verify, and collect garbage."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ._blobs import BlobError, BlobInfo, BlobIntegrityError, BlobStore, iter_blob_refs


class _Discard:
    """A sink that keeps nothing: a blob streamed here is only hashed."""

    def write(self, chunk: bytes) -> int:
        return len(chunk)


class BlobProblem(BaseModel):
    """One referenced blob that is not there as its digest says."""

    model_config = ConfigDict(frozen=True)

    digest: str
    states: tuple[str, ...]
    """The versions of the states that reference it."""
    problem: Literal["missing", "altered", "unreadable"]
    message: str


class BlobAudit(BaseModel):
    """What ``verify_blobs`` found: ``ok`` only when every required blob is present and intact."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    checked: int
    """Distinct blobs read and hashed."""
    problems: tuple[BlobProblem, ...] = ()


def _references(states: Mapping[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for version, state in states.items():
        for digest in iter_blob_refs(state):
            found.setdefault(digest, []).append(version)
    return found


def _check(store: BlobStore, digest: str) -> tuple[str, str] | None:
    """``None`` if the blob is present and matches its digest, else (problem, message)."""
    try:
        read_into = getattr(store, "read_into", None)
        if read_into is not None:
            read_into(digest, _Discard())
        else:
            store.get(digest)
    except KeyError:
        return "missing", f"blob {digest} is not in the store"
    except BlobIntegrityError as exc:
        return "altered", str(exc)
    except BlobError as exc:
        return "unreadable", str(exc)
    except Exception as exc:  # a store that cannot be read proves nothing
        return "unreadable", f"blob {digest} could not be read ({type(exc).__name__}: {exc})"
    return None


def verify_blobs(store: BlobStore, required: Mapping[str, Any],
                 optional: Mapping[str, Any] | None = None) -> BlobAudit:
    """Read and hash every blob the ``required`` states reference (version -> state): each
    must be present and intact. Blobs only ``optional`` states reference (a rejected
    candidate's) may be absent, but one that is present must be intact. Streams each blob
    when the store can, so no blob is held in memory whole."""
    needed, extra = _references(required), _references(optional or {})
    problems = []
    checked = 0
    for digest in sorted(set(needed) | set(extra)):
        checked += 1
        found = _check(store, digest)
        if found is None or (found[0] == "missing" and digest not in needed):
            continue
        states = tuple(sorted(set(needed.get(digest, []) + extra.get(digest, []))))
        problems.append(BlobProblem(digest=digest, states=states, problem=found[0],
                                    message=found[1]))
    return BlobAudit(ok=not problems, checked=checked, problems=tuple(problems))


def unreferenced_blobs(store: Any, states: Iterable[Any], *, grace: float,
                       now: float | None = None) -> Iterator[BlobInfo]:
    """The blobs of ``store`` that no state in ``states`` references and that were stored more
    than ``grace`` seconds ago (a blob stored for a proposal not yet recorded is young)."""
    referenced = {digest for state in states for digest in iter_blob_refs(state)}
    cutoff = (time.time() if now is None else now) - grace
    for info in store.blobs():
        if info.digest not in referenced and info.created < cutoff:
            yield info
