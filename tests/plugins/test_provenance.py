"""The provenance plugin: a source allow-list with optional HMAC-SHA256 signatures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from guardrails_plugins.checks.provenance import (
    Provenance,
    ProvenanceSettings,
    sign_proposal,
    sign_proposal_ed25519,
)
from plugin_helpers import check, review_context

import guardrails as gr
from guardrails.testing import DictClient

KEY = "optimiser-secret"
PARENT = {"seed": 0}


def proposal(source: str = "optimiser", value: float = 0.3, **fields: Any) -> gr.UpdateProposal:
    return gr.UpdateProposal(parent=gr.state_version(PARENT), source=source, patch=[
        {"op": "replace", "path": "/params/temperature", "value": value}], **fields)


def verdict(provenance: Any, item: gr.UpdateProposal) -> gr.Finding:
    (finding,) = provenance(review_context({"seed": 1}, parent=PARENT, proposal=item))
    return finding


SIGNED = {"allowed_sources": ["optimiser", "operator"], "keys": {"optimiser": KEY}}


def test_allowed_unsigned_source_passes() -> None:
    """A source on the allow-list without a key needs no signature."""
    provenance = check("provenance", {"allowed_sources": ["model"]})
    assert verdict(provenance, proposal("model")).passed


def test_source_not_on_the_list_is_rejected() -> None:
    """A source missing from allowed_sources is rejected, naming the allowed ones."""
    finding = verdict(check("provenance", {"allowed_sources": ["operator"]}), proposal("model"))
    assert not finding.passed
    assert "source 'model' may not propose updates (allowed: operator)" in finding.message


def test_correct_signature_passes() -> None:
    """A proposal signed with the source's key verifies."""
    provenance = check("provenance", SIGNED)
    item = proposal()
    provenance.signatures[item.id] = sign_proposal(item, KEY)
    finding = verdict(provenance, item)
    assert finding.passed and finding.evidence["signed"] is True


def test_keyed_source_without_signature_is_rejected() -> None:
    """A source with a key must sign every proposal."""
    finding = verdict(check("provenance", SIGNED), proposal())
    assert not finding.passed and "must be signed" in finding.message


def test_altered_patch_breaks_the_signature() -> None:
    """Changing the patch after signing makes the signature fail."""
    provenance = check("provenance", SIGNED)
    signed, altered = proposal(value=0.3, id="p1"), proposal(value=0.9, id="p1")
    provenance.signatures["p1"] = sign_proposal(signed, KEY)
    finding = verdict(provenance, altered)
    assert not finding.passed and "does not verify" in finding.message


def test_signature_under_another_key_is_rejected() -> None:
    """A signature made with a different key does not verify."""
    provenance = check("provenance", SIGNED)
    item = proposal()
    provenance.signatures[item.id] = sign_proposal(item, "guessed-key")
    assert not verdict(provenance, item).passed


def test_a_source_cannot_borrow_another_sources_signature() -> None:
    """The source is signed too: relabelling a signed proposal breaks it."""
    provenance = check("provenance", {"allowed_sources": ["optimiser", "operator"],
                                      "keys": {"optimiser": KEY, "operator": "op-key"}})
    original = proposal("optimiser", id="p2")
    provenance.signatures["p2"] = sign_proposal(original, KEY)
    assert not verdict(provenance, proposal("operator", id="p2")).passed


def test_signature_is_consumed_when_checked() -> None:
    """A registered signature is used once: a second review of the id finds none."""
    provenance = check("provenance", SIGNED)
    item = proposal()
    provenance.signatures[item.id] = sign_proposal(item, KEY)
    assert verdict(provenance, item).passed
    assert not verdict(provenance, item).passed


def test_non_ascii_signature_is_rejected_not_crashing() -> None:
    """A garbage signature is a failed finding, never an exception."""
    provenance = check("provenance", SIGNED)
    item = proposal()
    provenance.signatures[item.id] = "é" * 64
    assert not verdict(provenance, item).passed


def test_key_may_come_from_the_environment() -> None:
    """key_env names an environment variable read when the plugin is built."""
    settings = ProvenanceSettings(allowed_sources=["optimiser"], key_env={"optimiser": "K"})
    provenance = Provenance(settings, environ={"K": KEY})
    item = proposal()
    provenance.signatures[item.id] = sign_proposal(item, KEY)
    assert verdict(provenance, item).passed


def test_missing_environment_key_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset key variable is a PluginError at build, so the guard refuses to start."""
    monkeypatch.delenv("GUARDRAILS_TEST_MISSING_KEY", raising=False)
    with pytest.raises(gr.PluginError, match=r"'GUARDRAILS_TEST_MISSING_KEY'.*is not set"):
        check("provenance", {"allowed_sources": ["optimiser"],
                             "key_env": {"optimiser": "GUARDRAILS_TEST_MISSING_KEY"}})


def test_require_signature_needs_a_key_for_every_source() -> None:
    """require_signature with an unkeyed source is refused, naming the source."""
    with pytest.raises(gr.PluginError, match="'operator' has no key"):
        check("provenance", {**SIGNED, "require_signature": True})


def test_key_for_a_source_not_allowed_is_refused() -> None:
    """A key for a source outside allowed_sources is a settings error."""
    with pytest.raises(gr.PluginError, match="keys names 'stranger'"):
        check("provenance", {"allowed_sources": ["optimiser"], "keys": {"stranger": KEY}})


def test_repr_changes_with_the_key_but_never_shows_it() -> None:
    """The repr feeds the guard's fingerprint: key ids, never the key."""
    first, second = check("provenance", SIGNED), check(
        "provenance", {**SIGNED, "keys": {"optimiser": "another"}})
    assert KEY not in repr(first)
    assert repr(first) != repr(second)


