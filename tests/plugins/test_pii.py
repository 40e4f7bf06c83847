"""The pii plugin: e-mail, phone, card (Luhn) and IBAN (mod 97) redaction or blocking."""

from __future__ import annotations

import pytest
from guardrails_plugins.policies.pii import (
    find_credit_cards,
    find_ibans,
    find_phones,
    iban_valid,
    luhn_valid,
)
from hypothesis import given
from hypothesis import strategies as st
from plugin_helpers import Model, arun, build, run

import guardrails as gr

VISA = "4111 1111 1111 1111"
IBAN_DE = "DE89 3704 0044 0532 0130 00"


def pii(**settings: object) -> list[object]:
    return list(build("pii", dict(settings)).middleware)


def test_clean_text_passes_unchanged() -> None:
    """Text without personal data reaches the model untouched and gets no redaction note."""
    model = Model()
    response = run(pii(), "what is the capital of France?", model)
    assert model.seen[0].input == "what is the capital of France?"
    assert "guardrails.redactions" not in response.metadata


def test_email_in_the_input_is_redacted_before_the_model_sees_it() -> None:
    """An e-mail address in the input is replaced by [EMAIL]."""
    model = Model()
    run(pii(), "write to jane.doe+news@example.co.uk please", model)
    assert model.seen[0].input == "write to [EMAIL] please"


def test_card_number_passing_luhn_is_redacted() -> None:
    """A 16-digit card number with a valid Luhn digit is redacted."""
    model = Model()
    run(pii(), f"my card is {VISA}, expiry 2027", model)
    assert model.seen[0].input == "my card is [CREDIT_CARD], expiry 2027"


def test_digit_string_failing_luhn_is_not_a_card() -> None:
    """A 16-digit number with a wrong check digit is not redacted as a card."""
    assert find_credit_cards("ref 4111-1111-1111-1112") == []


def test_valid_iban_is_redacted_and_trailing_words_are_kept() -> None:
    """An IBAN in printed groups is redacted up to its end, not the words after it."""
    model = Model()
    run(pii(), f"IBAN {IBAN_DE} BIC COBADEFFXXX", model)
    assert model.seen[0].input == "IBAN [IBAN] BIC COBADEFFXXX"


def test_iban_with_a_wrong_check_is_not_redacted() -> None:
    """An IBAN-shaped string failing mod 97 is left alone."""
    assert find_ibans("DE88 3704 0044 0532 0130 00") == []


def test_phone_numbers_are_redacted() -> None:
    """International and national phone formats are redacted."""
    model = Model()
    run(pii(), "call +44 20 7946 0958 or (555) 123-4567", model)
    assert model.seen[0].input == "call [PHONE] or [PHONE]"


@pytest.mark.parametrize("text", ["pi is 3.14159265358", "host 192.168.100.200",
                                  "on 2024-01-15", "order 12345678"])
def test_decimals_addresses_dates_and_short_ids_are_not_phones(text: str) -> None:
    """The phone heuristic leaves decimals, IPv4 addresses, dates and short numbers alone."""
    assert find_phones(text) == []


def test_block_refuses_the_input_without_quoting_it() -> None:
    """action=block raises before the model; the message names kinds, never the data."""
    model = Model()
    with pytest.raises(gr.GuardrailViolation) as caught:
        run(pii(action="block"), f"card {VISA} and mail a@b.io", model)
    assert model.seen == []
    assert caught.value.policy == "pii"
    assert "credit_card (1), email (1)" in str(caught.value)
    assert "4111" not in str(caught.value) and "a@b.io" not in str(caught.value)


def test_output_is_redacted_and_counted_in_the_metadata() -> None:
    """Output redactions are applied and counted under guardrails.redactions."""
    response = run(pii(), "hi", Model("reach me at bob@example.com"))
    assert response.output == "reach me at [EMAIL]"
    assert response.metadata["guardrails.redactions"] == {"pii": {"output": {"email": 1}}}


def test_apply_to_output_leaves_the_input_alone() -> None:
    """apply_to=["output"] does not touch the input."""
    model = Model()
    run(pii(apply_to=["output"]), "a@b.io", model)
    assert model.seen[0].input == "a@b.io"


def test_only_the_configured_kinds_are_detected() -> None:
    """kinds=["email"] leaves card numbers in place."""
    model = Model()
    run(pii(kinds=["email"]), f"{VISA} a@b.io", model)
    assert model.seen[0].input == f"{VISA} [EMAIL]"


def test_custom_placeholder_names_the_kind() -> None:
    """The placeholder's {kind} becomes the upper-case kind."""
    model = Model()
    run(pii(placeholder="<{kind} removed>"), "a@b.io", model)
    assert model.seen[0].input == "<EMAIL removed>"


def test_placeholder_with_other_braces_is_refused() -> None:
    """A placeholder is not a format string: other fields are a settings error."""
    with pytest.raises(gr.PluginError, match="setting 'placeholder'"):
        build("pii", {"placeholder": "{0.__class__}"})


def test_unknown_kind_is_a_settings_error() -> None:
    """kinds only accepts the four known kinds."""
    with pytest.raises(gr.PluginError) as caught:
        build("pii", {"kinds": ["passport"]})
    assert caught.value.setting == "kinds[0]"


def test_structured_input_keeps_its_shape() -> None:
    """Messages (lists of dicts) are redacted string by string, keeping their structure."""
    model = Model()
    run(pii(), [{"role": "user", "content": "I am a@b.io"}], model)
    assert model.seen[0].input == [{"role": "user", "content": "I am [EMAIL]"}]


def test_async_chain_redacts_too() -> None:
    """acall applies the same redaction in the async chain."""
    response = arun(pii(), "hi", Model("a@b.io"))
    assert response.output == "[EMAIL]"


def test_luhn_and_mod97_reference_values() -> None:
    """The checksums accept published test numbers and reject a changed digit."""
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")


def _luhn_complete(prefix: str) -> str:
    for digit in "0123456789":
        if luhn_valid(prefix + digit):
            return prefix + digit
    raise AssertionError("unreachable")


@given(st.text(alphabet="0123456789", min_size=15, max_size=15).filter(lambda s: s[0] != "0"),
       st.sampled_from([" ", "-", ""]))
def test_every_luhn_valid_16_digit_number_is_found(prefix: str, separator: str) -> None:
    """Property: any Luhn-valid 16-digit number, grouped or not, is detected in text."""
    number = _luhn_complete(prefix)
    grouped = separator.join(number[i:i + 4] for i in range(0, 16, 4))
    text = f"pay with {grouped} now"
    assert find_credit_cards(text) == [(9, 9 + len(grouped))]
