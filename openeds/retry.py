"""The one backoff schedule used for the calls a client library does not retry itself."""

from __future__ import annotations

import random
from dataclasses import dataclass

_JITTER = random.Random()  # jitter needs no seed, and must not draw from the global random state


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter and a bounded total time.

    Retry ``n`` (0-based) waits between half and all of ``min(max_delay, first_delay * 2**n)``
    seconds, or what a 429's ``Retry-After`` asks for; no retry starts whose wait would end
    more than ``total`` seconds after the first attempt.
    """

    first_delay: float = 1.0
    max_delay: float = 60.0
    total: float = 600.0

    def __post_init__(self) -> None:
        if not (0 < self.first_delay <= self.max_delay) or self.total < 0:
            raise ValueError(
                f"RetryPolicy(first_delay={self.first_delay}, max_delay={self.max_delay}, total={self.total}); "
                "expected 0 < first_delay <= max_delay and total >= 0"
            )

    def delay(self, retries: int) -> float:
        """Seconds to wait before retry number ``retries`` (0-based)."""
        ceiling = min(self.max_delay, self.first_delay * 2**retries)
        return _JITTER.uniform(ceiling / 2, ceiling)