def test_signatures_are_verified_in_a_real_guard(make_guard: Callable[..., gr.Guard],
                                                 client: DictClient) -> None:
    """Through a guard: an unsigned proposal is rejected, the signed one accepted."""
    parts = gr.load_plugin("provenance").build(SIGNED)
    guarded = make_guard(checks=parts.checks).wrap(client)
    patch = [{"op": "replace", "path": "/params/temperature", "value": 0.3}]
    unsigned = gr.UpdateProposal(parent=guarded.version, patch=patch, source="optimiser")
    assert not guarded.propose(unsigned).accepted
    signed = gr.UpdateProposal(parent=guarded.version, patch=patch, source="optimiser")
    parts.checks[0].signatures[signed.id] = sign_proposal(signed, KEY)
    assert guarded.propose(signed).accepted


def test_a_signature_carried_on_the_proposal_verifies(make_guard: Callable[..., gr.Guard],
                                                      client: DictClient) -> None:
    """UpdateProposal.signature carries the signature; a valid one is accepted."""
    guarded = make_guard(checks=gr.load_plugin("provenance").build(SIGNED).checks).wrap(client)
    patch = [{"op": "replace", "path": "/params/temperature", "value": 0.3}]
    unsigned = gr.UpdateProposal(parent=guarded.version, patch=patch, source="optimiser")
    signed = unsigned.model_copy(update={"signature": sign_proposal(unsigned, KEY)})
    assert guarded.propose(signed).accepted


def test_a_replayed_signed_proposal_is_refused() -> None:
    """A signed proposal whose id the ledger already decided is refused as a replay."""
    item = proposal()
    item = item.model_copy(update={"signature": sign_proposal(item, KEY)})
    ledger = gr.MemoryLedger()
    ledger.record(gr.Decision.reject([gr.Finding(check="x", passed=False, message="no")],
                                     proposal_id=item.id, parent=item.parent))
    context = gr.ReviewContext(item, PARENT, {"seed": 1}, "0" * 64, ledger, None)
    (finding,) = Provenance(ProvenanceSettings.model_validate(SIGNED))(context)
    assert not finding.passed and "replayed" in finding.message


# -- Ed25519 public keys: a keyring of trusted proposers, no shared secret ----------------------

def _ed25519_keys() -> tuple[Any, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _keyring() -> tuple[Any, Any]:
    private, public = _ed25519_keys()
    return private, check("provenance", {"allowed_sources": ["optimiser", "operator"],
                                         "public_keys": {"optimiser": public}})


def test_an_ed25519_signature_by_the_keyring_key_verifies() -> None:
    """A proposal signed with the private half of the source's public key passes."""
    private, provenance = _keyring()
    item = proposal()
    item = item.model_copy(update={"signature": sign_proposal_ed25519(item, private)})
    assert verdict(provenance, item).passed


def test_a_proposal_from_a_public_key_source_without_signature_is_rejected() -> None:
    """A source with a public key must sign; an unsigned proposal is rejected."""
    _, provenance = _keyring()
    finding = verdict(provenance, proposal())
    assert not finding.passed and "must be signed" in finding.message


def test_an_ed25519_signature_by_another_key_is_rejected() -> None:
    """A signature made with a key other than the keyring's does not verify."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, provenance = _keyring()
    item = proposal()
    other = Ed25519PrivateKey.from_private_bytes(bytes(32))
    item = item.model_copy(update={"signature": sign_proposal_ed25519(item, other)})
    assert not verdict(provenance, item).passed


def test_an_altered_ed25519_signed_proposal_is_rejected() -> None:
    """Changing the patch after signing breaks the Ed25519 signature."""
    private, provenance = _keyring()
    item = proposal()
    signature = sign_proposal_ed25519(item, private)
    altered = proposal(value=0.9, id=item.id, signature=signature)
    assert not verdict(provenance, altered).passed


def test_a_malformed_public_key_is_a_configuration_error() -> None:
    """A public key that is not 32 bytes of hex stops the plugin from building, naming it."""
    with pytest.raises(gr.ConfigError, match="public_keys"):
        gr.load_plugin("provenance").build({"allowed_sources": ["optimiser"],
                                             "public_keys": {"optimiser": "abcd"}})


def test_a_source_with_a_shared_and_a_public_key_is_a_configuration_error() -> None:
    """A source may have one kind of key only."""
    _, public = _ed25519_keys()
    with pytest.raises(gr.ConfigError, match="more than one key"):
        gr.load_plugin("provenance").build({"allowed_sources": ["optimiser"],
                                             "keys": {"optimiser": KEY},
                                             "public_keys": {"optimiser": public}})
