"""Update proposals: RFC 6902 JSON Patch operations against a parent version.

A proposal comes from the model, so its size is bounded before anything
walks it (``ProposalLimits``): the number of operations, its serialized size,
the nesting depth of its values, and the size and depth of the state it
produces, ``copy`` amplification included.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import jsonpatch
import jsonpointer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)

PatchOp = Literal["add", "remove", "replace", "move", "copy", "test"]

ProposalLimit = Literal["max_ops", "max_bytes", "max_depth", "max_state_bytes"]
"""The limits a ``ProposalTooLarge`` can name."""

_NEEDS_VALUE = {"add", "replace", "test"}
_NEEDS_FROM = {"move", "copy"}


def _check_pointer(pointer: str, field: str) -> str:
    try:
        jsonpointer.JsonPointer(pointer)
    except jsonpointer.JsonPointerException as exc:
        raise ValueError(
            f"{field} {pointer!r} is not a JSON Pointer (RFC 6901): {exc}; "
            "write '' for the whole state or '/key/0', escaping '~' as '~0' and '/' as '~1'"
        ) from None
    return pointer


class ProposalTooLarge(ValueError):
    """A proposal, or the state it would produce, exceeds one of the ``ProposalLimits``.

    ``limit`` names it (``max_ops``, ``max_bytes``, ``max_depth``,
    ``max_state_bytes``) and ``configured`` is its value.
    """

    def __init__(self, limit: ProposalLimit, configured: int, what: str) -> None:
        hint = "; large artifacts belong in the blob store" if limit.endswith("bytes") else ""
        super().__init__(f"{what} exceeds the {limit} limit ({configured:,}): the proposal was "
                         f"not evaluated{hint} (raise ProposalLimits.{limit} if this is legitimate)")
        self.limit: ProposalLimit = limit
        self.configured = configured


class ProposalLimits(BaseModel):
    """How large a proposal, and the state it produces, may be. Part of the guard's fingerprint.

    Checked before a proposal is parsed, serialised or applied, in time and
    memory bounded by the limits themselves, so an oversized or deeply
    nested proposal is rejected cheaply with a ``proposal_limits`` finding.
    Sizes are approximate JSON bytes: the length of every string and key
    plus a few bytes per value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_ops: int = Field(default=1_000, ge=1)
    """Operations in one patch."""
    max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Size of the whole proposal: patch, rationale and the other fields."""
    max_depth: int = Field(default=64, ge=1, le=500)
    """Nesting of any value in the patch, and of the candidate state (objects and arrays
    count one level each); well below Python's recursion limit."""
    max_state_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Size of the candidate state, and of everything ``copy`` operations duplicate."""

    def check(self, proposal: UpdateProposal | Mapping[str, Any] | Any) -> None:
        """Raise ``ProposalTooLarge`` when a proposal (object or raw JSON) is over a limit."""
        if isinstance(proposal, UpdateProposal):
            if len(proposal.patch) > self.max_ops:
                raise ProposalTooLarge("max_ops", self.max_ops,
                                       f"the number of operations ({len(proposal.patch):,})")
            fields = [proposal.rationale, proposal.source, proposal.kind, proposal.signature,
                      proposal.id, proposal.parent]
            values = [op.value for op in proposal.patch]
            pointers = [p for op in proposal.patch for p in (op.path, op.from_) if p]
            self._check_values(fields + pointers, values, offset=0)
            return
        patch = proposal.get("patch") if isinstance(proposal, Mapping) else None
        if isinstance(patch, list | tuple) and len(patch) > self.max_ops:
            raise ProposalTooLarge("max_ops", self.max_ops,
                                   f"the number of operations ({len(patch):,})")
        # A raw proposal nests its values three levels down (proposal, patch, operation).
        self._check_values([], [proposal], offset=3)

    def _check_values(self, flat: list[Any], values: list[Any], offset: int) -> None:
        budget = self.max_bytes
        for item in flat:
            budget -= _approximate_size(item)
        for value in values:
            size, depth = measure(value, max_depth=self.max_depth + offset, max_bytes=max(budget, 0))
            if depth - offset > self.max_depth:
                raise ProposalTooLarge("max_depth", self.max_depth,
                                       "the nesting of a value in the patch")
            budget -= size
            if budget < 0:
                break
        if budget < 0:
            raise ProposalTooLarge("max_bytes", self.max_bytes, "the size of the proposal")


def _short(pointer: str) -> str:
    return repr(pointer if len(pointer) <= 60 else pointer[:57] + "...")


def _approximate_size(value: Any) -> int:
    """Approximate JSON bytes of one scalar (strings: their length; numbers: their digits)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 10 // 33 + 2  # decimal digits, without building the text
    return 24


