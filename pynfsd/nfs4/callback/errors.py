"""Errors of the callback client: each carries the `reason` the path records."""

from __future__ import annotations


class CallbackError(Exception):
    """The callback could not be made or its reply did not check out; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadUniversalAddress(CallbackError):
    """The r_netid/r_addr of a cb_client4 names no TCP endpoint pynfsd can call."""


class BadCallbackReply(CallbackError):
    """A CB_COMPOUND reply that does not decode or contradicts its call (§17.2.4)."""
