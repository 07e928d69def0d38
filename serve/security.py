"""API keys compared in constant time, and a per-key token-bucket rate limit."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from dataclasses import dataclass


def fingerprint(key: str) -> str:
    """A short, non-reversible name for a key: what logs and rate-limit buckets use instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class ApiKeys:
    """Checks a presented key against every configured key.

    Both sides are hashed first, so compare_digest always sees equal lengths, and every key is
    compared on every call: the time taken says nothing about which key, or how much of one, matched.
    """

    def __init__(self, keys: list[str]):
        if not keys:
            raise ValueError("ApiKeys needs at least one key")
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, presented: str | None) -> bool:
        probe = hashlib.sha256((presented or "").encode()).digest()
        ok = False
        for d in self._digests:
            ok |= hmac.compare_digest(probe, d)
        return ok and bool(presented)


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int  # the burst size, as X-RateLimit-Limit
    remaining: int
    retry_after_s: int  # whole seconds until one request is allowed again (0 when allowed)
    reset_s: int  # whole seconds until the bucket is full again


class RateLimiter:
    """Token bucket per identity: `burst` requests at once, refilled at `per_minute`.

    State lives in each ingress replica, so with N ingress replicas a key may get up to N times
    the limit; the bucket table is bounded (least recently seen identities are dropped first).
    """

    def __init__(self, per_minute: float, burst: int, max_identities: int = 100_000, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_identities = max_identities
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def hit(self, identity: str) -> RateDecision:
        return self._take(identity, consume=True)

    def peek(self, identity: str) -> RateDecision:
        """Whether `identity` has a token now, without taking one (an unseen identity adds no entry)."""
        return self._take(identity, consume=False)

    def _take(self, identity: str, consume: bool) -> RateDecision:
        now = self.clock()
        if not consume and identity not in self._buckets:
            return RateDecision(True, self.burst, self.burst, 0, 0)
        tokens, last = self._buckets.pop(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed and consume:
            tokens -= 1.0
        self._buckets[identity] = (tokens, now)
        while len(self._buckets) > self.max_identities:
            self._buckets.popitem(last=False)
        retry = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
        reset = math.ceil((self.burst - tokens) / self.rate)
        return RateDecision(allowed, self.burst, int(tokens), retry, reset)
