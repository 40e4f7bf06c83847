"""Update proposals: RFC 6902 JSON Patch operations against a parent version."""

from __future__ import annotations

import copy
import uuid
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

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        """Return the patched copy of ``state``; ``state`` is left untouched.

        Raises ``ValueError`` naming the operation that could not apply.
        """
        doc = copy.deepcopy(state)
        for index, op in enumerate(self.patch_json()):
            try:
                doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise ValueError(f"patch operation {index} ({op['op']} {op['path']!r}): {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("the patched state is not a JSON object; a state must stay an object")
        return doc
