"""``rate_limit``: a token bucket per key, the key read from ``request.metadata``.

Each key's bucket holds up to ``burst`` tokens (default ``requests``) and
refills at ``requests`` per ``per_seconds``; a call takes one token or is
refused with the seconds until the next one. This policy is stateful by
nature: the buckets live in the middleware object, guarded by a lock, so
one guard's calls from any thread or task share them (several processes do
not). At most ``max_keys`` buckets are kept, least recently used evicted
first; an evicted key starts again with a full bucket, so size
``max_keys`` above the number of keys active within one refill period.
The key's value is never logged or reported.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import Field

import guardrails as gr

from ._text import violation

Clock = Callable[[], float]


class RateLimitSettings(gr.RuntimePolicySettings):
    """Settings of the ``rate_limit`` plugin."""

    requests: int = Field(ge=1)
    """Calls allowed per ``per_seconds`` and key, on average."""
    per_seconds: float = Field(default=60.0, gt=0)
    burst: int | None = Field(default=None, ge=1)
    """Calls a key may make at once after being idle (default: ``requests``)."""
    key: str = Field(default="user_id", min_length=1)
    """The ``request.metadata`` entry that identifies the caller."""
    missing_key: Literal["block", "shared"] = "block"
    """A request without the key: ``block`` refuses it; ``shared`` puts every such
    request in one common bucket."""
    max_keys: int = Field(default=100_000, ge=1)


_SHARED = object()


class RateLimit:
    """The ``rate_limit`` middleware. ``clock`` (monotonic seconds) is injectable for tests."""

    name = "rate_limit"

    def __init__(self, settings: RateLimitSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.capacity = float(settings.burst or settings.requests)
        self.refill = settings.requests / settings.per_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[Any, tuple[float, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"RateLimit({self.settings!r})"

    def _key(self, request: gr.Request) -> Any:
        value = request.metadata.get(self.settings.key, _SHARED)
        if value is _SHARED:
            if self.settings.missing_key == "block":
                raise violation(self.name, f"the request has no metadata[{self.settings.key!r}] "
                                "to rate-limit by; set it, or configure missing_key='shared'",
                                key_field=self.settings.key)
            return _SHARED
        # Typed keys, so the user id 1 and the user id "1" do not share a bucket.
        return (type(value).__name__, value if isinstance(value, str | int) else repr(value))

    def take(self, key: Any) -> float:
        """Take one token for ``key``: 0.0 if granted, else the seconds until one is available."""
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + max(0.0, now - last) * self.refill)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.refill
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.settings.max_keys:
                self._buckets.popitem(last=False)
            return wait

    def _admit(self, request: gr.Request) -> None:
        if gr.is_shadow_copy():
            return  # a rollout's shadow copy is no call of the user: it takes no token
        wait = self.take(self._key(request))
        if wait > 0:
            raise violation(self.name, f"rate limit of {self.settings.requests} calls per "
                            f"{self.settings.per_seconds:g} s exceeded for this "
                            f"{self.settings.key}; retry in {wait:.2f} s",
                            retry_after=round(wait, 3), key_field=self.settings.key)

    def __call__(self, request: gr.Request,
                 call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
        self._admit(request)
        return call_next(request)

    async def acall(self, request: gr.Request,
                    call_next: Callable[[gr.Request], Awaitable[gr.Response]]) -> gr.Response:
        # The lock is held for a few arithmetic operations only, never across an await.
        self._admit(request)
        return await call_next(request)

    def streaming(self) -> gr.StreamPolicy:
        """The stream side: one token taken before the stream opens; no output checks."""
        return gr.StreamPolicy(self.name, before=self._stream_before)

    def _stream_before(self, request: gr.Request) -> gr.Request:
        self._admit(request)
        return request


def build(settings: RateLimitSettings) -> gr.PluginParts:
    return gr.PluginParts(middleware=[RateLimit(settings)])


plugin = gr.Plugin(
    name="rate_limit", settings=RateLimitSettings, factory=build, provides={"middleware"},
    description="Per-key token-bucket rate limit; the key comes from request.metadata.")
