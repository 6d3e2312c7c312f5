"""What the server knows of one client's callback path, with generations so that a probe
started for old callback information cannot mark the new path (sans-IO)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PathState(enum.Enum):
    UNKNOWN = "unknown"
    PROBING = "probing"
    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class CallbackPath:
    """What the server knows of one client's callback path; times are the caller's clock.

    `generation` changes whenever the callback information does (`reset`): results of calls
    started under an older generation are ignored by `record`."""

    state: PathState = PathState.UNKNOWN
    last_error: str = ""
    changed_at: float = 0.0
    generation: int = 0
    failures: int = 0

    @property
    def up(self) -> bool:
        return self.state is PathState.UP

    def reset(self, now: float) -> None:
        self.generation += 1
        self._set(PathState.UNKNOWN, "", now)

    def probing(self, now: float) -> int:
        self._set(PathState.PROBING, self.last_error, now)
        return self.generation

    def record(self, generation: int, error: str | None, now: float) -> bool:
        """The outcome of a call begun under `generation`: None for success, else the reason.
        Returns whether it was applied (False: the callback information changed since)."""
        if generation != self.generation:
            return False
        if error is None:
            self._set(PathState.UP, "", now)
        else:
            self.failures += 1
            self._set(PathState.DOWN, error, now)
        return True

    def _set(self, state: PathState, error: str, now: float) -> None:
        self.state, self.last_error, self.changed_at = state, error, now
