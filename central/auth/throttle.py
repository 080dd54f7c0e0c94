"""A per-username brake on password guessing.

After ``max_failures`` failed logins within ``window`` a username is refused (without
checking the password) until the oldest failure leaves the window. Unknown usernames are
counted the same way, so the throttle does not reveal which ones exist.

The counters live in this process: with N API processes an attacker gets at most N times
the budget. A shared counter would need a table (or Redis); see docs/registry-access.md.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from datetime import datetime, timedelta

MAX_TRACKED = 10_000  # usernames remembered at most; the least recently failed go first


class LoginThrottle:
    def __init__(self, max_failures: int, window: timedelta) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, username: str, now: datetime) -> deque[datetime] | None:
        times = self._failures.get(username)
        if times is None:
            return None
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[username]
            return None
        return times

    def retry_after(self, username: str, now: datetime) -> timedelta | None:
        """How long ``username`` must wait before its next attempt; None: it may try now."""
        with self._lock:
            times = self._recent(username, now)
            if times is None or len(times) < self.max_failures:
                return None
            return times[0] + self.window - now

    def failed(self, username: str, now: datetime) -> None:
        with self._lock:
            times = self._recent(username, now)
            if times is None:
                times = self._failures[username] = deque(maxlen=self.max_failures)
            times.append(now)
            self._failures.move_to_end(username)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)