def measure(value: Any, *, max_depth: int, max_bytes: int) -> tuple[int, int]:
    """``(approximate JSON bytes, nesting depth)`` of ``value``, without recursion.

    Stops as soon as the depth passes ``max_depth`` or the size passes
    ``max_bytes`` (the result then exceeds that limit), so the time is bounded
    by the limits, not by the value, and the memory by the depth (one iterator
    per open object or array). Objects and arrays are one level each; every
    member takes at least three bytes (a separator and a two-byte value), so an
    oversized array or object is refused before it is walked.
    """
    size = depth = 0
    stack: list[Iterator[tuple[Any, Any]]] = []
    item = value
    while True:
        if isinstance(item, dict | list | tuple):
            if len(stack) >= max_depth:
                return size, len(stack) + 1
            bound = size + 2 + 3 * len(item)
            if bound > max_bytes:
                return bound, max(depth, len(stack) + 1)
            size += 2 + len(item)
            stack.append(iter(item.items()) if isinstance(item, dict)
                         else ((None, child) for child in item))
            depth = max(depth, len(stack))
        else:
            size += _approximate_size(item)
            if size > max_bytes:
                return size, depth
        while stack:  # the next member of the innermost open container
            member: tuple[Any, Any] | None = next(stack[-1], None)
            if member is None:
                stack.pop()
                continue
            key, item = member
            if key is not None:
                size += _approximate_size(key)
            break
        else:
            return size, depth


