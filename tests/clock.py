"""The manual clock the tests pass wherever the code takes time as a parameter.

Calling it gives `now` (seconds for the state manager, the caches and the transport; a test
of a nanosecond clock, such as a backend's, sets `now` in nanoseconds); `ns()` is `now` in
seconds read as nanoseconds; `advance` moves it on.  Nothing reads the real time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ManualClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def ns(self) -> int:
        return int(self.now * 1_000_000_000)

    def advance(self, seconds: float) -> None:
        self.now += seconds
