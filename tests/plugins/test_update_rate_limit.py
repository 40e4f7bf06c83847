"""The update_rate_limit plugin: accepted updates per window and a cool-down after rejections."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from guardrails_plugins.checks.update_rate_limit import UpdateRateLimit, UpdateRateLimitSettings
from plugin_helpers import check

import guardrails as gr
from guardrails.testing import DictClient


class Clock:
    """Wall-clock now plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_guarded(make_guard: Callable[..., gr.Guard], client: DictClient,
                 clock: Clock) -> Callable[..., gr.GuardedClient]:
    def make(**config: Any) -> gr.GuardedClient:
        limiter = UpdateRateLimit(UpdateRateLimitSettings(**config), clock=clock)
        return make_guard(checks=[limiter]).wrap(client)
    return make


def warm(guarded: gr.GuardedClient, value: float) -> gr.Decision:
    """Propose a temperature (accepted unless a policy objects)."""
    return guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/params/temperature", "value": value}]))


def frozen(guarded: gr.GuardedClient) -> gr.Decision:
    """Propose a change to a frozen pointer: always rejected by the constraints."""
    return guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "add", "path": "/tools/-", "value": "shell"}]))


def test_updates_within_the_rate_are_accepted(make_guarded: Callable[..., gr.GuardedClient]
                                              ) -> None:
    """Up to max_accepted updates in a window pass; the genesis entry does not count."""
    guarded = make_guarded(max_accepted=2, window_seconds=3600)
    assert warm(guarded, 0.3).accepted
    assert warm(guarded, 0.4).accepted


def test_update_over_the_rate_is_rejected_with_retry_after(
        make_guarded: Callable[..., gr.GuardedClient]) -> None:
    """The next update in the window is rejected by this check with the wait stated."""
    guarded = make_guarded(max_accepted=2, window_seconds=3600)
    warm(guarded, 0.3)
    warm(guarded, 0.4)
    decision = warm(guarded, 0.5)
    assert not decision.accepted
    finding = decision.deciding_finding
    assert finding is not None and finding.check == "update_rate_limit"
    assert 3590 < finding.evidence["retry_after"] <= 3600


def test_rate_resets_once_the_window_has_passed(
        make_guarded: Callable[..., gr.GuardedClient], clock: Clock) -> None:
    """After the window slides past the earlier acceptances, updates pass again."""
    guarded = make_guarded(max_accepted=1, window_seconds=60)
    warm(guarded, 0.3)
    assert not warm(guarded, 0.4).accepted
    clock.advance(61)
    assert warm(guarded, 0.4).accepted


def test_cooldown_starts_after_n_rejections_in_a_row(
        make_guarded: Callable[..., gr.GuardedClient]) -> None:
    """After max_rejections rejections, even a good update waits out the cool-down."""
    guarded = make_guarded(max_rejections=2, cooldown_seconds=600)
    frozen(guarded)
    frozen(guarded)
    decision = warm(guarded, 0.3)
    assert not decision.accepted
    assert "cooling down after 2 rejections in a row" in decision.reasons[0]


def test_fewer_rejections_than_the_limit_do_not_cool_down(
        make_guarded: Callable[..., gr.GuardedClient]) -> None:
    """One rejection below the limit leaves the next good update free to pass."""
    guarded = make_guarded(max_rejections=2, cooldown_seconds=600)
    frozen(guarded)
    assert warm(guarded, 0.3).accepted


def test_cooldown_ends(make_guarded: Callable[..., gr.GuardedClient], clock: Clock) -> None:
    """Once cooldown_seconds have passed since the last rejection, updates pass again."""
    guarded = make_guarded(max_rejections=1, cooldown_seconds=600)
    frozen(guarded)
    clock.advance(601)
    assert warm(guarded, 0.3).accepted


def test_refusals_during_the_cooldown_do_not_prolong_it(
        make_guarded: Callable[..., gr.GuardedClient], clock: Clock) -> None:
    """Proposals refused by the cool-down itself do not count as new rejections."""
    guarded = make_guarded(max_rejections=1, cooldown_seconds=600)
    frozen(guarded)
    clock.advance(500)
    assert not warm(guarded, 0.3).accepted
    clock.advance(101)
    assert warm(guarded, 0.3).accepted


def test_an_acceptance_ends_the_rejection_streak(
        make_guarded: Callable[..., gr.GuardedClient], clock: Clock) -> None:
    """Rejections before an accepted update no longer count."""
    guarded = make_guarded(max_rejections=2, cooldown_seconds=600)
    frozen(guarded)
    assert warm(guarded, 0.3).accepted
    frozen(guarded)
    assert warm(guarded, 0.4).accepted


def test_both_limits_together(make_guarded: Callable[..., gr.GuardedClient]) -> None:
    """With both limits, the check reports both and either can refuse."""
    guarded = make_guarded(max_accepted=5, max_rejections=3)
    decision = warm(guarded, 0.3)
    assert decision.accepted
    mine = [f for f in decision.findings if f.check == "update_rate_limit"]
    assert {f.evidence["statistic"] for f in mine} == {"accepted_in_window",
                                                        "rejections_in_a_row"}


def test_a_limit_is_required() -> None:
    """Settings with neither max_accepted nor max_rejections are refused."""
    with pytest.raises(gr.PluginError, match="set max_accepted, max_rejections or both"):
        check("update_rate_limit", {})


def test_window_must_be_positive() -> None:
    """A zero window is a settings error naming the key."""
    with pytest.raises(gr.PluginError) as caught:
        check("update_rate_limit", {"max_accepted": 1, "window_seconds": 0})
    assert caught.value.setting == "window_seconds"