class PatchOperation(BaseModel):
    """One RFC 6902 operation. ``value`` may be JSON ``null``; absent and null differ."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    op: PatchOp
    path: str
    value: Any = None
    from_: str | None = Field(default=None, alias="from")

    @field_validator("path")
    @classmethod
    def _path_is_pointer(cls, v: str) -> str:
        return _check_pointer(v, "path")

    @field_validator("from_")
    @classmethod
    def _from_is_pointer(cls, v: str | None) -> str | None:
        return None if v is None else _check_pointer(v, "from")

    @model_validator(mode="after")
    def _has_operands(self) -> PatchOperation:
        if self.op in _NEEDS_VALUE and "value" not in self.model_fields_set:
            raise ValueError(f"a {self.op!r} operation needs a 'value'")
        if self.op in _NEEDS_FROM and self.from_ is None:
            raise ValueError(f"a {self.op!r} operation needs a 'from' pointer")
        return self

    def as_json(self) -> dict[str, Any]:
        """The operation as the RFC 6902 JSON object."""
        return self.model_dump(by_alias=True, exclude_unset=True)


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class UpdateProposal(BaseModel):
    """A change a model (or an operator) proposes to the served state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parent: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Version id of the state the patch applies to; must be the served version."""
    patch: tuple[PatchOperation, ...] = Field(min_length=1)
    """RFC 6902 operations, applied in order to the parent state."""
    kind: str = Field(default="state", pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    """What is changing: ``prompt``, ``params``, ``weights``, ``memory``, ``code`` or ``state``."""
    rationale: str = ""
    """The model's own account of why the change is better (never trusted as evidence)."""
    source: str = "model"
    """Who proposed it: ``model``, ``operator``, an optimiser's name."""
    id: str = Field(default_factory=_new_id)
    """Unique id of the proposal, recorded in the ledger."""
    signature: str | None = None
    """Optional signature over the proposal by its source (see the ``provenance``
    plugin); not covered by itself, never used as evidence of quality."""
    created_at: datetime = Field(default_factory=_now)

    @field_serializer("patch")
    def _patch_as_rfc6902(self, patch: tuple[PatchOperation, ...]) -> list[dict[str, Any]]:
        # Dumps (and so the ledger) hold the operations as sent: 'from', no unset members.
        return [op.as_json() for op in patch]

    def patch_json(self) -> list[dict[str, Any]]:
        """The patch as a list of RFC 6902 JSON objects."""
        return [op.as_json() for op in self.patch]

    def apply(self, state: dict[str, Any], limits: ProposalLimits | None = None) -> dict[str, Any]:
        """Return the patched copy of ``state``; ``state`` is left untouched.

        Raises ``ValueError`` naming the operation that could not apply, and,
        given ``limits``, ``ProposalTooLarge`` (a ``ValueError``) as soon as an
        operation would make the state deeper than ``max_depth`` or duplicate
        more than ``max_state_bytes`` (``copy``), or the result is over either.
        """
        doc = copy.deepcopy(state)
        copied = 0
        for index, op in enumerate(self.patch_json()):
            if limits is not None and op["op"] in ("add", "replace", "copy"):
                copied += self._check_growth(doc, op, index, limits, copied)
            try:
                doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise ValueError(f"patch operation {index} ({op['op']} {op['path']!r}): {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("the patched state is not a JSON object; a state must stay an object")
        if limits is not None:
            size, depth = measure(doc, max_depth=limits.max_depth,
                                  max_bytes=limits.max_state_bytes)
            if depth > limits.max_depth:
                raise ProposalTooLarge("max_depth", limits.max_depth,
                                       "the nesting of the candidate state")
            if size > limits.max_state_bytes:
                raise ProposalTooLarge("max_state_bytes", limits.max_state_bytes,
                                       "the size of the candidate state")
        return doc

    @staticmethod
    def _check_growth(doc: Any, op: dict[str, Any], index: int, limits: ProposalLimits,
                      copied: int) -> int:
        """Bytes a ``copy`` duplicates (0 for the others); raises before an ``add``,
        ``replace`` or ``copy`` nests the state too deep or adds more than ``max_state_bytes``.

        The values of ``add`` and ``replace`` were bounded by ``ProposalLimits.check``; only
        ``copy`` can multiply the state (each one may double it), so what all copies
        duplicate is bounded in total and measured before it is copied.
        """
        if op["op"] == "copy":
            try:
                value = jsonpointer.resolve_pointer(doc, op["from"])
            except jsonpointer.JsonPointerException:
                return 0  # the operation fails on its own, with its own message
            room = max(limits.max_state_bytes - copied, 0)
        else:
            value, room = op.get("value"), limits.max_state_bytes
        size, depth = measure(value, max_depth=limits.max_depth, max_bytes=room)
        if len(jsonpointer.JsonPointer(op["path"]).parts) + depth > limits.max_depth:
            raise ProposalTooLarge("max_depth", limits.max_depth,
                                   f"the nesting of the state after patch operation {index} "
                                   f"({op['op']} {_short(op['path'])})")
        if size > room:
            raise ProposalTooLarge("max_state_bytes", limits.max_state_bytes,
                                   f"what patch operation {index} ({op['op']} "
                                   f"{_short(op['path'])}) adds to the state" if op["op"] != "copy"
                                   else f"what the copy operations duplicate, at operation "
                                   f"{index} (copy {_short(op['from'])} to {_short(op['path'])})")
        return size if op["op"] == "copy" else 0
