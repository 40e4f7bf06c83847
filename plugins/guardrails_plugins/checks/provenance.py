"""``provenance``: only allow-listed sources may propose, optionally signed (HMAC-SHA256 or Ed25519).

``UpdateProposal.source`` is declared by whoever builds the proposal, so an
allow-list alone only stops mistakes; a model that can write its own
proposals can also write ``source = "operator"``. Give a source a key and
its proposals must carry a valid signature: a hex HMAC-SHA256, under that
key, over the canonical JSON (``guardrails.canonical_json``) of::

    {"id": ..., "parent": ..., "patch": proposal.patch_json(), "kind": ..., "source": ...}

(``signing_payload`` builds it and ``sign_proposal`` signs it). The parent
pins the state the patch applies to and the id makes each signature
single-use in the ledger.

The signature travels in ``UpdateProposal.signature``. An application that
cannot change how proposals are built may instead fill the check's
``signatures`` mapping (proposal id to hex signature) before proposing::

    parts = load_plugin("provenance").build(settings)
    parts.checks[0].signatures[proposal.id] = signature

Public contributors cannot share a secret: give such a source an Ed25519
*public* key instead (``public_keys``, a keyring: source to the 32-byte raw
public key as 64 hex digits). Its proposals must then carry the hex Ed25519
signature of the same payload, made with the contributor's private key
(``sign_proposal_ed25519``); the guard holds nothing secret for it. A source
has either a shared key or a public key, never both.

A signature is consumed when checked, and a signed proposal whose id the
ledger has already decided is refused as a replay. Keys are read from the settings
(``keys``, secret) or from environment variables (``key_env``) when the
plugin is built; a missing variable stops the guard from starting. Keys
are UTF-8 text.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, model_validator

import guardrails as gr

if TYPE_CHECKING:
    # Imported where used: cryptography is large and most guards never verify a public key.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def signing_payload(proposal: gr.UpdateProposal) -> bytes:
    """The bytes a provenance signature covers (see the module docstring)."""
    return gr.canonical_json({"id": proposal.id, "parent": proposal.parent,
                              "patch": proposal.patch_json(), "kind": proposal.kind,
                              "source": proposal.source})


def sign_proposal(proposal: gr.UpdateProposal, key: str | bytes) -> str:
    """The hex HMAC-SHA256 of ``signing_payload(proposal)`` under ``key``."""
    secret = key.encode("utf-8") if isinstance(key, str) else key
    return hmac.new(secret, signing_payload(proposal), hashlib.sha256).hexdigest()


def sign_proposal_ed25519(proposal: gr.UpdateProposal, private_key: Ed25519PrivateKey) -> str:
    """The hex Ed25519 signature of ``signing_payload(proposal)`` under ``private_key``."""
    return private_key.sign(signing_payload(proposal)).hex()


def _public_key(source: str, text: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.strip()))
    except ValueError:
        raise ValueError(f"public_keys[{source!r}] is not an Ed25519 public key: give the 32 raw "
                         "bytes as 64 hex digits") from None


class ProvenanceSettings(gr.PluginSettings):
    """Settings of the ``provenance`` plugin."""

    allowed_sources: tuple[str, ...] = Field(min_length=1)
    """Sources that may propose (``UpdateProposal.source``)."""
    keys: dict[str, SecretStr] = Field(default_factory=dict)
    """HMAC keys by source, inline. Prefer ``key_env`` outside tests."""
    key_env: dict[str, str] = Field(default_factory=dict)
    """Names of environment variables holding the HMAC key, by source."""
    public_keys: dict[str, str] = Field(default_factory=dict)
    """Ed25519 public keys by source (64 hex digits each): the keyring of trusted proposers
    who sign with their own private key. Public, so safe in the configuration."""
    require_signature: bool = False
    """Every allowed source must have a key, so every proposal must be signed."""

    @model_validator(mode="after")
    def _consistent(self) -> ProvenanceSettings:
        allowed = set(self.allowed_sources)
        for source, text in self.public_keys.items():
            _public_key(source, text)
        for field in ("keys", "key_env", "public_keys"):
            stray = sorted(set(getattr(self, field)) - allowed)
            if stray:
                raise ValueError(f"{field} names {', '.join(map(repr, stray))}, not in "
                                 "allowed_sources; add them there or remove the key")
        keyed = [set(self.keys), set(self.key_env), set(self.public_keys)]
        both = sorted((keyed[0] & keyed[1]) | (keyed[2] & (keyed[0] | keyed[1])))
        if both:
            raise ValueError(f"{', '.join(map(repr, both))} has more than one key (keys, key_env, "
                             "public_keys); keep one")
        if self.require_signature:
            unkeyed = sorted(allowed - set(self.keys) - set(self.key_env) - set(self.public_keys))
            if unkeyed:
                raise ValueError(f"require_signature is set but {', '.join(map(repr, unkeyed))} "
                                 "has no key; give every allowed source a key")
        return self


class Signatures(MutableMapping[str, str]):
    """A thread-safe mapping from proposal id to hex signature."""

    def __init__(self) -> None:
        self._items: dict[str, str] = {}
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __setitem__(self, key: str, value: str) -> None:
        with self._lock:
            self._items[key] = value

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._items[key]

    def __iter__(self) -> Any:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def take(self, key: str) -> str | None:
        """Remove and return the signature for ``key``, if any."""
        with self._lock:
            return self._items.pop(key, None)


def _resolve_keys(settings: ProvenanceSettings,
                  environ: Mapping[str, str]) -> dict[str, bytes]:
    keys = {source: secret.get_secret_value().encode("utf-8")
            for source, secret in settings.keys.items()}
    for source, variable in settings.key_env.items():
        value = environ.get(variable)
        if not value:
            raise gr.ConfigError(f"key_env: environment variable {variable!r} (the key of "
                                 f"source {source!r}) is not set or empty")
        keys[source] = value.encode("utf-8")
    return keys


class Provenance:
    """The ``provenance`` update check."""

    name = "provenance"

    def __init__(self, settings: ProvenanceSettings, *,
                 environ: Mapping[str, str] | None = None,
                 signatures: MutableMapping[str, str] | None = None) -> None:
        self.settings = settings
        self._keys = _resolve_keys(settings, os.environ if environ is None else environ)
        self._public = {source: _public_key(source, text)
                        for source, text in settings.public_keys.items()}
        self.signatures: MutableMapping[str, str] = (
            signatures if signatures is not None else Signatures())

    def __repr__(self) -> str:
        # Key ids, not keys: the repr feeds the guard's fingerprint, which must
        # change when a key changes without revealing it.
        ids = {source: hmac.new(key, b"guardrails.provenance.key-id", hashlib.sha256)
               .hexdigest()[:16] for source, key in sorted(self._keys.items())}
        return (f"Provenance(allowed_sources={sorted(self.settings.allowed_sources)!r}, "
                f"key_ids={ids!r}, public_keys={dict(sorted(self.settings.public_keys.items()))!r})")

    def _signature(self, proposal: gr.UpdateProposal) -> str | None:
        signatures = self.signatures
        taken = (signatures.take(proposal.id) if isinstance(signatures, Signatures)
                 else signatures.pop(proposal.id, None))
        carried = getattr(proposal, "signature", None)
        return carried if isinstance(carried, str) and carried else taken

    def __call__(self, context: gr.ReviewContext) -> Iterable[gr.Finding]:
        proposal = context.proposal
        source = proposal.source
        signature = self._signature(proposal)
        evidence: dict[str, Any] = {"source": source}
        if source not in self.settings.allowed_sources:
            return [gr.Finding(check=self.name, passed=False,
                               message=f"source {source!r} may not propose updates (allowed: "
                                       f"{', '.join(self.settings.allowed_sources)})",
                               evidence=evidence)]
        key = self._keys.get(source)
        if key is None and source not in self._public:
            return [gr.Finding(check=self.name, passed=True,
                               message=f"source {source!r} is allowed (no signature required)",
                               evidence={**evidence, "signed": False})]
        if signature is None:
            return [gr.Finding(check=self.name, passed=False,
                               message=f"proposals from {source!r} must be signed; this one "
                                       "carries no signature", evidence=evidence)]
        if any(d.proposal_id == proposal.id for d in context.decisions()):
            return [gr.Finding(check=self.name, passed=False,
                               message=f"proposal {proposal.id!r} was already decided; a signed "
                                       "proposal cannot be replayed", evidence=evidence)]
        if not self._verifies(source, key, signature.strip().lower(), proposal):
            return [gr.Finding(check=self.name, passed=False,
                               message=f"the signature of this proposal from {source!r} does not "
                                       "verify: it was altered or signed with another key",
                               evidence=evidence)]
        return [gr.Finding(check=self.name, passed=True,
                           message=f"source {source!r} is allowed and its signature verifies",
                           evidence={**evidence, "signed": True})]


    def _verifies(self, source: str, key: bytes | None, given: str,
                  proposal: gr.UpdateProposal) -> bool:
        if key is not None:
            expected = hmac.new(key, signing_payload(proposal), hashlib.sha256).hexdigest()
            return given.isascii() and hmac.compare_digest(expected, given)
        from cryptography.exceptions import InvalidSignature

        try:
            self._public[source].verify(bytes.fromhex(given), signing_payload(proposal))
        except (InvalidSignature, ValueError):
            return False
        return True


def build(settings: ProvenanceSettings) -> gr.PluginParts:
    return gr.PluginParts(checks=[Provenance(settings)])


plugin = gr.Plugin(
    name="provenance", settings=ProvenanceSettings, factory=build, provides={"checks"},
    description="Allow-list of proposal sources with optional HMAC-SHA256 or Ed25519 signatures.")
