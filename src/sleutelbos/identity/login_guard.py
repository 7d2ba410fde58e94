"""Brute-force protection for every place a password is checked (login page, password grant).

Two guards, both consulted before the password is even hashed:
- a rate limit per source address (sliding window, in process memory): at most ``per_source_limit`` failed
  attempts per ``window_s``; beyond that the source gets 429 whatever username it tries;
- a lockout per account, persisted in the store so that every worker sees it: after ``threshold`` consecutive
  failures the account is locked for ``base_lockout_s`` seconds, doubling with every further failure
  (exponential backoff) up to ``max_lockout_s``. A successful login resets the counter.
Left out: CAPTCHA and notifying the account holder.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

from sleutelbos.identity.errors import LoginThrottled
from sleutelbos.identity.store import IdentityStore


@dataclass(frozen=True)
class LoginPolicy:
    threshold: int = 5
    base_lockout_s: float = 30.0
    max_lockout_s: float = 3600.0
    per_source_limit: int = 20
    window_s: float = 60.0


class LoginGuard:
    def __init__(self, store: IdentityStore, policy: LoginPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or LoginPolicy()
        self._source_failures: dict[str, collections.deque[float]] = {}

    async def check(self, username: str, source: str | None, now: float | None = None) -> None:
        """Raise :class:`LoginThrottled` when the source or the account may not try now."""
        now = time.time() if now is None else now
        if source is not None:
            window = self._window(source, now)
            if len(window) >= self.policy.per_source_limit:
                retry = math.ceil(window[0] + self.policy.window_s - now)
                raise LoginThrottled("too many failed logins from this address", max(retry, 1))
        _failures, locked_until = await self.store.login_failures(_subject(username))
        if locked_until > now:
            raise LoginThrottled("account temporarily locked after failed logins", math.ceil(locked_until - now))

    async def failed(self, username: str, source: str | None, now: float | None = None) -> float:
        """Count a failure; returns the lockout now in force (0 when below the threshold)."""
        now = time.time() if now is None else now
        if source is not None:
            self._window(source, now).append(now)
        subject = _subject(username)
        failures, _ = await self.store.login_failures(subject)
        failures += 1
        lockout = 0.0
        if failures >= self.policy.threshold:
            exponent = failures - self.policy.threshold
            lockout = min(self.policy.base_lockout_s * (2 ** min(exponent, 30)), self.policy.max_lockout_s)
        await self.store.set_login_failures(subject, failures, now + lockout, now)
        return lockout

    async def succeeded(self, username: str) -> None:
        await self.store.clear_login_failures(_subject(username))

    def _window(self, source: str, now: float) -> collections.deque[float]:
        window = self._source_failures.setdefault(source, collections.deque())
        while window and window[0] <= now - self.policy.window_s:
            window.popleft()
        if len(self._source_failures) > 100_000:  # bound memory under a spray from many sources
            self._source_failures = {k: v for k, v in self._source_failures.items() if v}
        return window


def _subject(username: str) -> str:
    return f"user:{username.lower()}"
