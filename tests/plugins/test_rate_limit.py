"""The rate_limit plugin: a per-key token bucket with an injectable monotonic clock."""

from __future__ import annotations

import threading

import pytest
from guardrails_plugins.policies.rate_limit import RateLimit, RateLimitSettings
from plugin_helpers import Model, arun, build, run

import guardrails as gr


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **settings: object) -> RateLimit:
    return RateLimit(RateLimitSettings(**{"requests": 2, "per_seconds": 10, **settings}), clock)


def call(policy: object, user: object = "alice") -> gr.Response:
    return run([policy], "hi", metadata={"user_id": user})


def test_calls_within_the_burst_pass() -> None:
    """A fresh key may make `burst` (default: requests) calls at once."""
    policy = limiter(Clock())
    assert call(policy).output == "ok"
    assert call(policy).output == "ok"


def test_call_over_the_burst_is_refused_with_retry_after() -> None:
    """The next call is refused, with the seconds until a token is back."""
    policy = limiter(Clock())
    call(policy)
    call(policy)
    model = Model()
    with pytest.raises(gr.GuardrailViolation) as caught:
        run([policy], "hi", model, metadata={"user_id": "alice"})
    assert model.seen == []
    assert caught.value.policy == "rate_limit"
    assert caught.value.findings[0].evidence["retry_after"] == 5.0


def test_tokens_refill_with_time() -> None:
    """After 1 / rate seconds one more call is allowed."""
    clock = Clock()
    policy = limiter(clock)
    call(policy)
    call(policy)
    clock.now += 5.0
    assert call(policy).output == "ok"


def test_keys_have_separate_buckets() -> None:
    """One caller's exhausted bucket does not limit another."""
    policy = limiter(Clock())
    call(policy, "alice")
    call(policy, "alice")
    assert call(policy, "bob").output == "ok"


def test_keys_of_different_types_do_not_share_a_bucket() -> None:
    """The user id 1 and the user id "1" are different keys."""
    policy = limiter(Clock(), requests=1)
    call(policy, 1)
    assert call(policy, "1").output == "ok"


def test_burst_larger_than_the_rate() -> None:
    """burst lets an idle key make more calls at once than `requests`."""
    policy = limiter(Clock(), requests=1, burst=3)
    for _ in range(3):
        call(policy)
    with pytest.raises(gr.GuardrailViolation):
        call(policy)


def test_missing_key_is_refused_by_default() -> None:
    """A request without the metadata key is refused and told how to fix it."""
    with pytest.raises(gr.GuardrailViolation, match="missing_key='shared'"):
        run([limiter(Clock())], "hi")


def test_missing_key_shared_uses_one_common_bucket() -> None:
    """missing_key=shared limits every key-less request together."""
    policy = limiter(Clock(), missing_key="shared")
    run([policy], "hi")
    run([policy], "hi")
    with pytest.raises(gr.GuardrailViolation):
        run([policy], "hi")


def test_key_field_is_configurable() -> None:
    """key names the metadata entry to read."""
    policy = limiter(Clock(), key="tenant", requests=1)
    run([policy], "hi", metadata={"tenant": "t1"})
    with pytest.raises(gr.GuardrailViolation):
        run([policy], "hi", metadata={"tenant": "t1"})


def test_least_recently_used_keys_are_evicted() -> None:
    """With max_keys=2 a third key evicts the oldest, which starts again full."""
    policy = limiter(Clock(), requests=1, max_keys=2)
    call(policy, "a")
    call(policy, "b")
    call(policy, "c")
    assert call(policy, "a").output == "ok"


def test_concurrent_calls_never_exceed_the_bucket() -> None:
    """Under 16 threads hammering one key with a frozen clock, exactly `burst` calls pass."""
    policy = limiter(Clock(), requests=50)
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            ok = policy.take(("str", "alice")) == 0.0
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50


def test_async_chain_is_limited_too() -> None:
    """acall takes tokens from the same buckets."""
    policy = limiter(Clock(), requests=1)
    arun([policy], "hi", metadata={"user_id": "a"})
    with pytest.raises(gr.GuardrailViolation):
        arun([policy], "hi", metadata={"user_id": "a"})


def test_built_from_settings_like_any_plugin() -> None:
    """load_plugin("rate_limit").build() gives a working limiter with the real clock."""
    middleware = build("rate_limit", {"requests": 1, "per_seconds": 3600}).middleware
    run(middleware, "hi", metadata={"user_id": "a"})
    with pytest.raises(gr.GuardrailViolation):
        run(middleware, "hi", metadata={"user_id": "a"})


def test_requests_must_be_positive() -> None:
    """requests < 1 is a settings error naming the key."""
    with pytest.raises(gr.PluginError) as caught:
        build("rate_limit", {"requests": 0})
    assert caught.value.setting == "requests"
